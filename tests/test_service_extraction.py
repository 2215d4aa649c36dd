"""app.service.extraction: the GeoTIFF -> road network job end to end.

Most tests feed a hand-made ``predict_fn`` (probability = brightness) on tiny synthetic rasters
with painted roads, so the expected network is known geometrically; one test runs a real,
randomly initialised ENet checkpoint through ``segcore.predict.load_predictor`` on a crop of the
SpaceNet Las Vegas tile.
"""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from app.service.errors import UserError
from app.service.extraction import (
    STAGES,
    ExtractionRequest,
    VectorizeParams,
    export_network,
    list_checkpoints,
    output_paths,
    raster_info,
    resolve_checkpoint,
    run_extraction,
    vectorize_mask,
)
from gis_fixtures import UTM33_ORIGIN, truncate_file, utm_transform, write_geotiff

SIZE = 96
ROW0, ROW1 = 44, 52  # horizontal road rows (8 px = 8 m wide)
COL0, COL1 = 20, 28  # vertical road columns


def brightness(batch: np.ndarray) -> np.ndarray:
    """'Model': road probability = mean brightness of the (0..1 normalised) tile."""
    return batch.mean(axis=1, keepdims=True)


def _cross_image() -> np.ndarray:
    img = np.full((3, SIZE, SIZE), 40, np.uint8)
    img[:, ROW0:ROW1, :] = 230
    img[:, :, COL0:COL1] = 230
    return img


@pytest.fixture
def cross_tif(tmp_path) -> Path:
    """96 x 96 px, 1 m UTM 33N raster with a cross of two 8 m wide bright roads."""
    return write_geotiff(tmp_path / "cross.tif", _cross_image())


def _req(src, out, **kw) -> ExtractionRequest:
    base = dict(image=str(src), out_dir=str(out), predict_fn=brightness, tile_size_px=32,
                overlap_px=8, batch_size=4)
    base.update(kw)
    return ExtractionRequest(**base)


