"""DGCNet (dual graph convolutional network) on a deep-stem ResNet-101.

ResNet-101 is slow on the shared CPUs, so every full network is built once per module and fed the
smallest valid input (64x64, batch 1-2).
"""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
# full-size networks built, run and trained (5 s to minutes each on a loaded 2-core machine)
pytestmark = pytest.mark.slow
from mindspore import nn, ops  # noqa: E402

from segcore.errors import InputSizeError, SegcoreError  # noqa: E402
from segcore.models.dgcnet import (DGCNET_STRIDE, DualGCN, SpatialGCN,  # noqa: E402
                                   dgcnet_resnet101)
from segcore.models.layers import count_trainable_params  # noqa: E402
from segcore.models import create_model, list_models, model_info  # noqa: E402

SIZE = 64  # smallest valid input side


@pytest.fixture(scope="module", autouse=True)
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.PYNATIVE_MODE)


@pytest.fixture(scope="module")
def net():
    """The registered default: 19 classes, RGB, no aux head."""
    ms.set_seed(0)
    return dgcnet_resnet101(19)


@pytest.fixture(scope="module")
def net_aux4():
    """4 input bands, 3 classes, with the deep-supervision head."""
    ms.set_seed(1)
    return dgcnet_resnet101(3, in_channels=4, aux=True)


def _rand(shape, seed=0):
    return ms.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# ---------------------------------------------------------------- parameter counts / registry

def test_param_count_default(net):
    assert count_trainable_params(net) == 67_776_723


def test_param_count_aux_via_registry():
    info = model_info("dgcnet_resnet101")
    assert "dgcnet_resnet101" in list_models()
    assert info.stride == DGCNET_STRIDE == 64
    assert info.default_classes == 19
    m = create_model("dgcnet_resnet101", aux=True)  # default class count from the registry
    assert m.num_classes == 19
    assert count_trainable_params(m) == 72_506_598


def test_parameter_names_unique_and_reference_dilations(net):
    names = [p.name for p in net.get_parameters()]
    assert len(names) == len(set(names))
    assert names == [n for n, _ in net.parameters_and_names()]
    bb = net.backbone
    # reference layout: all of layer3 dilated by 2, layer4 by 4 x multi-grid (1, 2, 4)
    assert [blk.conv2.dilation for blk in bb.layer3] == [(2, 2)] * 23
    assert [blk.conv2.dilation[0] for blk in bb.layer4] == [4, 8, 16]
    assert bb.out_channels[3:] == (1024, 2048)


# ---------------------------------------------------------------- forward

def test_forward_eval_pynative(net):
    net.set_train(False)
    y = net(_rand((1, 3, SIZE, SIZE)))
    assert isinstance(y, ms.Tensor)
    assert y.shape == (1, 19, SIZE, SIZE)
    assert y.dtype == ms.float32
    a = y.asnumpy().astype(np.float64)  # untrained eval-mode logits are large (see report)
    assert np.isfinite(a).all()
    assert a.std() > 0


def test_forward_non_square(net):
    net.set_train(False)
    y = net(_rand((1, 3, SIZE, 2 * SIZE), seed=3))
    assert y.shape == (1, 19, SIZE, 2 * SIZE)


def test_in_channels_1():
    ms.set_seed(2)
    m = dgcnet_resnet101(2, in_channels=1)
    m.set_train(False)
    y = m(_rand((1, 1, SIZE, SIZE), seed=4))
    assert y.shape == (1, 2, SIZE, SIZE)
    assert np.isfinite(y.asnumpy()).all()


def test_aux_output_only_in_training(net_aux4):
    x = _rand((2, 4, SIZE, SIZE), seed=5)
    net_aux4.set_train(False)
    y = net_aux4(x)
    assert isinstance(y, ms.Tensor) and y.shape == (2, 3, SIZE, SIZE)
    net_aux4.set_train(True)
    out = net_aux4(x)
    assert isinstance(out, tuple) and len(out) == 2
    main, aux = out
    assert main.shape == aux.shape == (2, 3, SIZE, SIZE)
    assert np.isfinite(main.asnumpy()).all() and np.isfinite(aux.asnumpy()).all()
    net_aux4.set_train(False)


