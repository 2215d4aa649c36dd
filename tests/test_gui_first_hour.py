"""The analyst's first hour (issue 17) through the main window, offscreen: safe output folders,
no lost review work, trained checkpoints offered (never auto-selected), inputs checked when
chosen, context-aware shortcuts, chips from the image's reviewed roads, and the cosmetic
fixes. Real GeoTIFFs, real GeoPackages, the real chips service; the shown-window versions of
the quit and shortcut checks are in ``test_gui_x11.py``."""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
from PySide6.QtCore import QPoint, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QMessageBox, QPushButton  # noqa: E402
from shapely.geometry import LineString, Point  # noqa: E402

from app.gui.main_window import MainWindow  # noqa: E402
from app.gui.settings import AppSettings  # noqa: E402
from gis_fixtures import utm_transform, write_geotiff  # noqa: E402



# ------------------------------------------------------------------------------ fixtures
def _image(path: Path, seed: int = 0) -> Path:
    """600 x 400 px RGB uint8 (gradient + noise) on a 1 m UTM 33N grid."""
    h, w = 400, 600
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, w, dtype=np.float32)[None, None, :].repeat(h, 1)
    arr = np.concatenate([x, 255 - x, np.full_like(x, 80)]) + rng.normal(0, 8, (3, h, w))
    return write_geotiff(path, np.clip(arr, 0, 255).astype(np.uint8), crs="EPSG:32633",
                         transform=utm_transform())


def _network(path: Path, image: Path) -> Path:
    """A road network GeoPackage (``edges`` + ``nodes``) on ``image``: a horizontal road along
    row 100, a vertical one along column 300 and a horizontal one along row 300."""
    with rasterio.open(image) as ds:
        t, crs = ds.transform, ds.crs

    def xy(c: float, r: float):
        return t * (c, r)

    pts = {0: (50, 100), 1: (300, 100), 2: (550, 100), 3: (300, 300), 4: (50, 300),
           5: (550, 300)}
    segs = [(0, 1), (1, 2), (1, 3), (4, 3), (3, 5)]
    edges = gpd.GeoDataFrame(
        {"u": [a for a, _ in segs], "v": [b for _, b in segs],
         "length_m": [float(np.hypot(pts[a][0] - pts[b][0], pts[a][1] - pts[b][1]))
                      for a, b in segs],
         "width_m": [8.0] * len(segs), "component": [0] * len(segs)},
        geometry=[LineString([xy(*pts[a]), xy(*pts[b])]) for a, b in segs], crs=crs)
    nodes = gpd.GeoDataFrame({"node_id": list(pts), "degree": [1, 3, 1, 3, 1, 1]},
                             geometry=[Point(xy(*p)) for p in pts.values()], crs=crs)
    edges.to_file(path, layer="edges", driver="GPKG")
    nodes.to_file(path, layer="nodes", driver="GPKG")
    return path


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return _image(d / "scene.tif")


@pytest.fixture()
def network(tmp_path: Path, image: Path) -> Path:
    return _network(tmp_path / "roads_in.gpkg", image)


@pytest.fixture()
def settings(tmp_path: Path) -> AppSettings:
    s = AppSettings(str(tmp_path / "settings.ini"))
    s.set_value("workspace/dir", str(tmp_path / "workspace"))
    return s


@pytest.fixture()
def win(qtbot, settings: AppSettings):
    w = MainWindow(settings)   # closed here, not by qtbot (before this teardown could run)
    w.resize(1300, 850)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.edits_unsaved = False  # no question when the fixture closes it
    if w.is_running():
        w.cancel_extraction()
        qtbot.waitUntil(lambda: not w.is_running(), timeout=120000)
    w.wait_chips(120)
    w.close()
    w.deleteLater()


def answer(qtbot, button: str, seen: List[str]) -> None:
    """Click the button named ``button`` of the next modal dialog (recording its text)."""
    def click() -> None:
        box = QApplication.activeModalWidget()
        if box is None:
            QTimer.singleShot(20, click)
            return
        seen.append(box.text() if isinstance(box, QMessageBox) else box.windowTitle())
        btn = box.findChild(QPushButton, button)
        assert btn is not None, f"no button {button} in {seen[-1]}"
        btn.click()

    QTimer.singleShot(0, click)


def _review(w: MainWindow, image: Path, network: Path) -> None:
    assert w.open_image(str(image)), w.last_error
    assert w.open_vector(str(network)), w.last_error
    assert len(w.edit) == 5 and not w.edits_unsaved


