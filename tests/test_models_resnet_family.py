"""ResNet encoder, D-LinkNet and DeepLabV3: parameter counts, shapes, size checks, training.

Reference parameter counts come from the original PyTorch implementations (torchvision ResNets
without the fc layer, DinkNet34/DinkNet50 of the DeepGlobe 2018 winner, MindSpore ModelZoo
DeepLabV3-ResNet-101 at 21 classes).
"""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
# full-size networks built, run and trained (5 s to minutes each on a loaded 2-core machine)
pytestmark = pytest.mark.slow
from mindspore import nn  # noqa: E402

from segcore.errors import ConfigError, InputSizeError  # noqa: E402
from segcore.models.backbones.resnet import resnet  # noqa: E402
from segcore.models.deeplabv3 import ASPPPooling  # noqa: E402
from segcore.models.dlinknet import conv_transpose2d  # noqa: E402
from segcore.models.layers import count_trainable_params  # noqa: E402
from segcore.models import create_model, model_info  # noqa: E402


@pytest.fixture(autouse=True)
def pynative():
    """Run every test in PyNative mode and restore whatever mode was set before."""
    old = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=old)


def _x(n: int, c: int, h: int, w: int, seed: int = 0) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32))


@pytest.fixture(scope="module")
def dlinknet34_net():
    return create_model("dlinknet34")


@pytest.fixture(scope="module")
def deeplab_os16():
    return create_model("deeplabv3_resnet101")


@pytest.fixture(scope="module")
def deeplab_os8():
    return create_model("deeplabv3_resnet101_os8")


# ----------------------------------------------------------------------------- ResNet encoder

@pytest.mark.parametrize("depth,expected", [(18, 11_176_512), (34, 21_284_672),
                                            (50, 23_508_032), (101, 42_500_160)])
def test_resnet_params_match_torchvision_without_fc(depth, expected):
    assert count_trainable_params(resnet(depth)) == expected


@pytest.mark.parametrize("dilate,strides", [((False, False, False), (2, 4, 8, 16, 32)),
                                            ((False, False, True), (2, 4, 8, 16, 16)),
                                            ((False, True, True), (2, 4, 8, 8, 8))])
