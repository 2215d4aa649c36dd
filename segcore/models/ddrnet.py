"""DDRNet: Deep Dual-resolution Networks for real-time semantic segmentation.

Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate Semantic Segmentation of
Road Scenes", 2021. Layer shapes, bias placement and ReLU placement follow the authors' release
(``segmentation/DDRNet_23.py``, ``segmentation/DDRNet_23_slim.py`` and
``classification/DDRNet_23.py`` in ydhongHIT/DDRNet), so their weights map one to one by name:

* stem ``conv1``: two 3x3 stride-2 convolutions *with bias*, each followed by BN and ReLU (1/4);
* low-resolution branch ``layer1`` .. ``layer4`` (ResNet basic blocks, 1/4 -> 1/32) and
  ``layer5`` (one bottleneck, expansion 2);
* high-resolution branch ``layer3_``, ``layer4_`` (basic blocks) and ``layer5_`` (bottleneck),
  kept at 1/8;
* bilateral fusion after stage 3 and 4: ``down3`` / ``down4`` (3x3 stride-2 conv + BN, two of
  them for stage 4) add the high-resolution branch into the low one, ``compression3`` /
  ``compression4`` (1x1 conv + BN, bilinear upsampling) add the low branch into the high one;
* segmentation: ``layer5`` downsamples to 1/64, :class:`DAPPM` (``spp``) aggregates context,
  its output is upsampled to 1/8, added to the high-resolution branch and fed to
  :class:`SegmentHead` (``final_layer``: BN-ReLU-conv3x3-BN-ReLU-conv1x1 with bias); the 1/8
  logits are upsampled bilinearly (``align_corners=False``) to the input size. With
  ``aux=True`` a second head (``seghead_extra``) reads the high-resolution branch right after
  the stage-3 fusion; its logits are returned only in training mode.
* classification (:class:`DDRNetClassifier`, the ImageNet model used for backbone
  pre-training): ``layer5`` keeps 1/32, ``down5`` brings the high-resolution branch down to it,
  then ``last_layer`` (1x1 conv to 2048 + BN + ReLU + global mean) and ``linear``.

Loading ImageNet weights into the segmentation model: both networks derive from
:class:`DualResolutionTrunk`, so the backbone parameters carry the same names in both
(``conv1.*``, ``layer1.*`` .. ``layer5.*``, ``layer3_.*`` .. ``layer5_.*``, ``compression3.*``,
``compression4.*``, ``down3.*``, ``down4.*``). Use :func:`load_imagenet_backbone`, or directly
``mindspore.load_param_into_net(seg_net, mindspore.load_checkpoint(ckpt), strict_load=False)``
where the parameters left unloaded are exactly ``spp.*``, ``final_layer.*`` and
``seghead_extra.*`` (``layer5`` has stride 2 in the segmentation model and 1 in the classifier;
the shapes are the same).

Input size: every side must be a multiple of 8 (:data:`DDRNET_STRIDE`), because the fusion
upsamples to exactly 1/8 of the input. Deeper stages (1/16 .. 1/64) round up like the reference
(3x3 stride-2 convolutions with padding 1), and both branches of each fusion round the same way,
so any multiple of 8 works (e.g. CamVid's 960x720).

Trainable parameters at 19 classes, 3 input channels: ``ddrnet23_slim`` 5,695,987 (5,734,342
with ``aux=True``), ``ddrnet23`` 20,148,947 (20,299,366); ``ddrnet23_imagenet`` 28,216,616 at
1000 classes.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Tuple, Union

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, initializer

from ..errors import CheckpointError
from ..registry import register_model
from .layers import bn2d, check_input_size, conv2d, resize_bilinear

logger = logging.getLogger(__name__)

#: Factor every input side must be a multiple of (the high-resolution branch is at exactly 1/8).
DDRNET_STRIDE = 8

#: Top-level cell names shared by the classifier and the segmentation model (backbone weights).
BACKBONE_CELLS = ("conv1", "layer1", "layer2", "layer3", "layer4", "layer5", "layer3_",
                  "layer4_", "layer5_", "compression3", "compression4", "down3", "down4")


def _graph_size_check(h: int, w: int, stride: int, name: str) -> None:
    """In-graph twin of :func:`check_input_size` (GRAPH mode only raises builtin exceptions).

    Only reached when the network is called from inside another compiled cell; a top-level call
    is checked first by :meth:`SizeCheckedCell.__call__`, which raises ``InputSizeError``.
    """
    if h % stride != 0 or w % stride != 0:
        raise ValueError(f"{name}: input {h}x{w} is not a multiple of {stride}")


class SizeCheckedCell(nn.Cell):
    """A cell whose top-level call checks the input size before MindSpore runs ``construct``.

    MindSpore's GRAPH mode refuses to compile a ``raise`` of a custom exception class, so
    :class:`~segcore.errors.InputSizeError` is raised here, in plain Python, in both modes.
    """

    size_stride: int = DDRNET_STRIDE
    size_name: str = "ddrnet"

    def __call__(self, *args, **kwargs):
        if args and isinstance(args[0], ms.Tensor) and args[0].ndim == 4:
            check_input_size(int(args[0].shape[2]), int(args[0].shape[3]), self.size_stride,
                             self.size_name)
        return super().__call__(*args, **kwargs)


class BasicBlock(nn.Cell):
    """ResNet basic block (two 3x3 conv + BN); ``no_relu`` leaves out the final ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Cell = None, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = conv2d(inplanes, planes, 3, stride, 1)
        self.bn1 = bn2d(planes)
        self.conv2 = conv2d(planes, planes, 3, 1, 1)
        self.bn2 = bn2d(planes)
        self.relu = nn.ReLU()
        self.has_downsample = downsample is not None
        if self.has_downsample:
            self.downsample = downsample
        self.no_relu = no_relu

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.has_downsample:
            out = out + self.downsample(x)
        else:
            out = out + x
        if self.no_relu:
            return out
        return self.relu(out)


