"""DeepLabV3 with a ResNet-101 encoder (Chen et al. 2017, "Rethinking atrous convolution").

Follows the MindSpore ModelZoo DeepLabV3 (``official/cv/DeepLabv3``, ``src/nets/deeplab_v3``):

* ResNet-101 without biases; ``layer4`` dilated with multi-grid ``(1, 2, 4)``; output stride 16
  (``layer4`` dilations 2/4/8) or 8 (``layer3`` dilation 2, ``layer4`` 4/8/16);
* ASPP with 256 channels: a 1x1 branch (rate 1), three 3x3 atrous branches and an image-pooling
  branch (true global mean -> 1x1 conv -> BN -> ReLU -> broadcast back), every branch conv without
  bias and followed by BN + ReLU; concat (1280) -> 1x1 conv 256 (no bias) -> BN -> ReLU ->
  dropout (training only) -> 1x1 classifier **with** bias;
* bilinear upsampling of the logits to the input size with ``align_corners=True``.

Parameter names mirror the ModelZoo cell tree (``resnet.*``, ``aspp.aspp1..aspp4.aspp_conv.*``,
``aspp.aspp_pooling.conv.*``, ``aspp.conv1/bn1/conv2``), so its checkpoints map by name.

Differences from the seed, on purpose:

* ASPP rates are ``(1, 6, 12, 18)`` at output stride 16 and doubled ``(1, 12, 24, 36)`` at output
  stride 8, as in the paper (the seed keeps ``(1, 6, 12, 18)`` at OS8; pass
  ``atrous_rates=(1, 6, 12, 18)`` to reproduce it);
* dilation follows torchvision's ``replace_stride_with_dilation``: at OS8 the *first* block of
  ``layer3`` keeps dilation 1 (the seed uses 2 there); the other blocks agree;
* the max-pool pads 1 on every side (PyTorch) where the seed uses ``pad_mode='same'``.
None of these changes the parameter count: 58,040,661 trainable parameters at 21 classes.

Input: NCHW float32 ``(N, in_channels, H, W)``, ``H`` and ``W`` multiples of the output stride
(16 or 8): every stride-2 stage then halves an even size exactly. Other sizes raise
:class:`segcore.errors.InputSizeError`. Output: NCHW float32 logits ``(N, num_classes, H, W)``.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

from mindspore import nn, ops

from ..errors import ConfigError
from ..registry import register_model
from .backbones.resnet import resnet
from .layers import SizeCheckedNet, StepDropout, bn2d, conv2d, resize_bilinear

logger = logging.getLogger(__name__)

__all__ = ["ASPP", "ASPPConv", "ASPPPooling", "DeepLabV3", "deeplabv3_resnet101",
           "deeplabv3_resnet101_os8"]


class ASPPConv(nn.Cell):
    """One atrous branch: 1x1 conv (rate 1) or 3x3 conv with ``dilation=rate``; BN; ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rate: int = 1) -> None:
        super().__init__()
        if rate == 1:
            conv = conv2d(in_channels, out_channels, 1, padding=0)
        else:
            conv = conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate)
        self.aspp_conv = nn.SequentialCell([conv, bn2d(out_channels), nn.ReLU()])

    def construct(self, x):
        return self.aspp_conv(x)


