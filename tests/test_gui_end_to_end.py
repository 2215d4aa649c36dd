"""End to end through the main window: real GeoTIFF, AOI, real network in the worker thread,
results as layers, review, export; cancel; errors as dialogs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

import geopandas as gpd  # noqa: E402
import rasterio  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from app.gui.main_window import MainWindow  # noqa: E402
from app.gui.settings import AppSettings  # noqa: E402

# real extractions through the window (each test ~5-50 s on a loaded 2-core machine)
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def vegas_crop(vegas_scene: Path, tmp_path_factory) -> Path:
    """256 x 256 px RGB crop of the SpaceNet Las Vegas tile (EPSG:4326, ~0.3 m)."""
    out = tmp_path_factory.mktemp("img") / "vegas_crop.tif"
    with rasterio.open(vegas_scene) as ds:
        win = Window(500, 300, 256, 256)
        prof = ds.profile.copy()
        prof.update(width=256, height=256, count=3, transform=ds.window_transform(win))
        data = ds.read([1, 2, 3], window=win)
    with rasterio.open(out, "w", **prof) as dst:
        dst.write(data)
    return out


@pytest.fixture()
def window(qtbot, tmp_path: Path):
    settings = AppSettings(str(tmp_path / "settings.ini"))
    settings.set_value("workspace/dir", str(tmp_path / "workspace"))
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(1200, 800)
    w.show()
    yield w
    if w.is_running():
        w.cancel_extraction()
        qtbot.waitUntil(lambda: not w.is_running(), timeout=120000)


def _configure(w: MainWindow, checkpoint: Path, out: Path, tile: int = 128,
               overlap: int = 16, batch: int = 2) -> None:
    p = w.extraction_panel
    p.add_checkpoint(str(checkpoint))
    p.backend.setCurrentText("mindspore")
    p.tile.setValue(tile)
    p.overlap.setValue(overlap)
    p.batch.setValue(batch)
    p.out_dir.setText(str(out))


def test_extract_review_export(qtbot, window: MainWindow, vegas_crop: Path,
                               enet_checkpoint: Path,
                               tmp_path: Path) -> None:
    w = window
    assert w.open_image(str(vegas_crop))
    assert w.image_layer is not None and w.frame.crs == "EPSG:4326"
    assert w.settings.recent_files()[0] == str(vegas_crop)
    # status bar: map and lon/lat coordinates of the cursor, and the scale
    w._on_cursor(10.0, 20.0)
    lon, lat = w.frame.pixel_to_lonlat(10.0, 20.0)
    assert f"{abs(lat):.6f}°N" in w.lonlat_label.text() and f"{abs(lon):.6f}°W" in \
        w.lonlat_label.text()
    qtbot.waitUntil(lambda: w.scale_label.text().startswith("1:"), timeout=10000)

    # draw an AOI with the rectangle tool (scene = image pixels)
    w.set_tool("aoi_rect")
    ring = np.array([[40, 60], [200, 60], [200, 180], [40, 180], [40, 60]], float)
    w.canvas.aoiDrawn.emit(ring)
    assert not w.aoi_layer.is_empty()

    _configure(w, enet_checkpoint, tmp_path / "out")
    w.extraction_panel.threshold.setValue(0.2)  # random weights: keep plenty of "road"
    progress = []
    w.runner.progress.connect(lambda d, t, s: progress.append(s))
    assert w.start_extraction(), w.last_error
    assert w.is_running() and w.act_cancel.isEnabled() and not w.act_run.isEnabled()
    qtbot.waitUntil(lambda: not w.is_running(), timeout=240000)
    assert w.result.status == "success", w.result.error
    assert {"read", "infer", "vectorize", "write"} <= set(progress)
    assert w.progress_panel.bar.value() == 1000
    s = w.result.summary
    assert f"{s['road_km']:.2f} km" in w.extraction_panel.summary.text()
    # the extraction was limited to the AOI: the outputs cover its 160 x 120 px window
    assert s["window"] == [40, 60, 160, 120]
    with rasterio.open(w.result.mask_path) as m:
        assert (m.width, m.height) == (160, 120)

    kinds = {lyr.kind for lyr in w.stack.layers}
    assert {"imagery", "probability", "mask", "edges", "nodes", "aoi"} <= kinds
    prob = w.stack.first("probability")
    x0, y0, x1, y1 = prob.source.frame_rect()
    assert (x0, y0, x1, y1) == pytest.approx((40, 60, 200, 180), abs=1e-6)
    assert len(w.edit.all_edges) == s["edges"] > 0
    # every edge is drawn inside the AOI (vectors in the right place)
    for parts in w.edges_layer.feature_parts:
        for a in parts:
            assert a[:, 0].min() >= 39 and a[:, 0].max() <= 201
            assert a[:, 1].min() >= 59 and a[:, 1].max() <= 181

    # review: click an edge, delete it, undo, delete again
    w.set_tool("select")
    pts = w.edges_layer.feature_parts[0][0]
    mid = pts[len(pts) // 2]
    picked = w.select_edge_at(float(mid[0]), float(mid[1]))
    assert picked is not None
    assert w.network_panel.table.rowCount() > 3
    assert w.delete_selected() == 1
    assert len(w.edit) == s["edges"] - 1 and w.act_undo.isEnabled()
    w.undo()
    assert len(w.edit) == s["edges"]
    w.select_edges([picked])
    w.delete_selected()
    n_left = len(w.edit)
    # drag a box with the select tool (real mouse events): the edges crossing it are selected
    from PySide6.QtCore import QPoint, Qt
    vp = w.canvas.viewport()
    a = w.canvas.mapFromScene(40.0, 60.0)
    b = w.canvas.mapFromScene(200.0, 180.0)
    qtbot.mousePress(vp, Qt.LeftButton, pos=a)
    qtbot.mouseMove(vp, QPoint((a.x() + b.x()) // 2, (a.y() + b.y()) // 2))
    qtbot.mouseMove(vp, b)
    qtbot.mouseRelease(vp, Qt.LeftButton, pos=b)
    assert len(w.edges_layer.selected) == s["edges"]       # the whole AOI
    assert w.keep_selected() == s["edges"]
    assert w.edit.summary()["kept"] == s["edges"] and len(w.edit) == s["edges"]  # keep restores
    w.undo()
    assert len(w.edit) == n_left

    # export: the edited network, in another CRS, with styles and the result rasters
    (tmp_path / "exp").mkdir()
    written = w.export_results(str(tmp_path / "exp" / "roads.gpkg"), ["gpkg", "geojson"],
                               "EPSG:32611", rasters=True)
    assert w.last_error is None, w.last_error
    names = {Path(p).name for p in written}
    assert {"roads.gpkg", "roads_mask.tif", "roads_prob.tif", "roads_mask.qml"} <= names
    edges = gpd.read_file(tmp_path / "exp" / "roads.gpkg", layer="edges")
    assert len(edges) == n_left and edges.crs.to_epsg() == 32611
    assert gpd.read_file(tmp_path / "exp" / "roads_edges.geojson").crs.to_epsg() == 4326
    import sqlite3
    with sqlite3.connect(tmp_path / "exp" / "roads.gpkg") as con:
        styled = {r[0] for r in con.execute("select f_table_name from layer_styles")}
    assert {"edges", "nodes"} <= styled

    # the exported network opens again for review, in the image CRS
    assert w.open_vector(str(tmp_path / "exp" / "roads.gpkg"))
    assert len(w.edit) == n_left


def test_cancel_really_stops(qtbot, window: MainWindow, vegas_crop: Path,
                             enet_checkpoint: Path,
                             tmp_path: Path) -> None:
    w = window
    assert w.open_image(str(vegas_crop))
    w.extraction_panel.use_aoi.setChecked(False)
    _configure(w, enet_checkpoint, tmp_path / "out", tile=32, overlap=0, batch=1)  # 64 tiles
    seen = []

    def on_progress(done: int, total: int, stage: str) -> None:
        seen.append((done, total, stage))
        if stage == "infer" and done >= 1:
            w.progress_panel.cancel.click()

    w.runner.progress.connect(on_progress)
    assert w.start_extraction(), w.last_error
    qtbot.waitUntil(lambda: not w.is_running(), timeout=240000)
    assert w.result.status == "cancelled"
    infer = [d for d, t, s in seen if s == "infer"]
    total = [t for d, t, s in seen if s == "infer"][0]
    assert max(infer) < total                  # stopped before the last tile
    assert "vectorize" not in {s for _, _, s in seen}
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert w.stack.first("edges") is None and w.act_run.isEnabled()
    assert w.progress_panel.stage.text() == "Cancelled"


def test_errors_are_dialogs_not_crashes(qtbot, window: MainWindow, tmp_path: Path,
                                       vegas_crop: Path, enet_checkpoint: Path) -> None:
    w = window
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"not a tiff at all")
    assert not w.open_image(str(bad))
    assert "broken.tif" in w.last_error
    box = next(b for b in w.findChildren(QMessageBox) if b.isVisible())
    assert "broken.tif" in box.text()
    box.close()
    w.last_error = None
    assert not w.start_extraction()
    assert "open an image" in w.last_error
    # a run that fails in the worker (output folder under a missing parent) ends in a dialog
    assert w.open_image(str(vegas_crop))
    _configure(w, enet_checkpoint, tmp_path / "missing" / "out")
    w.last_error = None
    assert w.start_extraction()
    qtbot.waitUntil(lambda: not w.is_running(), timeout=240000)
    assert w.result.status == "failed" and "missing" in w.last_error
    assert w.progress_panel.stage.text() == "Failed" and w.act_run.isEnabled()
    assert not (tmp_path / "missing").exists()


@pytest.mark.qt_no_exception_capture
def test_excepthook_turns_slot_errors_into_dialogs(qtbot, window: MainWindow) -> None:
    """An exception escaping a Qt slot shows a dialog with the traceback; the app goes on."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.gui.main import install_excepthook

    old = sys.excepthook
    try:
        install_excepthook(QApplication.instance())

        def broken_slot() -> None:
            raise RuntimeError("boom in a slot")

        QTimer.singleShot(0, broken_slot)

        def dialog():
            return next((b for b in QApplication.topLevelWidgets() + window.findChildren(
                QMessageBox) if isinstance(b, QMessageBox) and b.isVisible()
                and "boom in a slot" in b.text()), None)

        qtbot.waitUntil(lambda: dialog() is not None, timeout=10000)
        box = dialog()
        assert "RuntimeError" in box.text() and "broken_slot" in box.detailedText()
        box.done(0)
    finally:
        sys.excepthook = old
    assert window.isVisible()


