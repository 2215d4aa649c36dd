"""DDRNet-23 / DDRNet-23-slim / DDRNet-23 ImageNet classifier and ENet (MindSpore, CPU).

Inputs are tiny (64x64 or less, batch 1-2) so the whole file stays fast on a shared CPU.
"""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
# full-size networks built, run and trained (5 s to minutes each on a loaded 2-core machine)
pytestmark = pytest.mark.slow
from mindspore import nn, ops  # noqa: E402

from segcore import InputSizeError, create_model, model_info  # noqa: E402
from segcore.errors import CheckpointError  # noqa: E402
from segcore.models import ddrnet as ddr  # noqa: E402
from segcore.models import enet as en  # noqa: E402
from segcore.models.layers import count_trainable_params  # noqa: E402


@pytest.fixture
def pynative():
    old = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=old)


@pytest.fixture
def graph():
    old = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    yield
    ms.set_context(mode=old)


@pytest.fixture(scope="module")
def ddrnet23_net():
    return create_model("ddrnet23")


@pytest.fixture(scope="module")
def classifier_net():
    return create_model("ddrnet23_imagenet")


def _x(n: int, c: int, h: int, w: int, seed: int = 0) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32))


# ---------------------------------------------------------------------------- parameter counts

@pytest.mark.parametrize("name,kw,expected", [
    ("ddrnet23_slim", {}, 5_695_987),
    ("ddrnet23_slim", {"aux": True}, 5_734_342),
    ("ddrnet23", {"aux": True}, 20_299_366),
    ("enet", {}, 351_660),
    ("enet", {"prelu": "scalar"}, 351_660),
    ("enet", {"prelu": "channel"}, 357_895),
])
def test_param_counts(name, kw, expected):
    assert count_trainable_params(create_model(name, **kw)) == expected


def test_param_counts_shared_nets(ddrnet23_net, classifier_net):
    assert count_trainable_params(ddrnet23_net) == 20_148_947
    assert count_trainable_params(classifier_net) == 28_216_616


def test_registry_info():
    for name in ("ddrnet23_slim", "ddrnet23", "enet"):
        info = model_info(name)
        assert info.task == "segmentation" and info.stride == 8 and info.default_classes == 19
    info = model_info("ddrnet23_imagenet")
    assert info.task == "classification" and info.default_classes == 1000


def test_bad_arguments():
    with pytest.raises(ValueError, match="aux"):
        create_model("enet", aux=True)
    with pytest.raises(ValueError, match="aux"):
        create_model("ddrnet23_imagenet", aux=True)
    with pytest.raises(ValueError, match="prelu"):
        create_model("enet", prelu="per-pixel")
    with pytest.raises(TypeError, match="unexpected"):
        create_model("ddrnet23_slim", planes=16)
    with pytest.raises(ValueError, match="in_channels"):
        create_model("enet", in_channels=16)


# ------------------------------------------------------------------------------ forward shapes

@pytest.mark.parametrize("name,size", [("ddrnet23_slim", (64, 64)), ("ddrnet23_slim", (64, 48)),
                                       ("enet", (64, 64)), ("enet", (48, 64))])
def test_forward_shape(pynative, name, size):
    net = create_model(name)
    net.set_train(False)
    out = net(_x(2, 3, *size))
    assert out.shape == (2, 19) + size
    assert out.dtype == ms.float32
    assert np.isfinite(out.asnumpy()).all()


def test_forward_ddrnet23_and_classifier(pynative, ddrnet23_net, classifier_net):
    ddrnet23_net.set_train(False)
    assert ddrnet23_net(_x(1, 3, 64, 64)).shape == (1, 19, 64, 64)
    classifier_net.set_train(False)
    logits = classifier_net(_x(2, 3, 64, 64))
    assert logits.shape == (2, 1000)
    assert np.isfinite(logits.asnumpy()).all()


@pytest.mark.parametrize("name", ["ddrnet23_slim", "enet", "ddrnet23_imagenet"])
@pytest.mark.parametrize("in_channels", [1, 4])
def test_in_channels(pynative, name, in_channels):
    net = create_model(name, num_classes=5, in_channels=in_channels)
    net.set_train(False)
    out = net(_x(1, in_channels, 32, 32))
    assert out.shape == ((1, 5) if name == "ddrnet23_imagenet" else (1, 5, 32, 32))
    first = net.initial_block.main_branch if name == "enet" else net.conv1[0]
    assert first.weight.shape[1] == in_channels
    with pytest.raises(RuntimeError, match="Conv2D"):  # a wrong band count must not pass
        net(_x(1, in_channels + 1, 32, 32))


