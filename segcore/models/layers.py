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


def _graph_size_check(h: int, w: int, stride: int, name: str) -> None:
    """Graph-mode-safe twin of :func:`check_input_size`.

    MindSpore graph mode may only raise builtin exceptions, so inside ``construct`` this raises a
    plain ``ValueError`` (with the same message) at compile time, where shapes are constants.
    """
    if h % stride or w % stride:
        raise ValueError(f"{name}: input {h}x{w} is not a multiple of {stride}; pad it to "
                         f"{-(-h // stride) * stride}x{-(-w // stride) * stride}")


class SizeCheckedNet(nn.Cell):
    """Base of the segmentation networks here: rejects inputs whose H or W is not a multiple of
    ``self.stride``.

    The check runs twice, because MindSpore graph mode cannot raise our own exception types:

    * ``__call__`` (plain Python, before PyNative execution or graph compilation) raises
      :class:`segcore.errors.InputSizeError` - this covers every call in PyNative mode and a
      direct call of the network in GRAPH mode;
    * ``construct`` calls :func:`_graph_size_check`, so when the network is compiled as part of
      a larger graph (e.g. a loss/train-step cell in GRAPH mode) a bad size still fails at
      compile time, as a plain ``ValueError`` with the same message (``InputSizeError`` is a
      ``ValueError`` too, so ``except ValueError`` catches both).

    Subclasses set ``self.stride`` and ``self.name`` and call ``self._check_size(x)`` first in
    ``construct``.
    """

    stride = 32
    name = "network"

    def __call__(self, *args, **kwargs):
        shape = tuple(getattr(args[0], "shape", ())) if args else ()
        if len(shape) == 4 and shape[2] is not None and shape[3] is not None \
                and shape[2] >= 0 and shape[3] >= 0:  # skip dynamic-shape placeholders
            check_input_size(int(shape[2]), int(shape[3]), self.stride, self.name)
        return super().__call__(*args, **kwargs)

    def _check_size(self, x) -> None:
        _graph_size_check(x.shape[2], x.shape[3], self.stride, self.name)


def count_trainable_params(net: nn.Cell) -> int:
    """Number of trainable scalars (weights, biases, BN gamma/beta, PReLU; no running stats)."""
    return int(sum(p.size for p in net.trainable_params()))


class StepDropout(nn.Cell):
    """Dropout (``channelwise``: whole channels, as ``nn.Dropout2d``) whose masks can be a
    function of ``(seed, rank, step, layer)``, so that a resumed training run draws the same
    masks as an uninterrupted one.

    MindSpore's own dropout kernels keep a hidden per-operator random state that a new process
    restarts from the beginning (a run resumed at step 2000 would repeat the masks of step 0).
    The trainer calls :func:`set_dropout_step` before every PyNative step; the masks are then
    drawn with numpy from that key. Without it (graph/jit training, other callers) the layer
    falls back to MindSpore's operator. Inference (``training`` False) is the identity.
    """

    def __init__(self, p: float = 0.5, channelwise: bool = True) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.channelwise = bool(channelwise)
        self.seeded = False
        self.key: Tuple[int, ...] = (0,)
        self.fallback = ops.Dropout2D(1.0 - self.p) if channelwise else ops.Dropout(1.0 - self.p)

    def _mask(self, shape) -> ms.Tensor:
        import numpy as np

        rng = np.random.default_rng(self.key)
        mshape = tuple(shape[:2]) if self.channelwise else tuple(shape)
        keep = (rng.random(mshape) >= self.p).astype(np.float32) / np.float32(1.0 - self.p)
        if self.channelwise:
            keep = keep.reshape(tuple(shape[:2]) + (1,) * (len(shape) - 2))
        return ms.Tensor(keep)

    def construct(self, x):
        if not self.training or self.p == 0:
            return x
        if self.seeded:
            return x * self._mask(x.shape)
        out, _ = self.fallback(x)
        return out

    def extend_repr(self) -> str:
        return f"p={self.p}, channelwise={self.channelwise}"


def set_dropout_step(net: nn.Cell, seed: int, step: int, rank: int = 0) -> int:
    """Key the masks of every :class:`StepDropout` in ``net`` to ``(seed, rank, step, layer)``
    (PyNative training). Returns the number of dropout layers."""
    n = 0
    for _, cell in net.cells_and_names():
        if isinstance(cell, StepDropout):
            cell.seeded = True
            cell.key = (int(seed) & 0xFFFFFFFF, int(rank), int(step), n)
            n += 1
    return n


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameter ``w``, same outputs) that trains reproducibly on CPU.

    MindSpore's CPU ``PReLU`` gradient sums the slope gradient over threads in a varying order,
    so two identical training runs drift apart in the last bits. In training mode this layer
    computes ``max(x, 0) + w * min(x, 0)`` from elementwise operators instead, whose gradient
    is reduced in a fixed order; inference uses the fused operator (identical values).
    """

    def construct(self, x):
        w = ops.cast(self.w, x.dtype)
        if self.training:
            return ops.maximum(x, 0.0) + w.reshape((1, -1) + (1,) * (x.ndim - 2)) * \
                ops.minimum(x, 0.0)
        return self.prelu(x, w)