# ------------------------------------------------------------------------------ item 2
def test_outputs_go_to_the_workspace_and_nothing_is_written_beside_the_input(
        qtbot, win: MainWindow, image: Path, tmp_path: Path) -> None:
    before = sorted(os.listdir(image.parent))
    assert win.open_image(str(image))
    out = Path(win.extraction_panel.out_dir.text())
    assert out.parent == tmp_path / "workspace" and out.name.startswith("scene_")
    assert "workspace" in win.extraction_panel.workspace_label.text()
    # the workspace can be changed; the automatic folder follows, a chosen one stays
    win.set_workspace(str(tmp_path / "ws2"))
    assert Path(win.extraction_panel.out_dir.text()).parent == tmp_path / "ws2"
    assert AppSettings(str(tmp_path / "settings.ini")).value("workspace/dir") == \
        str(tmp_path / "ws2")
    win.extraction_panel.out_dir.setText(str(tmp_path / "mine"))
    win.set_workspace(str(tmp_path / "ws3"))
    assert win.extraction_panel.out_dir.text() == str(tmp_path / "mine")
    qtbot.wait(300)  # overview and detail reads of the image
    assert sorted(os.listdir(image.parent)) == before  # no .aux.xml or outputs beside it


@pytest.mark.slow
def test_a_new_users_workspace_is_made_when_the_first_extraction_starts(
        qtbot, win: MainWindow, image: Path, tmp_path: Path) -> None:
    """A fresh install's workspace folder does not exist yet: the first extraction makes it
    instead of failing on a missing parent folder."""
    ws = tmp_path / "workspace"
    assert not ws.exists()
    assert win.open_image(str(image))
    done: List[object] = []
    win.runner.finished.connect(done.append)
    assert win.start_extraction(), win.last_error
    qtbot.waitUntil(lambda: bool(done), timeout=240000)
    assert done[0].status == "success", getattr(done[0], "error", None)
    out = Path(win.extraction_panel.out_dir.text())
    assert ws.is_dir() and out.parent == ws and any(out.iterdir())


# ------------------------------------------------------------------------------ item 4
@pytest.mark.slow
def test_opening_another_image_asks_before_discarding_review_edits(
        qtbot, win: MainWindow, image: Path, network: Path, tmp_path: Path) -> None:
    other = _image(tmp_path / "other.tif", seed=1)
    _review(win, image, network)
    win.select_edges([0])
    assert win.delete_selected() == 1 and win.edits_unsaved
    seen: List[str] = []
    # Cancel: nothing changes
    answer(qtbot, "cancelEdits", seen)
    assert not win.open_image(str(other))
    assert "1 deleted" in seen[-1] and "not exported" in seen[-1]
    assert win.image_path == str(image) and win.edit is not None and 0 in win.edit.deleted
    # Discard: the other image opens
    answer(qtbot, "discardEdits", seen)
    assert win.open_image(str(other))
    assert win.image_path == str(other) and win.edit is None and not win.edits_unsaved
    # after an export nothing is asked
    assert win.open_image(str(image)) and win.open_vector(str(network))
    win.select_edges([1])
    win.keep_selected()
    assert win.edits_unsaved
    (tmp_path / "exp").mkdir()
    assert win.export_results(str(tmp_path / "exp" / "r.gpkg"))
    assert not win.edits_unsaved
    assert win.open_image(str(other))  # no dialog (it would block this call)


def test_open_recent_behaves_like_open(qtbot, win: MainWindow, image: Path,
                                       tmp_path: Path) -> None:
    twin = tmp_path / "twin.tif"
    shutil.copy(image, twin)                 # overlaps the current image exactly
    assert win.open_image(str(twin)) and win.open_image(str(image))
    recent = [a for a in win.recent_menu.actions() if a.text() == str(twin)]
    assert recent
    recent[0].trigger()
    assert win.image_path == str(twin)
    rasters = [lyr for lyr in win.stack.layers if lyr.kind == "imagery"]
    assert len(rasters) == 1                 # a new session, not a duplicate imagery layer


