"""segcore.predict and segcore.export: normalisation, stride padding, backends, export round trips.

Networks are randomly initialised and tiny inputs (64x64, batch 1-2) keep this fast on a shared
CPU. Every exported file is checked against the network's own output by an independent reload
(``ms.load`` + ``nn.GraphCell`` for MindIR, onnxruntime for ONNX), not by the exporter's own
self-check (``verify=False`` below).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
ort = pytest.importorskip("onnxruntime")
from mindspore import nn, ops  # noqa: E402

import segcore  # noqa: E402
from segcore.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from segcore.export import (ExportError, bilinear_matrix, export_model,  # noqa: E402
                            metadata_path, read_export_metadata)
from segcore.predict import (MindIRPredictor, MindSporePredictor, OnnxPredictor,  # noqa: E402
                             load_predictor, logits_to_probabilities,
                             normalization_from_meta, onnx_cache_path,
                             pad_to_multiple)
from segcore.onnx_infer import available_cores  # noqa: E402

RTOL = 1e-4


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def net_out(net, x: np.ndarray) -> np.ndarray:
    out = net(ms.Tensor(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).asnumpy()


@pytest.fixture(scope="module")
def slim_ckpt(tmp_path_factory):
    """ddrnet23_slim, 3 classes, saved as a real checkpoint with metadata (tile 64)."""
    d = tmp_path_factory.mktemp("slim")
    net = segcore.create_model("ddrnet23_slim", num_classes=3)
    net.set_train(False)
    meta = CheckpointMeta(model="ddrnet23_slim", num_classes=3, tile_size_px=64, stride=8,
                          normalization={"method": "dlinknet"})
    return save_checkpoint(net, d / "slim.ckpt", meta), net


# ------------------------------------------------------------------------------ normalisation
def test_normalization_meanstd_scale_255_per_band():
    meta = CheckpointMeta(model="x", num_classes=1, normalization={
        "method": "meanstd", "mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 2.0], "scale": 255})
    fn = normalization_from_meta(meta)
    raw = np.zeros((3, 2, 2), np.uint8)
    raw[0], raw[1], raw[2] = 255, 51, 102
    out = fn(raw)
    assert out.dtype == np.float32 and out.shape == (3, 2, 2)
    # (255/255 - .5)/.5 = 1 ; (51/255 - .25)/.25 = -0.2 ; (102/255 - 0)/2 = 0.2
    np.testing.assert_allclose(out[:, 0, 0], [1.0, -0.2, 0.2], rtol=1e-6)
    batch = np.stack([raw, raw])
    np.testing.assert_allclose(fn(batch)[1], out)
    # a multiplier below 1 means the same thing as its reciprocal divisor
    same = normalization_from_meta({"method": "meanstd", "mean": [0.5, 0.25, 0.0],
                                    "std": [0.5, 0.25, 2.0], "scale": 1 / 255})
    np.testing.assert_allclose(same(raw), out, rtol=1e-6)


def test_normalization_dlinknet_and_percentile():
    dl = normalization_from_meta({"normalization": {"method": "dlinknet"}})
    raw = np.array([0, 127.5, 255], np.float32).reshape(1, 1, 3)
    np.testing.assert_allclose(dl(raw).ravel(), [-1.6, 0.0, 1.6], atol=1e-6)
    pct = normalization_from_meta({"method": "percentile", "low": 2, "high": 98},
                                  stretch=([100.0], [300.0]))
    v = pct(np.array([50, 100, 200, 300, 900], np.uint16).reshape(1, 1, 5))
    # stretched to 8-bit levels: 200 is half way, level rint(127.5) = 128
    np.testing.assert_allclose(v.ravel(), [0, 0, 128 / 255, 1, 1], atol=1e-6)
    per_image = normalization_from_meta({"method": "percentile", "low": 0, "high": 100})
    x = np.arange(10, dtype=np.float32).reshape(1, 2, 5) * 3 + 7
    y = per_image(x)
    assert y.min() == 0.0 and y.max() == 1.0


def test_normalization_band_count_mismatch_is_a_config_error():
    fn = normalization_from_meta({"method": "meanstd", "mean": [0.1, 0.2, 0.3],
                                  "std": [1, 1, 1]})
    with pytest.raises(segcore.errors.ConfigError, match="4 bands"):
        fn(np.zeros((4, 2, 2), np.uint8))


@pytest.mark.slow
def test_predict_and_evaluate_import_without_mindspore():
    """The gis pipeline calls normalization_from_meta: importing it must not pull MindSpore."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from segcore.predict import normalization_from_meta; "
            "import segcore.evaluate; "
            "f = normalization_from_meta({'method': 'dlinknet'}); f(np.zeros((3, 2, 2))); "
            "print(sorted(m for m in ('mindspore', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip().splitlines()[-1]
    assert out == "[]"