def test_resnet_feature_shapes_and_output_stride(dilate, strides):
    net = resnet(18, replace_stride_with_dilation=dilate)
    net.set_train(False)
    feats = net(_x(1, 3, 64, 96))
    assert len(feats) == 5
    for f, c, s in zip(feats, net.out_channels, strides):
        assert tuple(f.shape) == (1, c, 64 // s, 96 // s)
    assert net.output_stride == strides[-1]


def test_resnet_deep_stem_multigrid_and_in_channels():
    net = resnet(50, in_channels=4, deep_stem=True,
                 replace_stride_with_dilation=(False, True, True), multi_grid=(1, 2, 4))
    assert net.out_channels == (128, 256, 512, 1024, 2048)
    # deep stem: three 3x3 convs, the first takes the 4 input channels, inplanes 128 afterwards
    assert tuple(net.conv1.weight.shape) == (64, 4, 3, 3)
    assert tuple(net.conv3.weight.shape) == (128, 64, 3, 3)
    assert tuple(net.layer1[0].conv1.weight.shape) == (64, 128, 1, 1)
    # OS8: layer4 base dilation 4 times the multi-grid (1, 2, 4); layer3 as torchvision
    assert [b.conv2.dilation[-1] for b in net.layer4] == [4, 8, 16]
    assert [b.conv2.dilation[-1] for b in net.layer3][:2] == [1, 2]
    net.set_train(False)
    feats = net(_x(1, 4, 32, 32))
    assert [tuple(f.shape)[1:] for f in feats] == [(128, 16, 16), (256, 8, 8), (512, 4, 4),
                                                   (1024, 4, 4), (2048, 4, 4)]


def test_resnet_rejects_bad_options():
    with pytest.raises(ValueError):
        resnet(42)
    with pytest.raises(ValueError):
        resnet(50, multi_grid=(1, 2))


# ----------------------------------------------------------------------------- building blocks

def test_conv_transpose2d_matches_pytorch_semantics():
    """k3 s2 p1 op1 (LinkNet decoder) and k4 s2 p1 (head) against a direct numpy definition of
    PyTorch's ConvTranspose2d: scatter every input pixel, crop ``padding`` at the start and keep
    ``output_padding`` extra computed rows/cols at the end."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for k, p, op in [(3, 1, 1), (4, 1, 0)]:
        cell = conv_transpose2d(3, 2, k, stride=2, padding=p, output_padding=op)
        y = cell(ms.Tensor(x)).asnumpy()
        w = cell.weight.asnumpy().astype(np.float64)  # (in, out, k, k) like PyTorch
        full = np.zeros((2, 2, 3 * 2 + k, 4 * 2 + k))
        for i in range(4):
            for j in range(5):
                full[:, :, 2 * i:2 * i + k, 2 * j:2 * j + k] += np.einsum(
                    "nc,cokl->nokl", x[:, :, i, j].astype(np.float64), w)
        ho, wo = 3 * 2 - 2 * p + k + op, 4 * 2 - 2 * p + k + op
        assert (ho, wo) == (8, 10)
        ref = full[:, :, p:p + ho, p:p + wo] + cell.bias.asnumpy()[None, :, None, None]
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, atol=1e-4)


def test_aspp_pooling_is_global_mean_for_any_size():
    cell = ASPPPooling(6, 4)
    cell.set_train(False)
    conv_w = cell.conv[0].weight.asnumpy()[:, :, 0, 0]
    for h, w in [(3, 5), (8, 8)]:
        x = _x(2, 6, h, w, seed=h)
        y = cell(x).asnumpy()
        mean = x.asnumpy().mean(axis=(2, 3))  # (2, 6)
        bn = cell.conv[1]
        z = mean @ conv_w.T
        z = (z - bn.moving_mean.asnumpy()) / np.sqrt(bn.moving_variance.asnumpy() + bn.eps)
        z = np.maximum(z * bn.gamma.asnumpy() + bn.beta.asnumpy(), 0)
        assert y.shape == (2, 4, h, w)
        np.testing.assert_allclose(y, np.broadcast_to(z[:, :, None, None], y.shape), atol=1e-5)


# ----------------------------------------------------------------------------- D-LinkNet

def test_dlinknet34_params_and_defaults(dlinknet34_net):
    assert count_trainable_params(dlinknet34_net) == 31_096_129
    info = model_info("dlinknet34")
    assert (info.stride, info.default_classes) == (32, 1)


def test_dlinknet50_params():
    assert count_trainable_params(create_model("dlinknet50")) == 217_645_089


def test_dlinknet34_forward_shapes(dlinknet34_net):
    dlinknet34_net.set_train(False)
    y = dlinknet34_net(_x(2, 3, 64, 96))
    assert tuple(y.shape) == (2, 1, 64, 96)
    assert np.isfinite(y.asnumpy()).all()


@pytest.mark.parametrize("in_ch", [1, 4])
def test_dlinknet34_in_channels(in_ch):
    net = create_model("dlinknet34", num_classes=2, in_channels=in_ch)
    # the first 7x7 conv has 64 * 49 weights per input channel; a class adds 32 * 9 + 1
    assert count_trainable_params(net) == 31_096_129 + (in_ch - 3) * 64 * 49 + 289
    net.set_train(False)
    assert tuple(net(_x(1, in_ch, 64, 64)).shape) == (1, 2, 64, 64)


def test_dlinknet_input_size_error(dlinknet34_net):
    with pytest.raises(InputSizeError, match=r"70x64.*pad it to 96x64"):
        dlinknet34_net(_x(1, 3, 70, 64))
    with pytest.raises(ConfigError):
        create_model("dlinknet34", aux=True)


def test_dlinknet34_graph_mode(dlinknet34_net):
    """Forward in GRAPH mode; a bad size raises InputSizeError on a direct call and (graph mode
    only raises builtins) a ValueError with the same message when compiled inside another cell."""

    class MeanOf(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, x):
            return self.net(x).mean()

    dlinknet34_net.set_train(False)
    x = _x(1, 3, 64, 64)
    expected = dlinknet34_net(x).asnumpy()
    ms.set_context(mode=ms.GRAPH_MODE)
    y = dlinknet34_net(x).asnumpy()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(InputSizeError):
        dlinknet34_net(_x(1, 3, 64, 48))
    with pytest.raises(ValueError, match="pad it to 64x64"):
        MeanOf(dlinknet34_net)(_x(1, 3, 64, 48))


def test_dlinknet34_training_reduces_loss():
    ms.set_seed(0)
    net = create_model("dlinknet34", in_channels=3)
    net.set_train(True)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.standard_normal((2, 3, 64, 64)).astype(np.float32))
    yy, xx = np.mgrid[0:64, 0:64]
    road = ((np.abs(yy - 32) < 4) | (np.abs(xx - 20) < 3)).astype(np.float32)
    target = ms.Tensor(np.broadcast_to(road, (2, 1, 64, 64)).copy())
    loss_fn = nn.BCEWithLogitsLoss()
    opt = nn.Adam(net.trainable_params(), learning_rate=1e-3)

    def forward(inp, tgt):
        return loss_fn(net(inp), tgt)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)
    losses = []
    for _ in range(4):
        loss, grads = grad_fn(x, target)
        opt(grads)
        losses.append(float(loss.asnumpy()))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]
    assert losses[-1] < 0.8 * losses[0]


# ----------------------------------------------------------------------------- DeepLabV3

def test_deeplabv3_params_and_forward_os16(deeplab_os16):
    assert count_trainable_params(deeplab_os16) == 58_040_661
    assert deeplab_os16.stride == 16
    assert [b.conv2.dilation[-1] for b in deeplab_os16.resnet.layer4] == [2, 4, 8]
    deeplab_os16.set_train(False)
    y = deeplab_os16(_x(1, 3, 64, 48))
    assert tuple(y.shape) == (1, 21, 64, 48)
    with pytest.raises(InputSizeError, match=r"multiple of 16; pad it to 64x64"):
        deeplab_os16(_x(1, 3, 56, 64))


def test_deeplabv3_params_and_forward_os8(deeplab_os8):
    assert count_trainable_params(deeplab_os8) == 58_040_661
    assert deeplab_os8.stride == 8
    assert model_info("deeplabv3_resnet101_os8").stride == 8
    # ASPP rates doubled at OS8 (1, 12, 24, 36)
    assert deeplab_os8.aspp.aspp4.aspp_conv[0].dilation[-1] == 36
    deeplab_os8.set_train(False)
    y = deeplab_os8(_x(1, 3, 56, 64))  # a multiple of 8 that is not one of 16
    assert tuple(y.shape) == (1, 21, 56, 64)


def test_deeplabv3_in_channels_and_classes():
    net = create_model("deeplabv3_resnet101", num_classes=2, in_channels=1)
    assert count_trainable_params(net) == 58_040_661 - 2 * 64 * 49 - 19 * 257
    net.set_train(False)
    assert tuple(net(_x(1, 1, 64, 64)).shape) == (1, 2, 64, 64)
    with pytest.raises(ConfigError):
        create_model("deeplabv3_resnet101", output_stride=32)