def test_export_writes_review_status_and_edge_id(qtbot, win: MainWindow, image: Path,
                                                 network: Path, tmp_path: Path) -> None:
    _review(win, image, network)
    win.select_edges([0])
    win.delete_selected()
    win.select_edges([2, 3])
    win.keep_selected()
    out = tmp_path / "exp"
    out.mkdir()
    written = win.export_results(str(out / "reviewed.gpkg"), formats=("gpkg", "shp"))
    assert written, win.last_error
    for f in (out / "reviewed.gpkg", out / "reviewed_edges.shp"):
        e = gpd.read_file(f, layer="edges") if f.suffix == ".gpkg" else gpd.read_file(f)
        assert sorted(e["edge_id"]) == [1, 2, 3, 4], f
        status = dict(zip(e["edge_id"], e["review"]))
        assert status == {1: "unreviewed", 2: "kept", 3: "kept", 4: "unreviewed"}, f
    # with the deleted edges, and a round trip: the review status comes back
    assert win.export_results(str(out / "all.gpkg"), include_deleted=True)
    e = gpd.read_file(out / "all.gpkg", layer="edges")
    assert dict(zip(e["edge_id"], e["review"]))[0] == "deleted" and len(e) == 5
    win.edits_unsaved = False
    assert win.open_vector(str(out / "all.gpkg"))
    assert win.edit.deleted == {0} and win.edit.kept == {2, 3} and len(win.edit) == 4


# ------------------------------------------------------------------------------ item 5
def _run_checkpoint(path: Path, miou: float) -> Path:
    import mindspore as ms

    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.models import create_model

    ms.set_seed(3)
    meta = CheckpointMeta(model="enet", num_classes=1, tile_size_px=64, stride=8, epoch=2,
                          metrics={"miou": miou, "iou": miou - 0.1, "f1": 0.61})
    return Path(save_checkpoint(create_model("enet", num_classes=1), path, meta))


@pytest.mark.slow
def test_a_finished_run_is_offered_beside_the_current_model_never_auto_selected(
        qtbot, win: MainWindow, tmp_path: Path, settings: AppSettings,
        bundled_checkpoint: Path) -> None:
    ep = win.extraction_panel
    ep.select_checkpoint(str(bundled_checkpoint))
    current = ep.checkpoint_path()
    best = _run_checkpoint(tmp_path / "run" / "best.ckpt", 0.595)
    win.training_panel.fill_checkpoints(extra=[str(best)])
    win._on_trained_checkpoint(str(best))
    assert ep.checkpoint_path() == current                   # not switched behind our back
    box = win.checkpoint_offer
    assert box is not None and box.isVisible()
    text = box.text()
    import json
    bundled_miou = json.loads(
        bundled_checkpoint.with_suffix(".json").read_text())["metrics"]["miou"]
    assert bundled_miou > 0.595  # the run's checkpoint is the worse one
    assert "0.595" in text and f"{bundled_miou:.3f}" in text and "best.ckpt" in text \
        and "road_demo" in text
    assert "color:#d73a49" in text                           # the worse mIoU is marked
    box.findChild(QPushButton, "keepCurrentCheckpoint").click()
    assert ep.checkpoint_path() == current and win.checkpoint_offer is None
    win.close()
    # still the bundled model after a restart; the new one is listed
    w2 = MainWindow(AppSettings(str(tmp_path / "settings.ini")))
    qtbot.addWidget(w2)
    assert w2.extraction_panel.checkpoint_path() == current
    assert str(best.resolve()) in w2.extraction_panel._checkpoints
    # consent switches
    w2.show()
    w2._on_trained_checkpoint(str(best))
    w2.checkpoint_offer.findChild(QPushButton, "useNewCheckpoint").click()
    assert w2.extraction_panel.checkpoint_path() == str(best.resolve())
    w2.close()


# ------------------------------------------------------------------------------ item 6
def test_aoi_outside_the_image_is_refused_when_loaded_naming_the_file(
        qtbot, win: MainWindow, image: Path, tmp_path: Path) -> None:
    from shapely.geometry import box

    assert win.open_image(str(image))
    with rasterio.open(image) as ds:
        b = ds.bounds
    far = tmp_path / "my_fields.geojson"
    gpd.GeoDataFrame({"n": [1]}, geometry=[box(b.right + 500, b.top + 500, b.right + 900,
                                                b.top + 900)], crs="EPSG:32633").to_file(far)
    assert not win.load_aoi(str(far))
    assert "my_fields.geojson" in win.last_error and "outside" in win.last_error
    assert win.aoi_layer.is_empty()
    # a drawn AOI outside the image: refused too
    win.set_aoi([np.array([[-500, -500], [-100, -500], [-100, -100], [-500, -100]], float)])
    assert win.aoi_layer.is_empty() and "outside" in win.last_error
    # an internal file name never reaches the analyst
    msg = win._user_words(f"{win._tmpdir}/aoi_3.gpkg: AOI does not overlap the raster")
    assert win._tmpdir not in msg and "the AOI drawn on the map" in msg