def test_aux_only_in_training(pynative):
    net = create_model("ddrnet23_slim", num_classes=3, aux=True)
    x = _x(2, 3, 32, 32)
    net.set_train(True)
    out = net(x)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == out[1].shape == (2, 3, 32, 32)
    net.set_train(False)
    out = net(x)
    assert isinstance(out, ms.Tensor) and out.shape == (2, 3, 32, 32)
    plain = create_model("ddrnet23_slim", num_classes=3)
    plain.set_train(True)
    assert isinstance(plain(x), ms.Tensor)


def test_enet_eval_is_deterministic(pynative):
    net = create_model("enet", num_classes=4)
    net.set_train(False)
    x = _x(1, 3, 32, 32)
    np.testing.assert_array_equal(net(x).asnumpy(), net(x).asnumpy())


# -------------------------------------------------------------------------------- GRAPH mode

@pytest.mark.parametrize("name", ["ddrnet23_slim", "enet"])
def test_graph_matches_pynative(name):
    old = ms.get_context("mode")
    try:
        net = create_model(name, num_classes=4)
        net.set_train(False)
        x = _x(1, 3, 32, 48)
        ms.set_context(mode=ms.PYNATIVE_MODE)
        eager = net(x).asnumpy()
        ms.set_context(mode=ms.GRAPH_MODE)
        compiled = net(x).asnumpy()
    finally:
        ms.set_context(mode=old)
    assert compiled.shape == (1, 4, 32, 48)
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-4)


def test_graph_aux_training(graph):
    net = create_model("ddrnet23_slim", num_classes=2, aux=True)
    net.set_train(True)
    main, aux = net(_x(2, 3, 32, 32))
    assert main.shape == aux.shape == (2, 2, 32, 32)


def test_graph_ddrnet23_and_classifier(graph, ddrnet23_net, classifier_net):
    ddrnet23_net.set_train(False)
    assert ddrnet23_net(_x(1, 3, 64, 64)).shape == (1, 19, 64, 64)
    classifier_net.set_train(False)
    assert classifier_net(_x(1, 3, 64, 64)).shape == (1, 1000)


# -------------------------------------------------------------------------------- input sizes

@pytest.mark.parametrize("mode", ["pynative", "graph"])
@pytest.mark.parametrize("name", ["ddrnet23_slim", "enet", "ddrnet23_imagenet"])
def test_input_size_error(request, mode, name):
    old = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        if name == "ddrnet23_imagenet":  # 28M parameters: reuse the shared instance
            net = request.getfixturevalue("classifier_net")
        else:
            net = create_model(name, num_classes=3)
        net.set_train(False)
        with pytest.raises(InputSizeError, match="pad it to 64x64"):
            net(_x(1, 3, 60, 64))
        with pytest.raises(ValueError, match="pad it to 40x48"):
            net(_x(1, 3, 36, 44))
    finally:
        ms.set_context(mode=old)


def test_size_check_inside_outer_graph(graph):
    """Nested in another compiled cell the network still refuses a bad size (builtin error)."""

    class Wrapper(nn.Cell):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def construct(self, x):
            return self.inner(x) * 2

    wrapped = Wrapper(create_model("enet", num_classes=2))
    wrapped.set_train(False)
    with pytest.raises(ValueError, match="multiple of 8"):
        wrapped(_x(1, 3, 60, 64))


# ----------------------------------------------------------------------------- building blocks

