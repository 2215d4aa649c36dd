"""D-LinkNet (Zhou, Zhang, Wu, CVPRW 2018; DeepGlobe 2018 road extraction winner).

Same architecture as the authors' ``DinkNet34`` / ``DinkNet50``: a ResNet encoder, a dilated
centre block whose branch outputs are summed with its input, four LinkNet decoder blocks with
additive skips and a transposed-convolution head. ``construct`` returns logits (the original
applies a sigmoid at the end; here that belongs to the loss / predictor).

Input: NCHW float32 ``(N, in_channels, H, W)`` with ``H`` and ``W`` multiples of 32 (the stride);
other sizes raise :class:`segcore.errors.InputSizeError` naming the padded size.
Output: NCHW float32 logits ``(N, num_classes, H, W)``.

Parameter names: the encoder is our torchvision-layout :class:`ResNet` under ``encoder``; the
rest keeps the authors' names. :data:`TORCH_PREFIX_MAP` gives the prefix renaming from the
original PyTorch ``state_dict`` keys.

MindSpore trap handled here: ``nn.Conv2dTranspose(pad_mode='pad', output_padding=1)`` fills the
extra row/column with zeros instead of computing it as PyTorch does, so
:func:`conv_transpose2d` expresses PyTorch's ``padding=p, output_padding=op`` as the asymmetric
crop ``(p, p - op, p, p - op)``, which is numerically identical.
"""
from __future__ import annotations

import logging
from typing import Dict

from mindspore import nn

from ..errors import ConfigError
from ..registry import register_model
from .backbones.resnet import resnet
from .layers import SizeCheckedNet, bn2d, conv2d

logger = logging.getLogger(__name__)

__all__ = ["DLinkNet", "DBlock", "DecoderBlock", "conv_transpose2d",
           "dlinknet34", "dlinknet50",
           "TORCH_PREFIX_MAP"]

#: original ``dinknet.py`` key prefix -> our key prefix (everything else keeps its name)
TORCH_PREFIX_MAP: Dict[str, str] = {
    "firstconv.": "encoder.conv1.",
    "firstbn.": "encoder.bn1.",
    "encoder1.": "encoder.layer1.",
    "encoder2.": "encoder.layer2.",
    "encoder3.": "encoder.layer3.",
    "encoder4.": "encoder.layer4.",
    **{f"dblock.dilate{i}.": f"dblock.convs.{i - 1}." for i in range(1, 6)},
}


def conv_transpose2d(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                     padding: int = 0, output_padding: int = 0,
                     bias: bool = True) -> nn.Conv2dTranspose:
    """A transposed convolution equal to PyTorch's ``ConvTranspose2d`` with the same arguments.

    Output side: ``(H - 1) * stride - 2 * padding + kernel_size + output_padding``.
    """
    if output_padding > padding:
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} > padding {padding} "
                         "is not expressible as a crop")
    if output_padding >= stride:
        raise ValueError(f"conv_transpose2d: output_padding {output_padding} must be smaller "
                         f"than stride {stride}")
    end = padding - output_padding
    return nn.Conv2dTranspose(in_ch, out_ch, kernel_size, stride=stride, pad_mode="pad",
                              padding=(padding, end, padding, end), has_bias=bias,
                              weight_init="HeUniform")


class DBlock(nn.Cell):
    """Dilated centre block: a chain of 3x3 convs (with bias) + ReLU at the given dilations;
    the output is the input plus every intermediate output. Shape preserving."""

    def __init__(self, channels: int, dilations=(1, 2, 4, 8)) -> None:
        super().__init__()
        # the original's dilate1..dilateN are convs.0..convs.N-1 (see TORCH_PREFIX_MAP)
        self.n = len(dilations)
        self.convs = nn.CellList([conv2d(channels, channels, 3, padding=d, dilation=d, bias=True)
                                  for d in dilations])
        self.relu = nn.ReLU()

    def construct(self, x):
        out = x
        h = x
        for conv in self.convs:
            h = self.relu(conv(h))
            out = out + h
        return out


