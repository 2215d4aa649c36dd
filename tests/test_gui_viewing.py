"""app.service.viewing: the Qt-free helpers behind the GUI's canvas, layers and review."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from shapely.geometry import LineString, Point

from app.service import viewing
from app.service.errors import UserError
from gis_fixtures import utm_transform, write_geotiff


@pytest.fixture()
def utm_raster(tmp_path: Path) -> Path:
    """64 x 48 px, 3 bands uint16, 2 m UTM 33N pixels; band k holds k * 100 + column."""
    h, w = 48, 64
    cols = np.arange(w, dtype=np.uint16)[None, None, :]
    arr = (np.arange(1, 4, dtype=np.uint16)[:, None, None] * 100 + cols).repeat(h, axis=1)
    return write_geotiff(tmp_path / "utm.tif", arr, crs="EPSG:32633",
                         transform=utm_transform(2.0))


def test_frame_pixel_map_lonlat(utm_raster: Path) -> None:
    f = viewing.open_frame(utm_raster)
    assert (f.width, f.height, f.crs) == (64, 48, "EPSG:32633")
    x, y = f.pixel_to_map(10, 5)
    assert (x, y) == pytest.approx((500000 + 20, 5000000 - 10))
    c, r = f.map_to_pixel(np.array([x]), np.array([y]))
    assert (c[0], r[0]) == pytest.approx((10, 5))
    lon, lat = f.pixel_to_lonlat(10, 5)
    elon, elat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(x, y)
    assert (lon, lat) == pytest.approx((elon, elat))
    assert f.map_units == "m"
    # 2 m pixels shown 1:1 on a 96 dpi screen: 2 m per 0.2646 mm
    assert viewing.scale_denominator(f, 1.0) == pytest.approx(2.0 / (0.0254 / 96), rel=0.02)


def test_read_view_decimates_and_clips(utm_raster: Path) -> None:
    f = viewing.open_frame(utm_raster)
    src = viewing.open_raster_source(utm_raster, f)
    assert not src.warped and src.default_bands == (1, 2, 3)
    whole = viewing.read_view(src, None, (16, 16), (1,))
    assert whole.data.shape == (1, 12, 16)          # 64x48 decimated 4x keeps the aspect ratio
    assert whole.frame_rect == (0, 0, 64, 48)
    part = viewing.read_view(src, (-10, 10, 20, 30), (100, 100), (2, 1))
    assert part.window == (0, 10, 20, 20)            # clipped to the raster, never upsampled
    assert part.data.shape == (2, 20, 20)
    np.testing.assert_array_equal(part.data[0, 0], 200 + np.arange(20))
    np.testing.assert_array_equal(part.data[1, 0], 100 + np.arange(20))
    assert viewing.read_view(src, (100, 100, 120, 120), (10, 10), (1,)) is None
    with pytest.raises(UserError, match="band 4"):
        viewing.read_view(src, None, (8, 8), (4,))


def test_stretch_and_colourize(utm_raster: Path) -> None:
    f = viewing.open_frame(utm_raster)
    src = viewing.open_raster_source(utm_raster, f)
    lo, hi = viewing.compute_band_stretch(src, (1,), "minmax")
    assert (lo[0], hi[0]) == (100, 163)
    view = viewing.read_view(src, None, (64, 48), (1,))
    rgba = viewing.colourize(view, "rgb", lo=lo, hi=hi)
    assert rgba.shape == (48, 64, 4)
    assert rgba[0, 0, :3].tolist() == [0, 0, 0] and rgba[0, -1, :3].tolist() == [255] * 3
    assert (rgba[..., 3] == 255).all()
    with pytest.raises(UserError, match="stretch"):
        viewing.compute_band_stretch(src, (1,), "fancy")


def test_heat_and_mask_rendering(tmp_path: Path) -> None:
    prob = np.array([[0, 127, 254, 255]], np.uint8)  # 255 = nodata
    p = write_geotiff(tmp_path / "prob.tif", prob, nodata=255)
    f = viewing.open_frame(p)
    view = viewing.read_view(viewing.open_raster_source(p, f), None, (4, 1), (1,))
    heat = viewing.colourize(view, "heat")
    assert heat[0, 0, 3] == 0 and heat[0, 1, 3] == 255 and heat[0, 3, 3] == 0
    assert tuple(heat[0, 2, :3]) == (180, 4, 38)         # top of the ramp at p = 1
    mask = viewing.colourize(view, "mask", colour=(1, 2, 3))
    assert mask[0, 0, 3] == 0 and tuple(mask[0, 1]) == (1, 2, 3, 255)


def test_other_crs_raster_is_warped_into_the_frame(tmp_path: Path, utm_raster: Path) -> None:
    f = viewing.open_frame(utm_raster)
    # the same grid saved in EPSG:3857 lands (approximately) on the same frame pixels
    with rasterio.open(utm_raster) as ds:
        from rasterio.warp import calculate_default_transform, reproject
        t, w, h = calculate_default_transform(ds.crs, "EPSG:3857", ds.width, ds.height,
                                              *ds.bounds)
        out = np.zeros((1, h, w), np.uint16)
        reproject(ds.read(1), out[0], src_transform=ds.transform, src_crs=ds.crs,
                  dst_transform=t, dst_crs="EPSG:3857")
    other = write_geotiff(tmp_path / "merc.tif", out, crs="EPSG:3857", transform=t)
    src = viewing.open_raster_source(other, f)
    assert src.warped
    x0, y0, x1, y1 = src.frame_rect()
    assert x0 == pytest.approx(0, abs=2) and y0 == pytest.approx(0, abs=2)
    assert x1 == pytest.approx(64, abs=2) and y1 == pytest.approx(48, abs=2)


def test_vectors_reprojected_to_frame_pixels(tmp_path: Path, utm_raster: Path) -> None:
    f = viewing.open_frame(utm_raster)
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    pts = [f.pixel_to_map(c, r) for c, r in ((5, 5), (40, 30))]
    line = LineString([to_ll.transform(*p) for p in pts])
    path = tmp_path / "line.geojson"
    gpd.GeoDataFrame({"id": [1]}, geometry=[line], crs="EPSG:4326").to_file(path)
    layers = viewing.load_vector_layers(path, f.crs)
    assert list(layers) == ["line"]
    kind, parts = viewing.geometry_to_pixel_parts(layers["line"].geometry.iloc[0], f)
    assert kind == "line"
    np.testing.assert_allclose(parts[0], [[5, 5], [40, 30]], atol=1e-6)
    kind, parts = viewing.geometry_to_pixel_parts(Point(*f.pixel_to_map(3, 4)), f)
    assert kind == "point"
    np.testing.assert_allclose(parts[0], [[3, 4]], atol=1e-6)


def test_aoi_write_and_read_back(tmp_path: Path, utm_raster: Path) -> None:
    f = viewing.open_frame(utm_raster)
    ring = np.array([[4, 4], [30, 4], [30, 20], [4, 20]], float)
    p = viewing.write_aoi([ring], f, tmp_path / "aoi.gpkg")
    back = viewing.read_aoi_pixels(p, f)
    assert len(back) == 1
    assert {tuple(np.round(v, 6)) for v in back[0]} == {(4, 4), (30, 4), (30, 20), (4, 20)}
    from gis.aoi import aoi_window, load_aoi
    from gis.io import open_raster
    win = aoi_window(load_aoi(p), open_raster(utm_raster))
    assert (win.col_off, win.row_off, win.width, win.height) == (4, 4, 26, 16)
    with pytest.raises(UserError, match="at least 3"):
        viewing.write_aoi([ring[:2]], f, tmp_path / "bad.gpkg")


def _network(crs: str = "EPSG:32633"):
    edges = gpd.GeoDataFrame(
        {"u": [0, 1, 1], "v": [1, 2, 3], "length_m": [100.0, 50.0, 25.0]},
        geometry=[LineString([(500000, 5000000), (500100, 5000000)]),
                  LineString([(500100, 5000000), (500150, 5000000)]),
                  LineString([(500100, 5000000), (500100, 4999975)])], crs=crs)
    nodes = gpd.GeoDataFrame({"node_id": [0, 1, 2, 3], "degree": [1, 3, 1, 1]},
                             geometry=[Point(500000, 5000000), Point(500100, 5000000),
                                       Point(500150, 5000000), Point(500100, 4999975)], crs=crs)
    return edges, nodes


def test_network_edit_delete_keep_undo() -> None:
    edit = viewing.NetworkEdit(*_network())
    assert edit.summary() == {"edges": 3, "deleted": 0, "kept": 0, "road_km": 0.175}
    assert edit.delete([2]) == 1
    assert edit.status(2) == "deleted" and len(edit) == 2
    n = edit.nodes()
    assert n["node_id"].tolist() == [0, 1, 2] and n["degree"].tolist() == [1, 2, 1]
    edit.keep([0, 2])                                   # keep restores a deleted edge
    assert edit.status(2) == "kept" and len(edit) == 3
    assert edit.attributes(0)["length_m"] == 100.0 and edit.attributes(0)["status"] == "kept"
    assert edit.undo() == "keep" and edit.status(2) == "deleted"
    assert edit.undo() == "delete" and not edit.deleted
    assert edit.undo() is None and not edit.can_undo()


@pytest.mark.slow
def test_network_edit_export_leaves_out_deleted_edges(tmp_path: Path) -> None:
    edit = viewing.NetworkEdit(*_network())
    edit.delete([1])
    res = edit.export(tmp_path / "net.gpkg", target_crs="EPSG:4326", formats=["shp"])
    e = gpd.read_file(tmp_path / "net.gpkg", layer="edges")
    assert len(e) == 2 and e.crs.to_epsg() == 4326
    assert sorted(e["length_m"].round(1).tolist()) == [25.0, 100.0]
    assert (tmp_path / "net_edges.shp").exists() and res.summary["edges"] == 2
    assert any(k.endswith(".qml") for k in res.outputs)
    with pytest.raises(UserError, match="exists"):
        edit.export(tmp_path / "net.gpkg")
    edges, nodes = viewing.load_network(tmp_path / "net.gpkg", "EPSG:32633")
    assert len(edges) == 2 and len(nodes) == 3 and edges.crs.to_epsg() == 32633


def test_export_raster_copies_with_style(tmp_path: Path, utm_raster: Path) -> None:
    out = viewing.export_raster(utm_raster, tmp_path / "copy.tif", style="mask")
    assert [Path(p).name for p in out] == ["copy.tif", "copy.qml"]
    with rasterio.open(out[0]) as a, rasterio.open(utm_raster) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert "singlebandpseudocolor" in Path(out[1]).read_text()
    with pytest.raises(UserError, match="exists"):
        viewing.export_raster(utm_raster, tmp_path / "copy.tif")


def test_frame_for_vectors_and_file_kinds() -> None:
    f = viewing.frame_for_vectors((0, 0, 1000, 500), "EPSG:32633")
    c, r = f.map_to_pixel(np.array([0.0, 1000.0]), np.array([500.0, 0.0]))
    assert 0 < c[0] < c[1] <= f.width and 0 < r[0] < r[1] <= f.height
    assert viewing.is_raster_file("a.TIF") and viewing.is_vector_file("b.gpkg")
    assert not viewing.is_vector_file("c.tif")


def test_available_models_lists_enet() -> None:
    names = [m["name"] for m in viewing.available_models()]
    assert "enet" in names and "ddrnet23_imagenet" not in names
