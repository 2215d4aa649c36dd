"""Labelling review of a chips dataset: browse samples by status, look at the mask over the image
(overlay, side by side, swipe, or the prediction-vs-label diff of a checkpoint), accept / reject
/ flag with a comment, and correct masks with a brush and an eraser (undo/redo).

Everything is persisted at once through :mod:`app.service.review`: every finished stroke, undo
and redo rewrites the mask file atomically (status ``edited``), every status change rewrites
``manifest.json`` atomically, and the manifest remembers the sample the review was at.

Embed: ``DatasetReviewPanel(parent)`` (then ``open_dataset(path)``), or run standalone:
``python -m app.gui.dataset_review DATASET_DIR [--checkpoint CKPT] [--screenshot PNG]``.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PySide6.QtCore import (QAbstractListModel, QModelIndex, QPointF, QRectF, QSize, Qt,
                            QTimer, Signal)
from PySide6.QtGui import (QColor, QIcon, QImage, QKeySequence, QPainter, QPen, QPixmap,
                           QShortcut)
from PySide6.QtWidgets import (QApplication, QButtonGroup, QColorDialog, QComboBox,
                               QFileDialog, QHBoxLayout, QLabel, QLineEdit, QListView,
                               QMessageBox, QPushButton, QSlider, QSpinBox, QSplitter,
                               QToolButton, QVBoxLayout, QWidget)

from app.gui.worker import Worker, WorkerPool, error_details
from app.service.errors import UserError
from app.service.checkpoints import list_checkpoints
from app.service.review import (DIFF_FN, DIFF_FP, DIFF_TP, STATUSES, ChipPredictor,
                                MaskEditor, ReviewDataset, diff_codes, diff_stats)

log = logging.getLogger(__name__)

STATUS_COLOURS = {"unreviewed": QColor(150, 150, 150), "accepted": QColor(46, 160, 67),
                  "rejected": QColor(215, 58, 73), "edited": QColor(227, 140, 20)}
ALL = "all"
VIEW_MODES = ("overlay", "side by side", "swipe", "diff")
#: (key, what) pairs shown in the panel and bound as shortcuts.
SHORTCUTS = (("Right / N", "next"), ("Left / P", "previous"), ("A", "accept"),
             ("R", "reject"), ("F", "flag"), ("B", "brush"), ("E", "eraser"),
             ("V", "no tool"), ("[ / ]", "brush size"), ("Ctrl+Z", "undo"),
             ("Ctrl+Y", "redo"), ("D", "diff view"))


def _qimage_rgb(arr: np.ndarray) -> QImage:
    """``(H, W, 3)`` uint8 -> QImage (copied, owns its data)."""
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 3 * w, QImage.Format_RGB888).copy()


def _qimage_rgba(arr: np.ndarray) -> QImage:
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    h, w, _ = a.shape
    return QImage(a.data, w, h, 4 * w, QImage.Format_RGBA8888).copy()


def mask_overlay(mask: np.ndarray, colour: QColor, opacity: float) -> QImage:
    """RGBA overlay of a 0/255 mask ``(H, W)``: ``colour`` at ``opacity`` where road."""
    h, w = mask.shape
    out = np.zeros((h, w, 4), np.uint8)
    on = mask > 0
    out[on] = (colour.red(), colour.green(), colour.blue(), int(round(255 * opacity)))
    return _qimage_rgba(out)


DIFF_COLOURS = {DIFF_TP: (255, 255, 255), DIFF_FP: (230, 40, 40), DIFF_FN: (40, 140, 255)}


def diff_overlay(codes: np.ndarray, opacity: float) -> QImage:
    """RGBA overlay of :func:`diff_codes`: true positives white, false positives red, false
    negatives blue."""
    h, w = codes.shape
    out = np.zeros((h, w, 4), np.uint8)
    a = int(round(255 * opacity))
    for code, rgb in DIFF_COLOURS.items():
        out[codes == code] = (*rgb, a if code != DIFF_TP else a // 2)
    return _qimage_rgba(out)


# ------------------------------------------------------------------------------ model
class SampleListModel(QAbstractListModel):
    """The (filtered) samples of a :class:`ReviewDataset` for a ``QListView``.

    Rows are dataset indices (``index_of_row``); thumbnails for the grid view are read lazily
    when the view asks for them and kept in a small LRU cache.
    """

    IndexRole = Qt.UserRole + 1

    def __init__(self, parent: Optional[Any] = None) -> None:
        super().__init__(parent)
        self.ds: Optional[ReviewDataset] = None
        self.rows: List[int] = []
        self.filter = ALL
        self.thumbnails = False
        self._thumbs: "OrderedDict[int, QPixmap]" = OrderedDict()
        self._prefix = 0
        self._icons = {s: self._dot(c) for s, c in STATUS_COLOURS.items()}

    @staticmethod
    def _dot(c: QColor) -> QIcon:
        pm = QPixmap(12, 12)
        pm.fill(Qt.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.Antialiasing)
        p.setBrush(c)
        p.setPen(Qt.NoPen)
        p.drawEllipse(1, 1, 10, 10)
        p.end()
        return QIcon(pm)

    def set_dataset(self, ds: Optional[ReviewDataset]) -> None:
        self.beginResetModel()
        self.ds = ds
        self._thumbs.clear()
        self._prefix = 0
        if ds is not None and len(ds) > 1:
            # chips of one source share a long prefix: show what tells them apart
            common = os.path.commonprefix([ds.name(0), ds.name(len(ds) - 1),
                                           ds.name(len(ds) // 2)])
            cut = common.rfind("_") + 1
            if cut and all(ds.name(i).startswith(common[:cut]) for i in range(len(ds))):
                self._prefix = cut
        self._refilter()
        self.endResetModel()

    def _refilter(self) -> None:
        if self.ds is None:
            self.rows = []
        elif self.filter == ALL:
            self.rows = list(range(len(self.ds)))
        elif self.filter == "flagged":
            self.rows = self.ds.indices(flagged_only=True)
        else:
            self.rows = self.ds.indices(self.filter)

    def set_filter(self, status: str) -> None:
        self.beginResetModel()
        self.filter = status
        self._refilter()
        self.endResetModel()

    def set_thumbnails(self, on: bool) -> None:
        self.beginResetModel()
        self.thumbnails = bool(on)
        self.endResetModel()

    def index_of_row(self, row: int) -> int:
        return self.rows[row]

    def row_of_index(self, i: int) -> int:
        try:
            return self.rows.index(i)
        except ValueError:
            return -1

    def sample_changed(self, i: int) -> None:
        """Repaint the row of dataset index ``i`` (status or mask changed)."""
        self._thumbs.pop(i, None)
        r = self.row_of_index(i)
        if r >= 0:
            mi = self.index(r)
            self.dataChanged.emit(mi, mi)

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.rows)

    def _thumb(self, i: int) -> QPixmap:
        pm = self._thumbs.get(i)
        if pm is None:
            try:
                img = self.ds.read_image(i, max_size=96)
                m = self.ds.read_mask(i)
                base = QPixmap.fromImage(_qimage_rgb(img))
                p = QPainter(base)
                ov = mask_overlay(m, STATUS_COLOURS["edited"], 0.45)
                p.drawImage(QRectF(0, 0, base.width(), base.height()), ov)
                p.fillRect(0, 0, base.width(), 6, STATUS_COLOURS[self.ds.status(i)])
                p.end()
                pm = base
            except UserError as exc:
                log.warning("%s", exc)
                pm = QPixmap(96, 96)
                pm.fill(Qt.darkGray)
            self._thumbs[i] = pm
            if len(self._thumbs) > 400:
                self._thumbs.popitem(last=False)
        else:
            self._thumbs.move_to_end(i)
        return pm

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole) -> Any:
        if not index.isValid() or self.ds is None or index.row() >= len(self.rows):
            return None
        i = self.rows[index.row()]
        if role == Qt.DisplayRole:
            flag = " \u2691" if self.ds.flagged(i) else ""
            return f"{self.ds.name(i)[self._prefix:]}{flag}"
        if role == Qt.DecorationRole:
            if self.thumbnails:
                return self._thumb(i)
            return self._icons.get(self.ds.status(i))
        if role == Qt.ToolTipRole:
            c = self.ds.comment(i)
            return f"{self.ds.name(i)}\n{self.ds.status(i)}" + (f": {c}" if c else "")
        if role == self.IndexRole:
            return i
        return None


# ------------------------------------------------------------------------------ view
class MaskView(QWidget):
    """Image with the mask: overlay, side by side, swipe or diff; paints with the editor.

    Signals:
        strokeFinished(): a brush/eraser stroke changed the mask.
    """

    strokeFinished = Signal()
    brushSizeChanged = Signal(int)

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(240, 200)
        self.setMouseTracking(True)
        self.image: Optional[QImage] = None
        self.editor: Optional[MaskEditor] = None
        self.codes: Optional[np.ndarray] = None
        self.mode = "overlay"
        self.opacity = 0.5
        self.colour = QColor(255, 200, 0)
        self.swipe = 0.5
        self.tool = "none"  # none / brush / eraser
        self.brush_px = 4
        self._cursor: Optional[QPointF] = None
        self._overlay_cache: Optional[QImage] = None
        self.setFocusPolicy(Qt.ClickFocus)

    # -- state -----------------------------------------------------------------------------
    def set_sample(self, image: Optional[np.ndarray], editor: Optional[MaskEditor]) -> None:
        self.image = _qimage_rgb(image) if image is not None else None
        self.editor = editor
        self.codes = None
        self.mask_changed()

    def set_diff(self, codes: Optional[np.ndarray]) -> None:
        self.codes = codes
        self.update()

    def mask_changed(self) -> None:
        self._overlay_cache = None
        self.update()

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.update()

    def set_opacity(self, opacity: float) -> None:
        self.opacity = float(opacity)
        self.mask_changed()

    def set_colour(self, c: QColor) -> None:
        self.colour = QColor(c)
        self.mask_changed()

    def _overlay(self) -> Optional[QImage]:
        if self.editor is None:
            return None
        if self._overlay_cache is None:
            self._overlay_cache = mask_overlay(self.editor.mask, self.colour, self.opacity)
        return self._overlay_cache

    # -- geometry --------------------------------------------------------------------------
    def _panes(self) -> List[QRectF]:
        """Target rectangles of the image (two for side by side), aspect kept."""
        if self.image is None:
            return []
        iw, ih = self.image.width(), self.image.height()
        n = 2 if self.mode == "side by side" else 1
        pw, ph = (self.width() - 6 * (n - 1)) / n, self.height()
        s = min(pw / iw, ph / ih)
        w, h = iw * s, ih * s
        return [QRectF(k * (pw + 6) + (pw - w) / 2, (ph - h) / 2, w, h) for k in range(n)]

    def _edit_pane(self) -> Optional[QRectF]:
        panes = self._panes()
        return panes[-1] if panes else None

    def widget_to_mask(self, pos: QPointF) -> Optional[QPointF]:
        """Mask pixel ``(x, y)`` under a widget position (the editable pane), None outside."""
        r = self._edit_pane()
        if r is None or not r.contains(pos):
            return None
        s = r.width() / self.image.width()
        return QPointF((pos.x() - r.x()) / s - 0.5, (pos.y() - r.y()) / s - 0.5)

    def mask_to_widget(self, x: float, y: float) -> QPointF:
        r = self._edit_pane()
        s = r.width() / self.image.width()
        return QPointF(r.x() + (x + 0.5) * s, r.y() + (y + 0.5) * s)

    # -- painting --------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(32, 32, 32))
        if self.image is None:
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignCenter, "no sample")
            p.end()
            return
        panes = self._panes()
        ov = self._overlay()
        if self.mode == "side by side":
            p.drawImage(panes[0], self.image)
            p.drawImage(panes[1], self.image)
            if ov is not None:
                p.drawImage(panes[1], ov)
        elif self.mode == "swipe":
            r = panes[0]
            p.drawImage(r, self.image)
            if ov is not None:
                cut = r.width() * self.swipe
                src = QRectF(0, 0, ov.width() * self.swipe, ov.height())
                p.drawImage(QRectF(r.x(), r.y(), cut, r.height()), ov, src)
                p.setPen(QPen(QColor(255, 255, 255), 2))
                p.drawLine(QPointF(r.x() + cut, r.top()), QPointF(r.x() + cut, r.bottom()))
        elif self.mode == "diff":
            p.drawImage(panes[0], self.image)
            if self.codes is not None:
                p.drawImage(panes[0], diff_overlay(self.codes, max(self.opacity, 0.6)))
            else:
                p.setPen(QColor(255, 255, 255))
                p.drawText(panes[0].adjusted(8, 8, -8, -8), Qt.AlignTop | Qt.AlignLeft,
                           "choose a checkpoint for the prediction diff")
        else:
            p.drawImage(panes[0], self.image)
            if ov is not None:
                p.drawImage(panes[0], ov)
        if self.tool != "none" and self._cursor is not None and self.mode != "diff":
            m = self.widget_to_mask(self._cursor)
            if m is not None:
                s = panes[-1].width() / self.image.width()
                rad = (self.brush_px + 0.5) * s
                p.setRenderHint(QPainter.Antialiasing)
                p.setPen(QPen(QColor(255, 255, 255) if self.tool == "brush"
                              else QColor(255, 80, 80), 1.5))
                p.setBrush(Qt.NoBrush)
                p.drawEllipse(self._cursor, rad, rad)
        p.end()

    # -- mouse -----------------------------------------------------------------------------
    def mousePressEvent(self, ev) -> None:  # noqa: N802
        if (ev.button() == Qt.LeftButton and self.tool in ("brush", "eraser")
                and self.editor is not None and self.mode != "diff"):
            m = self.widget_to_mask(ev.position())
            if m is not None:
                self.editor.begin_stroke(255 if self.tool == "brush" else 0, self.brush_px)
                self.editor.add_point(m.x(), m.y())
                self.mask_changed()
                return
        if ev.button() == Qt.LeftButton and self.mode == "swipe" and self._panes():
            self._set_swipe(ev.position())
        super().mousePressEvent(ev)

    def _set_swipe(self, pos: QPointF) -> None:
        r = self._panes()[0]
        self.swipe = min(1.0, max(0.0, (pos.x() - r.x()) / max(r.width(), 1.0)))
        self.update()

    def mouseMoveEvent(self, ev) -> None:  # noqa: N802
        self._cursor = ev.position()
        if self.editor is not None and self.editor.in_stroke:
            m = self.widget_to_mask(ev.position())
            if m is not None:
                self.editor.add_point(m.x(), m.y())
                self.mask_changed()
        elif ev.buttons() & Qt.LeftButton and self.mode == "swipe" and self.tool == "none":
            self._set_swipe(ev.position())
        self.update()

    def mouseReleaseEvent(self, ev) -> None:  # noqa: N802
        if ev.button() == Qt.LeftButton and self.editor is not None and self.editor.in_stroke:
            changed = self.editor.end_stroke()
            self.mask_changed()
            if changed:
                self.strokeFinished.emit()
            return
        super().mouseReleaseEvent(ev)

    def wheelEvent(self, ev) -> None:  # noqa: N802
        if self.tool in ("brush", "eraser") and ev.modifiers() & Qt.ControlModifier:
            step = 1 if ev.angleDelta().y() > 0 else -1
            self.brushSizeChanged.emit(max(0, self.brush_px + step))
            return
        super().wheelEvent(ev)

    def leaveEvent(self, ev) -> None:  # noqa: N802
        self._cursor = None
        self.update()
        super().leaveEvent(ev)


# ------------------------------------------------------------------------------ panel
class DatasetReviewPanel(QWidget):
    """Review of a chips dataset (see the module docstring).

    Signals:
        sampleChanged(int): the dataset index now shown.
        statusChanged(int, str): a sample's review status changed (index, status).
        datasetOpened(str): a dataset folder was opened.
        buildChipsRequested(): the user asked to build chips from the app's image (the
            embedding main window does it; standalone the button is hidden).
    """

    sampleChanged = Signal(int)
    statusChanged = Signal(int, str)
    datasetOpened = Signal(str)
    buildChipsRequested = Signal()

    def __init__(self, parent: Optional[QWidget] = None, dataset_dir: Optional[str] = None,
                 checkpoint_dirs: Optional[Sequence[str]] = None) -> None:
        super().__init__(parent)
        self.ds: Optional[ReviewDataset] = None
        self.current = -1
        self.editor: Optional[MaskEditor] = None
        self.checkpoint_dirs = list(checkpoint_dirs) if checkpoint_dirs else None
        self._predictors: Dict[str, ChipPredictor] = {}
        self._pred_cache: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._pool: Optional[WorkerPool] = None   # one prediction at a time, in order
        self._job: Optional[tuple] = None         # (key, Worker) of the latest prediction

        # left: dataset, filter, list
        self.open_btn = QPushButton("Open dataset…")
        self.open_btn.clicked.connect(self._browse_dataset)
        self.path_label = QLabel("no dataset")
        self.path_label.setWordWrap(True)
        self.path_label.setStyleSheet("color: palette(mid); font-size: 11px;")
        self.build_btn = QPushButton("Build chips from the image…")
        self.build_btn.setObjectName("buildChips")
        self.build_btn.setToolTip("Build training chips from the image open on the Map tab and "
                                  "its reviewed roads")
        self.build_btn.clicked.connect(self.buildChipsRequested)
        self.build_btn.setVisible(parent is not None)
        self.hint_label = QLabel(
            "No dataset open. Open a chips dataset (a folder with manifest.json, made by "
            "<code>roadseg dataset build</code>), or build one from the image on the Map tab: "
            "extract its roads, Keep (K) the ones you trust, Delete the wrong ones, then "
            "<b>Build chips from the image</b>.")
        self.hint_label.setObjectName("datasetHint")
        self.hint_label.setWordWrap(True)
        self.filter_combo = QComboBox()
        self.filter_combo.setObjectName("statusFilter")
        self.filter_combo.addItems([ALL, *STATUSES, "flagged"])
        self.filter_combo.currentTextChanged.connect(self._on_filter)
        self.grid_btn = QToolButton()
        self.grid_btn.setText("Grid")
        self.grid_btn.setCheckable(True)
        self.grid_btn.setToolTip("Thumbnails (grid) or a list")
        self.grid_btn.toggled.connect(self.set_grid)
        self.model = SampleListModel(self)
        self.list = QListView()
        self.list.setObjectName("samples")
        self.list.setModel(self.model)
        self.list.setUniformItemSizes(True)
        self.list.setLayoutMode(QListView.Batched)
        self.list.setBatchSize(200)
        self.list.setTextElideMode(Qt.ElideLeft)  # the row/col suffix tells chips apart
        self.list.selectionModel().currentChanged.connect(self._on_current_row)
        self.counts_label = QLabel("")
        self.counts_label.setObjectName("counts")
        self.counts_label.setWordWrap(True)
        self.counts_label.setMinimumHeight(3 * self.counts_label.fontMetrics().lineSpacing() + 4)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.open_btn)
        lv.addWidget(self.build_btn)
        lv.addWidget(self.path_label)
        lv.addWidget(self.hint_label)
        fr = QHBoxLayout()
        fr.addWidget(QLabel("Show"))
        fr.addWidget(self.filter_combo, 1)
        fr.addWidget(self.grid_btn)
        lv.addLayout(fr)
        lv.addWidget(self.list, 1)
        lv.addWidget(self.counts_label)

        # centre: view + view controls
        self.view = MaskView()
        self.view.setObjectName("maskView")
        self.view.strokeFinished.connect(self._on_stroke)
        self.view.brushSizeChanged.connect(lambda v: self.size_spin.setValue(v))
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(VIEW_MODES))
        self.mode_combo.currentTextChanged.connect(self._on_mode)
        self.opacity_slider = QSlider(Qt.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(50)
        self.opacity_slider.setToolTip("Mask opacity")
        self.opacity_slider.valueChanged.connect(lambda v: self.view.set_opacity(v / 100.0))
        self.colour_btn = QToolButton()
        self.colour_btn.setToolTip("Mask colour")
        self.colour_btn.clicked.connect(self._pick_colour)
        self._show_colour()
        self.swipe_slider = QSlider(Qt.Horizontal)
        self.swipe_slider.setRange(0, 100)
        self.swipe_slider.setValue(50)
        self.swipe_slider.setToolTip("Swipe position")
        self.swipe_slider.setVisible(False)
        self.swipe_slider.valueChanged.connect(self._on_swipe)
        self.ckpt_combo = QComboBox()
        self.ckpt_combo.setObjectName("checkpoint")
        self.ckpt_combo.setMinimumContentsLength(12)
        self.ckpt_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.ckpt_combo.currentIndexChanged.connect(self._on_checkpoint)
        self.ckpt_browse = QToolButton()
        self.ckpt_browse.setText("…")
        self.ckpt_browse.setToolTip("Choose a checkpoint for the prediction-vs-label diff")
        self.ckpt_browse.clicked.connect(self._browse_checkpoint)
        self.diff_label = QLabel("")
        self.diff_label.setObjectName("diffStats")
        # room for "IoU 0.00 · FP 00000 · FN 00000" from the start: no jump when a sample loads
        self.diff_label.setMinimumWidth(self.diff_label.fontMetrics().horizontalAdvance(
            "IoU 0.00 · FP 000000 · FN 000000"))
        vc = QHBoxLayout()
        vc.addWidget(QLabel("View"))
        vc.addWidget(self.mode_combo)
        vc.addWidget(QLabel("Opacity"))
        vc.addWidget(self.opacity_slider, 1)
        vc.addWidget(self.colour_btn)
        vc.addWidget(self.swipe_slider, 1)
        cc = QHBoxLayout()
        cc.addWidget(QLabel("Diff with"))
        cc.addWidget(self.ckpt_combo, 1)
        cc.addWidget(self.ckpt_browse)
        cc.addWidget(self.diff_label)

        # edit + review controls
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: Dict[str, QToolButton] = {}
        tools = QHBoxLayout()
        for name, label, key in (("none", "View", "V"), ("brush", "Brush", "B"),
                                 ("eraser", "Eraser", "E")):
            b = QToolButton()
            b.setText(f"{label} ({key})")
            b.setCheckable(True)
            b.setObjectName(f"tool_{name}")
            self.tool_group.addButton(b)
            b.clicked.connect(lambda _=False, n=name: self.set_tool(n))
            self.tool_buttons[name] = b
            tools.addWidget(b)
        self.tool_buttons["none"].setChecked(True)
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 64)
        self.size_spin.setValue(4)
        self.size_spin.setPrefix("r ")
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Brush radius ([ and ], Ctrl+wheel)")
        self.size_spin.valueChanged.connect(self._on_size)
        tools.addWidget(self.size_spin)
        self.undo_btn = QToolButton()
        self.undo_btn.setText("Undo")
        self.undo_btn.clicked.connect(self.undo)
        self.redo_btn = QToolButton()
        self.redo_btn.setText("Redo")
        self.redo_btn.clicked.connect(self.redo)
        tools.addWidget(self.undo_btn)
        tools.addWidget(self.redo_btn)
        tools.addStretch(1)

        self.prev_btn = QPushButton("◀ Prev")
        self.prev_btn.clicked.connect(self.previous)
        self.next_btn = QPushButton("Next ▶")
        self.next_btn.clicked.connect(self.next)
        self.accept_btn = QPushButton("Accept (A)")
        self.accept_btn.setObjectName("accept")
        self.accept_btn.setStyleSheet("QPushButton { color: rgb(46,160,67); font-weight: bold; }")
        self.accept_btn.clicked.connect(lambda: self.accept())
        self.reject_btn = QPushButton("Reject (R)")
        self.reject_btn.setObjectName("reject")
        self.reject_btn.setStyleSheet("QPushButton { color: rgb(215,58,73); font-weight: bold; }")
        self.reject_btn.clicked.connect(lambda: self.reject())
        self.flag_btn = QPushButton("Flag (F)")
        self.flag_btn.setCheckable(True)
        self.flag_btn.clicked.connect(lambda on: self.flag(on))
        self.comment = QLineEdit()
        self.comment.setObjectName("comment")
        self.comment.setPlaceholderText("comment (saved with Flag / Enter)")
        self.comment.returnPressed.connect(lambda: self.flag(True))
        rv = QHBoxLayout()
        rv.addWidget(self.prev_btn)
        rv.addWidget(self.next_btn)
        rv.addWidget(self.accept_btn)
        rv.addWidget(self.reject_btn)
        rv.addWidget(self.flag_btn)
        rv.addWidget(self.comment, 1)
        self.status_label = QLabel("")
        self.status_label.setObjectName("sampleStatus")
        self.status_label.setMinimumHeight(self.status_label.fontMetrics().height() + 4)
        self.status_label.setTextFormat(Qt.RichText)
        keys = "  ".join(f"<b>{k}</b> {w}" for k, w in SHORTCUTS)
        self.shortcut_label = QLabel(keys)
        self.shortcut_label.setObjectName("shortcuts")
        self.shortcut_label.setWordWrap(True)
        self.shortcut_label.setStyleSheet("color: palette(mid); font-size: 11px;")

        right = QWidget()
        rvl = QVBoxLayout(right)
        rvl.setContentsMargins(0, 0, 0, 0)
        rvl.addWidget(self.status_label)
        rvl.addWidget(self.view, 1)
        rvl.addLayout(vc)
        rvl.addLayout(cc)
        rvl.addLayout(tools)
        rvl.addLayout(rv)
        rvl.addWidget(self.shortcut_label)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([240, 560])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self._pos_timer = QTimer(self)
        self._pos_timer.setSingleShot(True)
        self._pos_timer.setInterval(1500)
        self._pos_timer.timeout.connect(self.save_position)

        self._bind_shortcuts()
        self.fill_checkpoints()
        self._update_buttons()
        if dataset_dir:
            self.open_dataset(dataset_dir)

    # -- shortcuts ---------------------------------------------------------------------------
    def set_shortcuts_active(self, on: bool) -> None:
        """Embedded in the main window: the review keys act whenever the panel is the visible
        tab (window-wide, the main window turns its own colliding keys off meanwhile), and not
        at all otherwise."""
        for sc in self.shortcuts:
            sc.setContext(Qt.WindowShortcut)
            sc.setEnabled(bool(on))

    def shutdown(self) -> None:
        """Save the review position and stop a running diff prediction (window closing)."""
        self.save_position()
        if self._job is not None:
            self._job[1].cancel()
            self._job = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def set_build_hint(self, can_build: bool) -> None:
        self.build_btn.setEnabled(True)
        self.build_btn.setToolTip(
            "Build training chips from the image open on the Map tab and its reviewed roads"
            if can_build else "Open an image on the Map tab and extract its roads first")

    def _bind_shortcuts(self) -> None:
        binds = [("Right", self.next), ("N", self.next), ("Left", self.previous),
                 ("P", self.previous), ("A", self.accept), ("R", self.reject),
                 ("F", lambda: self.flag(not self._flagged())),
                 ("B", lambda: self.set_tool("brush")), ("E", lambda: self.set_tool("eraser")),
                 ("V", lambda: self.set_tool("none")),
                 ("[", lambda: self.size_spin.setValue(self.size_spin.value() - 1)),
                 ("]", lambda: self.size_spin.setValue(self.size_spin.value() + 1)),
                 (QKeySequence.Undo, self.undo), (QKeySequence.Redo, self.redo),
                 ("Ctrl+Y", self.redo), ("D", self._toggle_diff)]
        self.shortcuts: List[QShortcut] = []
        seen = set()
        for key, fn in binds:
            seq = QKeySequence(key)
            if seq.toString() in seen or seq.isEmpty():
                continue
            seen.add(seq.toString())
            sc = QShortcut(seq, self)
            sc.setContext(Qt.WidgetWithChildrenShortcut)
            sc.activated.connect(fn)
            self.shortcuts.append(sc)

    def _flagged(self) -> bool:
        return self.ds is not None and self.current >= 0 and self.ds.flagged(self.current)

    # -- dataset -----------------------------------------------------------------------------
    def _error(self, exc: Exception) -> None:
        log.warning("%s", exc)
        if self.isVisible():
            QMessageBox.warning(self, "Review", str(exc))

    def _browse_dataset(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Chips dataset (folder with manifest.json)")
        if d:
            self.open_dataset(d)

    def open_dataset(self, path: str) -> bool:
        """Open a chips dataset and continue at the sample the last review stopped at."""
        try:
            ds = ReviewDataset(path)
        except UserError as exc:
            self._error(exc)
            return False
        self.save_position()
        self.ds = ds
        self._pred_cache.clear()
        self.path_label.setText(str(ds.root))
        self.hint_label.setVisible(False)
        self.model.set_dataset(ds)
        self._update_counts()
        self.current = -1
        if len(ds):
            self.select(ds.last_index)
        else:
            self.view.set_sample(None, None)
        self.datasetOpened.emit(str(ds.root))
        return True

    def save_position(self) -> None:
        """Write the current sample into the manifest (reopening continues there)."""
        self._pos_timer.stop()
        if self.ds is not None and self.current >= 0:
            try:
                self.ds.set_last_index(self.current, save=True)
            except UserError as exc:
                log.warning("%s", exc)

    def closeEvent(self, ev) -> None:  # noqa: N802
        self.shutdown()
        super().closeEvent(ev)

    def _update_counts(self) -> None:
        if self.ds is None:
            self.counts_label.setText("")
            return
        c = self.ds.counts()
        parts = [f"<b>{c['total']}</b> samples"]
        for s in STATUSES:
            col = STATUS_COLOURS[s].name()
            parts.append(f"<span style='color:{col}'>●</span> {c[s]} {s}")
        parts.append(f"\u2691 {c['flagged']} flagged")
        self.counts_label.setText("<br>".join([parts[0], " · ".join(parts[1:3]),
                                               " · ".join(parts[3:])]))

    def _on_filter(self, status: str) -> None:
        keep = self.current
        self.model.set_filter(status)
        r = self.model.row_of_index(keep)
        if r >= 0:
            self.list.setCurrentIndex(self.model.index(r))
        elif self.model.rowCount():
            self.list.setCurrentIndex(self.model.index(0))

    def set_grid(self, on: bool) -> None:
        """Thumbnails in a grid (``True``) or a list with status dots."""
        self.model.set_thumbnails(on)
        if on:
            self.list.setViewMode(QListView.IconMode)
            self.list.setIconSize(QSize(96, 96))
            self.list.setGridSize(QSize(112, 128))
            self.list.setResizeMode(QListView.Adjust)
            self.list.setWordWrap(True)
        else:
            self.list.setViewMode(QListView.ListMode)
            self.list.setIconSize(QSize(12, 12))
            self.list.setGridSize(QSize())
        r = self.model.row_of_index(self.current)
        if r >= 0:
            self.list.setCurrentIndex(self.model.index(r))

    # -- navigation --------------------------------------------------------------------------
    def _on_current_row(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if cur.isValid():
            self._show(self.model.index_of_row(cur.row()))

    def select(self, i: int) -> None:
        """Show dataset index ``i`` (selects its row when the filter shows it)."""
        if self.ds is None or not 0 <= i < len(self.ds):
            return
        r = self.model.row_of_index(i)
        if r >= 0:
            self.list.setCurrentIndex(self.model.index(r))
            self.list.scrollTo(self.model.index(r))
        if self.current != i:
            self._show(i)

    def _show(self, i: int) -> None:
        if self.ds is None or i == self.current:
            return
        try:
            img = self.ds.read_image(i)
            mask = self.ds.read_mask(i)
        except UserError as exc:
            self._error(exc)
            return
        self.current = i
        self.editor = MaskEditor(mask)
        self.view.set_sample(img, self.editor)
        self.comment.setText(self.ds.comment(i))
        self.flag_btn.setChecked(self.ds.flagged(i))
        self.ds.set_last_index(i)
        self._pos_timer.start()  # the position is saved shortly after navigation stops
        self._refresh_diff()
        self._update_status()
        self._update_buttons()
        self.sampleChanged.emit(i)

    def _step(self, d: int) -> None:
        if self.ds is None or not self.model.rowCount():
            return
        r = self.model.row_of_index(self.current)
        if r < 0:
            r = 0 if d > 0 else self.model.rowCount() - 1
        else:
            r = min(max(r + d, 0), self.model.rowCount() - 1)
        self.select(self.model.index_of_row(r))

    def next(self) -> None:
        """Next sample of the current filter."""
        self._step(1)

    def previous(self) -> None:
        self._step(-1)

    def _update_status(self) -> None:
        if self.ds is None or self.current < 0:
            self.status_label.setText("")
            return
        i = self.current
        s = self.ds.status(i)
        col = STATUS_COLOURS[s].name()
        road = float((self.editor.mask > 0).mean()) * 100 if self.editor is not None else 0.0
        flag = " · \u2691 flagged" if self.ds.flagged(i) else ""
        self.status_label.setText(
            f"<b>{self.ds.name(i)}</b> ({i + 1}/{len(self.ds)}, "
            f"{self.ds.samples[i].get('split', '?')}) · "
            f"<span style='color:{col}'><b>{s}</b></span>{flag} · road {road:.1f} %")

    def _update_buttons(self) -> None:
        has = self.ds is not None and self.current >= 0
        for w in (self.accept_btn, self.reject_btn, self.flag_btn, self.prev_btn,
                  self.next_btn, self.comment):
            w.setEnabled(has)
        self.undo_btn.setEnabled(bool(self.editor and self.editor.can_undo))
        self.redo_btn.setEnabled(bool(self.editor and self.editor.can_redo))

    # -- review actions ----------------------------------------------------------------------
    def _set_status(self, status: str, advance: bool) -> None:
        if self.ds is None or self.current < 0:
            return
        i = self.current
        try:
            self.ds.set_status(i, status)
        except UserError as exc:
            self._error(exc)
            return
        self.model.sample_changed(i)
        self._update_counts()
        self._update_status()
        self.statusChanged.emit(i, status)
        if advance:
            self._after_review(i)

    def _after_review(self, i: int) -> None:
        # with a status filter the sample may have left the list: go to the row it held
        if self.model.filter not in (ALL, "flagged"):
            self.model.set_filter(self.model.filter)
            if self.model.rowCount():
                nxt = [j for j in self.model.rows if j > i]
                self.select(nxt[0] if nxt else self.model.rows[-1])
            return
        self.next()

    def accept(self, advance: bool = True) -> None:
        """Mark the current sample accepted (and go to the next one)."""
        self._set_status("accepted", advance)

    def reject(self, advance: bool = True) -> None:
        self._set_status("rejected", advance)

    def flag(self, on: bool = True, comment: Optional[str] = None) -> None:
        """Flag (or unflag) the current sample with the comment field's text."""
        if self.ds is None or self.current < 0:
            return
        if comment is not None:
            self.comment.setText(comment)
        try:
            self.ds.set_flag(self.current, on, self.comment.text())
        except UserError as exc:
            self._error(exc)
            return
        self.flag_btn.setChecked(on)
        self.model.sample_changed(self.current)
        self._update_counts()
        self._update_status()

    # -- editing -----------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        """``none`` (view), ``brush`` or ``eraser``."""
        self.view.tool = tool
        self.tool_buttons[tool].setChecked(True)
        self.view.setCursor(Qt.CrossCursor if tool != "none" else Qt.ArrowCursor)
        if tool != "none" and self.mode_combo.currentText() == "diff":
            self.mode_combo.setCurrentText("overlay")
        self.view.update()

    def _on_size(self, v: int) -> None:
        self.view.brush_px = int(v)
        self.view.update()

    def _persist_mask(self) -> None:
        if self.ds is None or self.editor is None or self.current < 0:
            return
        try:
            self.ds.write_mask(self.current, self.editor.mask)
        except UserError as exc:
            self._error(exc)
            return
        self.editor.mark_saved()
        self.model.sample_changed(self.current)
        self._update_counts()
        self._update_status()
        self._refresh_diff(recompute=False)
        self._update_buttons()
        self.statusChanged.emit(self.current, self.ds.status(self.current))

    def _on_stroke(self) -> None:
        self._persist_mask()

    def paint_stroke(self, points: Sequence[tuple], tool: str = "brush",
                     radius_px: Optional[int] = None) -> bool:
        """Paint a stroke through mask pixels ``[(x, y), ...]`` (what a mouse drag does)."""
        if self.editor is None:
            return False
        r = self.size_spin.value() if radius_px is None else int(radius_px)
        changed = self.editor.stroke(points, r, 255 if tool == "brush" else 0)
        self.view.mask_changed()
        if changed:
            self._persist_mask()
        return changed

    def undo(self) -> None:
        if self.editor is not None and self.editor.undo():
            self.view.mask_changed()
            self._persist_mask()

    def redo(self) -> None:
        if self.editor is not None and self.editor.redo():
            self.view.mask_changed()
            self._persist_mask()

    # -- view options ------------------------------------------------------------------------
    def _on_mode(self, mode: str) -> None:
        self.view.set_mode(mode)
        self.swipe_slider.setVisible(mode == "swipe")
        if mode == "diff":
            if self.view.tool != "none":
                self.set_tool("none")
            self._refresh_diff()

    def _toggle_diff(self) -> None:
        self.mode_combo.setCurrentText("overlay" if self.mode_combo.currentText() == "diff"
                                       else "diff")

    def _on_swipe(self, v: int) -> None:
        self.view.swipe = v / 100.0
        self.view.update()

    def _show_colour(self) -> None:
        pm = QPixmap(16, 16)
        pm.fill(self.view.colour)
        self.colour_btn.setIcon(QIcon(pm))

    def _pick_colour(self) -> None:
        c = QColorDialog.getColor(self.view.colour, self, "Mask colour")
        if c.isValid():
            self.set_colour(c)

    def set_colour(self, c: QColor) -> None:
        self.view.set_colour(c)
        self._show_colour()

    # -- checkpoints / diff ------------------------------------------------------------------
    def fill_checkpoints(self, extra: Sequence[str] = ()) -> None:
        """Fill the diff checkpoint list (``list_checkpoints`` of the configured folders plus
        ``extra`` files)."""
        keep = self.ckpt_combo.currentData()
        self.ckpt_combo.blockSignals(True)
        self.ckpt_combo.clear()
        self.ckpt_combo.addItem("(no checkpoint)", None)
        try:
            entries = list_checkpoints(self.checkpoint_dirs)
        except Exception as exc:  # noqa: BLE001  the panel works without checkpoints
            log.warning("cannot list checkpoints: %s", exc)
            entries = []
        paths = [e.path for e in entries] + [p for p in extra if p]
        for p in dict.fromkeys(paths):
            self.ckpt_combo.addItem(Path(p).name if Path(p).parent.name in ("models",)
                                    else f"{Path(p).parent.name}/{Path(p).name}", p)
            self.ckpt_combo.setItemData(self.ckpt_combo.count() - 1, p, Qt.ToolTipRole)
        j = self.ckpt_combo.findData(keep) if keep else 0
        self.ckpt_combo.setCurrentIndex(max(j, 0))
        self.ckpt_combo.blockSignals(False)

    def set_checkpoint(self, path: Optional[str]) -> None:
        """Use ``path`` for the diff view (added to the list when new); None = no diff."""
        if path is None:
            self.ckpt_combo.setCurrentIndex(0)
            return
        j = self.ckpt_combo.findData(str(path))
        if j < 0:
            self.ckpt_combo.addItem(f"{Path(path).parent.name}/{Path(path).name}", str(path))
            j = self.ckpt_combo.count() - 1
        if self.ckpt_combo.currentIndex() == j:
            self._on_checkpoint(j)
        else:
            self.ckpt_combo.setCurrentIndex(j)

    def _browse_checkpoint(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "",
                                           "Checkpoints (*.ckpt);;All files (*)")
        if f:
            self.set_checkpoint(f)

    def _on_checkpoint(self, _index: int) -> None:
        self._refresh_diff()
        if self.ckpt_combo.currentData() and self.mode_combo.currentText() != "diff":
            self.mode_combo.setCurrentText("diff")

    def _predictor(self, path: str) -> ChipPredictor:
        p = self._predictors.get(path)
        if p is None:
            p = ChipPredictor(path)
            self._predictors = {path: p}  # keep one network in memory
        return p

    def _predict_job(self, path: str, image: str) -> np.ndarray:
        return self._predictor(path).predict(image)

    def prediction(self, i: int, wait: bool = False) -> Optional[np.ndarray]:
        """The chosen checkpoint's ``(H, W)`` 0/255 prediction for sample ``i``, or None while
        it is computed off the UI thread (the diff appears when it is done); ``wait`` blocks
        until it is there."""
        path = self.ckpt_combo.currentData()
        if not path or self.ds is None:
            return None
        key = (path, i)
        if key in self._pred_cache:
            return self._pred_cache[key]
        if self._job is None or self._job[0] != key:
            if self._pool is None:
                self._pool = WorkerPool("review-diff", 1)
            job = Worker(self._predict_job, path, str(self.ds.image_path(i)), pool=self._pool,
                         owner=self, name="review-diff")
            job.returned.connect(lambda pred, key=key: self._on_prediction(key, pred))
            job.errored.connect(lambda exc, key=key: self._on_prediction_failed(key, exc))
            if self._job is not None:
                self._job[1].cancel()  # not started yet: skipped; running: its result is kept
            self._job = (key, job)
            self.diff_label.setText("predicting…")
            job.start()
        if wait:
            self._job[1].wait()
            return self._pred_cache.get(key)
        return None

    def _on_prediction(self, key: tuple, pred: np.ndarray) -> None:
        """A finished prediction: cached, and its diff shown when it is the sample shown."""
        if self._job is not None and self._job[0] == key:
            self._job = None
        self._pred_cache[key] = pred
        if len(self._pred_cache) > 64:
            self._pred_cache.popitem(last=False)
        if key == (self.ckpt_combo.currentData(), self.current):
            self._refresh_diff()

    def _on_prediction_failed(self, key: tuple, exc: BaseException) -> None:
        if self._job is not None and self._job[0] == key:
            self._job = None
        if isinstance(exc, UserError):
            self._error(exc)
        else:  # a broken checkpoint must not end the app
            log.error("prediction failed:\n%s", error_details(exc))
            self._error(UserError(f"{key[0]}: prediction failed ({exc})"))
        self.diff_label.setText("prediction failed")

    def _refresh_diff(self, recompute: bool = True) -> None:
        path = self.ckpt_combo.currentData()
        if not path or self.editor is None or self.current < 0:
            self.view.set_diff(None)
            self.diff_label.setText("")
            return
        if self.mode_combo.currentText() != "diff" and not recompute:
            return
        pred = self.prediction(self.current)
        if pred is None:
            self.view.set_diff(None)
            return
        codes = diff_codes(pred, self.editor.mask)
        st = diff_stats(codes)
        self.view.set_diff(codes)
        self.diff_label.setText(
            f"IoU {st['iou']:.2f} · <span style='color:#e62828'>FP {st['fp']}</span> · "
            f"<span style='color:#288cff'>FN {st['fn']}</span>")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m app.gui.dataset_review DATASET_DIR [--checkpoint C] [--screenshot PNG]``."""
    ap = argparse.ArgumentParser(prog="python -m app.gui.dataset_review")
    ap.add_argument("dataset", nargs="?", help="chips dataset folder (with manifest.json)")
    ap.add_argument("--checkpoint", help="checkpoint for the prediction-vs-label diff")
    ap.add_argument("--mode", choices=VIEW_MODES, default=None)
    ap.add_argument("--grid", action="store_true", help="thumbnail grid")
    ap.add_argument("--screenshot", help="save a PNG of the panel and exit")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = DatasetReviewPanel(dataset_dir=args.dataset)
    w.setWindowTitle("RoadSeg Studio — dataset review")
    w.resize(1000, 680)
    if args.grid:
        w.grid_btn.setChecked(True)
    if args.checkpoint:
        w.set_checkpoint(args.checkpoint)
    if args.mode:
        w.mode_combo.setCurrentText(args.mode)
    w.show()
    if args.screenshot:
        if args.checkpoint and w.current >= 0:
            w.prediction(w.current, wait=True)
        app.processEvents()
        w.grab().save(args.screenshot)
        return 0
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