def test_no_aux_model_returns_single_tensor_in_training(net):
    net.set_train(True)
    try:
        y = net(_rand((2, 3, SIZE, SIZE), seed=6))
    finally:
        net.set_train(False)
    assert isinstance(y, ms.Tensor) and y.shape == (2, 19, SIZE, SIZE)


def test_graph_mode_forward_matches_pynative(net):
    net.set_train(False)
    x = _rand((1, 3, SIZE, SIZE), seed=7)
    ref = net(x).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        y = net(x).asnumpy()
        with pytest.raises(InputSizeError, match="pad it to 128x64"):
            net(_rand((1, 3, SIZE + 32, SIZE)))
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert y.shape == (1, 19, SIZE, SIZE)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h,w,pad_to", [(32, 32, "64x64"), (64, 96, "64x128"), (100, 64, "128x64")])
def test_input_size_error(net, h, w, pad_to):
    net.set_train(False)
    with pytest.raises(InputSizeError, match=f"pad it to {pad_to}") as exc:
        net(_rand((1, 3, h, w)))
    assert isinstance(exc.value, SegcoreError) and isinstance(exc.value, ValueError)
    assert "dgcnet" in str(exc.value)


def test_builder_rejects_unknown_kwargs():
    with pytest.raises(TypeError, match="unexpected"):
        dgcnet_resnet101(19, output_stride=16)


# ---------------------------------------------------------------- training

def test_training_steps_reduce_loss(net_aux4):
    """Main + 0.4 * aux cross-entropy (the reference recipe); every parameter gets a gradient."""
    net_aux4.set_train(True)
    x = _rand((2, 4, SIZE, SIZE), seed=8)
    lab = np.zeros((2, SIZE, SIZE), np.int32)
    lab[:, 20:40, :] = 1
    lab[:, :, 50:] = 2
    y = ms.Tensor(lab)

    def loss_fn(inp, target):
        main, aux = net_aux4(inp)
        return ops.cross_entropy(main, target) + 0.4 * ops.cross_entropy(aux, target)

    opt = nn.Momentum(net_aux4.trainable_params(), learning_rate=0.01, momentum=0.9)
    grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)
    losses = []
    try:
        for step in range(3):
            loss, grads = grad_fn(x, y)
            if step == 0:
                names = [p.name for p in opt.parameters]
                g = {n: gr.asnumpy() for n, gr in zip(names, grads)}
                assert all(np.isfinite(v).all() for v in g.values())
                for key in ("head.dualgcn.local.0.weight", "head.dualgcn.conv_adj.weight",
                            "head.dualgcn.gcn_local_attention.node_q.weight", "dsn.cls.weight",
                            "backbone.conv1.weight"):
                    assert np.abs(g[key]).sum() > 0, key
            opt(grads)
            losses.append(float(loss.asnumpy()))
    finally:
        net_aux4.set_train(False)
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


# ---------------------------------------------------------------- GCN maths vs a numpy reference

def _np(p):
    return p.asnumpy().astype(np.float64)


def _bn(x, cell):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m, v = _np(cell.moving_mean).reshape(shape), _np(cell.moving_variance).reshape(shape)
    g, b = _np(cell.gamma).reshape(shape), _np(cell.beta).reshape(shape)
    return (x - m) / np.sqrt(v + cell.eps) * g + b


def _conv1x1(x, cell):
    w = _np(cell.weight).reshape(cell.weight.shape[0], -1)
    y = np.einsum("oi,ni...->no...", w, x)
    if cell.has_bias:
        y = y + _np(cell.bias).reshape((1, -1) + (1,) * (x.ndim - 2))
    return y