def test_logits_to_probabilities():
    z = np.array([[[[-1000.0, 0.0, 3.0]]]], np.float32)
    p = logits_to_probabilities(z)
    np.testing.assert_allclose(p.ravel(), [0.0, 0.5, 1 / (1 + np.exp(-3.0))], atol=1e-7)
    z3 = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32) * 50
    p3 = logits_to_probabilities(z3)
    np.testing.assert_allclose(p3.sum(1), 1.0, atol=1e-6)
    assert np.array_equal(p3.argmax(1), z3.argmax(1))


# ------------------------------------------------------------------------------ padding
def test_pad_to_multiple_and_crop_back():
    x = np.random.default_rng(1).standard_normal((2, 3, 60, 52)).astype(np.float32)
    xp, hw = pad_to_multiple(x, 8)
    assert xp.shape == (2, 3, 64, 56) and hw == (60, 52)
    np.testing.assert_array_equal(xp[:, :, :60, :52], x)
    np.testing.assert_array_equal(xp[:, :, 60, :52], x[:, :, 58, :])  # reflection
    same, _ = pad_to_multiple(x[:, :, :56, :48], 8)
    assert same.shape == (2, 3, 56, 48)


@pytest.mark.slow
def test_mindspore_predictor_pads_to_stride_and_crops(slim_ckpt):
    ckpt, net = slim_ckpt
    pred = MindSporePredictor(net, meta=segcore.checkpoint.read_metadata(ckpt))
    assert pred.stride == 8
    x = np.random.default_rng(2).standard_normal((1, 3, 60, 52)).astype(np.float32)
    probs = pred.predict_batch(x)
    assert probs.shape == (1, 3, 60, 52) and probs.dtype == np.float32
    xp, _ = pad_to_multiple(x, 8)
    want = logits_to_probabilities(net_out(net, xp))[:, :, :60, :52]
    np.testing.assert_allclose(probs, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------ backends
@pytest.mark.slow
def test_backends_agree_and_onnx_cache_is_keyed_by_hash(slim_ckpt):
    ckpt, _ = slim_ckpt
    msp = load_predictor(ckpt, backend="mindspore")
    onp = load_predictor(ckpt, backend="auto", device="cpu")
    assert isinstance(msp, MindSporePredictor) and isinstance(onp, OnnxPredictor)
    cached = onnx_cache_path(ckpt, (64, 64))
    assert cached.exists() and cached.parent.name == ".roadseg-cache"
    assert metadata_path(cached).exists()
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    a, b = msp.predict_batch(x), onp.predict_batch(x)
    assert a.shape == b.shape == (2, 3, 64, 64)
    assert rel_err(b, a) < RTOL
    assert rel_err(onp.predict_logits(x), msp.predict_logits(x)) < RTOL
    # smaller inputs are padded up to the exported size and cropped back
    small = x[:1, :, :40, :48]
    got = onp.predict_batch(small)
    assert got.shape == (1, 3, 40, 48)
    padded, _ = pad_to_multiple(small, 8, (64, 64))
    assert rel_err(got, msp.predict_batch(padded)[:, :, :40, :48]) < RTOL
    # the cache is reused: no second export
    mtime = cached.stat().st_mtime_ns
    again = load_predictor(ckpt, backend="onnx")
    assert isinstance(again, OnnxPredictor) and cached.stat().st_mtime_ns == mtime
    assert again.meta.model == "ddrnet23_slim" and again.num_classes == 3
    # one thread per call: as many calls fit the cores, run concurrently with the same results
    single = load_predictor(ckpt, backend="onnx", threads=1)
    assert single.parallel_calls == available_cores() and again.parallel_calls == 1
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(single.predict_batch, [x, x[::-1]]))
    assert rel_err(outs[0], b) < RTOL and rel_err(outs[1], b[::-1]) < RTOL


