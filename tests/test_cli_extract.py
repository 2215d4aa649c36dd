"""``roadseg extract``, ``roadseg vectorize`` and ``roadseg info`` through ``app.cli.main``:
exit codes, one-line errors without traceback, nothing left behind."""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from app.cli import main
from gis_fixtures import truncate_file, utm_transform, write_geotiff


def _run(capsys, *args):
    capsys.readouterr()  # drop what fixtures printed
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("roadseg: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, err)


@pytest.fixture(scope="module")
def enet_ckpt(tmp_path_factory) -> Path:
    from segcore import create_model
    from segcore.checkpoint import CheckpointMeta, save_checkpoint

    d = tmp_path_factory.mktemp("cli_ckpt")
    return save_checkpoint(create_model("enet", num_classes=1), d / "enet.ckpt",
                           CheckpointMeta(model="enet", num_classes=1, tile_size_px=64, stride=8))


@pytest.fixture
def small_tif(tmp_path) -> Path:
    img = np.full((3, 64, 64), 60, np.uint8)
    img[:, 28:36, :] = 220
    return write_geotiff(tmp_path / "small.tif", img, transform=utm_transform(0.5))


# --------------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_extract_writes_outputs_and_prints_summary(capsys, tmp_path, small_tif, enet_ckpt):
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, "extract", small_tif, "-o", out, "--checkpoint", enet_ckpt,
                           "--overlap", 0, "--format", "gpkg", "--format", "shp", "--progress")
    assert rc == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"small_prob.tif", "small_mask.tif", "small_roads.gpkg", "small_roads_edges.shp",
            "small_summary.json"} <= names
    s = json.loads((out / "small_summary.json").read_text())
    assert f"{s['road_km']:.3f} km" in stdout and f"{s['edges']} edges" in stdout
    assert str(out / "small_roads.gpkg") in stdout
    # the progress bar went to stderr, one line per stage
    for stage in ("read", "infer", "mosaic", "vectorize", "write"):
        assert stage in err
    with rasterio.open(out / "small_mask.tif") as ds:
        assert ds.crs == "EPSG:32633" and ds.transform == utm_transform(0.5)

    # a second run refuses to overwrite, names the file, and changes nothing
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rc, stdout, err = _run(capsys, "extract", small_tif, "-o", out, "--checkpoint", enet_ckpt)
    assert rc == 2
    _one_line_error(err, str(out / "small_"), "exists")
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    rc, stdout, err = _run(capsys, "extract", small_tif, "-o", out, "--checkpoint", enet_ckpt,
                           "--overwrite", "--json", "--threshold", 0.3)
    assert rc == 0, err
    assert json.loads(stdout)["parameters"]["threshold"] == 0.3


def _bad_inputs(tmp_path: Path, small_tif: Path):
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    big = write_geotiff(tmp_path / "big.tif", np.full((3, 256, 256), 9, np.uint8))
    cut = truncate_file(big, tmp_path / "cut.tif", 0.5)
    nocrs = write_geotiff(tmp_path / "nocrs.tif", np.ones((3, 16, 16), np.uint8), crs=None,
                          transform=rasterio.Affine.identity())
    aoi = tmp_path / "far.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {}, "geometry": {
            "type": "Polygon", "coordinates": [[[2, 48], [2.1, 48], [2.1, 48.1], [2, 48]]]}}]}))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 300)
    (tmp_path / "garbage.json").write_text(json.dumps({"model": "enet", "num_classes": 1}))
    nometa = tmp_path / "nometa.ckpt"
    nometa.write_bytes(b"\x00" * 300)
    return [
        ("missing", [tmp_path / "missing.tif"], ["missing.tif", "not found"]),
        ("text", [text], ["notes.tif", "not a raster"]),
        ("truncated", [cut], ["cut.tif", "truncated"]),
        ("no crs", [nocrs], ["nocrs.tif", "no CRS"]),
        ("aoi outside", [small_tif, "--aoi", aoi], ["far.geojson", "does not overlap"]),
        ("bbox outside", [small_tif, "--bbox", 2, 48, 2.1, 48.1], ["does not overlap"]),
        ("garbage ckpt", [small_tif, "--checkpoint", garbage], ["garbage.ckpt"]),
        ("no sidecar", [small_tif, "--checkpoint", nometa], ["nometa", "sidecar"]),
        ("missing ckpt", [small_tif, "--checkpoint", tmp_path / "nope.ckpt"],
         ["nope.ckpt", "not found"]),
        ("bad crs", [small_tif, "--target-crs", "EPSG:0"], ["EPSG:0"]),
    ]