def _dwconv_s2(x, cell):
    w = _np(cell.weight)[:, 0]  # (C, 3, 3)
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    oh, ow = (h + 1) // 2, (wd + 1) // 2
    out = np.zeros((n, c, oh, ow))
    for i in range(3):
        for j in range(3):
            out += w[None, :, i, j, None, None] * xp[:, :, i:i + 2 * oh:2, j:j + 2 * ow:2]
    return out


def _softmax(a, axis):
    e = np.exp(a - a.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _spatial_gcn_ref(x, s):
    """Literal transcription of the reference forward (permute / bmm order kept)."""
    k, v, q = _conv1x1(x, s.node_k), _conv1x1(x, s.node_v), _conv1x1(x, s.node_q)
    n, c, h, w = k.shape
    k = k.reshape(n, c, -1).transpose(0, 2, 1)
    q = q.reshape(n, c, -1)
    v = v.reshape(n, c, -1).transpose(0, 2, 1)
    av = _softmax(q @ v, axis=2)
    av = (k @ av).transpose(0, 2, 1)
    avw = _bn(_conv1x1(av, s.conv_wg), s.bn_wg).reshape(n, c, h, w)
    return np.maximum(_bn(_conv1x1(avw, s.out_conv), s.out_bn) + x, 0)


def _randomise_bn(cell, seed):
    rng = np.random.default_rng(seed)
    for name, p in cell.parameters_and_names():
        if name.endswith(("gamma", "moving_variance")):
            p.set_data(ms.Tensor(rng.uniform(0.5, 1.5, p.shape).astype(np.float32)))
        elif name.endswith(("beta", "moving_mean")):
            p.set_data(ms.Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))


def test_spatial_gcn_matches_numpy_reference():
    ms.set_seed(3)
    s = SpatialGCN(16)
    _randomise_bn(s, 0)
    s.set_train(False)
    x = np.random.default_rng(9).standard_normal((2, 16, 4, 3)).astype(np.float32)
    got = s(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(got, _spatial_gcn_ref(x.astype(np.float64), s), rtol=1e-4,
                               atol=1e-4)


def test_dual_gcn_matches_numpy_reference():
    ms.set_seed(4)
    d = DualGCN(16)
    _randomise_bn(d, 1)
    d.set_train(False)
    # 8x8 -> the 8x-downsampled attention map is 1x1, so its align_corners upsampling is a
    # broadcast and the reference needs no bilinear resize
    x = np.random.default_rng(10).standard_normal((2, 16, 8, 8)).astype(np.float32)
    got = d(ms.Tensor(x)).asnumpy()

    xd = x.astype(np.float64)
    loc = xd
    for i in range(3):
        loc = _bn(_dwconv_s2(loc, d.local[2 * i]), d.local[2 * i + 1])
    assert loc.shape[2:] == (1, 1)
    loc = _spatial_gcn_ref(loc, d.gcn_local_attention)
    spatial_local = xd * loc + xd
    n, c, h, w = xd.shape
    x_sqz = _bn(_conv1x1(xd, d.phi), d.bn_phi).reshape(n, -1, h * w)
    b = _bn(_conv1x1(xd, d.theta), d.bn_theta).reshape(n, -1, h * w)
    z_idt = x_sqz @ b.transpose(0, 2, 1)
    z = _bn(_conv1x1(z_idt.transpose(0, 2, 1), d.conv_adj), d.bn_adj).transpose(0, 2, 1)
    z = _bn(_conv1x1(z + z_idt, d.conv_wg), d.bn_wg)
    y = (z @ b).reshape(n, -1, h, w)
    g_out = np.maximum(xd + _bn(_conv1x1(y, d.conv3), d.bn3), 0)
    fused = np.concatenate([spatial_local, g_out], axis=1)
    want = _bn(_conv1x1(fused, d.final[0]), d.final[1])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