def _snapshot(d: Path):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _hidden(d: Path):
    return [p.name for p in d.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------------------------
# success path with a hand-made model
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cross_gives_mask_and_centre_lines_of_the_right_length(cross_tif, tmp_path):
    out = tmp_path / "out"
    events = []
    res = run_extraction(_req(cross_tif, out), on_progress=lambda d, t, s: events.append((d, t, s)))
    assert res.status == "success", res.error
    paths = output_paths(_req(cross_tif, out))
    for key in ("prob", "mask", "roads_gpkg", "summary"):
        assert paths[key].is_file()
    assert res.mask_path == str(paths["mask"]) and res.roads_path == str(paths["roads_gpkg"])

    # rasters: COGs in the input CRS and grid; mask = painted roads exactly
    with rasterio.open(paths["mask"]) as ds:
        mask = ds.read(1)
        assert ds.crs == CRS.from_epsg(32633) and ds.transform == utm_transform()
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    expected = (_cross_image()[0] > 128).astype(np.uint8)
    np.testing.assert_array_equal(mask, expected)
    with rasterio.open(paths["prob"]) as ds:
        prob = ds.read(1)
    assert prob[ROW0 + 2, 70] == round(230 / 255 * 254) and prob[5, 70] == round(40 / 255 * 254)

    # vectors: a cross = 4 edges meeting in one degree-4 node, each arm reaching the border
    assert set(pyogrio.list_layers(paths["roads_gpkg"])[:, 0]) >= {"edges", "nodes"}
    edges = gpd.read_file(paths["roads_gpkg"], layer="edges")
    nodes = gpd.read_file(paths["roads_gpkg"], layer="nodes")
    assert edges.crs == "EPSG:32633"
    assert len(edges) == 4 and sorted(nodes["degree"]) == [1, 1, 1, 1, 4]
    # centre lines run from pixel centre 0.5 to 95.5 on both axes: 2 x 95 m
    total_m = edges.geometry.length.sum()
    assert abs(total_m - 2 * (SIZE - 1)) < 3.0
    centre = nodes[nodes["degree"] == 4].geometry.iloc[0]
    x0, y0 = UTM33_ORIGIN
    assert abs(centre.x - (x0 + (COL0 + COL1) / 2)) <= 1.0
    assert abs(centre.y - (y0 - (ROW0 + ROW1) / 2)) <= 1.0

    # summary: file == result, numbers consistent with the layers
    s = json.loads(paths["summary"].read_text())
    assert s["road_km"] == pytest.approx(res.summary["road_km"])
    assert s["road_km"] == pytest.approx(edges["length_m"].sum() / 1000.0)
    assert (s["edges"], s["nodes"], s["components"]) == (4, 5, 1)
    assert s["area_km2"] == pytest.approx(SIZE * SIZE / 1e6)
    assert s["road_pixel_fraction"] == pytest.approx(expected.mean())
    assert set(s["timings_s"]) >= set(STAGES) | {"total"}
    assert s["crs"] == "EPSG:32633" and s["tiles"] == 16
    assert s["parameters"]["tile_size_px"] == 32 and s["model"]["backend"] == "callable"

    # progress: every stage in order, done never exceeds total
    stages = [e[2] for e in events]
    assert [st for i, st in enumerate(stages) if i == 0 or stages[i - 1] != st] == list(STAGES)
    assert all(0 <= d <= t for d, t, _ in events)
    assert ("infer", 16, 16) in [(s_, d, t) for d, t, s_ in events]
    assert _hidden(out) == []


@pytest.mark.slow
def test_more_formats_polygons_and_target_crs(cross_tif, tmp_path):
    out = tmp_path / "out"
    res = run_extraction(_req(cross_tif, out, formats=("gpkg", "shp", "geojson"),
                              polygons=True, target_crs="EPSG:3857"))
    assert res.ok, res.error
    names = {p.name for p in out.iterdir()}
    for layer in ("edges", "nodes", "polygons"):
        assert f"cross_roads_{layer}.shp" in names and f"cross_roads_{layer}.geojson" in names
        assert f"cross_roads_{layer}.qml" in names
    g = gpd.read_file(out / "cross_roads.gpkg", layer="edges")
    assert g.crs == "EPSG:3857"  # target CRS for gpkg/shp
    assert gpd.read_file(out / "cross_roads_edges.shp").crs == "EPSG:3857"
    assert gpd.read_file(out / "cross_roads_edges.geojson").crs == "EPSG:4326"  # RFC 7946
    polys = gpd.read_file(out / "cross_roads.gpkg", layer="polygons")
    # one polygon: the painted cross, 2 x 96 x 8 - 8 x 8 m²
    assert len(polys) == 1
    assert polys["area_m2"].sum() == pytest.approx(2 * SIZE * 8 - 64)
    assert set(res.outputs) >= {"prob.tif", "mask.tif", "roads.gpkg", "summary.json",
                                "roads_edges.shp", "roads_nodes.geojson"}


def test_bbox_limits_the_processed_window(cross_tif, tmp_path):
    x0, y0 = UTM33_ORIGIN
    # the left half (columns 0..48), in the raster CRS
    res = run_extraction(_req(cross_tif, tmp_path / "o", bbox=(x0, y0 - SIZE, x0 + 48, y0),
                              bbox_crs="EPSG:32633"))
    assert res.ok, res.error
    assert res.summary["window"] == [0, 0, 48, SIZE]
    with rasterio.open(res.mask_path) as ds:
        assert (ds.width, ds.height) == (48, SIZE)
    edges = gpd.read_file(res.roads_path, layer="edges")
    assert edges.total_bounds[2] <= x0 + 48


def test_pixel_coordinates_only_when_allowed(tmp_path):
    src = write_geotiff(tmp_path / "nocrs.tif", _cross_image(), crs=None,
                        transform=rasterio.Affine.identity())
    res = run_extraction(_req(src, tmp_path / "o"))
    assert res.status == "failed" and "no CRS" in res.error and str(src) in res.error
    assert not (tmp_path / "o").exists()  # a failed run removes the folder it created
    res = run_extraction(_req(src, tmp_path / "o", allow_pixel_coords=True))
    assert res.ok, res.error
    assert res.summary["units"] == "px" and res.summary["area_km2"] is None
    edges = gpd.read_file(res.roads_path, layer="edges")
    assert edges.crs is not None and not edges.crs.is_projected and not edges.crs.is_geographic
    assert abs(edges.geometry.length.sum() - 2 * (SIZE - 1)) < 3.0  # in pixels
    res2 = run_extraction(_req(src, tmp_path / "o2", allow_pixel_coords=True,
                               target_crs="EPSG:4326"))
    assert res2.status == "failed" and "pixel coordinates" in res2.error


# --------------------------------------------------------------------------------------------
# refusals, failures, cancel
# --------------------------------------------------------------------------------------------
def test_existing_outputs_are_refused_without_overwrite(cross_tif, tmp_path):
    out = tmp_path / "out"
    assert run_extraction(_req(cross_tif, out)).ok
    before = _snapshot(out)
    res = run_extraction(_req(cross_tif, out, threshold=0.99))
    assert res.status == "failed" and "exists" in res.error
    assert str(out / "cross_") in res.error  # names the file
    assert _snapshot(out) == before and _hidden(out) == []
    # with overwrite the new threshold takes effect: nothing is road any more
    res = run_extraction(_req(cross_tif, out, threshold=0.99, overwrite=True))
    assert res.ok, res.error
    assert res.summary["edges"] == 0 and res.summary["road_km"] == 0.0
    with rasterio.open(res.mask_path) as ds:
        assert ds.read(1).max() == 0


def test_a_shapefile_from_an_earlier_run_is_refused(cross_tif, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cross_roads_nodes.shp").write_bytes(b"earlier")
    res = run_extraction(_req(cross_tif, out, formats=("gpkg", "shp")))
    assert res.status == "failed" and "cross_roads_nodes.shp" in res.error
    assert sorted(p.name for p in out.iterdir()) == ["cross_roads_nodes.shp"]


@pytest.mark.parametrize("stage", STAGES)
def test_cancel_in_any_stage_keeps_earlier_outputs(cross_tif, tmp_path, stage):
    out = tmp_path / "out"
    assert run_extraction(_req(cross_tif, out)).ok
    before = _snapshot(out)
    seen = []
    res = run_extraction(_req(cross_tif, out, threshold=0.99, overwrite=True),
                         on_progress=lambda d, t, s: seen.append(s),
                         should_cancel=lambda: stage in seen)
    assert res.status == "cancelled" and "cancel" in res.error
    assert res.outputs == {}
    assert _snapshot(out) == before  # old files byte for byte
    assert _hidden(out) == []  # no staging folder, no temporaries


def test_failing_model_leaves_nothing(cross_tif, tmp_path):
    def broken(batch):
        return batch[:, :1, :10, :10]  # wrong shape

    res = run_extraction(_req(cross_tif, tmp_path / "o", predict_fn=broken))
    assert res.status == "failed" and not res.internal_error
    assert "shape" in res.error
    assert not (tmp_path / "o").exists()


def test_bad_inputs_fail_with_one_line(tmp_path, cross_tif):
    cases = {
        "missing": (tmp_path / "nope.tif", "not found"),
        "not a raster": (tmp_path / "text.tif", "not a raster"),
        "truncated": (truncate_file(write_geotiff(tmp_path / "big.tif", np.zeros(
            (3, 300, 300), np.uint8) + 7), tmp_path / "cut.tif", 0.4), "truncated"),
    }
    (tmp_path / "text.tif").write_text("hello")
    for name, (src, words) in cases.items():
        res = run_extraction(_req(src, tmp_path / name))
        assert res.status == "failed", name
        assert words in res.error and str(src) in res.error and "\n" not in res.error, res.error
        assert not (tmp_path / name).exists()
    res = run_extraction(_req(cross_tif, tmp_path / "o", bbox=(10.0, 10.0, 10.1, 10.1)))
    assert res.status == "failed" and "does not overlap" in res.error
    res = run_extraction(_req(cross_tif, tmp_path / "o", aoi=str(tmp_path / "none.geojson")))
    assert res.status == "failed" and "none.geojson" in res.error
    res = run_extraction(_req(cross_tif, tmp_path / "o", tta="sideways"))
    assert res.status == "failed" and "sideways" in res.error
    res = run_extraction(_req(cross_tif, tmp_path / "o", target_crs="EPSG:999999"))
    assert res.status == "failed" and "EPSG:999999" in res.error
    res = run_extraction(_req(cross_tif, tmp_path / "o", predict_fn=None,
                              checkpoint=str(tmp_path / "missing.ckpt")))
    assert res.status == "failed" and "missing.ckpt" in res.error


# --------------------------------------------------------------------------------------------
# raster_info, vectorize_mask, export_network, checkpoints
# --------------------------------------------------------------------------------------------
def test_raster_info_on_real_files(shared_data):
    vegas = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    d = raster_info(vegas)
    with rasterio.open(vegas) as ds:
        assert (d["width"], d["height"], d["count"]) == (ds.width, ds.height, ds.count)
        assert d["bounds"] == pytest.approx(list(ds.bounds))
        assert d["dtypes"] == list(ds.dtypes)
    assert d["crs"] == "EPSG:4326" and d["geographic"]
    # ~0.3 m pixels (README); x is shorter than y at 36 deg N for square degree pixels
    assert 0.2 < d["resolution_m"][0] < d["resolution_m"][1] < 0.35
    assert d["bounds_lonlat"] == pytest.approx(d["bounds"])
    utm = raster_info(shared_data / "geotiff" / "RGB.byte.tif")
    assert utm["crs"] == "EPSG:32618" and utm["nodata"] == 0.0
    assert utm["resolution_m"] == pytest.approx([300.0, 300.0], rel=1e-3)
    lon0, lat0, lon1, lat1 = utm["bounds_lonlat"]
    assert -80 < lon0 < lon1 < -76 and 23 < lat0 < lat1 < 26
    json.dumps(d)  # JSON-ready


def test_raster_info_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        raster_info(tmp_path / "x.tif")
    src = write_geotiff(tmp_path / "n.tif", np.ones((1, 8, 8), np.uint8), crs=None,
                        transform=rasterio.Affine.identity())
    assert raster_info(src)["crs"] is None  # info works without CRS


def test_vectorize_mask_file_real_sample(shared_data, tmp_path):
    mask = shared_data / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    out = tmp_path / "roads.gpkg"
    res = vectorize_mask(mask, out, VectorizeParams(), formats=("shp",))
    edges = gpd.read_file(out, layer="edges")
    assert len(edges) == res.summary["edges"] > 5
    assert res.summary["road_km"] == pytest.approx(edges["length_m"].sum() / 1000)
    assert edges.crs == "EPSG:4326"
    # lines lie on the mask's road pixels
    with rasterio.open(mask) as ds:
        data, tr = ds.read(1), ds.transform
    pts = [edges.geometry.iloc[i].interpolate(0.5, normalized=True) for i in range(len(edges))]
    rc = [rasterio.transform.rowcol(tr, p.x, p.y) for p in pts]
    on_road = np.mean([data[min(r, data.shape[0] - 1), min(c, data.shape[1] - 1)] > 0
                       for r, c in rc])
    assert on_road > 0.9
    assert (tmp_path / "roads_edges.shp").is_file() and "edges.shp" in res.outputs
    with pytest.raises(UserError, match="exists"):
        vectorize_mask(mask, out, VectorizeParams())
    with pytest.raises(UserError, match="unknown vector format"):
        vectorize_mask(mask, tmp_path / "roads.kml", VectorizeParams())


def test_vectorize_probability_raster_with_threshold(cross_tif, tmp_path):
    res = run_extraction(_req(cross_tif, tmp_path / "o"))
    a = vectorize_mask(res.prob_path, tmp_path / "p.gpkg", VectorizeParams(threshold=0.5),
                       probability=True)
    b = vectorize_mask(res.prob_path, tmp_path / "q.gpkg", VectorizeParams(threshold=0.95),
                       probability=True)
    assert a.summary["road_km"] == pytest.approx(res.summary["road_km"])
    assert b.summary["edges"] == 0  # brightest pixels are 0.90


def test_export_edited_network(cross_tif, tmp_path):
    res = run_extraction(_req(cross_tif, tmp_path / "o"))
    edges = gpd.read_file(res.roads_path, layer="edges")
    nodes = gpd.read_file(res.roads_path, layer="nodes")
    edited = edges.iloc[1:].copy()  # the user deleted one arm
    out = tmp_path / "edited.gpkg"
    r = export_network(edited, nodes, out, target_crs="EPSG:4326")
    back = gpd.read_file(out, layer="edges")
    assert len(back) == 3 and back.crs == "EPSG:4326"
    assert r.summary["edges"] == 3
    assert back["length_m"].sum() == pytest.approx(edited.geometry.length.sum(), rel=1e-6)
    with pytest.raises(UserError, match="exists"):
        export_network(edited, nodes, out)
    export_network(edited, nodes, out, overwrite=True, formats=("geojson",))
    assert (tmp_path / "edited_edges.geojson").is_file()


@pytest.mark.slow
def test_list_and_resolve_checkpoints(tmp_path, enet_checkpoint):
    d = enet_checkpoint.parent
    (d / "junk.ckpt").write_bytes(b"no sidecar")
    found = list_checkpoints([d, tmp_path / "missing-dir"])
    assert [Path(e.path).name for e in found] == [enet_checkpoint.name]
    assert found[0].meta.model == "enet" and "enet" in found[0].label
    assert resolve_checkpoint("enet", None, [d]) == enet_checkpoint
    with pytest.raises(UserError, match="no checkpoint for model 'dlinknet34'"):
        resolve_checkpoint("dlinknet34", None, [d])


# --------------------------------------------------------------------------------------------
# a real network through segcore.predict.load_predictor
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def enet_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised 1-class ENet saved with its metadata (tile 128)."""
    from segcore import create_model
    from segcore.checkpoint import CheckpointMeta, save_checkpoint

    net = create_model("enet", num_classes=1)
    d = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(net, d / "enet_random.ckpt",
                           CheckpointMeta(model="enet", num_classes=1, tile_size_px=128, stride=8))


def _vegas_crop(shared_data, dst: Path, size: int = 256) -> Path:
    src = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    with rasterio.open(src) as ds:
        w = Window(300, 300, size, size)
        arr = ds.read(window=w)
        prof = ds.profile
        prof.update(width=size, height=size, transform=ds.window_transform(w))
    with rasterio.open(dst, "w", **prof) as out:
        out.write(arr)
    return dst


@pytest.mark.slow
def test_real_enet_checkpoint_on_vegas_crop(shared_data, tmp_path, enet_checkpoint):
    crop = _vegas_crop(shared_data, tmp_path / "vegas.tif")
    out = tmp_path / "out"
    res = run_extraction(ExtractionRequest(image=str(crop), out_dir=str(out),
                                           checkpoint=str(enet_checkpoint), overlap_px=0,
                                           batch_size=2))
    assert res.ok, res.error
    names = sorted(p.name for p in out.iterdir())
    assert {"vegas_prob.tif", "vegas_mask.tif", "vegas_roads.gpkg",
            "vegas_summary.json"} <= set(names)
    with rasterio.open(crop) as src, rasterio.open(res.prob_path) as prob, \
            rasterio.open(res.mask_path) as mask:
        for ds in (prob, mask):
            assert ds.crs == src.crs == CRS.from_epsg(4326)
            assert ds.transform.almost_equals(src.transform)
            assert (ds.width, ds.height) == (256, 256)
            assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        p, m = prob.read(1), mask.read(1)
    # the mask is the thresholded probability (p >= 0.5  <=>  round(p*254) >= 127)
    assert np.array_equal(m == 1, p >= 127)
    assert set(pyogrio.list_layers(res.roads_path)[:, 0]) >= {"edges", "nodes"}
    s = json.loads(Path(res.summary_path).read_text())
    assert s["model"]["name"] == "enet" and s["model"]["checkpoint"] == str(enet_checkpoint)
    assert s["bands"] == [1, 2, 3] and s["tiles"] == 4  # 256 px in 128 px tiles
    assert s["road_pixel_fraction"] == pytest.approx((m == 1).mean())


# --------------------------------------------------------------------------------------------
# preview picture and the demo script
# --------------------------------------------------------------------------------------------
def test_preview_draws_roads_where_they_are(cross_tif, tmp_path):
    import cv2

    from app.service.extraction import make_preview

    res = run_extraction(_req(cross_tif, tmp_path / "o", target_crs="EPSG:4326"))
    png = make_preview(cross_tif, res.roads_path, tmp_path / "p.png")
    bgr = cv2.imread(str(png))
    assert bgr.shape == (SIZE, SIZE, 3)
    mid_row, mid_col = (ROW0 + ROW1) // 2, (COL0 + COL1) // 2
    # on the horizontal centre line (away from the node dots): the line colour
    assert tuple(bgr[mid_row, 70]) == pytest.approx((0, 215, 255), abs=40)
    assert tuple(bgr[30, mid_col]) == pytest.approx((0, 215, 255), abs=40)
    # away from the roads: the untouched imagery grey
    assert tuple(bgr[10, 70]) == (40, 40, 40)
    with pytest.raises(UserError, match="exists"):
        make_preview(cross_tif, res.roads_path, png)


def test_demo_says_clearly_when_the_checkpoint_is_missing(tmp_path, capsys, cross_tif):
    from app import demo

    rc = demo.main(["--image", str(cross_tif), "--checkpoint", str(tmp_path / "none.ckpt"),
                    "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert rc == 2 and "none.ckpt" in err and "not there" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, capsys, cross_tif, enet_checkpoint):
    from app import demo

    out = tmp_path / "demo_output"
    rc = demo.main(["--image", str(cross_tif), "--checkpoint", str(enet_checkpoint),
                    "--out", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    assert (out / "preview.png").is_file() and (out / "cross_roads.gpkg").is_file()
    assert "qgis" in stdout and str(out / "cross_roads.gpkg") in stdout
    # the Shapefile set with its QGIS style, next to the GeoPackage
    shp = sorted(p.name for p in out.glob("cross_roads_*.shp"))
    assert "cross_roads_edges.shp" in shp and "Shapefile" in stdout
    # every layer styled in the GeoPackage has the same style beside its Shapefile (the random
    # network may find no road: an empty edges layer gets no style in either)
    gpkg_styled = {p.name[:-len(".gpkg.qml")] for p in out.glob("cross_roads_*.gpkg.qml")}
    shp_styled = {p.stem for p in out.glob("cross_roads_*.qml") if not p.name.endswith(".gpkg.qml")}
    assert shp_styled == gpkg_styled and shp_styled <= {p[:-4] for p in shp}
    assert demo.main(["--image", str(cross_tif), "--checkpoint", str(enet_checkpoint),
                      "--out", str(out)]) == 0  # re-runnable: replaces its own outputs


def test_read_network_and_overview_for_viewers(cross_tif, tmp_path):
    from app.service.extraction import raster_overview, read_network

    res = run_extraction(_req(cross_tif, tmp_path / "o", formats=("gpkg", "shp")))
    e1, n1 = read_network(res.roads_path)
    e2, n2 = read_network(tmp_path / "o" / "cross_roads.shp")
    assert len(e1) == len(e2) == 4 and len(n1) == len(n2) == 5
    assert e1.crs == e2.crs == "EPSG:32633"
    with pytest.raises(UserError, match="not found"):
        read_network(tmp_path / "nothing.gpkg")
    ov = raster_overview(cross_tif, max_size=48)
    assert ov.rgb.shape == (48, 48, 3) and ov.scale == 2.0
    with pytest.raises(UserError, match="not found"):
        raster_overview(tmp_path / "nothing.tif")


def test_normalisation_from_checkpoint_metadata_uses_whole_raster_statistics(tmp_path):
    """16-bit data for an 8-bit meanstd model is stretched to 0..255 first; a percentile model
    gets percentiles of the whole raster, so every tile is scaled identically."""
    from app.service.extraction import _normalizer_for
    from gis.io import open_raster
    from segcore.checkpoint import CheckpointMeta

    rng = np.random.default_rng(3)
    arr = rng.integers(1, 2048, size=(3, 64, 64)).astype(np.uint16)
    arr[:, :32] //= 4  # the left half is darker: per-tile statistics would differ
    info = open_raster(write_geotiff(tmp_path / "u16.tif", arr))
    meanstd = CheckpointMeta(model="enet", num_classes=1)
    f = _normalizer_for(meanstd, info, (1, 2, 3))
    y = f(arr.astype(np.float32)[None])
    mean = np.array([0.485, 0.456, 0.406])[:, None, None]
    std = np.array([0.229, 0.224, 0.225])[:, None, None]
    assert np.all(y >= (0 - mean) / std - 1e-5) and np.all(y <= (1 - mean) / std + 1e-5)
    assert y.min() < -1.5 and y.max() > 2.0  # the stretch uses the full 0..255 range
    pct = CheckpointMeta(model="enet", num_classes=1,
                         normalization={"method": "percentile", "low": 2, "high": 98})
    g = _normalizer_for(pct, info, (1, 2, 3))
    whole = g(arr.astype(np.float32)[None])[0]
    left = g(arr[:, :, :32].astype(np.float32)[None])[0]
    np.testing.assert_allclose(left, whole[:, :, :32], atol=1e-6)
    lo = np.percentile(arr[0].astype(float), 2)
    hi = np.percentile(arr[0].astype(float), 98)
    expect = np.clip((arr[0].astype(float) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(whole[0], expect, atol=2e-2)
