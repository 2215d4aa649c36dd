"""gis.inference: tiled inference end to end with numpy predict functions (no MindSpore)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import rasterio
import rasterio.windows
from pyproj import Transformer
from rasterio.crs import CRS

from gis.aoi import load_aoi
from gis.errors import (
    AOIError,
    CancelledError,
    CRSError,
    InferenceError,
    OutputExistsError,
    RasterReadError,
)
from gis.inference import run_tiled_inference
from gis.mosaic import MASK_NODATA, MASK_ROAD, PROB_NODATA, PROB_SCALE
from gis_fixtures import (
    UTM33_ORIGIN,
    corrupt_middle,
    random_image,
    utm_transform,
    write_geotiff,
)


def identity(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


def channel_mean(batch: np.ndarray) -> np.ndarray:
    return batch.mean(axis=1, keepdims=True)


def sigmoid_pixelwise(batch: np.ndarray) -> np.ndarray:
    """A per-pixel (hence flip/rotation-equivariant) non-linear 'model'."""
    z = 6.0 * (batch[:, :1] - 0.5) + 2.0 * (batch[:, 1:2] - batch[:, 2:3])
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def _quantised_float_raster(tmp_path, h=70, w=90, seed=0):
    """float32 band with values k/254, so that p * 254 rounds back to k exactly."""
    k = np.random.default_rng(seed).integers(0, PROB_SCALE + 1, size=(1, h, w))
    arr = (k / PROB_SCALE).astype(np.float32)
    return write_geotiff(tmp_path / "f.tif", arr, transform=utm_transform(0.5)), k[0]


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.tags(ns="IMAGE_STRUCTURE"), ds.overviews(1)


def _listing(d):
    return sorted(p.name for p in d.iterdir())


@pytest.mark.parametrize("workers", [2, 3])
def test_concurrent_inference_workers_keep_tile_order(tmp_path, workers):
    """Calls on consecutive batches overlap (and finish out of order), yet the mosaic is
    identical to the sequential run and an error of any call still surfaces."""
    import threading
    import time

    src, k = _quantised_float_raster(tmp_path, h=100, w=120)
    lock = threading.Lock()
    state = {"active": 0, "max_active": 0, "calls": 0}

    def slow_identity(batch):
        with lock:
            state["calls"] += 1
            n = state["calls"]
            state["active"] += 1
            state["max_active"] = max(state["max_active"], state["active"])
        time.sleep(0.03 if n % 2 else 0.001)  # odd calls finish after the next even one
        with lock:
            state["active"] -= 1
        return batch.copy()

    kw = dict(tile_size_px=32, overlap_px=8, batch_size=2, normalize="none")
    seq = run_tiled_inference(src, identity, tmp_path / "p1.tif", tmp_path / "m1.tif", **kw)
    par = run_tiled_inference(src, slow_identity, tmp_path / "p2.tif", tmp_path / "m2.tif",
                              inference_workers=workers, **kw)
    assert state["max_active"] >= 2  # really concurrent
    for a, b in ((seq.prob_path, par.prob_path), (seq.mask_path, par.mask_path)):
        np.testing.assert_array_equal(_read(a)[0], _read(b)[0])
    np.testing.assert_array_equal(_read(par.prob_path)[0][0], k)
    assert par.tiles == seq.tiles and par.positive_pixels == seq.positive_pixels

    call_index = iter(range(1000))

    def fails_third(batch):
        if next(call_index) == 2:
            raise InferenceError("boom in call 3")
        return batch.copy()

    with pytest.raises(InferenceError, match="boom"):
        run_tiled_inference(src, fails_third, tmp_path / "p3.tif", tmp_path / "m3.tif",
                            inference_workers=workers, **kw)
    assert not (tmp_path / "p3.tif").exists() and not (tmp_path / "m3.tif").exists()
    with pytest.raises(ValueError, match="inference_workers"):
        run_tiled_inference(src, identity, tmp_path / "p4.tif", tmp_path / "m4.tif",
                            inference_workers=0, **kw)


def test_identity_round_trip_is_exact_and_outputs_are_cogs(tmp_path):
    src, k = _quantised_float_raster(tmp_path)
    calls = []
    res = run_tiled_inference(
        src, identity, tmp_path / "prob.tif", tmp_path / "mask.tif",
        tile_size_px=32, overlap_px=8, batch_size=2, normalize="none",
        on_progress=lambda d, t, s: calls.append((d, t, s)),
    )
    prob, prof, tags, _ = _read(res.prob_path)
    mask, mprof, mtags, _ = _read(res.mask_path)
    np.testing.assert_array_equal(prob[0], k)  # exact round trip through tiles and blending
    np.testing.assert_array_equal(mask[0], np.where(k / PROB_SCALE >= 0.5, MASK_ROAD, 0))
    for p, t in ((prof, tags), (mprof, mtags)):
        assert p["tiled"] and t.get("LAYOUT") == "COG" and p["dtype"] == "uint8"
        assert p["crs"] == CRS.from_epsg(32633) and p["transform"] == utm_transform(0.5)
        assert (p["width"], p["height"]) == (90, 70)
    assert prof["nodata"] == PROB_NODATA and mprof["nodata"] == MASK_NODATA
    assert res.tiles == 12 and res.valid_pixels == 70 * 90
    assert res.positive_pixels == int((k / PROB_SCALE >= 0.5).sum())
    # progress: per batch, monotonic, then the two COGs
    inf = [c for c in calls if c[2] == "inference"]
    assert inf[0] == (0, 12, "inference") and inf[-1] == (12, 12, "inference")
    assert [d for d, _, _ in inf] == sorted(d for d, _, _ in inf) and len(inf) == 7
    assert calls[-1] == (2, 2, "writing")
    assert _listing(tmp_path) == ["f.tif", "mask.tif", "prob.tif"]


def test_cog_threads_come_from_the_caller_not_the_environment(tmp_path, monkeypatch):
    """The COG conversion uses the thread count the caller passes (the service passes the cores
    the process may use); gis reads no environment variable of ours."""
    import gis.inference as gi

    seen = []
    real = gi.cog_copy

    def spy(*args, **kw):
        seen.append(kw["num_threads"])
        return real(*args, **kw)

    monkeypatch.setattr(gi, "cog_copy", spy)
    monkeypatch.setenv("ROADSEG_CORES", "7")
    src, _ = _quantised_float_raster(tmp_path)
    run_tiled_inference(src, identity, tmp_path / "p.tif", tmp_path / "m.tif", tile_size_px=32,
                        overlap_px=8, normalize="none", cog_threads=3)
    assert seen == [3, 3]
    assert _read(tmp_path / "p.tif")[2]["LAYOUT"] == "COG"


def test_cog_overviews_present_on_larger_output(tmp_path):
    src = write_geotiff(tmp_path / "rgb.tif", random_image((3, 600, 600)))
    res = run_tiled_inference(src, channel_mean, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=256, overlap_px=32, batch_size=2, cog_compress_level=1)
    expected = np.rint(_read(src)[0].astype(np.float32).mean(0) / 255 * PROB_SCALE)
    assert np.abs(_read(res.prob_path)[0][0] - expected).max() <= 1
    for path in (res.prob_path, res.mask_path):
        _, prof, tags, ovr = _read(path)
        assert tags["LAYOUT"] == "COG" and prof["blockxsize"] == 512
        assert ovr == [2, 4]


def test_nodata_and_alpha_become_output_nodata(tmp_path):
    img = random_image((4, 40, 40))
    img[3] = 255
    img[3, :, :12] = 0  # transparent left strip
    src = write_geotiff(tmp_path / "a.tif", img, alpha_band=4)
    seen = []

    def model(b):
        seen.append(b.shape[1])
        return channel_mean(b)

    res = run_tiled_inference(src, model, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=32, overlap_px=8, batch_size=4)
    assert set(seen) == {3} and res.bands == (1, 2, 3)
    prob = _read(res.prob_path)[0][0]
    mask = _read(res.mask_path)[0][0]
    assert (prob[:, :12] == PROB_NODATA).all() and (prob[:, 12:] < PROB_NODATA).all()
    assert (mask[:, :12] == MASK_NODATA).all() and (mask[:, 12:] != MASK_NODATA).all()
    assert res.valid_pixels == 40 * 28
    expected = np.rint(img[:3, :, 12:].astype(np.float32).mean(0) / 255 * PROB_SCALE)
    assert np.abs(prob[:, 12:] - expected).max() <= 1


def test_uint16_band_selection_and_multiclass(tmp_path):
    src = write_geotiff(tmp_path / "u16.tif", random_image((4, 36, 36), "uint16"), nodata=0)

    def two_class(b):
        p1 = b[:, :1]
        return np.concatenate([1 - p1, p1], axis=1)

    res = run_tiled_inference(src, two_class, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=32, overlap_px=8, bands=(4,))
    prob, prof, _, _ = _read(res.prob_path)
    mask = _read(res.mask_path)[0][0]
    assert prof["count"] == 2 and res.num_classes == 2 and res.bands == (4,)
    assert np.abs(prob.astype(int).sum(0) - PROB_SCALE).max() <= 1
    decided = prob[1] != prob[0]
    np.testing.assert_array_equal(mask[decided], (prob[1] > prob[0])[decided].astype(np.uint8))
    # the stretch maps 2 %..98 % of the band to 0..1
    assert 0.01 < (prob[1] == 0).mean() < 0.05 and 0.01 < (prob[1] == PROB_SCALE).mean() < 0.05


def test_aoi_geojson_in_wgs84_over_utm_raster(tmp_path):
    src = write_geotiff(tmp_path / "r.tif", random_image((3, 64, 64)), transform=utm_transform(1.0))
    ox, oy = UTM33_ORIGIN
    tr = Transformer.from_crs(32633, 4326, always_xy=True)
    # a triangle inside pixels x 10..50, y 20..60
    xs, ys = tr.transform([ox + 10, ox + 50, ox + 10], [oy - 20, oy - 20, oy - 60])
    ring = [[a, b] for a, b in zip(xs, ys)] + [[xs[0], ys[0]]]
    gj = tmp_path / "aoi.geojson"
    gj.write_text(json.dumps({"type": "Feature", "properties": {},
                              "geometry": {"type": "Polygon", "coordinates": [ring]}}))
    aoi = load_aoi(gj)
    assert aoi.crs == CRS.from_epsg(4326)
    res = run_tiled_inference(src, channel_mean, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=32, overlap_px=8, aoi=aoi)
    assert (res.window.col_off, res.window.row_off, res.window.width,
            res.window.height) == (10, 20, 40, 40)
    prob, prof, _, _ = _read(res.prob_path)
    assert prof["transform"] == rasterio.windows.transform(res.window, utm_transform(1.0))
    assert prof["transform"].c == ox + 10 and prof["transform"].f == oy - 20
    inside = prob[0] != PROB_NODATA
    assert inside[0, 0] and not inside[-1, -1]  # triangle: top-left in, bottom-right out
    assert inside.mean() == pytest.approx(0.5, abs=0.05)
    assert res.valid_pixels == int(inside.sum())

    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": {
        "type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}}))
    with pytest.raises(AOIError, match="does not overlap"):
        run_tiled_inference(src, channel_mean, tmp_path / "p2.tif", tmp_path / "m2.tif",
                            aoi=load_aoi(far))
    assert not (tmp_path / "p2.tif").exists()


def _previous_outputs(tmp_path):
    prob, mask = tmp_path / "prob.tif", tmp_path / "mask.tif"
    prob.write_bytes(b"previous probabilities")
    mask.write_bytes(b"previous mask")
    return prob, mask


def test_cancel_leaves_previous_outputs_intact(tmp_path):
    src, _ = _quantised_float_raster(tmp_path)
    prob, mask = _previous_outputs(tmp_path)
    batches = []

    def model(b):
        batches.append(len(b))
        return b

    polls = iter([False, False, True])
    with pytest.raises(CancelledError, match="cancelled after 2 of 12 tiles"):
        run_tiled_inference(src, model, prob, mask, tile_size_px=32, overlap_px=8, batch_size=2,
                            normalize="none", overwrite=True, should_cancel=lambda: next(polls))
    assert batches == [2]  # checked between batches: the second batch was never predicted
    assert prob.read_bytes() == b"previous probabilities"
    assert mask.read_bytes() == b"previous mask"
    assert _listing(tmp_path) == ["f.tif", "mask.tif", "prob.tif"]


def test_cancel_during_cog_writing_cleans_up(tmp_path):
    src, _ = _quantised_float_raster(tmp_path)
    state = {"writing": False}

    def progress(done, total, stage):
        state["writing"] = stage == "writing"

    with pytest.raises(CancelledError):
        run_tiled_inference(src, identity, tmp_path / "p.tif", tmp_path / "m.tif",
                            tile_size_px=32, overlap_px=8, normalize="none",
                            on_progress=progress, should_cancel=lambda: state["writing"])
    assert _listing(tmp_path) == ["f.tif"]


def test_failing_model_leaves_no_partial_files(tmp_path):
    src, _ = _quantised_float_raster(tmp_path)
    prob, mask = _previous_outputs(tmp_path)
    n = {"calls": 0}

    def flaky(b):
        n["calls"] += 1
        if n["calls"] == 3:
            raise RuntimeError("device lost")
        return b

    with pytest.raises(RuntimeError, match="device lost"):
        run_tiled_inference(src, flaky, prob, mask, tile_size_px=32, overlap_px=8, batch_size=2,
                            normalize="none", overwrite=True)
    assert prob.read_bytes() == b"previous probabilities"
    assert _listing(tmp_path) == ["f.tif", "mask.tif", "prob.tif"]


def test_refuses_to_overwrite_before_any_work(tmp_path):
    src, _ = _quantised_float_raster(tmp_path)
    prob, mask = _previous_outputs(tmp_path)
    called = []
    with pytest.raises(OutputExistsError, match="prob.tif"):
        run_tiled_inference(src, lambda b: called.append(1) or b, prob, tmp_path / "new.tif")
    assert not called and not (tmp_path / "new.tif").exists()


def test_bad_model_output_shape(tmp_path):
    src, _ = _quantised_float_raster(tmp_path)
    with pytest.raises(InferenceError, match="expected"):
        run_tiled_inference(src, lambda b: b[:, :, :8], tmp_path / "p.tif", tmp_path / "m.tif",
                            tile_size_px=32, overlap_px=8, normalize="none")
    assert _listing(tmp_path) == ["f.tif"]


def test_no_crs_needs_allow_pixel_coords(tmp_path):
    src = write_geotiff(tmp_path / "n.tif", random_image((3, 20, 20)), crs=None,
                        transform=utm_transform())
    with pytest.raises(CRSError, match="no CRS"):
        run_tiled_inference(src, channel_mean, tmp_path / "p.tif", tmp_path / "m.tif")
    res = run_tiled_inference(src, channel_mean, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=16, overlap_px=4, allow_pixel_coords=True)
    _, prof, _, _ = _read(res.prob_path)
    assert prof["crs"] is None and res.crs is None


@pytest.mark.slow
def test_does_not_import_segcore_or_mindspore():
    import subprocess

    code = ("import sys, gis.inference, gis.io, gis.aoi, gis.mosaic;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('segcore','mindspore')];"
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_real_vegas_rgb_with_alpha(shared_data, tmp_path):
    src = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    res = run_tiled_inference(src, channel_mean, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=512, overlap_px=64, batch_size=2)
    with rasterio.open(src) as s, rasterio.open(res.prob_path) as p:
        assert p.crs == s.crs and p.transform == s.transform and p.shape == s.shape
        assert p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and p.overviews(1)
        expected = np.rint(s.read([1, 2, 3]).astype(np.float32).mean(0) / 255 * PROB_SCALE)
        assert np.abs(p.read(1).astype(int) - expected).max() <= 1
    assert res.bands == (1, 2, 3) and res.resolution_m[1] == pytest.approx(0.3, abs=0.01)


def test_real_uint16_percentile(shared_data, tmp_path):
    src = shared_data / "geotiff" / "road_mask_input.tif"
    res = run_tiled_inference(src, identity, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=512, overlap_px=64, batch_size=2)
    prob = _read(res.prob_path)[0][0]
    # 2-98 % stretch: ~2 % of pixels at each end of the range, the rest spread between
    assert 0.01 < (prob == 0).mean() < 0.05 and 0.01 < (prob == PROB_SCALE).mean() < 0.05
    assert 60 < prob.mean() < 200


def test_memory_bounded_to_one_strip_on_a_tall_raster(tmp_path):
    src = write_geotiff(tmp_path / "tall.tif", random_image((1, 400, 24)))
    res = run_tiled_inference(src, identity, tmp_path / "p.tif", tmp_path / "m.tif",
                              tile_size_px=32, overlap_px=8, batch_size=1)
    assert res.strip_rows == 32  # the blend buffer holds one tile height, not 400 rows
    assert res.height == 400 and res.tiles == 17


def test_normalize_specs_mapping_and_callable(tmp_path):
    img = np.full((3, 20, 20), 255, np.uint8)
    img[1] = 0
    src = write_geotiff(tmp_path / "c.tif", img)
    seen = {}

    def capture(name):
        def f(b):
            seen[name] = b.copy()
            return np.zeros((b.shape[0], 1) + b.shape[2:], np.float32)
        return f

    kw = dict(tile_size_px=16, overlap_px=4, batch_size=4)
    run_tiled_inference(src, capture("map"), tmp_path / "p1.tif", tmp_path / "m1.tif",
                        normalize={"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 1.0]}, **kw)
    # uint8 -> /255 -> (x - mean) / std, padded pixels 0
    np.testing.assert_allclose(seen["map"][0, :, 0, 0], [1.0, -2.0, 0.5], atol=1e-6)
    run_tiled_inference(src, capture("fn"), tmp_path / "p2.tif", tmp_path / "m2.tif",
                        normalize=lambda x: x - 100.0, **kw)
    np.testing.assert_allclose(seen["fn"][0, :, 0, 0], [155.0, -100.0, 155.0])
    assert (seen["fn"][-1, :, -1, -1] == 0).all()  # padded beyond the 20 x 20 raster


def test_corrupt_block_mid_run_raises_and_cleans_up(tmp_path):
    import rasterio as rio

    good = tmp_path / "good.tif"
    with rio.open(good, "w", driver="GTiff", width=128, height=128, count=1, dtype="uint8",
                  crs="EPSG:32633", transform=utm_transform(), tiled=True, blockxsize=32,
                  blockysize=32, compress="deflate") as ds:
        ds.write(random_image((1, 128, 128)))
    bad = corrupt_middle(good, tmp_path / "bad.tif")
    prob, mask = _previous_outputs(tmp_path)
    with pytest.raises(RasterReadError, match="bad.tif"):
        run_tiled_inference(bad, channel_mean, prob, mask, tile_size_px=32, overlap_px=0,
                            batch_size=1, overwrite=True)
    assert prob.read_bytes() == b"previous probabilities"
    assert _listing(tmp_path) == ["bad.tif", "good.tif", "mask.tif", "prob.tif"]


def test_gdal_block_cache_is_bounded_while_running(tmp_path):
    """GDAL's default block cache grew with the raster (GBs on a 20000 px scene); inference
    runs with GDAL_CACHEMAX bounded and restores the caller's setting afterwards."""
    from rasterio.env import get_gdal_config

    from gis import inference

    src, _ = _quantised_float_raster(tmp_path)
    seen = []

    def probe(batch):
        seen.append(get_gdal_config("GDAL_CACHEMAX"))
        return batch.copy()

    before = get_gdal_config("GDAL_CACHEMAX")
    run_tiled_inference(src, probe, tmp_path / "p.tif", tmp_path / "m.tif", tile_size_px=32,
                        overlap_px=8, normalize="none")
    # an integer GDAL_CACHEMAX counts bytes: the bound is megabytes, not a 256-byte cache
    assert seen and all(int(v) == inference.GDAL_CACHE_MIN_MB << 20 for v in seen)
    assert get_gdal_config("GDAL_CACHEMAX") == before