def test_onnx_predictor_rejects_larger_inputs(slim_ckpt):
    ckpt, _ = slim_ckpt
    onp = load_predictor(ckpt, backend="onnx")
    with pytest.raises(segcore.InputSizeError, match="64x64"):
        onp.predict_batch(np.zeros((1, 3, 72, 64), np.float32))
    with pytest.raises(segcore.InputSizeError, match="bands"):
        onp.predict_batch(np.zeros((1, 4, 64, 64), np.float32))


# ------------------------------------------------------------------------------ export
def _roundtrip(name: str, tmp_path, fmt: str, hw: int = 64, **kw):
    info = segcore.model_info(name)
    classes = 1 if info.task == "segmentation" and name.startswith("dlink") else 2
    if info.task == "classification":
        classes = 10
    net = segcore.create_model(name, num_classes=classes)
    net.set_train(False)
    x = np.random.default_rng(4).standard_normal((1, 3, hw, hw)).astype(np.float32)
    want = net_out(net, x)
    path = export_model(net, tmp_path / name, format=fmt, input_size=(1, 3, hw, hw),
                        verify=False, **kw)
    assert path.exists() and metadata_path(path).exists()
    if fmt == "ONNX":
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    else:
        got = nn.GraphCell(ms.load(str(path)))(ms.Tensor(x))
        got = (got[0] if isinstance(got, (tuple, list)) else got).asnumpy()
    assert got.shape == want.shape
    assert rel_err(got, want) < RTOL, name
    # export-time rewrites (pooling cells, resize, ENet pooling primitives) are undone
    from segcore.models import layers

    assert all(getattr(m, "resize_bilinear", layers.resize_bilinear) is layers.resize_bilinear
               for m in (segcore.models.ddrnet, segcore.models.deeplabv3, segcore.models.dgcnet))
    np.testing.assert_array_equal(net_out(net, x), want)
    # the exporter left nothing else behind
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name,
                                                               metadata_path(path).name])
    return path, net


FAST = ["enet", "ddrnet23_slim", "dlinknet34"]
SLOW = ["ddrnet23", "deeplabv3_resnet101", "deeplabv3_resnet101_os8", "dgcnet_resnet101",
        "dlinknet50", "ddrnet23_imagenet"]


@pytest.mark.parametrize("name", FAST)
@pytest.mark.slow
def test_onnx_roundtrip(name, tmp_path):
    # the dynamic-batch probe is exercised once (D-LinkNet); ENet keeps a fixed batch anyway
    path, net = _roundtrip(name, tmp_path, "ONNX", dynamic_batch=(name == "dlinknet34"))
    info = read_export_metadata(path)["export"]
    assert info["format"] == "ONNX" and info["input_shape"] == [1, 3, 64, 64]
    if name == "dlinknet34":
        assert info["dynamic_batch"]
        assert type(net.encoder.maxpool) is nn.MaxPool2d
    if info["dynamic_batch"]:  # then a batch of two must give the network's batch of two
        x2 = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert rel_err(sess.run(None, {info["input_name"]: x2})[0], net_out(net, x2)) < RTOL


