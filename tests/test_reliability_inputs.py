"""Degenerate and impossible inputs (issue 19, items 4, 5, 10 and 11), each a real GeoTIFF
written with rasterio: an engineering (LOCAL_CS) CRS, a full disk, latitudes beyond the pole, a
global raster's area, a constant image, an output path under a file, click usage errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from app.cli import main

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "resources" / "models" / "road_demo.ckpt"
LOCAL_WKT = ('LOCAL_CS["site grid",UNIT["metre",1],AXIS["Easting",EAST],'
             'AXIS["Northing",NORTH]]')


def _tif(path: Path, data: np.ndarray, crs, transform) -> Path:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs,
                       transform=transform) as dst:
        dst.write(data)
    return path


def _mask(size: int = 96) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    m[size // 2 - 2:size // 2 + 2, :] = 255
    m[:, size // 3 - 2:size // 3 + 2] = 255
    return m


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("roadseg: error: "), err
    return lines[0]


# ------------------------------------------------------------------- item 4: LOCAL_CS
@pytest.fixture()
def local_cs(tmp_path) -> Path:
    return _tif(tmp_path / "site.tif", _mask(), CRS.from_wkt(LOCAL_WKT),
                from_origin(1000, 2000, 0.5, 0.5))


def test_engineering_crs_is_one_line_everywhere(tmp_path, local_cs, capsys):
    assert main(["info", str(local_cs)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert main(["vectorize", str(local_cs), "-o", str(tmp_path / "r.gpkg")]) == 2
    line = _one_error_line(capsys)
    assert "site.tif" in line and "no geodetic datum" in line
    assert main(["extract", str(local_cs), "-o", str(tmp_path / "out"), "--checkpoint",
                 str(CKPT)]) == 2
    assert "no geodetic datum" in _one_error_line(capsys)
    lines = tmp_path / "lines.geojson"
    lines.write_text('{"type":"FeatureCollection","features":[]}')
    assert main(["dataset", "build", str(local_cs), "--labels", str(lines), "--out",
                 str(tmp_path / "ds"), "--chip-size", "32"]) == 2
    assert "no geodetic datum" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ds").exists()


def test_engineering_crs_in_pixel_coordinates(tmp_path, local_cs, capsys):
    out = tmp_path / "r.gpkg"
    assert main(["vectorize", str(local_cs), "-o", str(out), "--pixel-coords"]) == 0
    import geopandas as gpd

    edges = gpd.read_file(out, layer="edges")
    # the project's pixel-grid CRS (no Earth position), coordinates in the site grid's units
    assert len(edges) > 0 and not edges.crs.is_geographic and not edges.crs.is_projected
    x0, y0, x1, y1 = edges.total_bounds
    assert 1000 <= x0 < x1 <= 1048 and 1952 <= y0 < y1 <= 2000


# ------------------------------------------------------------------- item 10: extents
def test_latitudes_beyond_the_pole_are_refused(tmp_path, capsys):
    # 82..95 degrees north: 0.1-degree pixels, 130 rows
    bad = _tif(tmp_path / "polar.tif", _mask(130), "EPSG:4326", from_origin(10, 95, 0.1, 0.1))
    for argv in (["info", str(bad)], ["vectorize", str(bad), "-o", str(tmp_path / "p.gpkg")]):
        assert main(argv) == 2
        line = _one_error_line(capsys)
        assert "polar.tif" in line and "outside -90..90" in line
    # a grid whose pixel centres sit on the pole (edge half a pixel beyond) is fine
    ok = _tif(tmp_path / "edge.tif", _mask(50), "EPSG:4326", from_origin(10, 90.05, 0.1, 0.1))
    assert main(["info", str(ok)]) == 0


def test_global_raster_area_is_geodesic(tmp_path, capsys):
    import json

    g = _tif(tmp_path / "global.tif", np.ones((100, 200), np.uint8), "EPSG:4326",
             from_origin(-180, 90, 1.8, 1.8))
    assert main(["info", str(g), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    # the WGS84 ellipsoid's surface: 510,065,622 km²
    assert d["area_km2"] == pytest.approx(510_065_622, rel=1e-4)
    small = _tif(tmp_path / "deg.tif", np.ones((10, 10), np.uint8), "EPSG:4326",
                 from_origin(0, 1, 0.1, 0.1))
    assert main(["info", str(small), "--json"]) == 0
    # one degree square at the equator: 12,308 km²
    assert json.loads(capsys.readouterr().out)["area_km2"] == pytest.approx(12_308, rel=1e-3)


# ------------------------------------------------------------------- item 11
@pytest.mark.slow
def test_constant_image_is_refused(tmp_path, capsys):
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} not found")
    blank = _tif(tmp_path / "blank.tif", np.zeros((3, 256, 256), np.uint16), "EPSG:32611",
                 from_origin(500000, 4000000, 0.5, 0.5))
    assert main(["extract", str(blank), "-o", str(tmp_path / "out"), "--checkpoint",
                 str(CKPT)]) == 2
    line = _one_error_line(capsys)
    assert "blank.tif" in line and "constant" in line and "is 0" in line
    assert not (tmp_path / "out").exists()


def test_constant_value_sees_a_single_different_pixel(tmp_path):
    from gis.io import constant_value

    a = np.zeros((3, 600, 600), np.uint16)
    p = _tif(tmp_path / "c.tif", a, "EPSG:32611", from_origin(500000, 4000000, 0.5, 0.5))
    assert constant_value(p, (1, 2, 3)) == (0.0, 0.0, 0.0)
    a[1, 377, 411] = 9  # one pixel that a decimated read would miss
    _tif(p, a, "EPSG:32611", from_origin(500000, 4000000, 0.5, 0.5))
    assert constant_value(p, (1, 2, 3)) is None
    assert constant_value(p, (1, 3)) == (0.0, 0.0)


def test_output_under_a_file_and_usage_errors_are_one_line(tmp_path, capsys):
    mask = _tif(tmp_path / "m.tif", _mask(), "EPSG:32611", from_origin(500000, 4000000, .5, .5))
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["vectorize", str(mask), "-o", str(afile / "sub" / "r.gpkg")]) == 2
    assert f"{afile} is a file, not a directory" in _one_error_line(capsys)
    rgb = _tif(tmp_path / "rgb.tif", np.stack([_mask()] * 3), "EPSG:32611",
               from_origin(500000, 4000000, .5, .5))
    assert main(["extract", str(rgb), "-o", str(afile / "sub"), "--checkpoint",
                 str(CKPT)]) == 2
    assert f"{afile} is a file, not a directory" in _one_error_line(capsys)
    # click's own usage errors: the same one-line format
    assert main(["extract", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    line = _one_error_line(capsys)
    assert "is a directory" in line and "roadseg extract --help" in line
    assert main(["extract", str(mask), "-o", str(afile)]) == 2
    assert "is a file" in _one_error_line(capsys)
    assert main(["extract", str(mask), "-o", str(tmp_path / "o"), "--tta", "bogus"]) == 2
    _one_error_line(capsys)


# ------------------------------------------------------------------- item 5: full disk
def _tmpfs_cmd(mount: Path, size_kb: int, command: str) -> list:
    """``command`` run with a small tmpfs at ``mount`` in a private mount namespace (root, or
    an unprivileged user namespace)."""
    inner = f"mount -t tmpfs -o size={size_kb}k tmpfs {mount} && {command}"
    if os.geteuid() == 0:
        return ["unshare", "--mount", "sh", "-c", inner]
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", inner]


@pytest.mark.slow
def test_full_disk_is_one_line(tmp_path, shared_data):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) not available")
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(_tmpfs_cmd(probe, 64, "true"), capture_output=True).returncode != 0:
        pytest.skip("no private tmpfs mount possible here (user namespaces disabled?)")
    if not CKPT.is_file():
        pytest.skip(f"{CKPT} not found")
    scene = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "out"
    env = dict(os.environ, GLOG_v="3", PYTHONPATH=str(ROOT))
    cmd = (f"{sys.executable} -m app.cli extract {scene} -o {out} --checkpoint {CKPT}; "
           f"echo rc=$?; ls -A {disk}")
    p = subprocess.run(_tmpfs_cmd(disk, 300, cmd), capture_output=True, text=True, env=env,
                       timeout=600)
    assert "rc=2" in p.stdout, p.stdout + p.stderr
    # exactly our line: no traceback, and none of libtiff's own "_tiffWriteProc: No space left
    # on device." lines (gis.tiff_quiet)
    assert p.stderr.strip().splitlines() == [
        f"roadseg: error: no space left on device writing {out}"], p.stderr
    assert p.stdout.strip().endswith("rc=2")  # and nothing left on the full disk
