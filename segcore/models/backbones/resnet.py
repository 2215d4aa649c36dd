"""One ResNet (depths 18/34/50/101/152) used as the encoder of D-LinkNet, DeepLabV3 and DGCNet.

Layout and attribute names follow torchvision so a PyTorch ``state_dict`` maps one to one
(``conv1``/``bn1``/``layer1``..``layer4``; blocks ``conv1``/``bn1``/``conv2``/``bn2``
(``/conv3``/``bn3``) and ``downsample.0``/``downsample.1``). Bottleneck puts the stride on the
3x3 convolution (torchvision "ResNet v1.5").

Options beyond torchvision:

* ``deep_stem=True``: the "ResNet-101 deep stem" of PSPNet/CCNet/DGCNet: three 3x3 convolutions
  ``in->64 (stride 2) -> 64 -> 128``, each followed by BN + ReLU and named
  ``conv1/bn1``, ``conv2/bn2``, ``conv3/bn3``; ``layer1`` then starts from 128 channels.
* ``replace_stride_with_dilation``: exactly torchvision's meaning; ``(False, False, True)`` gives
  output stride 16, ``(False, True, True)`` output stride 8.
* ``multi_grid``: per-block dilation multipliers for ``layer4`` (DeepLabV3 uses ``(1, 2, 4)``);
  block ``i`` of ``layer4`` gets dilation ``layer4_dilation * multi_grid[i]`` (the first block
  included, as in the DeepLab papers).
* ``bn_momentum`` in the PyTorch convention (0.1 = keep 90 % of the running statistics).

``construct(x)`` returns five feature maps ``(stem, layer1, layer2, layer3, layer4)``; ``stem``
is taken after the stem's last ReLU and *before* the max-pool (stride 2), so for an NCHW float32
input of size HxW the strides are 2, 4, 8, 16, 32 (less with dilation). ``out_channels`` gives the
channel count of each of these five outputs.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Tuple, Type, Union

from mindspore import nn

from ..layers import bn2d, conv2d

logger = logging.getLogger(__name__)

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet", "RESNET_LAYERS"]


class BasicBlock(nn.Cell):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; expansion 1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Cell] = None, dilation: int = 1,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation)
        self.bn1 = bn2d(planes, bn_momentum)
        self.conv2 = conv2d(planes, planes, 3, padding=dilation, dilation=dilation)
        self.bn2 = bn2d(planes, bn_momentum)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.has_downsample = downsample is not None

    def construct(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.has_downsample:
            identity = self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Cell):
    """1x1 -> 3x3 (stride, dilation) -> 1x1 (x4) with a shortcut; expansion 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Cell] = None, dilation: int = 1,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.conv1 = conv2d(inplanes, planes, 1, padding=0)
        self.bn1 = bn2d(planes, bn_momentum)
        self.conv2 = conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation)
        self.bn2 = bn2d(planes, bn_momentum)
        self.conv3 = conv2d(planes, planes * self.expansion, 1, padding=0)
        self.bn3 = bn2d(planes * self.expansion, bn_momentum)
        self.relu = nn.ReLU()
        self.downsample = downsample
        self.has_downsample = downsample is not None

    def construct(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.has_downsample:
            identity = self.downsample(x)
        return self.relu(out + identity)


BlockType = Union[Type[BasicBlock], Type[Bottleneck]]

#: depth -> (block class, blocks per stage)
RESNET_LAYERS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Cell):
    """ResNet feature extractor (no classifier head).

    Input: NCHW float32 ``(N, in_channels, H, W)``. Output: tuple of five NCHW float32 tensors
    ``(stem, layer1, layer2, layer3, layer4)`` with channels ``self.out_channels``.
    ``self.output_stride`` is the stride of ``layer4`` (32, 16 or 8).
    """

    def __init__(self, block: BlockType, layers: Sequence[int], in_channels: int = 3,
                 deep_stem: bool = False,
                 replace_stride_with_dilation: Sequence[bool] = (False, False, False),
                 multi_grid: Optional[Sequence[int]] = None, bn_momentum: float = 0.1) -> None:
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"ResNet: expected 4 stage lengths, got {list(layers)}")
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("ResNet: replace_stride_with_dilation needs 3 booleans, got "
                             f"{list(replace_stride_with_dilation)}")
        if multi_grid is not None and len(multi_grid) != layers[3]:
            raise ValueError(f"ResNet: multi_grid {list(multi_grid)} needs one entry per layer4 "
                             f"block ({layers[3]})")
        self.bn_momentum = bn_momentum
        self.deep_stem = deep_stem
        self.relu = nn.ReLU()
        if deep_stem:
            self.conv1 = conv2d(in_channels, 64, 3, stride=2, padding=1)
            self.bn1 = bn2d(64, bn_momentum)
            self.conv2 = conv2d(64, 64, 3, padding=1)
            self.bn2 = bn2d(64, bn_momentum)
            self.conv3 = conv2d(64, 128, 3, padding=1)
            self.bn3 = bn2d(128, bn_momentum)
            self.inplanes = 128
        else:
            self.conv1 = conv2d(in_channels, 64, 7, stride=2, padding=3)
            self.bn1 = bn2d(64, bn_momentum)
            self.inplanes = 64
        stem_channels = self.inplanes
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        self.dilation = 1
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2,
                                       dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2,
                                       dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2,
                                       dilate=replace_stride_with_dilation[2],
                                       multi_grid=multi_grid)
        e = block.expansion
        self.out_channels: Tuple[int, ...] = (stem_channels, 64 * e, 128 * e, 256 * e, 512 * e)
        self.output_stride = 32 // (2 ** sum(bool(r) for r in replace_stride_with_dilation))

    def _make_layer(self, block: BlockType, planes: int, blocks: int, stride: int = 1,
                    dilate: bool = False,
                    multi_grid: Optional[Sequence[int]] = None) -> nn.SequentialCell:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.SequentialCell([
                conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, padding=0),
                bn2d(planes * block.expansion, self.bn_momentum),
            ])
        if multi_grid is None:
            dilations = [previous_dilation] + [self.dilation] * (blocks - 1)
        else:
            dilations = [self.dilation * int(g) for g in multi_grid]
        cells = [block(self.inplanes, planes, stride, downsample, dilations[0], self.bn_momentum)]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            cells.append(block(self.inplanes, planes, 1, None, dilations[i], self.bn_momentum))
        return nn.SequentialCell(cells)

    def construct(self, x):
        if self.deep_stem:
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            stem = self.relu(self.bn3(self.conv3(x)))
        else:
            stem = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(stem)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return stem, c1, c2, c3, c4


def resnet(depth: int, in_channels: int = 3, deep_stem: bool = False,
           replace_stride_with_dilation: Sequence[bool] = (False, False, False),
           multi_grid: Optional[Sequence[int]] = None, bn_momentum: float = 0.1) -> ResNet:
    """Build a ResNet encoder of ``depth`` 18, 34, 50, 101 or 152 (see :class:`ResNet`)."""
    if depth not in RESNET_LAYERS:
        raise ValueError(f"resnet: depth {depth} not supported; use one of "
                         f"{sorted(RESNET_LAYERS)}")
    block, layers = RESNET_LAYERS[depth]
    return ResNet(block, layers, in_channels=in_channels, deep_stem=deep_stem,
                  replace_stride_with_dilation=replace_stride_with_dilation,
                  multi_grid=multi_grid, bn_momentum=bn_momentum)
