"""ENet: a deep neural network architecture for real-time semantic segmentation.

Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation",
2016. Layer shapes, bias placement and activation placement follow the widely used PyTorch port
(davidtvs/PyTorch-ENet, ``models/enet.py``), so its trained weights map one to one:

* :class:`InitialBlock`: a 3x3 stride-2 convolution with ``16 - in_channels`` filters
  (13 for RGB) concatenated with a 3x3 stride-2 max pooling of the input, then BN + activation
  (16 channels at 1/2);
* stage 1: :class:`DownsamplingBottleneck` 16 -> 64 (1/4) and four regular bottlenecks;
* stages 2 and 3: a downsampling bottleneck 64 -> 128 (1/8, stage 2 only) and regular,
  dilated (2, 4, 8, 16) and asymmetric (5x1 then 1x5) :class:`RegularBottleneck` s;
* stages 4 and 5 (decoder): :class:`UpsamplingBottleneck` s that max-unpool with the indices of
  the matching downsampling max pooling (128 -> 64 at 1/4, 64 -> 16 at 1/2), regular
  bottlenecks, and a final 3x3 stride-2 transposed convolution to the classes at full size.

No convolution has a bias. The encoder (initial block, stages 1-3) uses PReLU, the decoder ReLU.
``prelu="scalar"`` gives every PReLU one learnable slope (as ``torch.nn.PReLU()`` in the port,
351,660 trainable parameters at 19 classes); ``prelu="channel"`` one slope per channel as in the
paper's Torch7 release (357,895). Dropout2d rates are 0.01 in stage 1 and 0.1 afterwards.

Max pooling with indices and max unpooling use MindSpore's ``ops.MaxPoolWithArgmaxV2`` and
``ops.MaxUnpool2D`` (flat per-channel ``h * W + w`` indices, as PyTorch); both run on CPU in
PyNative and GRAPH mode and are differentiable with respect to the pooled/unpooled values.

Input size: three 2x2 downsamplings whose indices must unpool back to the same size, so every
side must be a multiple of 8 (:data:`ENET_STRIDE`); other sizes raise
:class:`~segcore.errors.InputSizeError` naming the size to pad to.
"""
from __future__ import annotations

import logging
from typing import Tuple

import mindspore as ms
from mindspore import nn, ops

from ..registry import register_model
from .layers import PReLU, StepDropout, bn2d, check_input_size, conv2d

logger = logging.getLogger(__name__)

#: Factor every input side must be a multiple of (three stride-2 stages).
ENET_STRIDE = 8

_PRELU_MODES = ("scalar", "channel")


def _activation(kind: str, channels: int) -> nn.Cell:
    """``"relu"``: ReLU; ``"scalar"``: PReLU with one slope; ``"channel"``: one per channel."""
    if kind == "relu":
        return nn.ReLU()
    return PReLU(channel=1 if kind == "scalar" else channels, w=0.25)


class InitialBlock(nn.Cell):
    """conv3x3/2 (``out_channels - in_channels`` filters) || maxpool3x3/2 -> concat -> BN -> act.

    Input: float32 (N, in_channels, H, W), H and W even. Output: (N, out_channels, H/2, W/2).
    """

    def __init__(self, in_channels: int, out_channels: int, act: str) -> None:
        super().__init__()
        if not 1 <= in_channels < out_channels:
            raise ValueError(f"ENet initial block: in_channels must be in 1..{out_channels - 1}, "
                             f"got {in_channels}")
        self.main_branch = conv2d(in_channels, out_channels - in_channels, 3, 2, 1)
        self.ext_branch = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        self.batch_norm = bn2d(out_channels)
        self.out_activation = _activation(act, out_channels)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = ops.concat((self.main_branch(x), self.ext_branch(x)), 1)
        return self.out_activation(self.batch_norm(out))


