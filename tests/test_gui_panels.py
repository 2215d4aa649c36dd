"""GUI panels and the map canvas with pytest-qt (offscreen)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt  # noqa: E402
from PySide6.QtGui import QColor  # noqa: E402

from app.gui.layers import LayerStack, RasterLayer, VectorLayer  # noqa: E402
from app.gui.map_canvas import MapCanvas  # noqa: E402
from app.gui.panels.extraction_panel import ANY_NETWORK, ExtractionPanel  # noqa: E402
from app.gui.panels.layers_panel import LayersPanel  # noqa: E402
from app.gui.panels.network_review import NetworkReviewPanel  # noqa: E402
from app.gui.panels.progress_panel import ProgressPanel, format_seconds  # noqa: E402
from app.gui.settings import AppSettings  # noqa: E402
from app.service import viewing  # noqa: E402
from app.service.errors import UserError  # noqa: E402
from gis_fixtures import utm_transform, write_geotiff  # noqa: E402


@pytest.fixture()
def settings(tmp_path: Path) -> AppSettings:
    return AppSettings(str(tmp_path / "settings.ini"))


@pytest.fixture()
def raster(tmp_path: Path) -> Path:
    """600 x 400 px RGB uint8 gradient on a 1 m UTM grid."""
    h, w = 400, 600
    x = np.linspace(0, 255, w, dtype=np.float32)[None, None, :].repeat(h, 1)
    arr = np.concatenate([x, 255 - x, np.full_like(x, 80)]).astype(np.uint8)
    return write_geotiff(tmp_path / "img.tif", arr, crs="EPSG:32633", transform=utm_transform())


def _canvas_with_image(qtbot, raster: Path):
    canvas = MapCanvas()
    canvas.resize(400, 300)
    qtbot.addWidget(canvas)
    canvas.show()
    frame = viewing.open_frame(raster)
    canvas.set_extent(frame.width, frame.height)
    stack = LayerStack(canvas.scene())
    layer = RasterLayer("img", canvas.scene(), viewing.open_raster_source(raster, frame))
    stack.add(layer)
    canvas.zoom_full()
    return canvas, stack, layer, frame


def test_settings_recent_files_persist(tmp_path: Path) -> None:
    ini = str(tmp_path / "s.ini")
    s = AppSettings(ini)
    for i in range(12):
        s.add_recent_file(str(tmp_path / f"f{i}.tif"))
    s.add_recent_file(str(tmp_path / "f3.tif"))
    s.set_value("extraction/tile", 256)
    s.sync()
    again = AppSettings(ini)
    files = again.recent_files()
    assert len(files) == 10 and files[0].endswith("f3.tif") and files[1].endswith("f11.tif")
    assert again.value("extraction/tile", 0, int) == 256
    # a one-element list survives the INI round trip as a list
    s.set_value("extraction/checkpoints", [str(tmp_path / "only.ckpt")])
    s.sync()
    import subprocess
    import sys
    code = ("from app.gui.settings import AppSettings; import sys; "
            "print(AppSettings(sys.argv[1]).string_list('extraction/checkpoints'))")
    out = subprocess.run([sys.executable, "-c", code, ini], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == repr([str(tmp_path / "only.ckpt")])


def test_canvas_overview_and_detail_when_zoomed_in(qtbot, raster: Path, monkeypatch) -> None:
    import app.gui.layers as layers_mod

    # a 100 px overview stands in for a raster much larger than the screen
    monkeypatch.setattr(layers_mod, "OVERVIEW_MAX_PX", 100)
    canvas, stack, layer, frame = _canvas_with_image(qtbot, raster)
    vp = canvas.viewport()
    canvas.viewChanged.connect(
        lambda: layer.update_view(canvas.visible_rect(), (vp.width(), vp.height())))
    pix = layer.overview_item.pixmap()
    assert (pix.width(), pix.height()) == (100, 67)
    assert layer.overview_item.sceneBoundingRect().width() == pytest.approx(600, abs=1)
    assert not layer.detail_item.isVisible()
    canvas.zoom(4.0)
    qtbot.waitUntil(lambda: layer.detail_item.isVisible(), timeout=15000)
    d = layer.detail_item.pixmap()
    vis = canvas.visible_rect()
    r = layer.detail_item.sceneBoundingRect()
    # the window read covers the view, at no more than the screen resolution needs
    assert r.contains(vis.intersected(QRectF(0, 0, 600, 400)).adjusted(1, 1, -1, -1))
    assert d.width() <= vp.width() * 1.3 + 2
    assert d.width() / r.width() > pix.width() / 600 * 2  # sharper than the overview
    # zoomed out until the overview is as sharp as the screen: the detail image goes away
    canvas.zoom(0.05)
    qtbot.waitUntil(lambda: not layer.detail_item.isVisible(), timeout=15000)


def test_canvas_zoom_and_cursor(qtbot, raster: Path) -> None:
    canvas, stack, layer, frame = _canvas_with_image(qtbot, raster)
    s0 = canvas.current_scale()
    canvas.zoom(2.0, QPointF(200, 150))
    assert canvas.current_scale() == pytest.approx(2 * s0)
    with qtbot.waitSignal(canvas.cursorMoved, timeout=3000) as blocker:
        qtbot.mouseMove(canvas.viewport(), QPoint(200, 150))
    x, y = blocker.args
    p = canvas.mapToScene(QPoint(200, 150))
    assert (x, y) == pytest.approx((p.x(), p.y()), abs=1.0)


def test_canvas_draws_rectangle_and_polygon_aoi(qtbot, raster: Path) -> None:
    canvas, stack, layer, frame = _canvas_with_image(qtbot, raster)
    vp = canvas.viewport()
    canvas.set_tool("aoi_rect")
    with qtbot.waitSignal(canvas.aoiDrawn, timeout=3000) as blocker:
        qtbot.mousePress(vp, Qt.LeftButton, pos=QPoint(100, 80))
        qtbot.mouseMove(vp, QPoint(250, 200))
        qtbot.mouseRelease(vp, Qt.LeftButton, pos=QPoint(250, 200))
    poly = blocker.args[0]
    a, b = canvas.mapToScene(QPoint(100, 80)), canvas.mapToScene(QPoint(250, 200))
    assert poly.shape == (5, 2)
    np.testing.assert_allclose(poly.min(axis=0), [a.x(), a.y()], atol=1.5)
    np.testing.assert_allclose(poly.max(axis=0), [b.x(), b.y()], atol=1.5)
    canvas.set_tool("aoi_polygon")
    with qtbot.waitSignal(canvas.aoiDrawn, timeout=3000) as blocker:
        for p in (QPoint(50, 50), QPoint(150, 60), QPoint(120, 140)):
            qtbot.mouseClick(vp, Qt.LeftButton, pos=p)
        qtbot.mouseClick(vp, Qt.RightButton, pos=QPoint(120, 140))
    assert blocker.args[0].shape == (4, 2)  # 3 vertices, closed


def test_layers_panel_visibility_opacity_bands(qtbot, raster: Path) -> None:
    canvas, stack, layer, frame = _canvas_with_image(qtbot, raster)
    import geopandas as gpd
    from shapely.geometry import LineString

    gdf = gpd.GeoDataFrame(geometry=[LineString([frame.pixel_to_map(0, 0),
                                                 frame.pixel_to_map(100, 100)])],
                           crs=frame.crs)
    vec = stack.add(VectorLayer("lines", canvas.scene(), gdf, frame, QColor("red")))
    panel = LayersPanel(stack)
    qtbot.addWidget(panel)
    assert panel.list.count() == 2 and "lines" in panel.list.item(0).text()
    assert vec.group.zValue() > layer.group.zValue()
    r = vec.feature_items[0].path().boundingRect()
    assert (r.left(), r.top(), r.right(), r.bottom()) == pytest.approx((0, 0, 100, 100), abs=1)
    panel.list.item(0).setCheckState(Qt.Unchecked)
    assert not vec.visible and not vec.group.isVisible()
    panel.list.setCurrentRow(1)
    panel.opacity.setValue(40)
    assert layer.opacity == pytest.approx(0.4) and layer.group.opacity() == pytest.approx(0.4)
    assert panel.band_r.isVisibleTo(panel)
    before = layer.overview_item.pixmap().toImage().pixelColor(10, 10)
    panel.band_r.setCurrentIndex(2)
    panel.band_g.setCurrentIndex(2)
    panel.band_b.setCurrentIndex(2)
    panel.band_b.activated.emit(2)
    assert layer.bands == (3,)
    after = layer.overview_item.pixmap().toImage().pixelColor(10, 10)
    assert before != after and after.red() == after.green() == after.blue()
    panel.stretch.setCurrentIndex(panel.stretch.findData("minmax"))
    panel.stretch.activated.emit(panel.stretch.currentIndex())
    assert layer.stretch == "minmax" and layer.lo[0] == 80 and layer.hi[0] == 80 + 1  # constant
    panel.stretch.setCurrentIndex(panel.stretch.findData("none"))
    panel.stretch.activated.emit(panel.stretch.currentIndex())
    assert layer.stretch == "none" and (layer.lo[0], layer.hi[0]) == (0, 255)
    panel.up.click()  # move imagery above the lines
    assert stack.layers[0] is layer and layer.group.zValue() > vec.group.zValue()
    panel.remove_btn.click()
    assert stack.layers == [vec]


@pytest.mark.slow
def test_extraction_panel_builds_request(qtbot, settings, enet_checkpoint: Path,
                                         tmp_path) -> None:
    checkpoint = enet_checkpoint
    panel = ExtractionPanel(settings)
    qtbot.addWidget(panel)
    panel.checkpoint.clear()  # the bundled demo checkpoint may be listed by default
    with pytest.raises(UserError, match="checkpoint"):
        panel.build_request(str(tmp_path / "a.tif"), None)
    panel.add_checkpoint(str(checkpoint))
    assert panel.checkpoint_path() == str(checkpoint)
    text = panel.meta_label.text()
    assert "enet" in text and "tile 128 px" in text and "road_iou 0.123" in text
    assert panel.tile.value() == 128 and panel.overlap.value() == 16  # from the metadata
    panel.network.setCurrentText("dlinknet34")
    assert panel.checkpoint.count() == 0  # filtered by network
    panel.network.setCurrentText("enet")
    assert panel.checkpoint_path() == str(checkpoint)
    panel.tta.setCurrentText("flips")
    panel.threshold.setValue(0.35)
    panel.device.setCurrentText("cpu")
    panel.out_dir.setText(str(tmp_path / "out"))
    req = panel.build_request(str(tmp_path / "a.tif"), str(tmp_path / "aoi.gpkg"))
    assert (req.model, req.checkpoint, req.tta, req.threshold, req.tile_size_px,
            req.overlap_px, req.aoi) == ("enet", str(checkpoint), "flips", 0.35, 128, 16,
                                         str(tmp_path / "aoi.gpkg"))
    panel.use_aoi.setChecked(False)
    assert panel.build_request(str(tmp_path / "a.tif"), "x.gpkg").aoi is None
    panel.set_running(True)
    assert not panel.run_btn.isEnabled() and panel.cancel_btn.isEnabled()
    # remembered between sessions
    again = ExtractionPanel(settings)
    qtbot.addWidget(again)
    assert again.network.currentText() == "enet" and again.checkpoint_path() == str(checkpoint)
    assert again.tta.currentText() == "flips" and again.threshold.value() == pytest.approx(0.35)
    assert ANY_NETWORK == again.network.itemText(0)


def test_progress_panel_stages_eta_and_log(qtbot) -> None:
    panel = ProgressPanel()
    qtbot.addWidget(panel)
    panel.start()
    assert panel.cancel.isEnabled()
    panel.set_progress(2, 4, "infer")
    assert panel.bar.value() == int((0.05 + 0.75 * 0.5) * 1000)
    assert "tiles (2/4)" in panel.stage.text() and "ETA" in panel.times.text()
    panel.set_progress(1, 3, "read")   # never goes backwards
    assert panel.bar.value() == int((0.05 + 0.75 * 0.5) * 1000)
    with qtbot.waitSignal(panel.cancelRequested, timeout=1000):
        panel.cancel.click()
    panel.finish("cancelled", "Cancelled")
    assert panel.stage.text() == "Cancelled" and not panel.cancel.isEnabled()
    import logging
    logging.getLogger("roadseg.test").addHandler(panel.handler)
    logging.getLogger("roadseg.test").warning("something odd in %s", "x.tif")
    qtbot.waitUntil(lambda: "something odd in x.tif" in panel.log.toPlainText(), timeout=3000)
    logging.getLogger("roadseg.test").removeHandler(panel.handler)
    assert format_seconds(3725) == "1:02:05" and format_seconds(65) == "1:05"


def test_network_review_panel_shows_attributes(qtbot) -> None:
    panel = NetworkReviewPanel()
    qtbot.addWidget(panel)
    assert not panel.delete_btn.isEnabled() and not panel.undo_btn.isEnabled()
    panel.set_selection({"length_m": 12.3456, "u": 3}, True, 1)
    assert panel.table.rowCount() == 2 and panel.table.item(0, 1).text() == "12.346"
    assert panel.delete_btn.isEnabled() and panel.undo_btn.isEnabled()
    panel.set_summary({"edges": 5, "road_km": 1.5, "deleted": 2, "kept": 1})
    assert "5 edges" in panel.counts.text() and "2 deleted" in panel.counts.text()
    with qtbot.waitSignal(panel.deleteRequested, timeout=1000):
        panel.delete_btn.click()


def test_export_dialog_options(qtbot, tmp_path: Path) -> None:
    from app.gui.panels.export_dialog import ExportDialog

    dlg = ExportDialog(str(tmp_path / "roads.gpkg"), "EPSG:32633", True)
    qtbot.addWidget(dlg)
    o = dlg.options()
    assert o == {"path": str(tmp_path / "roads.gpkg"), "formats": ["gpkg"], "target_crs": None,
                 "rasters": True, "overwrite": False, "include_deleted": False}
    assert not dlg.raster_note.isVisible() and dlg.raster_note.text() == ""
    dlg.formats["gpkg"].setChecked(False)
    dlg.formats["shp"].setChecked(True)
    dlg.formats["geojson"].setChecked(True)
    dlg.crs.setCurrentText("EPSG:4326")
    o = dlg.options()
    assert o["path"] == str(tmp_path / "roads.shp") and o["formats"] == ["shp", "geojson"]
    assert o["target_crs"] == "EPSG:4326"
    # vectors reprojected, rasters not: the dialog says so
    assert "EPSG:32633" in dlg.raster_note.text() and "EPSG:4326" in dlg.raster_note.text()
    dlg.rasters.setChecked(False)
    assert dlg.raster_note.text() == ""
    dlg.deleted.setChecked(True)
    assert dlg.options()["include_deleted"] is True
    no_rasters = ExportDialog("x.gpkg", None, False)
    qtbot.addWidget(no_rasters)
    assert not no_rasters.rasters.isEnabled() and no_rasters.options()["rasters"] is False


def test_default_output_dir_is_one_folder_per_image_in_the_workspace(qtbot,
                                                                     tmp_path: Path) -> None:
    """Outputs never go beside the input: one workspace folder per image (same-named images
    in different folders get different folders); the workspace defaults to the user's
    documents location (QStandardPaths)."""
    from PySide6.QtCore import QStandardPaths

    from app.gui.main_window import default_output_dir, default_workspace

    ws = tmp_path / "ws"
    a = default_output_dir(str(tmp_path / "x" / "a.tif"), str(ws))
    b = default_output_dir(str(tmp_path / "y" / "a.tif"), str(ws))
    assert Path(a).parent == ws and Path(b).parent == ws and a != b
    assert Path(a).name.startswith("a_")
    assert default_output_dir(str(tmp_path / "x" / "a.tif"), str(ws)) == a   # stable
    docs = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
    if docs:
        assert default_workspace() == str(Path(docs) / "RoadSeg Studio")
    assert not Path(default_workspace()).is_relative_to(tmp_path)


def test_scale_bar_is_round_and_matches_the_zoom(qtbot, raster: Path) -> None:
    canvas, stack, layer, frame = _canvas_with_image(qtbot, raster)
    assert canvas.scale_bar() is None              # no metric resolution given
    canvas.metres_per_unit = 1.0                   # 1 m pixels
    canvas.zoom(1.0 / canvas.current_scale())      # 1 screen px = 1 m
    length_px, length_m, label = canvas.scale_bar()
    assert (length_m, label) == (100, "100 m") and length_px == pytest.approx(100)
    canvas.zoom(1 / 50.0)                          # 50 m per screen px
    length_px, length_m, label = canvas.scale_bar()
    assert (length_m, label) == (5000, "5 km") and length_px == pytest.approx(100)
    assert not canvas.grab().isNull()              # drawForeground paints without error


def test_overview_read_in_the_background(qtbot, raster: Path) -> None:
    """Large rasters without overviews get their overview off the UI thread."""
    canvas, stack, layer, frame = _canvas_with_image(qtbot, raster)
    src = layer.source
    assert src.cheap_overview and src.overview_levels == ()
    first = layer.overview_item.pixmap().toImage()
    layer.set_bands((3, 2, 1))                       # synchronous for a small raster
    swapped = layer.overview_item.pixmap().toImage()
    assert swapped.pixelColor(5, 5).red() == first.pixelColor(5, 5).blue()
    layer.overview_ready = False
    layer.bands = (1, 2, 3)
    layer.refresh(background=True)
    qtbot.waitUntil(lambda: layer.overview_ready, timeout=15000)
    assert layer.overview_item.pixmap().toImage().pixelColor(5, 5) == first.pixelColor(5, 5)
