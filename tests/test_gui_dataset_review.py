"""Dataset review panel with pytest-qt (offscreen): chips of the real SpaceNet Vegas tile."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.gui.dataset_review import SHORTCUTS, DatasetReviewPanel  # noqa: E402
from app.service.review import ReviewDataset  # noqa: E402


def _panel(qtbot, root: Path) -> DatasetReviewPanel:
    w = DatasetReviewPanel(dataset_dir=str(root), checkpoint_dirs=[str(root / "none")])
    w.resize(1000, 680)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    w.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is w, timeout=3000)
    w.view.setFocus()
    return w


def _key(w: DatasetReviewPanel, key, modifier=Qt.NoModifier) -> None:
    """A key press through the window (the way a user's key reaches the shortcut map)."""
    QTest.keyClick(w.windowHandle(), key, modifier)


@pytest.mark.slow
def test_review_accept_reject_edit_undo_and_reopen(qtbot, vegas_chips: Path) -> None:
    chips = vegas_chips
    w = _panel(qtbot, chips)
    n = len(w.ds)
    assert w.model.rowCount() == n and w.current == 0
    assert f"{n}</b> samples" in w.counts_label.text()
    # shortcuts are shown in the panel
    for _shortcut, what in SHORTCUTS:
        assert what in w.shortcut_label.text()

    # accept with the keyboard shortcut, reject with the button
    _key(w, Qt.Key_A)
    assert w.ds.status(0) == "accepted" and w.current == 1
    qtbot.mouseClick(w.reject_btn, Qt.LeftButton)
    assert w.ds.status(1) == "rejected" and w.current == 2
    w.flag(True, "check the junction")
    assert w.ds.flagged(2)

    # brush stroke with real mouse events on the view
    target = max(range(n), key=lambda k: w.ds.samples[k]["road_fraction"])
    w.select(target)
    assert w.current == target
    before = w.editor.mask.copy()
    _key(w, Qt.Key_B)
    assert w.view.tool == "brush"
    w.size_spin.setValue(5)
    # find background pixels to paint over
    ys, xs = np.nonzero(before[40:216, 40:216] == 0)
    y, x = int(ys[0]) + 40, int(xs[0]) + 40
    p0 = w.view.mask_to_widget(x, y).toPoint()
    p1 = w.view.mask_to_widget(min(x + 30, 255), y).toPoint()
    QTest.mousePress(w.view, Qt.LeftButton, Qt.NoModifier, p0)
    QTest.mouseMove(w.view, p1)
    QTest.mouseRelease(w.view, Qt.LeftButton, Qt.NoModifier, p1)
    after = w.editor.mask.copy()
    assert after[y, x] == 255 and (after != before).sum() > 30
    assert set(np.unique(after)) <= {0, 255}
    assert w.ds.status(target) == "edited"
    assert np.array_equal(ReviewDataset(chips).read_mask(target), after)

    # eraser through the panel API, then undo/redo (each saved at once)
    w.set_tool("eraser")
    assert w.paint_stroke([(x, y)], tool="eraser", radius_px=2)
    assert w.editor.mask[y, x] == 0
    _key(w, Qt.Key_Z, Qt.ControlModifier)
    assert np.array_equal(w.editor.mask, after)
    w.undo()
    assert np.array_equal(w.editor.mask, before)
    assert np.array_equal(ReviewDataset(chips).read_mask(target), before)
    w.redo()
    assert np.array_equal(ReviewDataset(chips).read_mask(target), after)

    # filter by status
    w.filter_combo.setCurrentText("accepted")
    assert w.model.rows == [0]
    w.filter_combo.setCurrentText("edited")
    assert w.model.rows == [target]
    w.filter_combo.setCurrentText("all")
    w.select(3)
    w.close()  # saves the position

    # reopen: the review continues where it stopped, with the same state
    w2 = _panel(qtbot, chips)
    assert w2.current == 3
    assert [w2.ds.status(i) for i in (0, 1)] == ["accepted", "rejected"]
    assert w2.ds.status(target) == "edited" and w2.ds.flagged(2)
    assert w2.ds.comment(2) == "check the junction"
    w2.select(target)
    assert np.array_equal(w2.editor.mask, after)


def test_views_grid_and_many_samples(qtbot, vegas_chips: Path) -> None:
    chips = vegas_chips
    w = _panel(qtbot, chips)
    for mode in ("side by side", "swipe", "overlay", "diff"):
        w.mode_combo.setCurrentText(mode)
        img = w.view.grab().toImage()
        assert img.width() > 100
    w.opacity_slider.setValue(80)
    assert w.view.opacity == pytest.approx(0.8)
    w.set_grid(True)
    idx = w.model.index(0)
    thumb = w.model.data(idx, Qt.DecorationRole)
    assert thumb.width() == 96
    w.set_grid(False)

    # thousands of samples: the model is a QAbstractListModel, nothing decoded up front
    import json

    doc = json.loads((chips / "manifest.json").read_text())
    doc["samples"] = [dict(doc["samples"][k % len(doc["samples"])]) for k in range(3000)]
    (chips / "manifest.json").write_text(json.dumps(doc))
    w.open_dataset(str(chips))
    assert w.model.rowCount() == 3000
    assert len(w.model._thumbs) == 0
    w.select(2999)
    assert w.current == 2999
    _key(w, Qt.Key_Left)
    assert w.current == 2998
