"""Degenerate masks (noise, 1-px texture, solid road): detected per strip, reported, not traced,
with bounded time and memory; real road masks are never called degenerate."""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import rasterio
from affine import Affine

from gis.vectorize import DEGENERATE_KM_PER_KM2, VectorizeParams, vectorize_mask

UTM = "EPSG:32611"
T_03 = Affine(0.3, 0, 500000.0, 0, -0.3, 4000000.0)


def checkerboard(n: int) -> np.ndarray:
    return (np.add.outer(np.arange(n), np.arange(n)) % 2).astype(bool)


def test_checkerboard_is_reported_not_traced_in_bounded_memory():
    m = checkerboard(1000)
    # no hole filling: the texture itself reaches the skeleton (8-connected, one object)
    params = VectorizeParams(max_hole_area_m2=0.0)
    tracemalloc.start()
    t0 = time.perf_counter()
    net = vectorize_mask(m, T_03, UTM, params=params, strip_rows=250)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(net.edges) == 0
    d = net.degenerate
    assert d is not None and d["fraction_of_rows"] == 1.0 and len(d["strips"]) == 4
    assert all(s["km_per_km2"] is None or s["km_per_km2"] > DEGENERATE_KM_PER_KM2
               for s in d["strips"])
    # one 250-row strip's skeleton at most, not a million-node graph (2 GB at 2000² before)
    assert peak < 120e6, peak
    assert seconds < 60


def test_filled_checkerboard_and_dense_noise_are_solid_road():
    for m in (checkerboard(800), np.random.default_rng(0).random((800, 800)) < 0.72):
        net = vectorize_mask(m, T_03, UTM)
        assert len(net.edges) == 0
        assert net.degenerate["max_road_fraction"] > 0.9
        assert "noise or solid road" in net.degenerate["reason"]


def test_roads_beside_a_noise_strip_are_still_traced():
    m = np.zeros((800, 600), bool)
    m[100:110, :] = True
    m[:400, 300:310] = True
    m[400:] = np.random.default_rng(1).random((400, 600)) < 0.6
    net = vectorize_mask(m, T_03, UTM, strip_rows=400)
    assert net.degenerate is not None and net.degenerate["fraction_of_rows"] == 0.5
    assert [s["rows"] for s in net.degenerate["strips"]] == [[400, 800]]
    top = vectorize_mask(m[:400], T_03, UTM)
    assert top.degenerate is None and len(top.edges) >= 3
    # the traced part keeps the roads of the clean strip
    assert net.summary()["total_km"] >= 0.9 * top.summary()["total_km"]


def test_real_road_mask_is_not_degenerate(shared_data):
    path = shared_data / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    with rasterio.open(path) as src:
        m = src.read(1) > 0
        transform, crs = src.transform, src.crs
    net = vectorize_mask(m, transform, crs)
    assert net.degenerate is None and len(net.edges) > 5


@pytest.mark.parametrize("res", [0.3, pytest.param(1.0, marks=pytest.mark.slow),
                                 pytest.param(10.0, marks=pytest.mark.slow)])
def test_dense_street_grid_is_not_degenerate_at_any_resolution(res):
    # a 30 km/km² grid (denser than most city centres): 1-2 px roads at 10 m, 7 m roads at 0.3 m
    spacing_m, width_m = 66.0, max(7.0, 1.5 * res)
    n = 600 if res >= 10 else 1000
    step = max(int(round(spacing_m / res)), 3)
    wpx = max(int(round(width_m / res)), 1)
    m = np.zeros((n, n), bool)
    for k in range(0, n, step):
        m[k:k + wpx, :] = True
        m[:, k:k + wpx] = True
    t = Affine(res, 0, 500000.0, 0, -res, 4000000.0)
    net = vectorize_mask(m, t, UTM)
    assert net.degenerate is None and len(net.edges) > 10


def test_cli_vectorize_reports_a_noise_mask_in_one_line(tmp_path, capsys):
    from app.cli import main

    mask = tmp_path / "noise_mask.tif"
    data = (np.random.default_rng(2).random((600, 600)) < 0.72).astype(np.uint8) * 255
    with rasterio.open(mask, "w", driver="GTiff", width=600, height=600, count=1,
                       dtype="uint8", crs=UTM, transform=T_03) as dst:
        dst.write(data, 1)
    assert main(["vectorize", str(mask), "-o", str(tmp_path / "roads.gpkg")]) == 0
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "100 % of the mask is noise or solid road" in lines[0]
    assert "roads: 0.000 km in 0 edges" in out
