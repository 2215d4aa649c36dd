"""gis.aoi: AOIs from files in another CRS, windows, masks, and non-overlap errors."""
from __future__ import annotations

import json

import geopandas as gpd
import pytest
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import Polygon, box

from gis.aoi import AOI, aoi_mask, aoi_window, bbox_aoi, load_aoi
from gis.errors import AOIError
from gis.io import open_raster
from gis_fixtures import UTM33_ORIGIN, random_image, utm_transform, write_geotiff

# raster: 100 x 80 px of 2 m in UTM 33N, origin (500000, 5000000)
RES = 2.0


@pytest.fixture()
def utm_raster(tmp_path):
    return open_raster(write_geotiff(tmp_path / "r.tif", random_image((1, 80, 100)),
                                     transform=utm_transform(RES)))


def _lonlat_polygon(x0, y0, x1, y1):
    """The UTM 33N rectangle (x0, y0, x1, y1) as a lon/lat polygon."""
    tr = Transformer.from_crs(32633, 4326, always_xy=True)
    xs, ys = tr.transform([x0, x1, x1, x0], [y0, y0, y1, y1])
    return [[lon, lat] for lon, lat in zip(xs, ys)] + [[xs[0], ys[0]]]


def _write_geojson(path, ring):
    path.write_text(json.dumps({
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}],
    }))
    return path


def test_geojson_in_wgs84_over_utm_raster(tmp_path, utm_raster):
    ox, oy = UTM33_ORIGIN
    # pixels 20..60 (x) and 10..50 (y) of the raster
    ring = _lonlat_polygon(ox + 20 * RES, oy - 50 * RES, ox + 60 * RES, oy - 10 * RES)
    aoi = load_aoi(_write_geojson(tmp_path / "aoi.geojson", ring), utm_raster.crs)
    assert aoi.crs == CRS.from_epsg(32633)
    assert aoi.geometry.bounds == pytest.approx((ox + 40, oy - 100, ox + 120, oy - 20), abs=0.01)
    win = aoi_window(aoi, utm_raster)
    assert win == Window(20, 10, 40, 40)
    mask = aoi_mask(aoi, win, utm_raster.transform)
    assert mask.shape == (40, 40) and mask.dtype == bool
    assert mask.mean() > 0.97  # reprojected rectangle fills its window


def test_window_is_clipped_to_raster_and_mask_follows_polygon(utm_raster):
    ox, oy = UTM33_ORIGIN
    # a box reaching past the left and top edges of the raster
    aoi = bbox_aoi(ox - 50, oy - 40 * RES, ox + 30 * RES, oy + 50, "EPSG:32633")
    win = aoi_window(aoi, utm_raster)
    assert win == Window(0, 0, 30, 40)
    # triangle: mask must be about half of its bounding window
    tri = AOI(Polygon([(ox, oy), (ox + 40 * RES, oy), (ox, oy - 40 * RES)]), CRS.from_epsg(32633))
    m = aoi_mask(tri, Window(0, 0, 40, 40), utm_raster.transform)
    assert m[0, 0] and not m[39, 39]
    assert m.mean() == pytest.approx(0.5, abs=0.03)


def test_bbox_in_another_crs_is_reprojected(utm_raster):
    tr = Transformer.from_crs(32633, 4326, always_xy=True)
    ox, oy = UTM33_ORIGIN
    lon0, lat0 = tr.transform(ox + 10 * RES, oy - 30 * RES)
    lon1, lat1 = tr.transform(ox + 30 * RES, oy - 10 * RES)
    aoi = bbox_aoi(lon0, lat0, lon1, lat1, "EPSG:4326")
    win = aoi_window(aoi, utm_raster)
    # the lon/lat box is slightly rotated in UTM: window within a pixel of 10..30
    assert abs(win.col_off - 10) <= 1 and abs(win.row_off - 10) <= 1
    assert abs(win.width - 20) <= 2 and abs(win.height - 20) <= 2


def test_aoi_outside_raster_raises(tmp_path, utm_raster):
    ring = _lonlat_polygon(600000, 4000000, 600100, 4000100)
    aoi = load_aoi(_write_geojson(tmp_path / "far.geojson", ring), utm_raster.crs)
    with pytest.raises(AOIError, match="does not overlap") as ei:
        aoi_window(aoi, utm_raster)
    assert "far.geojson" in str(ei.value) and "r.tif" in str(ei.value)


def test_geopackage_and_shapefile(tmp_path, utm_raster):
    ox, oy = UTM33_ORIGIN
    df = gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(ox, oy - 20, ox + 20, oy)],
                          crs="EPSG:32633").to_crs("EPSG:3857")
    df.to_file(tmp_path / "a.gpkg", driver="GPKG")
    df.to_file(tmp_path / "a.shp")
    for name in ("a.gpkg", "a.shp"):
        aoi = load_aoi(tmp_path / name, "EPSG:32633")
        assert aoi_window(aoi, utm_raster) == Window(0, 0, 10, 10)


def test_bad_inputs(tmp_path):
    with pytest.raises(AOIError, match="not found"):
        load_aoi(tmp_path / "missing.geojson")
    with pytest.raises(AOIError, match="empty or inverted"):
        bbox_aoi(1, 1, 0, 2, "EPSG:4326")
    lines = tmp_path / "lines.geojson"
    lines.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {},
         "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}]}))
    with pytest.raises(AOIError, match="no polygon"):
        load_aoi(lines)


def test_real_vegas_geographic_raster(shared_data):
    info = open_raster(shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif")
    left, bottom, right, top = info.bounds
    # the north-west quarter, given in UTM 11N
    tr = Transformer.from_crs(4326, 32611, always_xy=True)
    x0, y0 = tr.transform(left, (top + bottom) / 2)
    x1, y1 = tr.transform((left + right) / 2, top)
    win = aoi_window(bbox_aoi(x0, y0, x1, y1, "EPSG:32611"), info)
    # the UTM grid is rotated ~1.1 degrees from lon/lat here (meridian convergence): a UTM box
    # built from two lon/lat corners is offset by up to ~12 px over 650 px
    assert win.col_off <= 15 and win.row_off <= 15
    assert abs(win.width - 650) <= 15 and abs(win.height - 650) <= 15
    m = aoi_mask(bbox_aoi(x0, y0, x1, y1, "EPSG:32611"), win, info.transform, crs=info.crs)
    assert m.shape == (win.height, win.width) and 0.95 < m.mean() < 1.0