def test_gdal_cache_size_covers_a_row_of_tiles_within_bounds():
    """The cache holds a row of tiles plus the next block row of every band (half as much again),
    never less than GDAL_CACHE_MIN_MB nor more than GDAL_CACHE_MB megabytes."""
    from gis.inference import GDAL_CACHE_MB, GDAL_CACHE_MIN_MB, gdal_cache_bytes

    mb = 1 << 20
    assert gdal_cache_bytes(100, 1, 1, 16, 32) == GDAL_CACHE_MIN_MB * mb
    need = ((512 + 512) * 20000 * 3 + 256 * 20000 * 5) * 3 // 2
    assert gdal_cache_bytes(20000, 3, 1, 512, 512) == need
    assert GDAL_CACHE_MIN_MB * mb < need < GDAL_CACHE_MB * mb
    assert gdal_cache_bytes(200000, 4, 2, 512, 512) == GDAL_CACHE_MB * mb


def _fed_batches(src, out_dir, normalize, **kw):
    """The batches predict_fn receives and the output arrays of one run."""
    fed = []

    def model(b):
        fed.append(b.copy())
        return sigmoid_pixelwise(b)

    res = run_tiled_inference(src, model, out_dir / "p.tif", out_dir / "m.tif", tile_size_px=32,
                              overlap_px=8, batch_size=3, normalize=normalize, **kw)
    return np.concatenate(fed), _read(res.prob_path)[0], _read(res.mask_path)[0], res