class RegularBottleneck(nn.Cell):
    """Residual bottleneck: x + dropout(1x1 -> (regular | dilated | asymmetric) -> 1x1), act.

    ``asymmetric=True`` replaces the k x k convolution by k x 1 followed by 1 x k (each with BN
    and activation). Input and output: float32 (N, channels, h, w).
    """

    def __init__(self, channels: int, act: str, internal_ratio: int = 4, kernel_size: int = 3,
                 dilation: int = 1, asymmetric: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        if internal_ratio <= 1 or internal_ratio > channels:
            raise ValueError(f"ENet bottleneck: internal_ratio must be in 2..{channels}, got "
                             f"{internal_ratio}")
        mid = channels // internal_ratio
        self.ext_conv1 = nn.SequentialCell([conv2d(channels, mid, 1, 1, 0), bn2d(mid),
                                            _activation(act, mid)])
        if asymmetric:
            self.ext_conv2 = nn.SequentialCell([
                conv2d(mid, mid, (kernel_size, 1), 1, None, (dilation, 1)), bn2d(mid),
                _activation(act, mid),
                conv2d(mid, mid, (1, kernel_size), 1, None, (1, dilation)), bn2d(mid),
                _activation(act, mid)])
        else:
            self.ext_conv2 = nn.SequentialCell([conv2d(mid, mid, kernel_size, 1, None, dilation),
                                                bn2d(mid), _activation(act, mid)])
        self.ext_conv3 = nn.SequentialCell([conv2d(mid, channels, 1, 1, 0), bn2d(channels),
                                            _activation(act, channels)])
        self.ext_regul = StepDropout(dropout)
        self.out_activation = _activation(act, channels)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        return self.out_activation(x + ext)


class DownsamplingBottleneck(nn.Cell):
    """maxpool2x2 (indices kept, channels zero-padded) + dropout(conv2x2/2 -> 3x3 -> 1x1), act.

    Input: float32 (N, in_channels, h, w), h and w even. Returns ``(out, indices)``: out is
    (N, out_channels, h/2, w/2); indices (N, in_channels, h/2, w/2) int64 are the flat
    ``row * w + col`` positions of the maxima, for :class:`UpsamplingBottleneck`.
    """

    def __init__(self, in_channels: int, out_channels: int, act: str, internal_ratio: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if internal_ratio <= 1 or internal_ratio > in_channels:
            raise ValueError(f"ENet bottleneck: internal_ratio must be in 2..{in_channels}, got "
                             f"{internal_ratio}")
        if out_channels < in_channels:
            raise ValueError(f"ENet downsampling: out_channels ({out_channels}) < in_channels "
                             f"({in_channels})")
        mid = in_channels // internal_ratio
        self.extra_channels = out_channels - in_channels
        self.main_max1 = ops.MaxPoolWithArgmaxV2(kernel_size=2, strides=2)
        self.ext_conv1 = nn.SequentialCell([conv2d(in_channels, mid, 2, 2, 0), bn2d(mid),
                                            _activation(act, mid)])
        self.ext_conv2 = nn.SequentialCell([conv2d(mid, mid, 3, 1, 1), bn2d(mid),
                                            _activation(act, mid)])
        self.ext_conv3 = nn.SequentialCell([conv2d(mid, out_channels, 1, 1, 0),
                                            bn2d(out_channels), _activation(act, out_channels)])
        self.ext_regul = StepDropout(dropout)
        self.out_activation = _activation(act, out_channels)

    def construct(self, x: ms.Tensor) -> Tuple[ms.Tensor, ms.Tensor]:
        main, indices = self.main_max1(x)
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        n, _, h, w = main.shape
        main = ops.concat((main, ops.zeros((n, self.extra_channels, h, w), main.dtype)), 1)
        return self.out_activation(main + ext), indices


class UpsamplingBottleneck(nn.Cell):
    """(1x1 conv + BN -> max-unpool 2x2) + dropout(1x1 -> tconv2x2/2 -> 1x1 + BN), act.

    Input: float32 (N, in_channels, h, w) and the int64 indices (N, out_channels, h, w) of the
    matching :class:`DownsamplingBottleneck`. Output: (N, out_channels, 2h, 2w).
    """

    def __init__(self, in_channels: int, out_channels: int, act: str, internal_ratio: int = 4,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if internal_ratio <= 1 or internal_ratio > in_channels:
            raise ValueError(f"ENet bottleneck: internal_ratio must be in 2..{in_channels}, got "
                             f"{internal_ratio}")
        mid = in_channels // internal_ratio
        self.main_conv1 = nn.SequentialCell([conv2d(in_channels, out_channels, 1, 1, 0),
                                             bn2d(out_channels)])
        self.main_unpool1 = ops.MaxUnpool2D(ksize=2, strides=2)
        self.ext_conv1 = nn.SequentialCell([conv2d(in_channels, mid, 1, 1, 0), bn2d(mid),
                                            _activation(act, mid)])
        self.ext_tconv1 = nn.Conv2dTranspose(mid, mid, 2, stride=2, pad_mode="valid",
                                             has_bias=False, weight_init="HeUniform")
        self.ext_tconv1_bnorm = bn2d(mid)
        self.ext_tconv1_activation = _activation(act, mid)
        self.ext_conv2 = nn.SequentialCell([conv2d(mid, out_channels, 1, 1, 0),
                                            bn2d(out_channels)])
        self.ext_regul = StepDropout(dropout)
        self.out_activation = _activation(act, out_channels)

    def construct(self, x: ms.Tensor, indices: ms.Tensor) -> ms.Tensor:
        main = self.main_unpool1(self.main_conv1(x), indices)
        ext = self.ext_tconv1_activation(self.ext_tconv1_bnorm(self.ext_tconv1(self.ext_conv1(x))))
        ext = self.ext_regul(self.ext_conv2(ext))
        return self.out_activation(main + ext)


class ENet(nn.Cell):
    """ENet encoder-decoder.

    Args:
        num_classes: output channels of the logits.
        in_channels: input bands, 1..15 (the initial block's convolution has
            ``16 - in_channels`` filters so that its concatenation with the pooled input keeps
            16 channels).
        prelu: ``"scalar"`` (one PReLU slope, the PyTorch port) or ``"channel"`` (one slope per
            channel, the original Torch7 model).

    Input: float32 (N, in_channels, H, W), H and W multiples of :data:`ENET_STRIDE` (8).
    Output: float32 logits (N, num_classes, H, W).
    """

    def __init__(self, num_classes: int, in_channels: int = 3, prelu: str = "scalar") -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ENet: num_classes must be positive, got {num_classes}")
        if prelu not in _PRELU_MODES:
            raise ValueError(f"ENet: prelu must be one of {_PRELU_MODES}, got {prelu!r}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        enc, dec = prelu, "relu"
        self.initial_block = InitialBlock(in_channels, 16, enc)
        # Stage 1 - encoder
        self.downsample1_0 = DownsamplingBottleneck(16, 64, enc, dropout=0.01)
        self.regular1_1 = RegularBottleneck(64, enc, dropout=0.01)
        self.regular1_2 = RegularBottleneck(64, enc, dropout=0.01)
        self.regular1_3 = RegularBottleneck(64, enc, dropout=0.01)
        self.regular1_4 = RegularBottleneck(64, enc, dropout=0.01)
        # Stage 2 - encoder
        self.downsample2_0 = DownsamplingBottleneck(64, 128, enc, dropout=0.1)
        self.regular2_1 = RegularBottleneck(128, enc, dropout=0.1)
        self.dilated2_2 = RegularBottleneck(128, enc, dilation=2, dropout=0.1)
        self.asymmetric2_3 = RegularBottleneck(128, enc, kernel_size=5, asymmetric=True,
                                               dropout=0.1)
        self.dilated2_4 = RegularBottleneck(128, enc, dilation=4, dropout=0.1)
        self.regular2_5 = RegularBottleneck(128, enc, dropout=0.1)
        self.dilated2_6 = RegularBottleneck(128, enc, dilation=8, dropout=0.1)
        self.asymmetric2_7 = RegularBottleneck(128, enc, kernel_size=5, asymmetric=True,
                                               dropout=0.1)
        self.dilated2_8 = RegularBottleneck(128, enc, dilation=16, dropout=0.1)
        # Stage 3 - encoder (stage 2 without the downsampling)
        self.regular3_0 = RegularBottleneck(128, enc, dropout=0.1)
        self.dilated3_1 = RegularBottleneck(128, enc, dilation=2, dropout=0.1)
        self.asymmetric3_2 = RegularBottleneck(128, enc, kernel_size=5, asymmetric=True,
                                               dropout=0.1)
        self.dilated3_3 = RegularBottleneck(128, enc, dilation=4, dropout=0.1)
        self.regular3_4 = RegularBottleneck(128, enc, dropout=0.1)
        self.dilated3_5 = RegularBottleneck(128, enc, dilation=8, dropout=0.1)
        self.asymmetric3_6 = RegularBottleneck(128, enc, kernel_size=5, asymmetric=True,
                                               dropout=0.1)
        self.dilated3_7 = RegularBottleneck(128, enc, dilation=16, dropout=0.1)
        # Stage 4 - decoder
        self.upsample4_0 = UpsamplingBottleneck(128, 64, dec, dropout=0.1)
        self.regular4_1 = RegularBottleneck(64, dec, dropout=0.1)
        self.regular4_2 = RegularBottleneck(64, dec, dropout=0.1)
        # Stage 5 - decoder
        self.upsample5_0 = UpsamplingBottleneck(64, 16, dec, dropout=0.1)
        self.regular5_1 = RegularBottleneck(16, dec, dropout=0.1)
        # PyTorch ConvTranspose2d(k=3, s=2, p=1) called with output_size=2h crops one row/column
        # at the top/left of the (2h+1)-sized full output. MindSpore's output_padding=1 does not
        # reproduce that (values differ on CPU); cropping (top, bottom, left, right) = (1, 0, 1, 0)
        # gives the same 2h x 2w result exactly (checked in the tests against numpy).
        self.transposed_conv = nn.Conv2dTranspose(16, num_classes, 3, stride=2, pad_mode="pad",
                                                  padding=(1, 0, 1, 0), has_bias=False,
                                                  weight_init="HeUniform")

    def __call__(self, *args, **kwargs):
        # GRAPH mode cannot compile a raise of InputSizeError, so the check runs here in Python.
        if args and isinstance(args[0], ms.Tensor) and args[0].ndim == 4:
            check_input_size(int(args[0].shape[2]), int(args[0].shape[3]), ENET_STRIDE, "enet")
        return super().__call__(*args, **kwargs)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        h, w = x.shape[2], x.shape[3]
        if h % ENET_STRIDE != 0 or w % ENET_STRIDE != 0:  # reached only when nested in a graph
            raise ValueError(f"enet: input {h}x{w} is not a multiple of {ENET_STRIDE}")
        x = self.initial_block(x)
        x, indices1 = self.downsample1_0(x)
        x = self.regular1_4(self.regular1_3(self.regular1_2(self.regular1_1(x))))
        x, indices2 = self.downsample2_0(x)
        x = self.regular2_1(x)
        x = self.dilated2_2(x)
        x = self.asymmetric2_3(x)
        x = self.dilated2_4(x)
        x = self.regular2_5(x)
        x = self.dilated2_6(x)
        x = self.asymmetric2_7(x)
        x = self.dilated2_8(x)
        x = self.regular3_0(x)
        x = self.dilated3_1(x)
        x = self.asymmetric3_2(x)
        x = self.dilated3_3(x)
        x = self.regular3_4(x)
        x = self.dilated3_5(x)
        x = self.asymmetric3_6(x)
        x = self.dilated3_7(x)
        x = self.regular4_2(self.regular4_1(self.upsample4_0(x, indices2)))
        x = self.regular5_1(self.upsample5_0(x, indices1))
        return self.transposed_conv(x)


@register_model("enet", stride=ENET_STRIDE, default_classes=19, family="enet",
                description="ENet (real-time encoder-decoder with max-unpooling); inputs "
                            "multiples of 8", prelu_modes=_PRELU_MODES)
def enet(num_classes: int = 19, in_channels: int = 3, aux: bool = False, prelu: str = "scalar",
         **kw) -> ENet:
    """ENet with PReLU slopes per layer (``prelu="scalar"``) or per channel (``"channel"``).

    351,660 trainable parameters at 19 classes and 3 bands with ``"scalar"``, 357,895 with
    ``"channel"``. ENet has no auxiliary head: ``aux=True`` raises ValueError.
    """
    if kw:
        raise TypeError(f"enet: unexpected arguments {sorted(kw)}")
    if aux:
        raise ValueError("enet: ENet has no auxiliary head (aux=True)")
    return ENet(num_classes, in_channels=in_channels, prelu=prelu)
