"""segcore.tta: test-time augmentation as a wrapper around a predict_fn.

The numpy tests check the transforms and the averaging; the real-network tests check that the
wrapper gives exactly what the former inline implementation of gis.inference computed (every
transformed batch predicted by its own call, mapped back, summed in transform order, divided by
the count), on the bundled demo network and a crop of the real Vegas tile.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from segcore.errors import ConfigError
from segcore.tta import TTA_MODES, tta_pairs, with_tta

ROOT = Path(__file__).resolve().parents[1]
DEMO_CKPT = ROOT / "resources" / "models" / "road_demo.ckpt"


def sigmoid_pixelwise(batch: np.ndarray) -> np.ndarray:
    """A per-pixel (hence flip/rotation-equivariant) non-linear 'model'."""
    z = 6.0 * (batch[:, :1] - 0.5) + 2.0 * (batch[:, 1:2] - batch[:, 2:3])
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def column_model(b: np.ndarray) -> np.ndarray:
    """Not equivariant: predicts the absolute column index."""
    n, _, h, w = b.shape
    return np.broadcast_to(np.arange(w, dtype=np.float32), (n, 1, h, w)).copy()


def reference_tta(predict_fn, mode):
    """The former gis.inference implementation, written out: one call per transform, inverse,
    sum in order, divide."""
    def fwd_inv(k, flip):
        def fwd(x):
            return np.rot90(x[..., ::-1] if flip else x, k, axes=(-2, -1))

        def inv(y):
            y = np.rot90(y, -k, axes=(-2, -1))
            return y[..., ::-1] if flip else y
        return fwd, inv

    if mode == "flips":
        pairs = [(lambda x: x, lambda y: y), fwd_inv(0, True),
                 (lambda x: x[..., ::-1, :], lambda y: y[..., ::-1, :])]
    else:
        pairs = [fwd_inv(k, flip) for k in range(4) for flip in (False, True)]

    def run(batch):
        acc = None
        for fwd, inv in pairs:
            p = np.asarray(predict_fn(np.ascontiguousarray(fwd(batch), np.float32)), np.float32)
            p = inv(p)
            acc = p.astype(np.float32, copy=True) if acc is None else acc + p
        acc /= np.float32(len(pairs))
        return np.ascontiguousarray(acc)
    return run


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_equivariant_model_is_unchanged_by_tta(mode):
    x = np.random.default_rng(5).random((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(with_tta(sigmoid_pixelwise, mode)(x), sigmoid_pixelwise(x),
                               atol=1e-6)
    assert len(tta_pairs(mode)) == {"flips": 3, "d4": 8}[mode]


def test_inverse_transforms_map_predictions_back():
    x = np.zeros((1, 1, 4, 4), np.float32)
    # identity -> c, hflip mapped back -> w-1-c, vflip -> c: mean (c + 3) / 3 per column
    out = with_tta(column_model, "flips")(x)
    np.testing.assert_allclose(out[0, 0], np.tile((np.arange(4) + 3) / 3, (4, 1)), atol=1e-6)
    # d4: the 8 transforms map column c to every column/row index equally -> mean 1.5
    np.testing.assert_allclose(with_tta(column_model, "d4")(x), 1.5, atol=1e-6)
    # flip=True adds the mirror to "none": mean of c and w-1-c
    np.testing.assert_allclose(with_tta(column_model, "none", flip=True)(x), 1.5, atol=1e-6)


def test_modes_errors_and_identity():
    assert TTA_MODES == ("none", "flips", "d4")
    assert with_tta(column_model, "none") is column_model  # nothing to average
    with pytest.raises(ConfigError, match="unknown TTA mode 'rot45'"):
        with_tta(column_model, "rot45")
    with pytest.raises(ValueError, match="square"):
        with_tta(column_model, "d4")(np.zeros((1, 1, 4, 6), np.float32))
    with pytest.raises(ValueError, match="expected"):
        with_tta(lambda b: b[:, :, :2], "flips")(np.zeros((1, 3, 4, 4), np.float32))


@pytest.mark.parametrize("mode", ["none", "flips", "d4"])
@pytest.mark.parametrize("chunk", [None, 1, 5])
def test_chunked_and_per_transform_calls_agree(mode, chunk):
    """Chunked calls (evaluation) and one call per transform (tiled inference) average the same
    predictions; calls never exceed ``chunk`` images and get contiguous float32."""
    x = np.random.default_rng(2).random((3, 3, 8, 8)).astype(np.float32)
    sizes = []

    def model(b):
        assert b.dtype == np.float32 and b.flags.c_contiguous
        sizes.append(b.shape[0])
        return sigmoid_pixelwise(b) + column_model(b) / 10

    got = with_tta(model, mode, chunk=chunk)(x)
    assert sum(sizes) == 3 * len(tta_pairs(mode))  # every image under every transform
    if chunk is not None:
        assert max(sizes) <= chunk
    ref = reference_tta(model, mode)(x) if mode != "none" else model(x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (3, 1, 8, 8)


# ------------------------------------------------------------------ real network, real tile
@pytest.fixture(scope="module")
def demo_predictor():
    pytest.importorskip("mindspore")
    if not DEMO_CKPT.exists():
        pytest.skip(f"{DEMO_CKPT} missing")
    from segcore.predict import load_predictor

    return load_predictor(str(DEMO_CKPT), backend="mindspore", input_hw=(64, 64))


@pytest.fixture(scope="module")
def vegas_crop(shared_data, tmp_path_factory):
    src = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    out = tmp_path_factory.mktemp("tta") / "vegas_crop.tif"
    with rasterio.open(src) as ds:
        win = Window(400, 300, 110, 60)
        prof = ds.profile.copy()
        prof.update(width=win.width, height=win.height, transform=ds.window_transform(win),
                    tiled=False)
        prof.pop("blockxsize", None), prof.pop("blockysize", None)
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(ds.read(window=win))
    return out


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_real_network_tiled_inference_equals_the_former_tta(demo_predictor, vegas_crop,
                                                             tmp_path, mode):
    """run_tiled_inference with the wrapped predict_fn writes the same bytes as with the former
    inline TTA (reference loop), on the demo network and a real crop."""
    from gis.inference import run_tiled_inference

    pred = demo_predictor.predict_batch
    kw = dict(tile_size_px=64, overlap_px=8, batch_size=2, normalize="percentile")
    a = run_tiled_inference(vegas_crop, with_tta(pred, mode), tmp_path / "pa.tif",
                            tmp_path / "ma.tif", **kw)
    b = run_tiled_inference(vegas_crop, reference_tta(pred, mode), tmp_path / "pb.tif",
                            tmp_path / "mb.tif", **kw)
    assert a.tiles == 2
    for x, y in ((a.prob_path, b.prob_path), (a.mask_path, b.mask_path)):
        with rasterio.open(x) as dx, rasterio.open(y) as dy:
            np.testing.assert_array_equal(dx.read(), dy.read())
    with rasterio.open(a.prob_path) as d:
        probs = d.read(1)
    assert probs.min() < probs.max() <= 254  # a real, non-constant prediction


def test_real_network_evaluation_tta_equals_the_former_tta(demo_predictor, vegas_crop):
    """segcore.evaluate.predict_image (chunked variants) gives the reference average too."""
    from segcore.evaluate import predict_image

    with rasterio.open(vegas_crop) as ds:
        raw = ds.read([1, 2, 3], window=Window(0, 0, 56, 56)).astype(np.float32)
    x = ((raw - raw.min()) / (raw.max() - raw.min()) - 0.5) / 0.3125
    pred = demo_predictor.predict_batch
    got = predict_image(pred, x.astype(np.float32), tta="d4", batch_size=8)
    ref = reference_tta(pred, "d4")(x[None].astype(np.float32))[0]
    # chunked: the 8 variants go through one call of 8, the reference makes 8 calls of 1
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert np.abs(got - pred(x[None].astype(np.float32))[0]).max() > 1e-4  # TTA did something