def _np_avg_pool(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    """PyTorch AvgPool2d(k, s, p) with count_include_pad=True, ceil_mode=False."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oh = (x.shape[2] + 2 * p - k) // s + 1
    ow = (x.shape[3] + 2 * p - k) // s + 1
    out = np.zeros(x.shape[:2] + (oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * s:i * s + k, j * s:j * s + k].sum((2, 3)) / (k * k)
    return out


@pytest.mark.parametrize("k,s,p", [(5, 2, 2), (9, 4, 4), (17, 8, 8)])
def test_dappm_pooling_counts_padding(pynative, k, s, p):
    x = np.random.default_rng(1).standard_normal((1, 2, 13, 9)).astype(np.float32)
    got = ddr._avg_pool(k, s, p)(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, _np_avg_pool(x, k, s, p), rtol=1e-5, atol=1e-5)


def test_dappm_global_branch_is_true_mean(pynative):
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 5)).astype(np.float32)
    got = ddr.GlobalAvgPool()(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, x.mean((2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    dappm = ddr.DAPPM(8, 4, 6)
    dappm.set_train(False)
    assert dappm(_x(2, 8, 5, 3)).shape == (2, 6, 5, 3)  # 17x17 pooling of a 5x3 map


def test_enet_unpooling_puts_maxima_back(pynative):
    """Indices from the downsampling pool address the same places for the decoder's unpool."""
    down = en.DownsamplingBottleneck(4, 8, "scalar")
    up = en.UpsamplingBottleneck(16, 4, "relu")
    x = np.random.default_rng(3).standard_normal((2, 4, 8, 6)).astype(np.float32)
    pooled, idx = down.main_max1(ms.Tensor(x))
    restored = up.main_unpool1(pooled, idx).asnumpy()
    blocks = x.reshape(2, 4, 4, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 4, 4, 3, 4)
    np.testing.assert_array_equal(pooled.asnumpy(), blocks.max(-1))
    expected = np.zeros_like(blocks)
    np.put_along_axis(expected, blocks.argmax(-1)[..., None], blocks.max(-1)[..., None], -1)
    expected = expected.reshape(2, 4, 4, 3, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(x.shape)
    np.testing.assert_array_equal(restored, expected)
    out, idx2 = down(ms.Tensor(x))
    assert out.shape == (2, 8, 4, 3) and idx2.shape == (2, 4, 4, 3)


def test_imagenet_backbone_loads_into_segmentation(pynative, ddrnet23_net, classifier_net):
    loaded = ddr.load_imagenet_backbone(ddrnet23_net, classifier_net)
    seg_names = set(ddrnet23_net.parameters_dict())
    left = {n.split(".", 1)[0] for n in seg_names - set(loaded)}
    assert left == {"spp", "final_layer"}
    cls_params = classifier_net.parameters_dict()
    for name in ("conv1.0.weight", "layer5.0.conv2.weight", "layer3_.1.bn2.moving_mean",
                 "down4.3.weight"):
        assert name in loaded
        np.testing.assert_array_equal(ddrnet23_net.parameters_dict()[name].asnumpy(),
                                      cls_params[name].asnumpy())
    slim = create_model("ddrnet23_slim")
    with pytest.raises(CheckpointError, match="shape"):
        ddr.load_imagenet_backbone(slim, classifier_net)


# -------------------------------------------------------------------------------- training

@pytest.mark.parametrize("name,kw", [("ddrnet23_slim", {"aux": True}), ("enet", {})])
def test_training_reduces_loss(pynative, name, kw):
    ms.set_seed(0)
    net = create_model(name, num_classes=2, **kw)
    net.set_train(True)
    rng = np.random.default_rng(0)
    labels = np.zeros((2, 32, 32), np.int32)
    labels[:, 10:20, :] = 1  # a horizontal "road" the first band makes visible
    images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    images[:, 0] += 2.0 * labels
    x, y = ms.Tensor(images), ms.Tensor(labels)
    opt = nn.Adam(net.trainable_params(), learning_rate=3e-3)

    def loss_fn(x, y):
        out = net(x)
        if isinstance(out, tuple):
            return ops.cross_entropy(out[0], y) + 0.4 * ops.cross_entropy(out[1], y)
        return ops.cross_entropy(out, y)

    step = ms.value_and_grad(loss_fn, None, opt.parameters)
    losses = []
    for _ in range(5):
        loss, grads = step(x, y)
        opt(grads)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


def test_enet_final_transposed_conv_matches_pytorch_geometry(pynative):
    """ConvTranspose2d(k=3, s=2, p=1) with output_size=2h, as the PyTorch port calls it."""
    net = create_model("enet", num_classes=3)
    tconv = net.transposed_conv
    x = np.random.default_rng(4).standard_normal((1, 16, 3, 4)).astype(np.float32)
    wgt = tconv.weight.asnumpy()  # (in, out, 3, 3)
    full = np.zeros((1, 3, 2 * 3 + 1, 2 * 4 + 1))
    for i in range(3):
        for j in range(4):
            full[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] += np.einsum("c,cokl->okl", x[0, :, i, j],
                                                                     wgt)
    expected = full[:, :, 1:1 + 6, 1:1 + 8]  # crop the padding of 1 at the top/left
    got = tconv(ms.Tensor(x)).asnumpy()
    assert got.shape == (1, 3, 6, 8)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