def test_extract_bad_inputs_one_line_no_output(capsys, tmp_path, small_tif):
    for name, args, words in _bad_inputs(tmp_path, small_tif):
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        rc, stdout, err = _run(capsys, "extract", *args, "-o", out)
        assert rc == 2, (name, err)
        _one_line_error(err, *words)
        assert not out.exists(), name  # the folder it created is gone again


def test_extract_usage_errors_are_not_tracebacks(capsys, tmp_path, small_tif):
    rc, _, err = _run(capsys, "extract", small_tif)  # no -o
    assert rc == 2 and "Missing option" in err and "Traceback" not in err
    rc, _, err = _run(capsys, "extract", small_tif, "-o", tmp_path / "o", "--tta", "spin")
    assert rc == 2 and "spin" in err


# --------------------------------------------------------------------------------------------
# vectorize
# --------------------------------------------------------------------------------------------
def test_vectorize_real_sample_mask(capsys, tmp_path, shared_data):
    mask = shared_data / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    out = tmp_path / "roads.gpkg"
    rc, stdout, err = _run(capsys, "vectorize", mask, "-o", out, "--spur-length", 8,
                           "--format", "geojson")
    assert rc == 0, err
    edges = gpd.read_file(out, layer="edges")
    assert len(edges) > 5 and edges.crs == "EPSG:4326"
    assert f"{edges['length_m'].sum() / 1000:.3f} km" in stdout
    assert (tmp_path / "roads_edges.geojson").is_file()
    rc, _, err = _run(capsys, "vectorize", mask, "-o", out)
    assert rc == 2
    _one_line_error(err, "roads.gpkg", "exists")
    rc, _, err = _run(capsys, "vectorize", mask, "-o", out, "--overwrite", "--gap", -1)
    assert rc == 2
    _one_line_error(err, "gap_m")


def test_vectorize_probability_raster_needs_threshold(capsys, tmp_path):
    prob = np.zeros((40, 40), np.float32)
    prob[18:22, :] = 0.7  # a 4 m wide road at 0.7, 40 m long
    src = write_geotiff(tmp_path / "p.tif", prob)
    rc, stdout, err = _run(capsys, "vectorize", src, "-o", tmp_path / "a.gpkg",
                           "--threshold", 0.5)
    assert rc == 0, err
    a = gpd.read_file(tmp_path / "a.gpkg", layer="edges")
    assert len(a) == 1 and abs(a["length_m"].iloc[0] - 39) < 2
    rc, stdout, err = _run(capsys, "vectorize", src, "-o", tmp_path / "b.gpkg",
                           "--threshold", 0.8)
    assert rc == 0 and len(gpd.read_file(tmp_path / "b.gpkg", layer="edges")) == 0


def test_vectorize_bad_inputs(capsys, tmp_path):
    text = tmp_path / "m.tif"
    text.write_text("nope")
    rc, _, err = _run(capsys, "vectorize", text, "-o", tmp_path / "x.gpkg")
    assert rc == 2
    _one_line_error(err, "m.tif")
    rc, _, err = _run(capsys, "vectorize", tmp_path / "gone.tif", "-o", tmp_path / "x.gpkg")
    assert rc == 2
    _one_line_error(err, "gone.tif", "not found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["RGB-PanSharpen_AOI_2_Vegas_img0.tif", "RGB.byte.tif",
                                  "road_mask_input.tif"])