class Bottleneck(nn.Cell):
    """Bottleneck block with expansion 2 (1x1 -> 3x3 -> 1x1, each with BN)."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Cell = None, no_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = conv2d(inplanes, planes, 1, 1, 0)
        self.bn1 = bn2d(planes)
        self.conv2 = conv2d(planes, planes, 3, stride, 1)
        self.bn2 = bn2d(planes)
        self.conv3 = conv2d(planes, planes * self.expansion, 1, 1, 0)
        self.bn3 = bn2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.has_downsample = downsample is not None
        if self.has_downsample:
            self.downsample = downsample
        self.no_relu = no_relu

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.has_downsample:
            out = out + self.downsample(x)
        else:
            out = out + x
        if self.no_relu:
            return out
        return self.relu(out)


def make_layer(block: type, inplanes: int, planes: int, blocks: int, stride: int = 1,
               first_no_relu: bool = False) -> nn.SequentialCell:
    """A stage of ``blocks`` blocks as in the reference ``_make_layer``.

    The first block gets a 1x1 conv + BN projection when the stride or width changes and uses
    ``first_no_relu``; with more than one block the last one has no final ReLU (the fusion that
    follows applies its own ReLU).
    """
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.SequentialCell([conv2d(inplanes, planes * block.expansion, 1, stride, 0),
                                        bn2d(planes * block.expansion)])
    layers = [block(inplanes, planes, stride, downsample, no_relu=first_no_relu)]
    inplanes = planes * block.expansion
    for i in range(1, blocks):
        layers.append(block(inplanes, planes, 1, None, no_relu=(i == blocks - 1)))
    return nn.SequentialCell(layers)


def _bn_relu_conv(in_ch: int, out_ch: int, kernel_size: int) -> nn.SequentialCell:
    """BN -> ReLU -> conv (no bias), the pre-activation unit of DAPPM."""
    return nn.SequentialCell([bn2d(in_ch), nn.ReLU(), conv2d(in_ch, out_ch, kernel_size, 1,
                                                              kernel_size // 2)])


class GlobalAvgPool(nn.Cell):
    """Mean over H and W, kept as (N, C, 1, 1); exact for any input size."""

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return ops.mean(x, (2, 3), True)


def _avg_pool(kernel: int, stride: int, padding: int) -> nn.AvgPool2d:
    """PyTorch ``AvgPool2d(kernel, stride, padding)``: zero padding counted in the mean."""
    return nn.AvgPool2d(kernel_size=kernel, stride=stride, pad_mode="pad", padding=padding,
                        count_include_pad=True)


def _pooled_projection(pool: nn.Cell, in_ch: int, out_ch: int) -> nn.SequentialCell:
    """pool -> BN -> ReLU -> 1x1 conv (no bias)."""
    return nn.SequentialCell([pool, bn2d(in_ch), nn.ReLU(), conv2d(in_ch, out_ch, 1, 1, 0)])


class DAPPM(nn.Cell):
    """Deep Aggregation Pyramid Pooling Module.

    Branch 0 is a 1x1 projection; branches 1-3 average-pool with kernel 5/9/17, stride 2/4/8 and
    padding 2/4/8 (zero padding counted in the mean, PyTorch's ``count_include_pad=True``),
    branch 4 takes the global mean. Each pooled branch is projected (BN-ReLU-1x1), upsampled
    bilinearly to the input size, added to the previous branch and refined by BN-ReLU-3x3
    (hierarchical residual fusion). The five branches are concatenated and compressed
    (BN-ReLU-1x1) and a BN-ReLU-1x1 shortcut is added.

    Input: float32 (N, inplanes, h, w), any h, w >= 1. Output: (N, outplanes, h, w).
    """

    def __init__(self, inplanes: int, branch_planes: int, outplanes: int) -> None:
        super().__init__()
        # Names and indices mirror the reference (scaleN = pool, BN, ReLU, 1x1 conv).
        self.scale1 = _pooled_projection(_avg_pool(5, 2, 2), inplanes, branch_planes)
        self.scale2 = _pooled_projection(_avg_pool(9, 4, 4), inplanes, branch_planes)
        self.scale3 = _pooled_projection(_avg_pool(17, 8, 8), inplanes, branch_planes)
        self.scale4 = _pooled_projection(GlobalAvgPool(), inplanes, branch_planes)
        self.scale0 = _bn_relu_conv(inplanes, branch_planes, 1)
        self.process1 = _bn_relu_conv(branch_planes, branch_planes, 3)
        self.process2 = _bn_relu_conv(branch_planes, branch_planes, 3)
        self.process3 = _bn_relu_conv(branch_planes, branch_planes, 3)
        self.process4 = _bn_relu_conv(branch_planes, branch_planes, 3)
        self.compression = _bn_relu_conv(branch_planes * 5, outplanes, 1)
        self.shortcut = _bn_relu_conv(inplanes, outplanes, 1)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        size = (x.shape[2], x.shape[3])
        x0 = self.scale0(x)
        x1 = self.process1(resize_bilinear(self.scale1(x), size) + x0)
        x2 = self.process2(resize_bilinear(self.scale2(x), size) + x1)
        x3 = self.process3(resize_bilinear(self.scale3(x), size) + x2)
        x4 = self.process4(resize_bilinear(self.scale4(x), size) + x3)
        out = self.compression(ops.concat((x0, x1, x2, x3, x4), 1))
        return out + self.shortcut(x)


class SegmentHead(nn.Cell):
    """BN-ReLU-conv3x3 (no bias)-BN-ReLU-conv1x1 (with bias): features -> class logits.

    Input: float32 (N, inplanes, h, w). Output: float32 logits (N, num_classes, h, w).
    """

    def __init__(self, inplanes: int, interplanes: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = bn2d(inplanes)
        self.conv1 = conv2d(inplanes, interplanes, 3, 1, 1)
        self.bn2 = bn2d(interplanes)
        self.relu = nn.ReLU()
        self.conv2 = conv2d(interplanes, num_classes, 1, 1, 0, bias=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        x = self.conv1(self.relu(self.bn1(x)))
        return self.conv2(self.relu(self.bn2(x)))


class DualResolutionTrunk(SizeCheckedCell):
    """Layers shared by DDRNet's classifier and segmentation model (same parameter names).

    Subclasses add ``layer5`` (their own stride) and their heads. :meth:`dual_features` runs the
    stem, both branches and the two bilateral fusions.
    """

    def __init__(self, in_channels: int, planes: int, deep_no_relu: bool) -> None:
        super().__init__()
        if in_channels < 1 or planes < 1:
            raise ValueError(f"DDRNet: in_channels ({in_channels}) and planes ({planes}) "
                             f"must be positive")
        high = planes * 2
        self.in_channels = in_channels
        self.planes = planes
        self.conv1 = nn.SequentialCell([
            conv2d(in_channels, planes, 3, 2, 1, bias=True), bn2d(planes), nn.ReLU(),
            conv2d(planes, planes, 3, 2, 1, bias=True), bn2d(planes), nn.ReLU()])
        self.relu = nn.ReLU()
        self.layer1 = make_layer(BasicBlock, planes, planes, 2)
        self.layer2 = make_layer(BasicBlock, planes, planes * 2, 2, stride=2)
        self.layer3 = make_layer(BasicBlock, planes * 2, planes * 4, 2, stride=2)
        self.layer4 = make_layer(BasicBlock, planes * 4, planes * 8, 2, stride=2)
        self.compression3 = nn.SequentialCell([conv2d(planes * 4, high, 1, 1, 0), bn2d(high)])
        self.compression4 = nn.SequentialCell([conv2d(planes * 8, high, 1, 1, 0), bn2d(high)])
        self.down3 = nn.SequentialCell([conv2d(high, planes * 4, 3, 2, 1), bn2d(planes * 4)])
        self.down4 = nn.SequentialCell([
            conv2d(high, planes * 4, 3, 2, 1), bn2d(planes * 4), nn.ReLU(),
            conv2d(planes * 4, planes * 8, 3, 2, 1), bn2d(planes * 8)])
        self.layer3_ = make_layer(BasicBlock, planes * 2, high, 2)
        self.layer4_ = make_layer(BasicBlock, high, high, 2)
        self.layer5_ = make_layer(Bottleneck, high, high, 1, first_no_relu=deep_no_relu)

    def _init_weights(self) -> None:
        """Kaiming-normal (fan_out, ReLU) convolution weights as in the reference."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Conv2d):
                cell.weight.set_data(initializer(HeNormal(mode="fan_out", nonlinearity="relu"),
                                                 cell.weight.shape, cell.weight.dtype))

    def dual_features(self, x: ms.Tensor) -> Tuple[ms.Tensor, ms.Tensor, ms.Tensor]:
        """Stem, both branches and the stage-3/4 fusions.

        Input: float32 (N, C, H, W), H and W multiples of 8.
        Returns ``(low, high, high3)``: the low-resolution branch after the stage-4 fusion
        (N, 8*planes, H/32, W/32), the high-resolution branch after it (N, 2*planes, H/8, W/8)
        and the high-resolution branch right after the stage-3 fusion (same shape).
        """
        x = self.conv1(x)
        x = self.layer1(x)
        l2 = self.layer2(self.relu(x))
        high_size = (l2.shape[2], l2.shape[3])
        low = self.layer3(self.relu(l2))
        high = self.layer3_(self.relu(l2))
        fused_low = low + self.down3(self.relu(high))
        high = high + resize_bilinear(self.compression3(self.relu(low)), high_size)
        high3 = high
        low = self.layer4(self.relu(fused_low))
        high = self.layer4_(self.relu(high))
        fused_low = low + self.down4(self.relu(high))
        high = high + resize_bilinear(self.compression4(self.relu(low)), high_size)
        return fused_low, high, high3


class DDRNet(DualResolutionTrunk):
    """DDRNet-23 / DDRNet-23-slim for semantic segmentation.

    Args:
        num_classes: output channels of the logits.
        in_channels: input bands (the stem's first convolution adapts; 3 for RGB).
        aux: build the auxiliary head on the high-resolution branch after the stage-3 fusion.
            Its logits are returned only in training mode, as ``(main, aux)``.
        planes: base width (32 slim, 64 full); the high-resolution branch has ``2 * planes``.
        spp_planes: DAPPM branch width (128).
        head_planes: width inside the segmentation heads (64 slim, 128 full).

    Input: float32 (N, in_channels, H, W), H and W multiples of :data:`DDRNET_STRIDE` (8).
    Output: float32 logits (N, num_classes, H, W) (bilinear, ``align_corners=False``), or
    ``(main, aux)`` of two such tensors when ``aux=True`` and the cell is training.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, aux: bool = False,
                 planes: int = 64, spp_planes: int = 128, head_planes: int = 128) -> None:
        super().__init__(in_channels, planes, deep_no_relu=True)
        if num_classes < 1:
            raise ValueError(f"DDRNet: num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.aux = aux
        self.layer5 = make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=2,
                                 first_no_relu=True)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)
        if aux:
            self.seghead_extra = SegmentHead(planes * 2, head_planes, num_classes)
        self._init_weights()

    def construct(self, x: ms.Tensor) -> Union[ms.Tensor, Tuple[ms.Tensor, ms.Tensor]]:
        h, w = x.shape[2], x.shape[3]
        _graph_size_check(h, w, DDRNET_STRIDE, "ddrnet")
        low, high, high3 = self.dual_features(x)
        high_size = (high.shape[2], high.shape[3])
        high = self.layer5_(self.relu(high))
        low = resize_bilinear(self.spp(self.layer5(self.relu(low))), high_size)
        out = resize_bilinear(self.final_layer(low + high), (h, w))
        if self.aux and self.training:
            return out, resize_bilinear(self.seghead_extra(high3), (h, w))
        return out


class DDRNetClassifier(DualResolutionTrunk):
    """DDRNet-23 ImageNet classifier (the backbone pre-training model).

    Input: float32 (N, in_channels, H, W), H and W multiples of 8. Output: float32 class logits
    (N, num_classes) (no softmax).
    """

    size_name = "ddrnet23_imagenet"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, planes: int = 64,
                 last_planes: int = 2048) -> None:
        super().__init__(in_channels, planes, deep_no_relu=False)
        if num_classes < 1:
            raise ValueError(f"DDRNet classifier: num_classes must be positive, got "
                             f"{num_classes}")
        self.num_classes = num_classes
        self.layer5 = make_layer(Bottleneck, planes * 8, planes * 8, 1, stride=1,
                                 first_no_relu=False)
        self.down5 = nn.SequentialCell([
            conv2d(planes * 4, planes * 8, 3, 2, 1), bn2d(planes * 8), nn.ReLU(),
            conv2d(planes * 8, planes * 16, 3, 2, 1), bn2d(planes * 16)])
        self.last_layer = nn.SequentialCell([conv2d(planes * 16, last_planes, 1, 1, 0),
                                             bn2d(last_planes), nn.ReLU()])
        self.linear = nn.Dense(last_planes, num_classes)
        self._init_weights()

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        _graph_size_check(x.shape[2], x.shape[3], DDRNET_STRIDE, "ddrnet23_imagenet")
        low, high, _ = self.dual_features(x)
        x = self.layer5(self.relu(low)) + self.down5(self.relu(self.layer5_(self.relu(high))))
        x = self.last_layer(self.relu(x))
        return self.linear(ops.mean(x, (2, 3)))


def load_imagenet_backbone(net: DDRNet,
                           source: Union[DDRNetClassifier, Mapping[str, ms.Parameter]]
                           ) -> List[str]:
    """Copy the shared backbone weights of an ImageNet classifier into a segmentation DDRNet.

    ``source`` is a :class:`DDRNetClassifier` or a name -> parameter mapping such as the dict
    ``mindspore.load_checkpoint`` returns. Every parameter (weights, BN statistics) under
    :data:`BACKBONE_CELLS` is copied; heads are left untouched. Returns the copied names.
    Raises :class:`~segcore.errors.CheckpointError` when a backbone parameter is missing from
    ``source`` or has another shape (e.g. a classifier of another width or input band count).
    """
    params: Dict[str, ms.Parameter] = (source.parameters_dict() if isinstance(source, nn.Cell)
                                       else dict(source))
    loaded: List[str] = []
    for name, param in net.parameters_dict().items():
        if name.split(".", 1)[0] not in BACKBONE_CELLS:
            continue
        if name not in params:
            raise CheckpointError(f"DDRNet backbone: parameter {name!r} missing from the "
                                  f"ImageNet weights")
        value = params[name]
        if tuple(value.shape) != tuple(param.shape):
            raise CheckpointError(f"DDRNet backbone: parameter {name!r} has shape "
                                  f"{tuple(value.shape)} in the ImageNet weights, network "
                                  f"expects {tuple(param.shape)}")
        param.set_data(ms.Tensor(value.asnumpy(), param.dtype))
        loaded.append(name)
    logger.info("loaded %d DDRNet backbone parameters", len(loaded))
    return loaded


def _no_extra(name: str, kw: dict) -> None:
    if kw:
        raise TypeError(f"{name}: unexpected arguments {sorted(kw)}")


@register_model("ddrnet23_slim", stride=DDRNET_STRIDE, default_classes=19, family="ddrnet",
                description="DDRNet-23-slim (dual-resolution, real-time), 1/8 output upsampled "
                            "to the input; inputs multiples of 8")
def ddrnet23_slim(num_classes: int = 19, in_channels: int = 3, aux: bool = False,
                  **kw) -> DDRNet:
    """DDRNet-23-slim: planes 32, DAPPM 128, heads 64.

    5,695,987 trainable parameters at 19 classes and 3 bands (5,734,342 with ``aux=True``).
    """
    _no_extra("ddrnet23_slim", kw)
    return DDRNet(num_classes, in_channels, aux, planes=32, spp_planes=128, head_planes=64)


@register_model("ddrnet23", stride=DDRNET_STRIDE, default_classes=19, family="ddrnet",
                description="DDRNet-23 (dual-resolution), 1/8 output upsampled to the input; "
                            "inputs multiples of 8")
def ddrnet23(num_classes: int = 19, in_channels: int = 3, aux: bool = False, **kw) -> DDRNet:
    """DDRNet-23: planes 64, DAPPM 128, heads 128.

    20,148,947 trainable parameters at 19 classes and 3 bands (20,299,366 with ``aux=True``).
    """
    _no_extra("ddrnet23", kw)
    return DDRNet(num_classes, in_channels, aux, planes=64, spp_planes=128, head_planes=128)


@register_model("ddrnet23_imagenet", stride=DDRNET_STRIDE, default_classes=1000,
                task="classification", family="ddrnet",
                description="DDRNet-23 ImageNet classifier (backbone pre-training for ddrnet23); "
                            "inputs multiples of 8")
def ddrnet23_imagenet(num_classes: int = 1000, in_channels: int = 3, aux: bool = False,
                      **kw) -> DDRNetClassifier:
    """DDRNet-23 ImageNet classifier: returns (N, num_classes) logits.

    28,216,616 trainable parameters at 1000 classes and 3 bands. Its backbone weights load into
    :func:`ddrnet23` with :func:`load_imagenet_backbone`. ``aux`` is not supported.
    """
    _no_extra("ddrnet23_imagenet", kw)
    if aux:
        raise ValueError("ddrnet23_imagenet: the classifier has no auxiliary head (aux=True)")
    return DDRNetClassifier(num_classes, in_channels, planes=64, last_planes=2048)