def test_tile_overlap_pair_is_checked_when_typed(qtbot, win: MainWindow, image: Path,
                                                 tmp_path: Path) -> None:
    ep = win.extraction_panel
    assert win.open_image(str(image))
    ep.tile.setValue(256)
    ep.overlap.setValue(128)
    assert ep.tiling_error.isVisible() and "half the tile size" in ep.tiling_error.text()
    assert not ep.run_btn.isEnabled()
    t0 = time.perf_counter()
    assert not win.start_extraction()
    assert time.perf_counter() - t0 < 2.0 and not win.is_running()   # no model export first
    assert "overlap 128 px" in win.last_error
    ep.overlap.setValue(96)
    assert not ep.tiling_error.isVisible() and ep.run_btn.isEnabled()


@pytest.mark.qt_no_exception_capture
def test_a_corrupt_checkpoint_is_refused_when_chosen_naming_it(qtbot, win: MainWindow,
                                                               tmp_path: Path) -> None:
    import sys

    from app.gui.main import install_excepthook

    bad = tmp_path / "my_model.ckpt"
    bad.write_bytes(b"\x00garbage, not a checkpoint")
    ep = win.extraction_panel
    before = list(ep._checkpoints)
    old = sys.excepthook
    try:
        install_excepthook(QApplication.instance())
        assert not ep.choose_checkpoint(str(bad))
        qtbot.wait(50)
        boxes = list({id(b): b for b in QApplication.topLevelWidgets()
                      + win.findChildren(QMessageBox)
                      if isinstance(b, QMessageBox) and b.isVisible()}.values())
        assert [b.windowTitle() for b in boxes] == ["Not a usable checkpoint"]
        assert "my_model.ckpt" in boxes[0].text()
        boxes[0].close()
    finally:
        sys.excepthook = old
    assert ep._checkpoints == before and "my_model.ckpt" in ep.last_warning


# ------------------------------------------------------------------------------ items 7, 8
@pytest.fixture()
def chips(tmp_path: Path, image: Path, network: Path) -> Path:
    from app.service.dataset import DatasetBuildRequest, build_chip_dataset

    out = tmp_path / "chips"
    build_chip_dataset(DatasetBuildRequest(image=str(image), labels=str(network),
                                           out_dir=str(out), chip_size_px=128, skip_empty=True))
    return out


@pytest.mark.slow
def test_dataset_keys_and_map_keys_do_not_collide(qtbot, win: MainWindow, chips: Path,
                                                  image: Path) -> None:
    dp = win.dataset_panel
    assert win.open_image(str(image))
    assert dp.open_dataset(str(chips)) and dp.current == 0
    win.show_tab(win.TAB_DATASET)
    QTest.keyClick(win, Qt.Key_R)                  # reject (the map's R is off here)
    assert dp.ds.status(0) == "rejected" and dp.current == 1
    QTest.keyClick(win, Qt.Key_P)                  # previous (not the pan tool)
    assert dp.current == 0
    win.show_tab(win.TAB_MAP)
    QTest.keyClick(win.canvas, Qt.Key_R)           # the AOI rectangle tool again
    assert win.canvas.tool == "aoi_rect" and dp.current == 0
    QTest.keyClick(win.canvas, Qt.Key_P)
    assert win.canvas.tool == "pan" and dp.ds.status(0) == "rejected"


def test_build_chips_from_the_image_and_its_reviewed_roads(
        qtbot, win: MainWindow, image: Path, network: Path, tmp_path: Path) -> None:
    _review(win, image, network)
    assert not win.build_chips(str(tmp_path / "c0"))           # nothing kept yet
    assert "Keep (K)" in win.last_error
    win.select_edges([0, 1])                                   # the road along row 100
    win.keep_selected()
    out = tmp_path / "my_chips"
    assert win.build_chips(str(out), labels="kept", chip_size_px=128), win.last_error
    assert win.wait_chips(120)
    manifest = json.loads((out / "manifest.json").read_text())
    samples = manifest["samples"]
    assert samples and all(s["status"] == "unreviewed" for s in samples)
    with rasterio.open(image) as ds:
        top = ds.transform.f
    rows = set()
    for s in samples:
        with rasterio.open(out / s["mask"]) as m:
            r = np.flatnonzero(m.read(1).max(axis=1) > 0)
            rows |= {int(round(top - m.transform.f)) + int(rr) for rr in r}   # 1 m pixels
    assert rows and all(94 <= r <= 106 for r in rows)           # only the kept road, 8 m wide
    # the dataset opens for review and becomes the training dataset
    assert win.main_tabs.currentIndex() == win.TAB_DATASET
    assert Path(win.dataset_panel.ds.root) == out
    assert win.training_panel.data.text() == str(out)
    assert not win.dataset_panel.hint_label.isVisible()