@pytest.mark.parametrize("name", FAST)
@pytest.mark.slow
def test_mindir_roundtrip(name, tmp_path):
    _roundtrip(name, tmp_path, "MINDIR", dynamic_batch=False)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["ONNX", "MINDIR"])
@pytest.mark.parametrize("name", SLOW)
def test_roundtrip_heavy_networks(name, fmt, tmp_path):
    _roundtrip(name, tmp_path, fmt, dynamic_batch=(fmt == "ONNX"))


def test_every_registered_network_is_covered():
    assert set(FAST + SLOW) == set(segcore.list_models())


class _AsymmetricPads(nn.Cell):
    """Non-square padding: MindSpore writes ONNX pads in (top, bottom, left, right) order."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, (1, 5), pad_mode="pad", padding=(0, 0, 2, 2),
                              weight_init="HeUniform")
        self.conv2 = nn.Conv2d(4, 4, 3, pad_mode="pad", padding=(1, 0, 1, 0),
                               weight_init="HeUniform")
        self.tconv = nn.Conv2dTranspose(4, 2, 3, stride=2, pad_mode="pad", padding=(1, 0, 1, 0),
                                        has_bias=True, weight_init="HeUniform")

    def construct(self, x):
        return self.tconv(self.conv2(self.conv(x)))


@pytest.mark.slow
def test_onnx_conv_padding_order_is_fixed(tmp_path):
    net = _AsymmetricPads()
    net.set_train(False)
    x = np.random.default_rng(6).standard_normal((1, 3, 16, 12)).astype(np.float32)
    want = net_out(net, x)
    path = export_model(net, tmp_path / "asym.onnx", format="ONNX", input_size=x.shape,
                        verify=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.shape == want.shape == (1, 2, 30, 22)
    assert rel_err(got, want) < RTOL


class _UsesPadV3(nn.Cell):
    def construct(self, x):
        return ops.pad(x, (1, 1, 1, 1), mode="reflect")


@pytest.mark.slow
def test_unsupported_op_raises_naming_it_and_leaves_no_file(tmp_path):
    net = _UsesPadV3()
    with pytest.raises(ExportError, match="PadV3"):
        export_model(net, tmp_path / "bad.onnx", format="ONNX", input_size=(1, 3, 8, 8))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_from_checkpoint_writes_metadata(slim_ckpt, tmp_path):
    ckpt, _ = slim_ckpt
    out = export_model(ckpt, tmp_path / "slim", format="MINDIR", dynamic_batch=False)
    assert out.name == "slim.mindir"
    doc = json.loads(metadata_path(out).read_text())
    assert doc["model"] == "ddrnet23_slim" and doc["num_classes"] == 3
    assert doc["normalization"] == {"method": "dlinknet"}
    assert doc["export"]["input_shape"] == [1, 3, 64, 64]
    assert doc["export"]["verified_rel_error"] < RTOL
    assert len(doc["export"]["source_sha256"]) == 64
    with pytest.raises(FileExistsError):
        export_model(ckpt, out, format="MINDIR", overwrite=False)
    # the exported file is a predictor too (fixed 1x3x64x64: batches are run one by one)
    mip = load_predictor(out)
    assert isinstance(mip, MindIRPredictor) and mip.fixed_batch == 1
    x = np.random.default_rng(9).standard_normal((2, 3, 64, 64)).astype(np.float32)
    assert rel_err(mip.predict_batch(x), load_predictor(ckpt, backend="mindspore")
                   .predict_batch(x)) < RTOL


def test_bilinear_matrix_matches_mindspore_interpolate():
    x = np.random.default_rng(8).standard_normal((1, 2, 7, 5)).astype(np.float32)
    for ac in (False, True):
        want = ops.interpolate(ms.Tensor(x), size=(12, 9), mode="bilinear",
                               align_corners=ac).asnumpy()
        got = bilinear_matrix(7, 12, ac) @ x @ bilinear_matrix(5, 9, ac).T
        np.testing.assert_allclose(got, want, atol=1e-5)