@pytest.mark.parametrize("kind", ["u8_alpha", "u16_nodata", "f32_nan", "i16"])
def test_reader_fast_path_equals_general_path(tmp_path, kind):
    """The reader normalises raw uint8/uint16/float tiles straight into the batch (a Normalizer);
    an opaque callable gets the float32 windows. Both feed the network the same bits."""
    from gis.io import make_normalizer

    if kind == "u8_alpha":
        img = random_image((4, 50, 70))
        img[3] = 255
        img[3, 10:20, :15] = 0
        src, bands = write_geotiff(tmp_path / "a.tif", img, alpha_band=4), (3, 1, 2)
    elif kind == "u16_nodata":
        img = random_image((3, 50, 70), "uint16")
        img[:, 40:, 60:] = 0
        src, bands = write_geotiff(tmp_path / "a.tif", img, nodata=0, tiled=True), (1, 2, 2)
    elif kind == "f32_nan":
        img = random_image((3, 50, 70), "float32")
        img[1, 5:9, 5:30] = np.nan
        src, bands = write_geotiff(tmp_path / "a.tif", img), (1, 2, 3)
    else:  # int16 with negative values (raw windows are cast to float32 as they are scaled)
        img = (random_image((2, 50, 70), "int16", high=4000) - 1000).astype(np.int16)
        src, bands = write_geotiff(tmp_path / "a.tif", img, tiled=True), (2, 1, 2)
    norm = make_normalizer(src, bands, method="percentile", mean=[0.5], std=[0.3125])
    (tmp_path / "fast").mkdir()
    (tmp_path / "slow").mkdir()
    fast = _fed_batches(src, tmp_path / "fast", norm, bands=bands)
    slow = _fed_batches(src, tmp_path / "slow", lambda x: norm(x), bands=bands)
    for a, b in zip(fast[:3], slow[:3]):
        assert a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(fast[0]).all()  # NaN and padding are zeroed
    assert fast[3].valid_pixels == slow[3].valid_pixels
    assert fast[3].positive_pixels == slow[3].positive_pixels