def test_training_dataset_field_follows_the_open_dataset(qtbot, win: MainWindow,
                                                         chips: Path, tmp_path: Path) -> None:
    tp = win.training_panel
    assert win.dataset_panel.open_dataset(str(chips))
    assert tp.data.text() == str(chips)
    tp.data.clear()
    QTest.keyClicks(tp.data, str(tmp_path / "typed"))          # the user's own choice wins
    assert win.dataset_panel.open_dataset(str(chips))
    assert tp.data.text() == str(tmp_path / "typed")


# ------------------------------------------------------------------------------ item 10
def test_log_colours_do_not_leak_to_later_lines(qtbot) -> None:
    from app.gui.panels.progress_panel import ProgressPanel

    p = ProgressPanel()
    qtbot.addWidget(p)
    p.append_log("first", logging.INFO)
    p.append_log("broken", logging.ERROR)
    p.append_log("after the error", logging.INFO)
    doc = p.log.document()
    colours = [doc.findBlockByNumber(i).begin().fragment().charFormat().foreground().color()
               .name() for i in range(doc.blockCount())]
    assert colours[1] == "#e06c75"
    assert colours[2] == colours[0] != "#e06c75"


def test_progress_bar_resets_after_cancel(qtbot) -> None:
    from app.gui.panels.progress_panel import ProgressPanel

    p = ProgressPanel()
    qtbot.addWidget(p)
    p.start()
    p.set_progress(10, 16, "infer")
    assert p.bar.value() > 500
    p.finish("cancelled", "Cancelled")
    assert p.bar.value() == 0 and p.stage.text() == "Cancelled"


def test_status_bar_coordinates_clear_on_another_image(qtbot, win: MainWindow, image: Path,
                                                       tmp_path: Path) -> None:
    other = _image(tmp_path / "other.tif", seed=2)
    assert win.open_image(str(image))
    win._on_cursor(100.0, 50.0)
    assert win.coords_label.text() and win.lonlat_label.text()
    assert win.open_image(str(other))
    assert win.coords_label.text() == "" and win.lonlat_label.text() == ""


def test_dataset_panel_layout_does_not_jump_when_a_sample_loads(qtbot, win: MainWindow,
                                                                chips: Path) -> None:
    dp = win.dataset_panel
    win.show_tab(win.TAB_DATASET)
    qtbot.wait(50)
    before = dp.view.geometry()
    assert dp.open_dataset(str(chips))
    qtbot.wait(50)
    assert dp.view.geometry() == before
    dp.next()
    qtbot.wait(50)
    assert dp.view.geometry() == before


def test_an_edge_is_picked_with_a_pixel_tolerance_at_full_extent(
        qtbot, win: MainWindow, image: Path, network: Path) -> None:
    _review(win, image, network)
    win.canvas.zoom_full()
    win.set_tool("select")
    qtbot.wait(50)
    # 4 screen pixels below the middle of edge 1 (row 100, columns 300..550)
    pos = win.canvas.mapFromScene(425.0, 100.0) + QPoint(0, 4)
    assert win.canvas.current_scale() < 1.0                     # zoomed out
    QTest.mouseClick(win.canvas.viewport(), Qt.LeftButton, Qt.NoModifier, pos)
    assert win.edges_layer.selected == {1}
    far = win.canvas.mapFromScene(425.0, 100.0) + QPoint(0, 30)
    QTest.mouseClick(win.canvas.viewport(), Qt.LeftButton, Qt.NoModifier, far)
    assert win.edges_layer.selected == set()


# ------------------------------------------------------------------------------ item 3
def test_closing_after_a_failed_run_leaves_no_dialog_and_ends_the_app(qtbot,
                                                                     settings) -> None:
    w = MainWindow(settings)
    w.show()
    qtbot.waitExposed(w)
    w.show_error("Extraction failed", "/nowhere/out: output directory does not exist")
    box = w.findChild(QMessageBox, "errorDialog")
    assert box is not None and box.isVisible()
    with qtbot.waitSignal(w.closed, timeout=5000):
        w.close()
    assert not box.isVisible() and not w.isVisible()
    # a late error (a run ending after the window closed) is only logged: no orphan dialog
    w.show_error("Extraction failed", "late")
    assert not [b for b in QApplication.topLevelWidgets()
                if isinstance(b, QMessageBox) and b.isVisible()]
    w.deleteLater()
