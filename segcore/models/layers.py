"""Small building blocks shared by all networks.

MindSpore porting traps handled here once:

* ``nn.Conv2d`` defaults to ``pad_mode='same'`` and no bias; :func:`conv2d` always uses
  ``pad_mode='pad'`` with explicit symmetric padding so stride-2 convolutions match PyTorch.
* ``nn.BatchNorm2d(momentum=m)`` keeps ``m`` of the old statistics: PyTorch momentum 0.1 is
  MindSpore momentum 0.9 (:func:`bn2d` takes the PyTorch value).
* Resizing goes through :func:`resize_bilinear` with an explicit ``align_corners``.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import mindspore as ms
from mindspore import nn, ops

from ..errors import InputSizeError

IntPair = Union[int, Tuple[int, int]]


def conv2d(in_ch: int, out_ch: int, kernel_size: IntPair = 3, stride: IntPair = 1,
           padding: Union[int, Tuple[int, int, int, int]] = None, dilation: IntPair = 1,
           groups: int = 1, bias: bool = False) -> nn.Conv2d:
    """A PyTorch-equivalent convolution (explicit symmetric padding).

    ``padding=None`` means ``dilation * (k - 1) // 2`` ("same" for odd kernels at stride 1).
    """
    if padding is None:
        k = kernel_size if isinstance(kernel_size, int) else kernel_size[0]
        d = dilation if isinstance(dilation, int) else dilation[0]
        if isinstance(kernel_size, int) or kernel_size[0] == kernel_size[1]:
            padding = d * (k - 1) // 2
        else:
            kh, kw = kernel_size
            dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
            ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
            padding = (ph, ph, pw, pw)
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, pad_mode="pad", padding=padding,
                     dilation=dilation, group=groups, has_bias=bias, weight_init="HeUniform")


def bn2d(ch: int, torch_momentum: float = 0.1, eps: float = 1e-5) -> nn.BatchNorm2d:
    """BatchNorm2d with PyTorch's momentum convention converted to MindSpore's."""
    return nn.BatchNorm2d(ch, momentum=1.0 - torch_momentum, eps=eps)


class ConvBNReLU(nn.Cell):
    """conv -> BN -> ReLU (ReLU optional)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: IntPair = 3, stride: IntPair = 1,
                 padding=None, dilation: IntPair = 1, groups: int = 1, relu: bool = True,
                 bias: bool = False, torch_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv = conv2d(in_ch, out_ch, kernel_size, stride, padding, dilation, groups, bias)
        self.bn = bn2d(out_ch, torch_momentum)
        self.use_relu = relu
        self.relu = nn.ReLU()

    def construct(self, x):
        x = self.bn(self.conv(x))
        if self.use_relu:
            x = self.relu(x)
        return x


def resize_bilinear(x: ms.Tensor, size: Sequence[int], align_corners: bool = False) -> ms.Tensor:
    """Bilinear resize of an NCHW tensor to ``size=(H, W)``."""
    return ops.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def check_input_size(h: int, w: int, stride: int, name: str) -> None:
    """Raise :class:`InputSizeError` unless ``h`` and ``w`` are multiples of ``stride``."""
    if h % stride or w % stride:
        ph = -(-h // stride) * stride
        pw = -(-w // stride) * stride
        raise InputSizeError(
            f"{name}: input {h}x{w} is not a multiple of {stride}; pad it to {ph}x{pw}")


def count_trainable_params(net: nn.Cell) -> int:
    """Number of trainable scalars (weights, biases, BN gamma/beta, PReLU; no running stats)."""
    return int(sum(p.size for p in net.trainable_params()))