class ASPPPooling(nn.Cell):
    """Image-level branch: global mean over H and W (any size), 1x1 conv, BN, ReLU, broadcast
    back to ``(N, out_channels, H, W)``.

    In training mode with batch size 1 the BN here sees one value per channel, so the branch
    outputs ReLU(beta) everywhere (PyTorch refuses such a batch); train with batch >= 2.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.SequentialCell([conv2d(in_channels, out_channels, 1, padding=0),
                                       bn2d(out_channels), nn.ReLU()])

    def construct(self, x):
        n, _, h, w = x.shape
        out = self.conv(ops.mean(x, axis=(2, 3), keep_dims=True))
        return ops.broadcast_to(out, (n, out.shape[1], h, w))


class ASPP(nn.Cell):
    """Atrous spatial pyramid pooling plus the classifier (as in the ModelZoo cell)."""

    def __init__(self, atrous_rates: Sequence[int], in_channels: int = 2048,
                 num_classes: int = 21, out_channels: int = 256, dropout: float = 0.7) -> None:
        super().__init__()
        if len(atrous_rates) != 4:
            raise ConfigError(f"ASPP: expected 4 atrous rates, got {list(atrous_rates)}")
        self.aspp1 = ASPPConv(in_channels, out_channels, atrous_rates[0])
        self.aspp2 = ASPPConv(in_channels, out_channels, atrous_rates[1])
        self.aspp3 = ASPPConv(in_channels, out_channels, atrous_rates[2])
        self.aspp4 = ASPPConv(in_channels, out_channels, atrous_rates[3])
        self.aspp_pooling = ASPPPooling(in_channels, out_channels)
        self.conv1 = conv2d(out_channels * 5, out_channels, 1, padding=0)
        self.bn1 = bn2d(out_channels)
        self.relu = nn.ReLU()
        self.drop = StepDropout(dropout, channelwise=False)  # active only in training mode
        self.conv2 = conv2d(out_channels, num_classes, 1, padding=0, bias=True)

    def construct(self, x):
        x = ops.concat((self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x),
                        self.aspp_pooling(x)), axis=1)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.drop(x)
        return self.conv2(x)


class DeepLabV3(SizeCheckedNet):
    """DeepLabV3-ResNet-101. ``self.stride`` equals ``output_stride`` (16 or 8)."""

    def __init__(self, num_classes: int = 21, in_channels: int = 3, output_stride: int = 16,
                 atrous_rates: Optional[Sequence[int]] = None, dropout: float = 0.7) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ConfigError(f"DeepLabV3: output_stride must be 8 or 16, got {output_stride}")
        if atrous_rates is None:
            atrous_rates = (1, 6, 12, 18) if output_stride == 16 else (1, 12, 24, 36)
        self.stride = output_stride
        self.name = f"deeplabv3_resnet101 (output stride {output_stride})"
        dilate = (False, False, True) if output_stride == 16 else (False, True, True)
        self.resnet = resnet(101, in_channels=in_channels, replace_stride_with_dilation=dilate,
                             multi_grid=(1, 2, 4))
        self.aspp = ASPP(tuple(atrous_rates), self.resnet.out_channels[4], num_classes,
                         dropout=dropout)
        logger.debug("built %s: in_channels=%d, num_classes=%d, atrous rates %s", self.name,
                     in_channels, num_classes, tuple(atrous_rates))

    def construct(self, x):
        self._check_size(x)
        h, w = x.shape[2], x.shape[3]
        feats = self.resnet(x)
        out = self.aspp(feats[4])
        return resize_bilinear(out, (h, w), align_corners=True)


def _build(name: str, num_classes: int, in_channels: int, aux: bool, output_stride: int,
           kw: dict) -> DeepLabV3:
    if aux:
        raise ConfigError(f"{name}: has no auxiliary head (aux=True is not supported)")
    unknown = set(kw) - {"atrous_rates", "dropout"}
    if unknown:
        raise ConfigError(f"{name}: unexpected options {sorted(unknown)}")
    return DeepLabV3(num_classes, in_channels, output_stride=output_stride, **kw)


@register_model("deeplabv3_resnet101", stride=16, default_classes=21, family="deeplabv3",
                description="DeepLabV3, ResNet-101 multi-grid, ASPP; output_stride=16 (or 8)")
def deeplabv3_resnet101(num_classes: int = 21, in_channels: int = 3, aux: bool = False,
                        output_stride: int = 16, **kw) -> DeepLabV3:
    """DeepLabV3-ResNet-101 (``output_stride`` 16 or 8; options ``atrous_rates``, ``dropout``).

    58,040,661 trainable parameters at 21 classes for either output stride.
    """
    return _build("deeplabv3_resnet101", num_classes, in_channels, aux, output_stride, kw)


@register_model("deeplabv3_resnet101_os8", stride=8, default_classes=21, family="deeplabv3",
                description="DeepLabV3, ResNet-101 multi-grid, ASPP; output stride 8")
def deeplabv3_resnet101_os8(num_classes: int = 21, in_channels: int = 3, aux: bool = False,
                            **kw) -> DeepLabV3:
    """``deeplabv3_resnet101(..., output_stride=8)``."""
    return _build("deeplabv3_resnet101_os8", num_classes, in_channels, aux, 8, kw)