def test_drop_vector_in_other_crs_and_edit_aoi(qtbot, window: MainWindow, shared_data: Path,
                                               vegas_scene: Path, tmp_path: Path) -> None:
    """Dropped files open; lon/lat lines land on the right pixels of a UTM image; AOI
    vertices can be dragged, and the AOI can be saved, cleared and loaded from a file."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    w = window
    img = shared_data / "geotiff" / "RGB.byte.tif"           # EPSG:32618, 300 m pixels
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(img))])
    ev = QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    w.canvas.dropEvent(ev)
    assert w.image_path == str(img) and w.frame.crs == "EPSG:32618"
    out = Path(w.extraction_panel.out_dir.text())            # in the workspace, not beside
    assert out.parent == tmp_path / "workspace" and out.name.startswith("RGB.byte_")
    # a lon/lat line between two known pixels of the image
    from pyproj import Transformer
    from shapely.geometry import LineString

    to_ll = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
    px = [(100.0, 50.0), (600.0, 400.0)]
    line = LineString([to_ll.transform(*w.frame.pixel_to_map(c, r)) for c, r in px])
    gj = tmp_path / "line.geojson"
    gpd.GeoDataFrame({"name": ["x"]}, geometry=[line], crs="EPSG:4326").to_file(gj)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(gj))])
    w.canvas.dropEvent(QDropEvent(QPointF(10, 10), Qt.CopyAction, mime, Qt.LeftButton,
                                  Qt.NoModifier))
    vec = w.stack.first("vector")
    assert vec is not None and vec.name == "line"
    np.testing.assert_allclose(vec.feature_parts[0][0], px, atol=1e-3)

    # AOI: draw, edit a vertex by dragging its handle, save/clear/load through a file
    w.set_aoi([np.array([[100, 100], [300, 100], [300, 300], [100, 300], [100, 100]], float)])
    w.act_edit_aoi.setChecked(True)
    w.toggle_aoi_edit(True)
    handles = w.aoi_layer.handles
    assert len(handles) == 4
    handles[2].setPos(350.0, 320.0)                       # what a mouse drag does
    assert w.aoi_layer.polygons[0][2].tolist() == [350.0, 320.0]
    path = w.aoi_file()
    w.clear_aoi()
    assert w.aoi_layer.is_empty() and not w.act_clear_aoi.isEnabled()
    assert w.load_aoi(path)
    ring = w.aoi_layer.polygons[0]
    assert {tuple(np.round(p, 6)) for p in ring} == {(100, 100), (300, 100), (350, 320),
                                                      (100, 300)}
    # dropping an overlapping raster adds a layer; a raster elsewhere opens as the new image
    n_layers = len(w.stack.layers)
    assert w.open_path(str(img)) and len(w.stack.layers) == n_layers + 1
    assert w.image_path == str(img)
    # another image: new session, the output folder follows it (the user had not chosen one)
    assert w.open_path(str(vegas_scene))
    assert w.image_path == str(vegas_scene)
    assert w.aoi_layer.is_empty() and w.stack.first("vector") is None
    out = Path(w.extraction_panel.out_dir.text())
    assert out.parent == tmp_path / "workspace"
    assert out.name.startswith("RGB-PanSharpen_AOI_2_Vegas_img0_")
    w.extraction_panel.out_dir.setText(str(tmp_path / "mine"))
    assert w.open_image(str(img))
    assert w.extraction_panel.out_dir.text() == str(tmp_path / "mine")



def test_dataset_review_and_training_are_main_area_tabs(window, tmp_path):
    """The dataset review and training panels are tabs of the main area beside the map (room
    for a list, a large view, a form and live curves), and a finished training run's best
    checkpoint is offered, not selected: the analyst decides."""
    import mindspore as ms

    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.models import create_model

    tabs = window.main_tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["Map", "Dataset review",
                                                               "Training"]
    assert tabs.widget(1).widget() is window.dataset_panel
    assert tabs.widget(2).widget() is window.training_panel
    tabs.setCurrentIndex(2)
    assert window.training_panel.width() >= 700          # the right dock used to give ~340
    assert not window.params_dock.isVisible()
    tabs.setCurrentIndex(0)
    assert window.params_dock.isVisible() and window.layers_dock.isVisible()
    before = window.extraction_panel.checkpoint_path()
    ms.set_seed(1)
    ckpt = save_checkpoint(create_model("enet", num_classes=1), tmp_path / "run" / "best.ckpt",
                           CheckpointMeta(model="enet", num_classes=1, tile_size_px=64, stride=8))
    window._on_trained_checkpoint(str(ckpt))
    assert window.extraction_panel.checkpoint_path() == before      # offered, not selected
    assert str(Path(ckpt).resolve()) in window.extraction_panel._checkpoints
