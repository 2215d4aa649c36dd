"""gis.units: the one metre/UTM helper of the pipeline (pyproj only, no files)."""
from __future__ import annotations


import pytest
from affine import Affine
from pyproj import CRS, Geod

from gis.units import (bounds_centre_lonlat, is_metric, metre_factor, metric_crs, pixel_size_m,
                       utm_crs_for_lonlat, utm_epsg_for_lonlat)


@pytest.mark.parametrize("lon, lat, epsg", [
    (10.0, 50.0, 32632), (-115.2, 36.2, 32611), (-180.0, -10.0, 32701), (180.0, 1.0, 32601),
    (179.99, 1.0, 32660), (6.0, 0.0, 32632), (5.999, -0.001, 32731), (-0.0001, 51.5, 32630)])
def test_utm_zone_of_a_place(lon, lat, epsg):
    assert utm_epsg_for_lonlat(lon, lat) == epsg
    assert utm_crs_for_lonlat(lon, lat) == CRS.from_epsg(epsg)


def test_gis_io_uses_the_same_zones():
    from gis.io import utm_crs_for_lonlat as io_utm

    for lon in range(-180, 181, 7):
        for lat in (-60.5, -0.1, 0.0, 45.0):
            assert io_utm(lon, lat).to_epsg() == utm_epsg_for_lonlat(lon, lat)


def test_metre_factor_and_metric_crs():
    assert metre_factor("EPSG:32633") == 1.0 and is_metric("EPSG:32633")
    ft = metre_factor("EPSG:2263")  # NY Long Island, US survey feet
    assert ft == pytest.approx(1200 / 3937) and not is_metric("EPSG:2263")
    assert metre_factor("EPSG:4326") is None and not is_metric("EPSG:4326")
    assert metric_crs("EPSG:32633", (15.0, 45.0)) == CRS.from_epsg(32633)
    assert metric_crs("EPSG:4326", (-115.2, 36.2)) == CRS.from_epsg(32611)
    assert metric_crs("EPSG:2263", (-73.9, 40.7)) == CRS.from_epsg(32618)  # feet -> UTM metres


def test_bounds_centre_lonlat_projected_and_geographic():
    assert bounds_centre_lonlat("EPSG:4326", (10, 40, 12, 42)) == (11.0, 41.0)
    lon, lat = bounds_centre_lonlat("EPSG:32633", (500000 - 1000, 4_980_000, 500000 + 1000,
                                                   4_982_000))
    assert lon == pytest.approx(15.0, abs=1e-6) and 44.9 < lat < 45.1


def test_pixel_size_in_metres_matches_geodesic_distance():
    assert pixel_size_m(None, Affine(1, 0, 0, 0, -1, 0), 10, 10) is None
    assert pixel_size_m("EPSG:32633", Affine(0.5, 0, 500000, 0, -0.5, 4e6), 100, 100) == \
        (0.5, 0.5)
    ft = pixel_size_m("EPSG:2263", Affine(2.0, 0, 1e6, 0, -2.0, 2e5), 10, 10)
    assert ft == pytest.approx((2 * 1200 / 3937, 2 * 1200 / 3937))
    # 1e-5 degree pixels at 36.2 N (Las Vegas): ~0.9 m east-west, ~1.1 m north-south
    t = Affine(1e-5, 0, -115.2, 0, -1e-5, 36.2)
    rx, ry = pixel_size_m("EPSG:4326", t, 200, 200)
    g = Geod(ellps="WGS84")
    lon, lat = t * (100, 100)
    ex = g.inv(lon, lat, lon + 1e-5, lat)[2]
    ey = g.inv(lon, lat, lon, lat - 1e-5)[2]
    assert rx == pytest.approx(ex, rel=2e-3) and ry == pytest.approx(ey, rel=2e-3)