def test_info_on_real_files(capsys, shared_data, name):
    path = shared_data / "geotiff" / name
    rc, stdout, err = _run(capsys, "info", path)
    assert rc == 0, err
    with rasterio.open(path) as ds:
        assert f"{ds.width} x {ds.height} px" in stdout
        assert f"EPSG:{ds.crs.to_epsg()}" in stdout
        assert ds.dtypes[0] in stdout
        assert f"{ds.bounds.left:.6f}"[:8] in stdout
        if ds.nodata is not None:
            assert f"nodata:     {ds.nodata:g}" in stdout
    assert "resolution:" in stdout and " m" in stdout
    rc, stdout, _ = _run(capsys, "info", path, "--json")
    assert json.loads(stdout)["path"] == str(path)


def test_info_errors_and_no_crs(capsys, tmp_path):
    rc, _, err = _run(capsys, "info", tmp_path / "none.tif")
    assert rc == 2
    _one_line_error(err, "none.tif", "not found")
    big = write_geotiff(tmp_path / "big.tif", np.full((3, 256, 256), 9, np.uint8))
    rc, _, err = _run(capsys, "info", truncate_file(big, tmp_path / "cut.tif", 0.5))
    assert rc == 2
    _one_line_error(err, "cut.tif")
    src = write_geotiff(tmp_path / "n.tif", np.ones((1, 8, 8), np.uint8), crs=None,
                        transform=rasterio.Affine.identity())
    rc, stdout, _ = _run(capsys, "info", src)
    assert rc == 0 and "none (pixel coordinates)" in stdout


def test_extract_panchromatic_with_repeated_band(capsys, tmp_path, enet_ckpt):
    pan = np.full((1, 64, 64), 300, np.uint16)
    pan[0, 28:36, :] = 1900
    src = write_geotiff(tmp_path / "pan.tif", pan)
    rc, _, err = _run(capsys, "extract", src, "-o", tmp_path / "a", "--checkpoint", enet_ckpt)
    assert rc == 2
    _one_line_error(err, "pan.tif", "band 2", "1 band")
    rc, stdout, err = _run(capsys, "extract", src, "-o", tmp_path / "b", "--checkpoint",
                           enet_ckpt, "--bands", "1,1,1", "--json")
    assert rc == 0, err
    s = json.loads(stdout)
    assert s["bands"] == [1, 1, 1] and s["model"]["bands"] == [1, 1, 1]
    rc, _, err = _run(capsys, "extract", src, "-o", tmp_path / "c", "--bands", "x")
    assert rc == 2
    _one_line_error(err, "--bands")


def test_a_subcommand_module_that_fails_to_import_is_not_dropped(monkeypatch, tmp_path):
    """A command module that cannot be imported stops ``roadseg`` with that error instead of
    the command silently missing from ``roadseg --help``."""
    import app.cli as cli_pkg

    (tmp_path / "roadseg_broken_cmd.py").write_text("import roadseg_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli_pkg, "_SUBCOMMAND_MODULES",
                        cli_pkg._SUBCOMMAND_MODULES + ("roadseg_broken_cmd",))
    monkeypatch.setattr(cli_pkg, "__path__", list(cli_pkg.__path__) + [str(tmp_path)])
    with pytest.raises(ModuleNotFoundError, match="roadseg_no_such_dependency"):
        main(["--help"])
    with pytest.raises(ModuleNotFoundError, match="app.cli.roadseg_no_such_cmd"):
        monkeypatch.setattr(cli_pkg, "_SUBCOMMAND_MODULES", ("roadseg_no_such_cmd",))
        main(["--help"])


@pytest.mark.parametrize("command", [("extract",), ("vectorize",), ("export",), ("eval",),
                                     ("convert",), ("train",), ("dataset", "build")])
def test_shared_overwrite_option_on_every_writing_command(capsys, command):
    rc, out, _ = _run(capsys, *command, "--help")
    assert rc == 0 and "--overwrite" in out