class DecoderBlock(nn.Cell):
    """LinkNet decoder block: 1x1 in->in/4, BN, ReLU; 3x3 stride-2 transposed conv (x2 size),
    BN, ReLU; 1x1 in/4->out, BN, ReLU. All convolutions carry a bias as in the original."""

    def __init__(self, in_channels: int, n_filters: int) -> None:
        super().__init__()
        mid = in_channels // 4
        self.conv1 = conv2d(in_channels, mid, 1, padding=0, bias=True)
        self.norm1 = bn2d(mid)
        self.deconv2 = conv_transpose2d(mid, mid, 3, stride=2, padding=1, output_padding=1)
        self.norm2 = bn2d(mid)
        self.conv3 = conv2d(mid, n_filters, 1, padding=0, bias=True)
        self.norm3 = bn2d(n_filters)
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.relu(self.norm1(self.conv1(x)))
        x = self.relu(self.norm2(self.deconv2(x)))
        return self.relu(self.norm3(self.conv3(x)))


class DLinkNet(SizeCheckedNet):
    """D-LinkNet with a ResNet-``depth`` encoder (34 -> DinkNet34, 50 -> DinkNet50).

    ``self.stride`` is 32. See the module docstring for shapes.
    """

    stride = 32

    def __init__(self, num_classes: int = 1, in_channels: int = 3, depth: int = 34) -> None:
        super().__init__()
        if depth not in (18, 34, 50, 101, 152):
            raise ConfigError(f"DLinkNet: encoder depth {depth} not supported")
        self.name = f"dlinknet{depth}"
        self.encoder = resnet(depth, in_channels=in_channels)
        filters = self.encoder.out_channels[1:]
        # DinkNet34 uses four dilations, DinkNet50/101 five (the "more dilate" block)
        dilations = (1, 2, 4, 8) if filters[3] <= 512 else (1, 2, 4, 8, 16)
        self.dblock = DBlock(filters[3], dilations)
        self.decoder4 = DecoderBlock(filters[3], filters[2])
        self.decoder3 = DecoderBlock(filters[2], filters[1])
        self.decoder2 = DecoderBlock(filters[1], filters[0])
        self.decoder1 = DecoderBlock(filters[0], filters[0])
        self.finaldeconv1 = conv_transpose2d(filters[0], 32, 4, stride=2, padding=1)
        self.finalconv2 = conv2d(32, 32, 3, padding=1, bias=True)
        self.finalconv3 = conv2d(32, num_classes, 3, padding=1, bias=True)
        self.relu = nn.ReLU()
        logger.debug("built %s: in_channels=%d, num_classes=%d, centre dilations %s", self.name,
                     in_channels, num_classes, dilations)

    def construct(self, x):
        self._check_size(x)
        _, e1, e2, e3, e4 = self.encoder(x)
        e4 = self.dblock(e4)
        d4 = self.decoder4(e4) + e3
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        d1 = self.decoder1(d2)
        out = self.relu(self.finaldeconv1(d1))
        out = self.relu(self.finalconv2(out))
        return self.finalconv3(out)


def _no_aux(name: str, aux: bool) -> None:
    if aux:
        raise ConfigError(f"{name}: has no auxiliary head (aux=True is not supported)")


@register_model("dlinknet34", stride=32, default_classes=1, family="dlinknet",
                description="D-LinkNet, ResNet-34 encoder (DeepGlobe 2018 DinkNet34)")
def dlinknet34(num_classes: int = 1, in_channels: int = 3, aux: bool = False, **kw) -> DLinkNet:
    """D-LinkNet-34: 31,096,129 trainable parameters with one class."""
    _no_aux("dlinknet34", aux)
    if kw:
        raise ConfigError(f"dlinknet34: unexpected options {sorted(kw)}")
    return DLinkNet(num_classes, in_channels, depth=34)


@register_model("dlinknet50", stride=32, default_classes=1, family="dlinknet",
                description="D-LinkNet, ResNet-50 encoder (DeepGlobe 2018 DinkNet50)")
def dlinknet50(num_classes: int = 1, in_channels: int = 3, aux: bool = False, **kw) -> DLinkNet:
    """D-LinkNet-50: 217,645,089 trainable parameters with one class."""
    _no_aux("dlinknet50", aux)
    if kw:
        raise ConfigError(f"dlinknet50: unexpected options {sorted(kw)}")
    return DLinkNet(num_classes, in_channels, depth=50)
