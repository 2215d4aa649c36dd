"""The main window: map canvas, layers, extraction, review, export, log and status bar.

All GIS and ML work goes through :mod:`app.service`; this module only wires widgets.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PySide6.QtCore import QRectF, QSize, QStandardPaths, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QIcon, QKeySequence
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QLabel, QMainWindow,
                               QMessageBox, QScrollArea, QTabWidget, QToolBar, QWidget)

from app.gui.dataset_review import DatasetReviewPanel
from app.gui.layers import (AoiLayer, EdgesLayer, Layer, LayerStack, RasterLayer, VectorLayer)
from app.gui.map_canvas import MapCanvas
from app.gui.panels.export_dialog import ExportDialog
from app.gui.panels.extraction_panel import ExtractionPanel
from app.gui.panels.layers_panel import LayersPanel
from app.gui.panels.network_review import NetworkReviewPanel
from app.gui.panels.progress_panel import ProgressPanel
from app.gui.training_panel import TrainingPanel
from app.gui.settings import AppSettings
from app.gui.worker import ExtractionRunner, Worker, error_details, error_text
from app.service import viewing
from app.service.errors import UserError

log = logging.getLogger(__name__)

#: a click this many screen pixels from a road edge still selects it
PICK_TOLERANCE_PX = 8.0
ICON_DIR = Path(__file__).resolve().parents[2] / "resources" / "icons"
RASTER_FILTER = "Rasters (*.tif *.tiff *.vrt *.img *.jp2);;All files (*)"
VECTOR_FILTER = "Vector files (*.gpkg *.shp *.geojson *.json *.fgb *.kml);;All files (*)"


def _icon(name: str) -> QIcon:
    p = ICON_DIR / f"{name}.svg"
    return QIcon(str(p)) if p.exists() else QIcon()


WORKSPACE_NAME = "RoadSeg Studio"


def default_workspace() -> str:
    """The per-user workspace: ``<documents>/RoadSeg Studio`` (QStandardPaths), else the
    application data folder, else ``~/RoadSeg Studio``. Never beside the input images."""
    for loc in (QStandardPaths.DocumentsLocation, QStandardPaths.AppDataLocation):
        d = QStandardPaths.writableLocation(loc)
        if d:
            return str(Path(d) / WORKSPACE_NAME) if loc == QStandardPaths.DocumentsLocation \
                else d
    return str(Path.home() / WORKSPACE_NAME)


def default_output_dir(image: str, workspace: Optional[str] = None) -> str:
    """``<workspace>/<image stem>_<hash of its absolute path>``: one folder per image (two
    images with the same name in different folders get different folders), never beside it."""
    p = Path(image).expanduser().resolve()
    tag = hashlib.sha1(str(p).encode("utf-8")).hexdigest()[:6]
    return str(Path(workspace or default_workspace()) / f"{p.stem}_{tag}")


#: metrics shown when a new checkpoint is compared with the current one (higher is better)
COMPARE_METRICS = ("miou", "iou", "f1", "precision", "recall")


def checkpoint_comparison(new: str, new_meta: Dict[str, Any], cur: Optional[str],
                          cur_meta: Optional[Dict[str, Any]]) -> str:
    """Rich text: a finished run's checkpoint beside the current extraction model, metric by
    metric (a worse value of the new one in red)."""
    nm = new_meta.get("metrics") or {}
    cm = (cur_meta or {}).get("metrics") or {}
    keys = [k for k in COMPARE_METRICS if isinstance(nm.get(k), (int, float))
            or isinstance(cm.get(k), (int, float))]

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, (int, float)) else "–"

    rows = []
    for k in keys:
        a, b = nm.get(k), cm.get(k)
        worse = isinstance(a, (int, float)) and isinstance(b, (int, float)) and a < b
        style = " style='color:#d73a49'" if worse else ""
        rows.append(f"<tr><td>{k}</td><td align=right{style}><b>{fmt(a)}</b></td>"
                    f"<td align=right>{fmt(b)}</td></tr>")
    head = (f"<tr><th></th><th>new: {Path(new).parent.name}/{Path(new).name}<br>"
            f"{new_meta.get('model')}, epoch {new_meta.get('epoch', '?')}</th>"
            f"<th>current: {Path(cur).name if cur else 'none'}<br>"
            f"{(cur_meta or {}).get('model', '')}</th></tr>")
    table = (f"<table cellspacing=6>{head}{''.join(rows)}</table>" if rows else
             "<p>Neither checkpoint records validation metrics.</p>")
    return ("<p>The training run finished. Its best checkpoint is in the checkpoint list; "
            "extraction keeps using the current model unless you switch.</p>" + table
            + "<p>Use the new checkpoint for extraction?</p>")


def _scrolled(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.NoFrame)
    return area


def _degenerate_note(d: Any, html: bool = True) -> str:
    """The summary's ``degenerate_mask`` (parts of the mask that are noise or solid road and were
    not traced) as one warning line; empty without one."""
    if not d:
        return ""
    text = f"{100 * d.get('fraction_of_rows', 0):.0f} % of the mask is {d.get('reason', '')}"
    return f"<br><span style='color:#b35900'>Warning: {text}</span>" if html else text


class MainWindow(QMainWindow):
    """RoadSeg Studio's main window.

    Signals:
        closed(): the window really closed (after any running extraction stopped).
    """

    closed = Signal()
    #: main-area tabs
    TAB_MAP, TAB_DATASET, TAB_TRAINING = 0, 1, 2

    def __init__(self, settings: Optional[AppSettings] = None) -> None:
        super().__init__()
        self.settings = settings or AppSettings()
        self.setWindowTitle("RoadSeg Studio")
        self.resize(1500, 950)
        self.frame: Optional[viewing.GeoFrame] = None
        self.image_path: Optional[str] = None
        self.image_layer: Optional[RasterLayer] = None
        self.aoi_layer: Optional[AoiLayer] = None
        self.edit: Optional[viewing.NetworkEdit] = None
        self.edges_layer: Optional[EdgesLayer] = None
        self.nodes_layer: Optional[VectorLayer] = None
        self.result: Any = None
        self.result_layers: List[Layer] = []
        self.last_error: Optional[str] = None
        self.last_export: List[str] = []
        self._tmpdir = tempfile.mkdtemp(prefix="roadseg-gui-")
        self._aoi_count = 0
        self._aoi_source: Optional[str] = None  # the user's AOI file (None: drawn on the map)
        self._auto_out_dir = ""
        self._closing = False          # close requested while an extraction was stopping
        self.edits_unsaved = False     # review edits not exported yet
        self.checkpoint_offer: Optional[QMessageBox] = None
        self.chips_job: Any = None
        self.workspace = self.settings.value("workspace/dir", "", str) or default_workspace()

        self.canvas = MapCanvas()
        self.canvas.setObjectName("mapCanvas")
        self.stack = LayerStack(self.canvas.scene())
        self.runner = ExtractionRunner(self)

        self.layers_panel = LayersPanel(self.stack)
        self.extraction_panel = ExtractionPanel(self.settings)
        self.extraction_panel.set_workspace(self.workspace)
        self.network_panel = NetworkReviewPanel()
        self.dataset_panel = DatasetReviewPanel(self)
        self.training_panel = TrainingPanel(self, on_checkpoint_ready=self._on_trained_checkpoint)
        self.training_panel.set_default_output(str(Path(self.workspace) / "training" / "run"))
        self.progress_panel = ProgressPanel()
        logging.getLogger().addHandler(self.progress_panel.handler)
        if logging.getLogger().level > logging.INFO or logging.getLogger().level == 0:
            logging.getLogger().setLevel(logging.INFO)

        self._build_docks()
        self._build_actions()
        self._build_status_bar()
        self._connect()
        self._restore_geometry()
        self.set_tool("pan")
        self._update_actions()

    # ------------------------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------------------------
    def _build_docks(self) -> None:
        def dock(title: str, widget: QWidget, area, name: str) -> QDockWidget:
            d = QDockWidget(title, self)
            d.setObjectName(name)
            d.setWidget(widget)
            d.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable
                          | QDockWidget.DockWidgetClosable)
            self.addDockWidget(area, d)
            return d

        self.layers_dock = dock("Layers", self.layers_panel, Qt.LeftDockWidgetArea, "layersDock")
        self.tabs = QTabWidget()
        self.tabs.addTab(self.extraction_panel, "Extraction")
        self.tabs.addTab(self.network_panel, "Review")
        self.params_dock = dock("Parameters", self.tabs, Qt.RightDockWidgetArea, "paramsDock")
        self.log_dock = dock("Progress and log", self.progress_panel, Qt.BottomDockWidgetArea,
                             "logDock")
        self.params_dock.setMinimumWidth(330)
        # dataset labelling review and training get the main area (a list, a large view, a
        # form beside live curves): tabs beside the map instead of a narrow dock
        self.main_tabs = QTabWidget()
        self.main_tabs.setObjectName("mainTabs")
        self.main_tabs.setDocumentMode(True)
        self.main_tabs.addTab(self.canvas, "Map")
        self.main_tabs.addTab(_scrolled(self.dataset_panel), "Dataset review")
        self.main_tabs.addTab(_scrolled(self.training_panel), "Training")
        self.setCentralWidget(self.main_tabs)
        self.resizeDocks([self.layers_dock, self.params_dock], [250, 350], Qt.Horizontal)
        self.resizeDocks([self.log_dock], [170], Qt.Vertical)

    def _on_trained_checkpoint(self, path: str) -> None:
        """A finished training run's best checkpoint: listed for extraction (not selected) and
        offered beside the current model with both models' metrics; the extraction model
        changes only when the analyst says so."""
        from app.service.checkpoints import describe_checkpoint

        try:
            self.extraction_panel.add_checkpoint(path, select=False)
            new_meta = describe_checkpoint(path)
        except UserError as exc:
            log.warning("%s", exc)
            return
        self.dataset_panel.set_checkpoint(path)
        cur = self.extraction_panel.checkpoint_path()
        cur_meta = self.extraction_panel.checkpoint_meta(cur) if cur else None
        log.info("training finished: %s is available for extraction (the current model stays "
                 "%s until you choose it)", path, Path(cur).name if cur else "none")
        if cur and os.path.abspath(cur) == os.path.abspath(path):
            return
        box = QMessageBox(QMessageBox.Question, "New checkpoint",
                          checkpoint_comparison(path, new_meta, cur, cur_meta),
                          QMessageBox.NoButton, self)
        box.setObjectName("checkpointOffer")
        box.setTextFormat(Qt.RichText)
        use = box.addButton("Use the new checkpoint", QMessageBox.AcceptRole)
        use.setObjectName("useNewCheckpoint")
        keep = box.addButton("Keep the current model", QMessageBox.RejectRole)
        keep.setObjectName("keepCurrentCheckpoint")
        box.setDefaultButton(keep)
        box.setAttribute(Qt.WA_DeleteOnClose)

        def done(_result: int, b=box, use=use, path=path) -> None:
            if b.clickedButton() is use:
                self.extraction_panel.select_checkpoint(path)
                log.info("extraction now uses %s", path)
            self.checkpoint_offer = None

        box.finished.connect(done)
        self.checkpoint_offer = box
        box.open()

    def _action(self, text: str, slot, shortcut: Any = None, icon: str = "",
                tip: str = "", checkable: bool = False) -> QAction:
        a = QAction(_icon(icon), text, self)
        if shortcut:
            a.setShortcut(QKeySequence(shortcut))
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.setCheckable(checkable)
        a.triggered.connect(slot)
        return a

    def _build_actions(self) -> None:
        A = self._action
        self.act_open = A("&Open image…", self.open_image_dialog, QKeySequence.Open, "open",
                          "Open a GeoTIFF")
        self.act_add_vector = A("Add &vector layer…", self.open_vector_dialog, "Ctrl+Shift+V",
                                "vector", "Add a vector file (any CRS)")
        self.act_load_aoi = A("Load &AOI from file…", self.load_aoi_dialog, None, "aoi_load",
                              "Load an AOI polygon file")
        self.act_export = A("&Export…", self.export_dialog, "Ctrl+E", "export",
                            "Export the reviewed network and result rasters")
        self.act_quit = A("&Quit", self.close, QKeySequence.Quit)
        self.act_full = A("Zoom to &full extent", self.canvas.zoom_full, "Ctrl+0", "zoom_full",
                          "Zoom to the whole image")
        self.act_zoom_in = A("Zoom &in", lambda: self.canvas.zoom(1.5), QKeySequence.ZoomIn,
                             "zoom_in", "Zoom in")
        self.act_zoom_out = A("Zoom &out", lambda: self.canvas.zoom(1 / 1.5),
                              QKeySequence.ZoomOut, "zoom_out", "Zoom out")
        self.tool_group = QActionGroup(self)
        self.tool_actions: Dict[str, QAction] = {}
        for tool, text, icon, key, tip in (
                ("pan", "&Pan", "pan", "P", "Pan (drag) and zoom (wheel)"),
                ("select", "&Select edges", "select", "S",
                 "Click a road edge, or drag a box around several, to review them"),
                ("aoi_rect", "AOI &rectangle", "aoi_rect", "R", "Drag a rectangular AOI"),
                ("aoi_polygon", "AOI p&olygon", "aoi_polygon", "G",
                 "Click the AOI vertices; double-click, right-click or Enter to finish")):
            a = A(text, lambda _=False, t=tool: self.set_tool(t), key, icon, tip, True)
            self.tool_group.addAction(a)
            self.tool_actions[tool] = a
        self.act_edit_aoi = A("&Edit AOI vertices", self.toggle_aoi_edit, None, "aoi_edit",
                              "Drag the AOI vertices", True)
        self.act_clear_aoi = A("&Clear AOI", self.clear_aoi, None, "aoi_clear", "Remove the AOI")
        self.act_run = A("E&xtract roads", self.start_extraction, "F5", "run",
                         "Run the road extraction")
        self.act_cancel = A("&Cancel extraction", self.cancel_extraction, "Esc", "cancel",
                            "Stop the running extraction")
        self.act_delete = A("&Delete selected edges", self.delete_selected, QKeySequence.Delete,
                            "delete", "Delete the selected road edges")
        self.act_keep = A("&Keep selected edges", self.keep_selected, "K", "keep",
                          "Mark the selected edges as reviewed")
        self.act_undo = A("&Undo", self.undo, QKeySequence.Undo, "undo", "Undo the last edit")
        self.act_about = A("&About", self._about)
        self.act_build_chips = A("&Build training chips from this image…",
                                 self.build_chips_dialog, None, "",
                                 "Build a chips dataset from this image and its reviewed roads "
                                 "(kept edges buffered by their width, or the road mask)")
        self.tab_actions = []
        for k, name in enumerate(("&Map", "&Dataset review", "&Training")):
            a = A(name, lambda _=False, k=k: self.main_tabs.setCurrentIndex(k), f"Ctrl+{k + 1}")
            self.tab_actions.append(a)

        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addAction(self.act_open)
        self.recent_menu = m.addMenu("Open &recent")
        m.addAction(self.act_add_vector)
        m.addAction(self.act_load_aoi)
        m.addSeparator()
        m.addAction(self.act_export)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Edit")
        for a in (self.act_undo, self.act_delete, self.act_keep):
            m.addAction(a)
        m = mb.addMenu("&View")
        for a in (self.act_full, self.act_zoom_in, self.act_zoom_out):
            m.addAction(a)
        m.addSeparator()
        for a in self.tab_actions:
            m.addAction(a)
        m.addSeparator()
        for d in (self.layers_dock, self.params_dock, self.log_dock):
            m.addAction(d.toggleViewAction())
        m = mb.addMenu("&Tools")
        for a in self.tool_actions.values():
            m.addAction(a)
        m.addSeparator()
        m.addAction(self.act_edit_aoi)
        m.addAction(self.act_clear_aoi)
        m = mb.addMenu("&Run")
        m.addAction(self.act_run)
        m.addAction(self.act_cancel)
        m = mb.addMenu("&Dataset")
        m.addAction(self.act_build_chips)
        m = mb.addMenu("&Help")
        m.addAction(self.act_about)
        self._fill_recent_menu()

        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        icons = not _icon("open").isNull()
        tb.setToolButtonStyle(Qt.ToolButtonIconOnly if icons else Qt.ToolButtonTextOnly)
        tb.setIconSize(QSize(22, 22))
        self.addToolBar(tb)
        for a in (self.act_open, self.act_add_vector, None, self.act_full, self.act_zoom_in,
                  self.act_zoom_out, None, *self.tool_actions.values(), self.act_edit_aoi,
                  self.act_clear_aoi, None, self.act_run, self.act_cancel, None,
                  self.act_delete, self.act_keep, self.act_undo, None, self.act_export):
            if a is None:
                tb.addSeparator()
            else:
                tb.addAction(a)
        for a in (self.act_run, self.act_cancel, self.act_export):
            btn = tb.widgetForAction(a)
            if btn is not None and icons:
                btn.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.toolbar = tb

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.coords_label = QLabel("")
        self.coords_label.setObjectName("coordsLabel")
        self.lonlat_label = QLabel("")
        self.lonlat_label.setObjectName("lonlatLabel")
        self.scale_label = QLabel("")
        self.scale_label.setObjectName("scaleLabel")
        self.crs_label = QLabel("no image")
        for w, width in ((self.coords_label, 330), (self.lonlat_label, 220),
                         (self.scale_label, 110), (self.crs_label, 110)):
            w.setMinimumWidth(width)
            sb.addPermanentWidget(w)

    def _connect(self) -> None:
        c = self.canvas
        c.cursorMoved.connect(self._on_cursor)
        c.viewChanged.connect(self._on_view_changed)
        c.aoiDrawn.connect(self._on_aoi_drawn)
        c.edgeClicked.connect(self.select_edge_at)
        c.edgesBoxed.connect(self.select_edges_in)
        c.filesDropped.connect(self._on_dropped)
        self.layers_panel.zoomToLayer.connect(self._zoom_to_layer)
        ep = self.extraction_panel
        ep.runRequested.connect(self.start_extraction)
        ep.cancelRequested.connect(self.cancel_extraction)
        self.progress_panel.cancelRequested.connect(self.cancel_extraction)
        self.runner.progress.connect(self.progress_panel.set_progress)
        self.runner.finished.connect(self._on_finished)
        rp = self.network_panel
        rp.deleteRequested.connect(self.delete_selected)
        rp.keepRequested.connect(self.keep_selected)
        rp.undoRequested.connect(self.undo)
        self.main_tabs.currentChanged.connect(self._on_main_tab)
        self.extraction_panel.workspaceChanged.connect(self.set_workspace)
        self.dataset_panel.datasetOpened.connect(self.training_panel.use_dataset)
        self.dataset_panel.buildChipsRequested.connect(self.build_chips_dialog)
        self._on_main_tab(self.main_tabs.currentIndex())

    def _on_main_tab(self, index: int) -> None:
        """Keyboard shortcuts follow the visible tab: the map's tool keys (P pan, R AOI
        rectangle, ...) and edit keys act only on the Map tab; the dataset review's keys (R
        reject, P previous, A accept, ...) only on its own tab, so no key is ambiguous."""
        if not hasattr(self, "_map_keys"):
            self._map_keys = [(a, a.shortcut()) for a in (
                *self.tool_actions.values(), self.act_delete, self.act_keep, self.act_undo)]
        on_map = index == self.TAB_MAP
        for a, key in self._map_keys:
            a.setShortcut(key if on_map else QKeySequence())
        # the map's side panels make way for the dataset review and training views (their
        # visibility comes back with the Map tab)
        if not hasattr(self, "_map_docks"):
            self._map_docks: Dict[str, bool] = {}
        for d in (self.layers_dock, self.params_dock):
            if on_map:
                if self._map_docks.pop(d.objectName(), False):
                    d.show()
            elif d.objectName() not in self._map_docks:
                self._map_docks[d.objectName()] = d.isVisible()
                d.hide()
        self.dataset_panel.set_shortcuts_active(index == self.TAB_DATASET)
        if index == self.TAB_DATASET:
            self.dataset_panel.list.setFocus(Qt.OtherFocusReason)
        elif index == self.TAB_MAP:
            self.canvas.setFocus(Qt.OtherFocusReason)

    def show_tab(self, index: int) -> None:
        self.main_tabs.setCurrentIndex(index)

    # ------------------------------------------------------------------------------------
    # messages
    # ------------------------------------------------------------------------------------
    def show_error(self, title: str, message: str, details: Optional[str] = None) -> None:
        """A readable, non-blocking error dialog (and the log); only the log while the window
        is closing (no dialog outlives the window)."""
        self.last_error = message
        log.error("%s: %s", title, message)
        if self._closing or not self.isVisible():
            return
        box = QMessageBox(QMessageBox.Critical, title, message, QMessageBox.Ok, self)
        if details:
            box.setDetailedText(details)
        box.setAttribute(Qt.WA_DeleteOnClose)
        box.setObjectName("errorDialog")
        box.open()

    def _guard(self, title: str, fn, *args, **kw) -> Any:
        """Run ``fn``; user errors and unexpected exceptions become dialogs."""
        try:
            return fn(*args, **kw)
        except UserError as exc:
            self.show_error(title, str(exc))
        except Exception as exc:  # noqa: BLE001 - shown, logged, never a crash
            self.show_error(title, f"{type(exc).__name__}: {exc}", traceback.format_exc())
        return None

    def _about(self) -> None:
        QMessageBox.about(self, "About RoadSeg Studio",
                          "RoadSeg Studio: road networks from satellite and aerial GeoTIFFs.")

    # ------------------------------------------------------------------------------------
    # files
    # ------------------------------------------------------------------------------------
    def confirm_discard(self, what: str) -> bool:
        """True when the review edits may go: none unsaved, or the analyst exported them or
        chose to discard them (``what`` says what would discard them)."""
        if not self.edits_unsaved or self.edit is None:
            return True
        s = self.edit.summary()
        box = QMessageBox(QMessageBox.Warning, "Unsaved review edits",
                          f"{what} discards your review of this road network ({s['deleted']} "
                          f"deleted, {s['kept']} kept edge(s), not exported).",
                          QMessageBox.NoButton, self)
        box.setObjectName("discardDialog")
        export = box.addButton("Export…", QMessageBox.AcceptRole)
        discard = box.addButton("Discard edits", QMessageBox.DestructiveRole)
        cancel = box.addButton(QMessageBox.Cancel)
        export.setObjectName("exportEdits")
        cancel.setObjectName("cancelEdits")
        discard.setObjectName("discardEdits")
        box.setDefaultButton(cancel)
        box.exec()
        clicked = box.clickedButton()
        if clicked is discard:
            log.info("review edits discarded")
            self.edits_unsaved = False
            return True
        if clicked is export:
            self.export_dialog()
            return not self.edits_unsaved
        return False

    def open_image_dialog(self) -> None:
        if not self.confirm_discard("Opening another image"):
            return
        p, _ = QFileDialog.getOpenFileName(self, "Open image", self.settings.last_dir("open"),
                                           RASTER_FILTER)
        if p:
            self.open_image(p)

    def open_recent(self, path: str) -> bool:
        """File ▸ Open recent: the same as File ▸ Open (a raster starts a new session on it,
        never an extra layer over the current image)."""
        if viewing.is_vector_file(path):
            return self.open_vector(path)
        return self.open_image(path)

    def open_vector_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Add vector layer",
                                           self.settings.last_dir("vector"), VECTOR_FILTER)
        if p:
            self.settings.set_last_dir("vector", p)
            self.open_vector(p)

    def load_aoi_dialog(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Load AOI", self.settings.last_dir("vector"),
                                           VECTOR_FILTER)
        if p:
            self.settings.set_last_dir("vector", p)
            self.load_aoi(p)

    def open_path(self, path: str) -> bool:
        """Open a vector file as layers, or a raster: as an extra layer when it overlaps the
        current image, otherwise as the new image."""
        if viewing.is_vector_file(path):
            return self.open_vector(path)
        if self.frame is not None and self.image_path is not None and self._overlaps(path):
            return self.add_raster(path) is not None
        return self.open_image(path)

    def _overlaps(self, path: str) -> bool:
        """True when raster ``path`` overlaps the current image (then it is added as a layer;
        otherwise it is opened as the new image)."""
        try:
            x0, y0, x1, y1 = viewing.open_raster_source(path, self.frame).frame_rect()
        except UserError:
            return False
        return x1 > 0 and y1 > 0 and x0 < self.frame.width and y0 < self.frame.height

    def _on_dropped(self, paths: List[str]) -> None:
        for p in paths:
            self.open_path(p)

    def open_image(self, path: str) -> bool:
        """Start a new session on image ``path`` (clears the layers; asks first when review
        edits are not exported)."""
        if not self.confirm_discard(f"Opening {Path(path).name}"):
            return False
        return bool(self._guard("Cannot open image", self._open_image, str(path)))

    def _open_image(self, path: str) -> bool:
        if self.runner.is_running():
            raise UserError("an extraction is running: cancel it before opening another image")
        frame = viewing.open_frame(path)
        src = viewing.open_raster_source(path, frame)
        self._reset()
        self.frame = frame
        self.image_path = path
        self.canvas.set_extent(frame.width, frame.height)
        self.canvas.metres_per_unit = (sum(frame.resolution_m) / 2.0
                                       if frame.resolution_m else None)
        self.image_layer = RasterLayer(Path(path).name, self.canvas.scene(), src, "rgb",
                                       stretch="percentile")
        self.stack.add(self.image_layer)
        self.aoi_layer = AoiLayer(self.canvas.scene())
        self.stack.add(self.aoi_layer)
        self.crs_label.setText(frame.crs if frame.crs and len(frame.crs) < 20 else
                               ("custom CRS" if frame.crs else "no CRS"))
        self.setWindowTitle(f"RoadSeg Studio — {Path(path).name}")
        self.settings.add_recent_file(path)
        self.settings.set_last_dir("open", path)
        self._fill_recent_menu()
        self._follow_image_out_dir()
        QTimer.singleShot(0, self.canvas.zoom_full)
        self.canvas.zoom_full()
        log.info("opened %s (%d x %d px, %s)", path, frame.width, frame.height,
                 frame.crs or "no CRS")
        self._update_actions()
        return True

    def _follow_image_out_dir(self) -> None:
        """The output folder follows the image (in the workspace) unless the user chose one."""
        od = self.extraction_panel.out_dir
        if self.image_path and (not od.text() or od.text() == self._auto_out_dir):
            self._auto_out_dir = default_output_dir(self.image_path, self.workspace)
            od.setText(self._auto_out_dir)

    def set_workspace(self, path: str) -> None:
        """Use ``path`` as the workspace (remembered); automatic output folders move there."""
        self.workspace = str(path)
        self.settings.set_value("workspace/dir", self.workspace)
        self.extraction_panel.set_workspace(self.workspace)
        self._follow_image_out_dir()
        log.info("workspace: %s", self.workspace)

    def _reset(self) -> None:
        self.stack.clear()
        self.image_layer = self.aoi_layer = None
        self.edges_layer = self.nodes_layer = None
        self.edit = None
        self.edits_unsaved = False
        self._aoi_source = None
        self.coords_label.setText("")
        self.lonlat_label.setText("")
        self.scale_label.setText("")
        self.result = None
        self.result_layers = []
        self.network_panel.set_summary(None)
        self.network_panel.set_selection({}, False)
        self.extraction_panel.summary.setText("")

    def add_raster(self, path: str, render: str = "rgb", name: Optional[str] = None) \
            -> Optional[RasterLayer]:
        """Add a raster layer on the current frame (reprojected on the fly if needed)."""
        def do() -> RasterLayer:
            if self.frame is None:
                raise UserError("open an image first")
            src = viewing.open_raster_source(path, self.frame)
            stretch = "none" if all(d == "uint8" for d in src.dtypes) else "percentile"
            # probabilities of 2-class models: band 2 is the road class (as in the service)
            bands = None if render == "rgb" else ((2,) if render == "heat" and src.count >= 2
                                                  else (1,))
            layer = RasterLayer(name or Path(path).name, self.canvas.scene(), src, render,
                                bands=bands, stretch=stretch)
            self.stack.add(layer)
            layer.update_view(self.canvas.visible_rect(), self._viewport_px())
            return layer
        return self._guard("Cannot add raster", do)

    def open_vector(self, path: str) -> bool:
        """Add a vector file (all layers, reprojected to the image CRS); a road network file
        (``edges`` + ``nodes``) is opened for review."""
        return bool(self._guard("Cannot open vector file", self._open_vector, str(path)))

    def _open_vector(self, path: str) -> bool:
        layers = viewing.load_vector_layers(path, self.frame.crs if self.frame else None)
        if "edges" in layers and not self.confirm_discard(f"Opening {Path(path).name}"):
            return False
        if self.frame is None:
            import shapely

            first = next(iter(layers.values()))
            bounds = shapely.total_bounds(np.concatenate(
                [gdf.geometry.values for gdf in layers.values()])) if len(layers) > 1 \
                else first.total_bounds
            crs = first.crs.to_string() if first.crs is not None else None
            self._reset()
            self.frame = viewing.frame_for_vectors(bounds, crs)
            self.canvas.set_extent(self.frame.width, self.frame.height)
            res = self.frame.resolution_m
            self.canvas.metres_per_unit = sum(res) / 2.0 if res else None
            self.aoi_layer = AoiLayer(self.canvas.scene())
            self.stack.add(self.aoi_layer)
            QTimer.singleShot(0, self.canvas.zoom_full)
        if "edges" in layers:
            edges, nodes = viewing.load_network(path, self.frame.crs)
            self._set_network(edges, nodes, Path(path).stem)
            self.edits_unsaved = False
        else:
            colours = [QColor(0, 200, 255), QColor(120, 255, 120), QColor(255, 140, 0)]
            for i, (name, gdf) in enumerate(layers.items()):
                self.stack.add(VectorLayer(name, self.canvas.scene(), gdf, self.frame,
                                           colours[i % len(colours)]))
        self.settings.add_recent_file(path)
        self._fill_recent_menu()
        log.info("added %s (%s)", path, ", ".join(f"{k}: {len(v)}" for k, v in layers.items()))
        self._update_actions()
        return True

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        files = self.settings.recent_files()
        for p in files:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _=False, p=p: self.open_recent(p))
        if files:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear list", self._clear_recent)
        self.recent_menu.setEnabled(bool(files))

    def _clear_recent(self) -> None:
        self.settings.clear_recent_files()
        self._fill_recent_menu()

    # ------------------------------------------------------------------------------------
    # view
    # ------------------------------------------------------------------------------------
    def _viewport_px(self):
        vp = self.canvas.viewport()
        return vp.width(), vp.height()

    def _on_view_changed(self) -> None:
        rect = self.canvas.visible_rect()
        for layer in self.stack.layers:
            layer.update_view(rect, self._viewport_px())
        self._update_scale()

    def _update_scale(self) -> None:
        if self.frame is None:
            self.scale_label.setText("")
            return
        s = self.canvas.current_scale()
        den = viewing.scale_denominator(self.frame, 1.0 / s if s else 1.0,
                                        self.canvas.logicalDpiX() or 96)
        self.scale_label.setText(f"1:{den:,.0f}" if den else f"{s * 100:.0f} %")

    def _on_cursor(self, x: float, y: float) -> None:
        f = self.frame
        if f is None:
            return
        mx, my = f.pixel_to_map(x, y)
        if f.crs is None:
            self.coords_label.setText(f"col {x:.1f}  row {y:.1f}")
            self.lonlat_label.setText("")
            return
        if f.map_units == "°":
            self.coords_label.setText(f"x {mx:.6f}  y {my:.6f}  (px {x:.0f}, {y:.0f})")
        else:
            self.coords_label.setText(f"E {mx:,.1f}  N {my:,.1f}  (px {x:.0f}, {y:.0f})")
        ll = f.pixel_to_lonlat(x, y)
        if ll is not None:
            lon, lat = ll
            self.lonlat_label.setText(f"{abs(lat):.6f}°{'N' if lat >= 0 else 'S'}  "
                                      f"{abs(lon):.6f}°{'E' if lon >= 0 else 'W'}")

    def _zoom_to_layer(self, layer: Optional[Layer]) -> None:
        if layer is None:
            return
        if isinstance(layer, RasterLayer):
            x0, y0, x1, y1 = layer.source.frame_rect()
            self.canvas.zoom_to(QRectF(x0, y0, x1 - x0, y1 - y0))
        else:
            r = layer.extent()
            if r is not None:
                self.canvas.zoom_to(r.adjusted(-5, -5, 5, 5))

    def set_tool(self, tool: str) -> None:
        self.canvas.set_tool(tool)
        a = self.tool_actions.get(tool)
        if a is not None and not a.isChecked():
            a.setChecked(True)
        if tool == "select":
            self.tabs.setCurrentWidget(self.network_panel)

    # ------------------------------------------------------------------------------------
    # AOI
    # ------------------------------------------------------------------------------------
    def _on_aoi_drawn(self, polygon: np.ndarray) -> None:
        self._guard("Cannot use this AOI", self._set_aoi, [polygon], None)

    def _check_aoi(self, polygons: Sequence[np.ndarray], source: Optional[str]) -> None:
        """UserError when no polygon overlaps the image (``source``: the user's AOI file)."""
        from shapely.geometry import Polygon, box

        if self.frame is None or self.image_layer is None:
            return  # a vector-only session has no image to fall outside of
        img = box(0, 0, self.frame.width, self.frame.height)
        for ring in polygons:
            ring = np.asarray(ring, np.float64)
            if len(ring) >= 3 and Polygon(ring).buffer(0).intersection(img).area > 0:
                return
        what = f"{source}: the AOI" if source else "The AOI"
        raise UserError(f"{what} lies entirely outside the image "
                        f"{Path(self.image_path or '').name}")

    def set_aoi(self, polygons: Sequence[np.ndarray]) -> None:
        """Replace the AOI by ``polygons`` (frame pixels, each ``(N, 2)``); an AOI outside the
        image is refused with a dialog."""
        self._guard("Cannot use this AOI", self._set_aoi, polygons, None)

    def _set_aoi(self, polygons: Sequence[np.ndarray], source: Optional[str]) -> None:
        if self.aoi_layer is None:
            raise UserError("open an image before drawing an AOI")
        self._check_aoi(polygons, source)
        self._aoi_source = source
        self.aoi_layer.set_polygons(polygons)
        if self.act_edit_aoi.isChecked():
            self.aoi_layer.set_editing(True)
        self.extraction_panel.use_aoi.setChecked(True)
        a = self.aoi_layer.polygons[0] if self.aoi_layer.polygons else None
        if a is not None:
            log.info("AOI set: %d polygon(s), bounding box %.0f x %.0f px",
                     len(self.aoi_layer.polygons), np.ptp(a[:, 0]), np.ptp(a[:, 1]))
        self._update_actions()

    def load_aoi(self, path: str) -> bool:
        def do() -> bool:
            if self.frame is None:
                raise UserError("open an image before loading an AOI")
            self._set_aoi(viewing.read_aoi_pixels(path, self.frame), str(path))
            return True
        return bool(self._guard("Cannot load AOI", do))

    def clear_aoi(self) -> None:
        if self.aoi_layer is not None:
            self.aoi_layer.clear()
        self._aoi_source = None
        self._update_actions()

    def toggle_aoi_edit(self, on: bool) -> None:
        if self.aoi_layer is not None:
            self.aoi_layer.set_editing(bool(on))
            if on:
                self.set_tool("pan")

    def aoi_file(self) -> Optional[str]:
        """The current AOI written to a temporary GeoPackage (None without an AOI)."""
        if self.aoi_layer is None or self.aoi_layer.is_empty() or self.frame is None:
            return None
        self._aoi_count += 1
        return viewing.write_aoi(self.aoi_layer.polygons, self.frame,
                                 os.path.join(self._tmpdir, f"aoi_{self._aoi_count}.gpkg"))

    # ------------------------------------------------------------------------------------
    # extraction
    # ------------------------------------------------------------------------------------
    def start_extraction(self) -> bool:
        """Build the request from the panel and start the worker thread."""
        return bool(self._guard("Cannot start the extraction", self._start_extraction))

    def _start_extraction(self) -> bool:
        if self.runner.is_running():
            raise UserError("an extraction is already running")
        if self.image_path is None:
            raise UserError("open an image first (File ▸ Open image)")
        if not self.confirm_discard("A new extraction"):
            return False
        use_aoi = self.extraction_panel.use_aoi.isChecked()
        if use_aoi and self.aoi_layer is not None and not self.aoi_layer.is_empty():
            self._check_aoi(self.aoi_layer.polygons, self._aoi_source)
        aoi = self.aoi_file() if use_aoi else None
        req = self.extraction_panel.build_request(self.image_path, aoi)
        if Path(req.out_dir).parent == Path(self.workspace):
            # the workspace is ours: make it on first use (a new user's does not exist yet)
            Path(self.workspace).mkdir(parents=True, exist_ok=True)
        log.info("extracting roads from %s with %s (tile %s px, overlap %s px, TTA %s, "
                 "threshold %.2f)%s", Path(req.image).name, Path(req.checkpoint).name,
                 req.tile_size_px, req.overlap_px, req.tta, req.threshold,
                 " inside the AOI" if aoi else "")
        self.progress_panel.start()
        self.extraction_panel.set_running(True)
        self.runner.start(req)
        self._update_actions()
        return True

    def cancel_extraction(self) -> None:
        if self.runner.is_running():
            log.info("cancelling the extraction…")
            self.runner.cancel()
            self.progress_panel.cancelling()

    def is_running(self) -> bool:
        return self.runner.is_running()

    def _user_words(self, text: str) -> str:
        """``text`` with the internal AOI file named as the user knows it."""
        import re

        what = self._aoi_source or "the AOI drawn on the map"
        return re.sub(re.escape(self._tmpdir) + r"[/\\]aoi_\d+\.gpkg", lambda _m: what, text)

    def _on_finished(self, result: Any) -> None:
        self.extraction_panel.set_running(False)
        if self._closing:  # the window is closing: no dialogs, no layers; close now
            log.info("extraction %s; closing", result.status)
            self.result = None
            QTimer.singleShot(0, self.close)
            return
        self.result = result
        if result.status == "success":
            s = result.summary
            t = s.get("timings_s", {}).get("total", result.elapsed_s)
            text = (f"Done: {s.get('road_km', 0):.2f} km of road, {s.get('edges', 0)} edges, "
                    f"{s.get('nodes', 0)} nodes in {t:.1f} s")
            self.progress_panel.finish("success", text)
            self.extraction_panel.summary.setText(
                f"<b>{s.get('road_km', 0):.2f} km</b> of road · {s.get('edges', 0)} edges · "
                f"{s.get('nodes', 0)} nodes · {s.get('components', 0)} components · "
                f"{t:.1f} s<br>{Path(result.roads_path or '').parent}"
                + _degenerate_note(s.get("degenerate_mask")))
            log.info(text)
            if s.get("degenerate_mask"):
                log.warning("%s", _degenerate_note(s["degenerate_mask"], html=False))
            self._guard("Cannot load the results", self.load_results, result)
        elif result.status == "cancelled":
            self.progress_panel.finish("cancelled", "Cancelled")
            log.info("extraction cancelled; no outputs written")
        else:
            self.progress_panel.finish("failed", "Failed")
            self.show_error("Extraction failed", self._user_words(result.error or "unknown error"))
        self._update_actions()

    def load_results(self, result: Any) -> None:
        """Show the outputs of a successful run as layers (replacing earlier results)."""
        for layer in self.result_layers:
            self.stack.remove(layer)
        self.result_layers = []
        if self.edges_layer is not None:
            self.stack.remove(self.edges_layer)
        if self.nodes_layer is not None:
            self.stack.remove(self.nodes_layer)
        self.edges_layer = self.nodes_layer = None
        if result.prob_path:
            lyr = self.add_raster(result.prob_path, "heat", "Road probability")
            if lyr is not None:
                lyr.set_opacity(0.6)
                lyr.set_visible(False)
                self.result_layers.append(lyr)
        if result.mask_path:
            lyr = self.add_raster(result.mask_path, "mask", "Road mask")
            if lyr is not None:
                lyr.set_opacity(0.45)
                self.result_layers.append(lyr)
        if result.roads_path:
            edges, nodes = viewing.load_network(result.roads_path, self.frame.crs)
            self._set_network(edges, nodes, "Road")
            self.edits_unsaved = False
        if self.aoi_layer is not None:
            self.stack.move(self.aoi_layer, -len(self.stack.layers))

    def _set_network(self, edges: Any, nodes: Any, name: str) -> None:
        if self.edges_layer is not None:
            self.stack.remove(self.edges_layer)
        if self.nodes_layer is not None:
            self.stack.remove(self.nodes_layer)
        self.edges_layer = self.nodes_layer = None
        self.edit = viewing.NetworkEdit(edges, nodes)
        self.edges_layer = EdgesLayer(f"{name} edges", self.canvas.scene(), self.edit,
                                      self.frame)
        self.stack.add(self.edges_layer)
        self._rebuild_nodes()
        self._refresh_review()

    def _rebuild_nodes(self) -> None:
        if self.edit is None:
            return
        visible, opacity = True, 1.0
        if self.nodes_layer is not None:
            visible, opacity = self.nodes_layer.visible, self.nodes_layer.opacity
            idx = self.stack.layers.index(self.nodes_layer)
            self.stack.remove(self.nodes_layer)
        else:
            idx = 0
        self.nodes_layer = VectorLayer("Road nodes", self.canvas.scene(), self.edit.nodes(),
                                       self.frame, QColor(255, 60, 60))
        self.nodes_layer.KIND = "nodes"
        self.stack.add(self.nodes_layer)
        self.stack.move(self.nodes_layer, idx)
        self.nodes_layer.set_visible(visible)
        self.nodes_layer.set_opacity(opacity)

    # ------------------------------------------------------------------------------------
    # review
    # ------------------------------------------------------------------------------------
    def select_edge_at(self, x: float, y: float, additive: bool = False) -> Optional[int]:
        """Select the road edge nearest scene point ``(x, y)`` within ``PICK_TOLERANCE_PX``
        screen pixels (whatever the zoom)."""
        if self.edges_layer is None:
            return None
        tol = PICK_TOLERANCE_PX / max(self.canvas.current_scale(), 1e-9)
        i = self.edges_layer.pick(x, y, tol)
        if additive:
            sel = set(self.edges_layer.selected) ^ ({i} if i is not None else set())
        else:
            sel = {i} if i is not None else set()
        self.edges_layer.set_selection(sorted(sel))
        self._refresh_review()
        return i

    def select_edges_in(self, x0: float, y0: float, x1: float, y1: float,
                        additive: bool = False) -> List[int]:
        """Select the edges crossing a scene rectangle (added to the selection with
        ``additive``)."""
        if self.edges_layer is None:
            return []
        ids = self.edges_layer.in_rect(x0, y0, x1, y1)
        sel = set(self.edges_layer.selected) | set(ids) if additive else set(ids)
        self.edges_layer.set_selection(sorted(sel))
        self._refresh_review()
        return ids

    def select_edges(self, ids: Sequence[int]) -> None:
        if self.edges_layer is not None:
            self.edges_layer.set_selection(ids)
            self._refresh_review()

    def _refresh_review(self) -> None:
        if self.edit is None or self.edges_layer is None:
            self.network_panel.set_summary(None)
            self.network_panel.set_selection({}, False)
            self._update_actions()
            return
        sel = sorted(self.edges_layer.selected)
        attrs = self.edit.attributes(sel[-1]) if sel else {}
        if sel:
            attrs = {"edge id": sel[-1], **attrs}
        self.network_panel.set_selection(attrs, self.edit.can_undo(), len(sel))
        self.network_panel.set_summary(self.edit.summary())
        self._update_actions()

    def delete_selected(self) -> int:
        if self.edit is None or self.edges_layer is None or not self.edges_layer.selected:
            return 0
        n = self.edit.delete(sorted(self.edges_layer.selected))
        self.edits_unsaved = self.edits_unsaved or n > 0
        log.info("deleted %d edge(s)", n)
        self.edges_layer.set_selection([])
        self._after_edit()
        return n

    def keep_selected(self) -> int:
        if self.edit is None or self.edges_layer is None or not self.edges_layer.selected:
            return 0
        n = self.edit.keep(sorted(self.edges_layer.selected))
        self.edits_unsaved = self.edits_unsaved or n > 0
        log.info("kept %d edge(s)", n)
        self.edges_layer.set_selection([])
        self._after_edit()
        return n

    def undo(self) -> Optional[str]:
        if self.edit is None:
            return None
        what = self.edit.undo()
        if what:
            log.info("undid %s", what)
            self.edits_unsaved = True
            self._after_edit()
        return what

    def _after_edit(self) -> None:
        self.edges_layer.restyle()
        self._rebuild_nodes()
        self._refresh_review()

    # ------------------------------------------------------------------------------------
    # export
    # ------------------------------------------------------------------------------------
    def export_dialog(self) -> None:
        if self.edit is None:
            self.show_error("Nothing to export", "run an extraction (or open a road network) "
                            "first")
            return
        start = self.settings.last_dir("export")
        stem = Path(self.image_path).stem if self.image_path else "roads"
        dlg = ExportDialog(os.path.join(start, f"{stem}_roads_reviewed.gpkg"), self.frame.crs,
                           bool(self.result is not None and getattr(self.result, "ok", False)),
                           self)
        if dlg.exec() != ExportDialog.Accepted:
            return
        o = dlg.options()
        self.settings.set_last_dir("export", o["path"])
        written = self.export_results(**o)
        if written and self.isVisible():
            self.statusBar().showMessage(f"Exported {len(written)} file(s) to "
                                         f"{Path(o['path']).parent}", 8000)

    def export_results(self, path: str, formats: Sequence[str] = ("gpkg",),
                       target_crs: Optional[str] = None, rasters: bool = False,
                       overwrite: bool = False, include_deleted: bool = False) -> List[str]:
        """Export the reviewed network (and optionally the mask/probability rasters, which stay
        in the image CRS).

        Every edge carries its ``edge_id`` and ``review`` status (``kept``/``unreviewed``, and
        ``deleted`` ones too with ``include_deleted``). ``path``'s suffix is the main format;
        ``formats`` adds more beside it. Returns the written files ([] after an error
        dialog)."""
        def do() -> List[str]:
            if self.edit is None:
                raise UserError("no road network to export")
            main = Path(path)
            extra = [f for f in formats if f != main.suffix.lower().lstrip(".")]
            res = self.edit.export(main, target_crs=target_crs, overwrite=overwrite,
                                   formats=extra, include_deleted=include_deleted)
            written = list(res.outputs.values())
            if rasters and self.result is not None and getattr(self.result, "ok", False):
                stem = main.with_suffix("")
                for key, style in (("mask_path", "mask"), ("prob_path", "probability")):
                    src = getattr(self.result, key)
                    if src:
                        dst = f"{stem}_{'mask' if style == 'mask' else 'prob'}.tif"
                        written += viewing.export_raster(src, dst, overwrite, style)
            log.info("exported %d edges (%.2f km) to %s", res.summary.get("edges", 0),
                     res.summary.get("road_km", 0.0), main)
            self.last_export = written
            self.edits_unsaved = False
            return written
        return self._guard("Export failed", do) or []

    # ------------------------------------------------------------------------------------
    # training chips
    # ------------------------------------------------------------------------------------
    def _label_edges(self, labels: str) -> Any:
        e = self.edit.edges()
        if labels == "kept":
            e = e[e["edge_id"].isin(sorted(self.edit.kept))]
        return e

    def build_chips_dialog(self) -> None:
        """Dataset ▸ Build training chips: ask for the options, then :meth:`build_chips`."""
        from app.gui.panels.chips_dialog import BuildChipsDialog

        if self.image_path is None or self.edit is None:
            self.show_error("Cannot build chips", "open an image and extract (or open) its road "
                            "network first; then review it: Keep (K) the roads you trust, "
                            "Delete the wrong ones")
            return
        counts = {"kept": len(self.edit.kept), "reviewed": len(self.edit)}
        dlg = BuildChipsDialog(self.default_chips_dir(), counts, self)
        if dlg.exec() == BuildChipsDialog.Accepted:
            self.build_chips(**dlg.options())

    def default_chips_dir(self) -> str:
        return str(Path(default_output_dir(self.image_path or "image", self.workspace))
                   / "chips")

    def build_chips(self, out_dir: Optional[str] = None, labels: str = "kept",
                    chip_size_px: int = 256, width_m: float = 6.0,
                    overwrite: bool = False) -> bool:
        """Build a chips dataset from the open image and its reviewed roads (``labels``:
        ``kept`` edges or every edge not ``reviewed`` as deleted, buffered by their
        ``width_m`` attribute or ``width_m``) with the service of ``roadseg dataset build``,
        off the UI thread; when done the dataset opens in the Dataset review tab and becomes
        the training dataset. Returns False (and a dialog) when it cannot start."""
        return bool(self._guard("Cannot build chips", self._build_chips, out_dir, labels,
                                chip_size_px, width_m, overwrite))

    def _build_chips(self, out_dir: Optional[str], labels: str, chip_size_px: int,
                     width_m: float, overwrite: bool) -> bool:
        from app.service.dataset import DatasetBuildRequest, build_chip_dataset

        if self.chips_job is not None:
            raise UserError("a chips build is already running")
        if self.image_path is None or self.edit is None or self.frame is None:
            raise UserError("open an image and its road network first")
        if self.frame.crs is None:
            raise UserError(f"{self.image_path}: chips need a georeferenced image")
        edges = self._label_edges(labels)
        if not len(edges):
            raise UserError("no kept edges yet: select the roads you trust and press Keep (K), "
                            "or build from all edges not deleted" if labels == "kept" else
                            "every edge is deleted: nothing to use as road labels")
        out = out_dir or self.default_chips_dir()
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        lines = Path(self._tmpdir) / f"chip_labels_{len(os.listdir(self._tmpdir))}.gpkg"
        edges.to_file(lines, driver="GPKG", layer="roads")
        width_attr = "width_m" if "width_m" in edges.columns else None
        req = DatasetBuildRequest(image=str(self.image_path), labels=str(lines), out_dir=out,
                                  width_m=float(width_m), width_attr=width_attr,
                                  chip_size_px=int(chip_size_px), skip_empty=True,
                                  overwrite=bool(overwrite))
        job = Worker(build_chip_dataset, req, cancel_arg="should_cancel", owner=self, name="chips")
        job.returned.connect(self._on_chips_built)
        job.errored.connect(self._on_chips_failed)
        job.finished.connect(self._on_chips_finished)
        self.chips_job = job
        job.start()
        self.act_build_chips.setEnabled(False)
        log.info("building %d px training chips from %s and %d %s edge(s) into %s",
                 chip_size_px, Path(self.image_path).name, len(edges),
                 "kept" if labels == "kept" else "not deleted", out)
        return True

    def _on_chips_finished(self) -> None:
        self.chips_job = None
        if not self._closing:
            self.act_build_chips.setEnabled(True)

    def _on_chips_failed(self, exc: BaseException) -> None:
        if isinstance(exc, UserError):
            self.show_error("Cannot build chips", str(exc))
        else:
            self.show_error("Cannot build chips", error_text(exc), error_details(exc))

    def _on_chips_built(self, res: Any) -> None:
        c = res.counts
        log.info("chips dataset %s: %s (%d chips without road left out)", res.out_dir,
                 ", ".join(f"{v} {k}" for k, v in c.items()), res.skipped_empty)
        if self._closing:
            return
        self.dataset_panel.open_dataset(str(res.out_dir))
        self.training_panel.use_dataset(str(res.out_dir))
        self.show_tab(self.TAB_DATASET)

    def wait_chips(self, timeout_s: float = 120.0) -> bool:
        """Block until a running chips build is done (tests, scripts); True when it is."""
        job = self.chips_job
        if job is None:
            return True
        job.wait(timeout_s)
        return self.chips_job is None

    # ------------------------------------------------------------------------------------
    # state
    # ------------------------------------------------------------------------------------
    def _update_actions(self) -> None:
        running = self.runner.is_running()
        has_img = self.image_path is not None
        has_net = self.edit is not None
        sel = bool(self.edges_layer is not None and self.edges_layer.selected)
        self.act_run.setEnabled(has_img and not running)
        self.act_cancel.setEnabled(running)
        self.act_export.setEnabled(has_net and not running)
        self.act_delete.setEnabled(sel)
        self.act_keep.setEnabled(sel)
        self.act_undo.setEnabled(bool(has_net and self.edit.can_undo()))
        has_aoi = self.aoi_layer is not None and not self.aoi_layer.is_empty()
        self.act_clear_aoi.setEnabled(has_aoi)
        self.act_edit_aoi.setEnabled(has_aoi)
        self.act_load_aoi.setEnabled(self.frame is not None)
        self.act_build_chips.setEnabled(has_img and has_net and self.chips_job is None)
        self.dataset_panel.set_build_hint(has_img and has_net)

    def _restore_geometry(self) -> None:
        g = self.settings.value("window/geometry")
        if g is not None:
            self.restoreGeometry(g)
        st = self.settings.value("window/state")
        if st is not None:
            self.restoreState(st)

    def closeEvent(self, event) -> None:  # noqa: N802
        """Close: ask about unexported review edits; a running extraction is cancelled and the
        window closes when it has stopped (the UI stays responsive meanwhile)."""
        if not self._closing and not self.confirm_discard("Quitting"):
            event.ignore()
            return
        if self.runner.is_running():
            if not self._closing:
                self._closing = True
                log.info("stopping the extraction before closing…")
                self.runner.cancel()
                self.progress_panel.cancelling()
                self.statusBar().showMessage("Stopping the extraction, then closing…")
            event.ignore()
            return
        self._closing = True
        if self.chips_job is not None:
            self.chips_job.cancel()  # the build stops at its next chip, leaving nothing behind
        for box in self.findChildren(QMessageBox):
            box.close()
        self.main_tabs.setCurrentIndex(self.TAB_MAP)  # the saved state has the map's docks
        self.dataset_panel.shutdown()
        self.settings.set_value("window/geometry", self.saveGeometry())
        self.settings.set_value("window/state", self.saveState())
        self.extraction_panel.save()
        self.settings.sync()
        logging.getLogger().removeHandler(self.progress_panel.handler)
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        super().closeEvent(event)
        self.closed.emit()