class _Capture:
    """Stands in for the strip GTiff: keeps what the blender writes."""

    def __init__(self):
        self.writes = []

    def write(self, arr, indexes=None, window=None):
        self.writes.append((np.array(arr), indexes, window))


@pytest.mark.parametrize("k", [1, 3])
def test_strip_writer_equals_the_plain_formulas(k):
    """The blender's strip flush (threshold view, counts, in-place quantisation) writes what
    the plain formulas give, threshold ties and nodata included, and counts the same pixels."""
    from gis.inference import _Blender
    from gis.mosaic import MASK_BACKGROUND

    rng = np.random.default_rng(11)
    probs = rng.random((k, 9, 40)).astype(np.float32)
    probs[0, 0, :5] = 0.5  # exactly on the threshold: road
    probs[0, 1, :3] = np.nextafter(np.float32(0.5), np.float32(0))
    for valid in (np.ones((9, 40), bool), rng.random((9, 40)) > 0.3):
        p = probs.copy()
        prob_ds, mask_ds = _Capture(), _Capture()
        b = _Blender(prob_ds, mask_ds, 0.5)
        b.on_strip(18, p, valid)
        ref_prob = np.clip(np.rint(probs * PROB_SCALE), 0, PROB_SCALE).astype(np.uint8)
        ref_prob[..., ~valid] = PROB_NODATA
        if k == 1:
            ref_mask = np.where(probs[0] >= 0.5, MASK_ROAD, MASK_BACKGROUND).astype(np.uint8)
        else:
            ref_mask = np.argmax(probs, axis=0).astype(np.uint8)
        ref_mask[~valid] = MASK_NODATA
        (got_prob, _, win), = prob_ds.writes
        (got_mask, band, mwin), = mask_ds.writes
        np.testing.assert_array_equal(got_prob, ref_prob)
        np.testing.assert_array_equal(got_mask, ref_mask)
        assert got_mask.dtype == np.uint8 and got_prob.dtype == np.uint8 and band == 1
        assert win == mwin == rasterio.windows.Window(0, 18, 40, 9)
        assert b.valid_pixels == int(valid.sum())
        assert b.positive_pixels == int(((ref_mask != MASK_NODATA)
                                         & (ref_mask != MASK_BACKGROUND)).sum())
