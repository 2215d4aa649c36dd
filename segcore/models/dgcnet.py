"""DGCNet: Dual Graph Convolutional Network for semantic segmentation.

Zhang et al., "Dual Graph Convolutional Network for Semantic Segmentation", BMVC 2019. The layer
layout (channel widths, bias placement, normalisation) follows the authors' PyTorch release
(``DualGCNNet.py`` in GALD-DGCNet) so that its trained weights map one to one onto this network:

* backbone: deep-stem ResNet-101 (three 3x3 stem convolutions, 64-64-128 channels) at output
  stride 8, with layer3 dilated by 2 and layer4 dilated by 4 with multi-grid (1, 2, 4);
* head (:class:`DualGCNHead`): 3x3 conv 2048->512, the :class:`DualGCN` module, 3x3 conv
  512->512, concatenation with the backbone feature, 3x3 conv 2560->512 and a 1x1 classifier;
* :class:`DualGCN` = a coordinate-space GCN (:class:`SpatialGCN`) that runs on a copy of the
  feature map shrunk 8x by three stride-2 depth-wise 3x3 convolutions and is used as a
  multiplicative attention, plus a feature-space GCN that projects the pixels onto
  ``planes // 4`` graph nodes, reasons over them and re-projects; the two are fused by a 1x1
  conv over their concatenation;
* optional deep-supervision ("dsn") head on layer3, only built with ``aux=True`` and only
  evaluated in training mode. As in the reference it has no ReLU between its BN and dropout.

Input size: the backbone downsamples by 8 and the coordinate-space GCN path by another 8, so
every input side must be a multiple of 64 (:data:`DGCNET_STRIDE`). Then every stage halves its
input exactly and the coarse attention map re-aligns with the stride-8 feature map; other sizes
raise :class:`~segcore.errors.InputSizeError` naming the size to pad to.

Trainable parameters at 19 classes, 3 input channels: 67,776,723 (72,506,598 with ``aux=True``).

Known differences from the PyTorch release (no effect on parameter shapes): the shared backbone
uses torchvision's max-pool (no ``ceil_mode``), so sizes divide exactly for multiples of 64 where
the reference targets ``8k + 1`` crops such as 769; weights start from He-uniform instead of
PyTorch's default initialisation, so an *untrained* network in inference mode (running BN
statistics 0/1) produces very large logits. The first block of layer3 is re-dilated here to match
the reference (torchvision keeps dilation 1 there).
"""
from __future__ import annotations

import logging
from typing import Tuple, Union

import mindspore as ms
from mindspore import nn, ops
from mindspore.ops import constexpr

from ..registry import register_model
from .backbones.resnet import resnet
from .layers import StepDropout, bn2d, check_input_size, conv2d, resize_bilinear

logger = logging.getLogger(__name__)

#: Factor every input side must be a multiple of (backbone 8 x GCN downsampling path 8).
DGCNET_STRIDE = 64
#: Output stride of the backbone feature the head works on.
BACKBONE_OUTPUT_STRIDE = 8


def _bn1d(ch: int, torch_momentum: float = 0.1, eps: float = 1e-5) -> nn.BatchNorm1d:
    """BatchNorm1d over (N, C, L) with PyTorch's momentum convention converted."""
    return nn.BatchNorm1d(ch, momentum=1.0 - torch_momentum, eps=eps)


def _conv1x1_1d(in_ch: int, out_ch: int) -> nn.Conv1d:
    """Bias-free 1x1 Conv1d over (N, C, L): a learned linear map across the C axis."""
    return nn.Conv1d(in_ch, out_ch, 1, has_bias=False, pad_mode="valid", weight_init="HeUniform")


class SpatialGCN(nn.Cell):
    """Coordinate-space graph reasoning over the pixels of a (small) feature map.

    Pixels are graph nodes; three 1x1 projections (key, query, value, to ``planes // 2``
    channels, with bias) build a channel affinity ``softmax(Q V^T)`` that is applied to the keys,
    followed by a 1x1 Conv1d + BN (state update) and a 1x1 conv + BN back to ``planes`` with a
    residual connection and ReLU.

    Input and output: float32 (N, planes, H, W).
    """

    def __init__(self, planes: int) -> None:
        super().__init__()
        inter = planes // 2
        self.node_k = conv2d(planes, inter, 1, bias=True)
        self.node_v = conv2d(planes, inter, 1, bias=True)
        self.node_q = conv2d(planes, inter, 1, bias=True)
        self.conv_wg = _conv1x1_1d(inter, inter)
        self.bn_wg = _bn1d(inter)
        self.out_conv = conv2d(inter, planes, 1, bias=True)
        self.out_bn = bn2d(planes)
        self.softmax = nn.Softmax(axis=2)
        self.relu = nn.ReLU()

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        k = self.node_k(x)
        v = self.node_v(x)
        q = self.node_q(x)
        n, c, h, w = k.shape
        k = k.reshape(n, c, h * w)                       # (N, C, HW)
        v = v.reshape(n, c, h * w)
        q = q.reshape(n, c, h * w)
        av = self.softmax(ops.bmm(q, v.transpose(0, 2, 1)))   # (N, C, C)
        # reference: K^T (N, HW, C) @ AV, transposed back to (N, C, HW) == AV^T @ K
        avk = ops.bmm(av.transpose(0, 2, 1), k)          # (N, C, HW)
        avw = self.bn_wg(self.conv_wg(avk))
        avw = avw.reshape(n, c, h, w)
        return self.relu(self.out_bn(self.out_conv(avw)) + x)


class DualGCN(nn.Cell):
    """Dual graph reasoning: coordinate-space GCN on a shrunk copy + feature-space GCN.

    Input and output: float32 (N, planes, H, W). H and W must be at least 1; with inputs that
    are multiples of :data:`DGCNET_STRIDE` they are multiples of 8 here, so the three stride-2
    depth-wise convolutions halve them exactly.
    """

    def __init__(self, planes: int, ratio: int = 4) -> None:
        super().__init__()
        nodes = planes // ratio           # graph nodes of the feature-space GCN
        states = planes // ratio * 2      # state (feature) size of each node
        # projection
        self.phi = conv2d(planes, states, 1)
        self.bn_phi = bn2d(states)
        self.theta = conv2d(planes, nodes, 1)
        self.bn_theta = bn2d(nodes)
        # interaction: adjacency (Laplacian smoothing) and state update
        self.conv_adj = _conv1x1_1d(nodes, nodes)
        self.bn_adj = _bn1d(nodes)
        self.conv_wg = _conv1x1_1d(states, states)
        self.bn_wg = _bn1d(states)
        # re-projection
        self.conv3 = conv2d(states, planes, 1)
        self.bn3 = bn2d(planes)
        # coordinate-space branch: 8x depth-wise downsampling, then the spatial GCN
        self.local = nn.SequentialCell([
            conv2d(planes, planes, 3, stride=2, padding=1, groups=planes), bn2d(planes),
            conv2d(planes, planes, 3, stride=2, padding=1, groups=planes), bn2d(planes),
            conv2d(planes, planes, 3, stride=2, padding=1, groups=planes), bn2d(planes),
        ])
        self.gcn_local_attention = SpatialGCN(planes)
        # fusion
        self.final = nn.SequentialCell([conv2d(planes * 2, planes, 1), bn2d(planes)])
        self.relu = nn.ReLU()

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        n, c, h, w = x.shape
        # coordinate space
        local = self.gcn_local_attention(self.local(x))
        local = resize_bilinear(local, (h, w), align_corners=True)
        spatial_local = x * local + x
        # feature space: project H*W pixels onto the graph nodes
        x_sqz = self.bn_phi(self.phi(x)).reshape(n, -1, h * w)      # (N, S, HW)
        b = self.bn_theta(self.theta(x)).reshape(n, -1, h * w)      # (N, V, HW)
        z_idt = ops.bmm(x_sqz, b.transpose(0, 2, 1))                # (N, S, V)
        z = self.bn_adj(self.conv_adj(z_idt.transpose(0, 2, 1)))    # (N, V, S)
        z = z.transpose(0, 2, 1) + z_idt                            # (I - A_g) Z
        z = self.bn_wg(self.conv_wg(z))                             # (N, S, V)
        y = ops.bmm(z, b).reshape(n, -1, h, w)                      # re-project: (N, S, H, W)
        g_out = self.relu(x + self.bn3(self.conv3(y)))
        return self.final(ops.cat((spatial_local, g_out), 1))


class DualGCNHead(nn.Cell):
    """3x3 reduction, :class:`DualGCN`, 3x3 conv, concat with the input, 3x3 conv, classifier.

    Input: float32 (N, in_ch, H, W); output: logits (N, num_classes, H, W).
    """

    def __init__(self, in_ch: int, inter_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conva = nn.SequentialCell([conv2d(in_ch, inter_ch, 3), bn2d(inter_ch), nn.ReLU()])
        self.dualgcn = DualGCN(inter_ch)
        self.convb = nn.SequentialCell([conv2d(inter_ch, inter_ch, 3), bn2d(inter_ch), nn.ReLU()])
        self.bottleneck = nn.SequentialCell([
            conv2d(in_ch + inter_ch, inter_ch, 3), bn2d(inter_ch), nn.ReLU(),
            conv2d(inter_ch, num_classes, 1, bias=True),
        ])

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        out = self.convb(self.dualgcn(self.conva(x)))
        return self.bottleneck(ops.cat((x, out), 1))


class DSNHead(nn.Cell):
    """Deep-supervision head on layer3: 3x3 conv (bias) + BN + Dropout2d(0.1) + 1x1 classifier.

    As in the reference DGCNet there is no ReLU here. Input (N, in_ch, H, W) float32; output
    logits (N, num_classes, H, W).
    """

    def __init__(self, in_ch: int, num_classes: int, inter_ch: int = 512) -> None:
        super().__init__()
        self.conv = conv2d(in_ch, inter_ch, 3, bias=True)
        self.bn = bn2d(inter_ch)
        self.dropout = StepDropout(0.1)
        self.cls = conv2d(inter_ch, num_classes, 1, bias=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.cls(self.dropout(self.bn(self.conv(x))))


def _reference_layer3_dilation(backbone: nn.Cell, dilation: int = 2) -> None:
    """Give the first block of ``layer3`` the stage dilation, as the DGCNet reference does.

    torchvision's ``replace_stride_with_dilation`` keeps the previous dilation (1) on the first
    block of a dilated stage; the DGCNet release dilates all of layer3 by 2. The weight shape is
    the same, only the 3x3 convolution's dilation/padding change.
    """
    block = backbone.layer3[0]
    old = block.conv2
    block.conv2 = conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=dilation,
                         dilation=dilation)


@constexpr
def _check_size(h: int, w: int) -> None:
    """Input-size check evaluated at compile time in GRAPH mode (keeps the error type)."""
    check_input_size(h, w, DGCNET_STRIDE, "dgcnet")


class DGCNet(nn.Cell):
    """DGCNet: deep-stem ResNet (output stride 8) + :class:`DualGCNHead` (+ optional dsn head).

    Args:
        num_classes: output channels of the logits.
        in_channels: input bands (the stem's first convolution adapts; 3 for RGB).
        aux: build the deep-supervision head on layer3. Its logits are returned only in
            training mode, as ``(main, aux)``.
        depth: ResNet depth of the backbone (101 in the paper; 50 is the lighter variant).

    Input: float32 (N, in_channels, H, W) with H and W multiples of :data:`DGCNET_STRIDE` (64).
    Output: float32 logits (N, num_classes, H, W) (bilinear, ``align_corners=True``), or the
    tuple ``(main, aux)`` of two such tensors when ``aux=True`` and the cell is training.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, aux: bool = False,
                 depth: int = 101) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"DGCNet: num_classes ({num_classes}) and in_channels "
                             f"({in_channels}) must be positive")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.aux = aux
        backbone = resnet(depth, in_channels=in_channels, deep_stem=True,
                          replace_stride_with_dilation=(False, True, True), multi_grid=(1, 2, 4))
        _reference_layer3_dilation(backbone)  # before attaching, so parameter names get prefixed
        self.backbone = backbone
        chans = self.backbone.out_channels
        self.head = DualGCNHead(chans[4], 512, num_classes)
        if aux:
            self.dsn = DSNHead(chans[3], num_classes)
        logger.debug("DGCNet: resnet%d backbone, %d classes, %d input bands, aux=%s", depth,
                     num_classes, in_channels, aux)

    def construct(self, x: ms.Tensor) -> Union[ms.Tensor, Tuple[ms.Tensor, ms.Tensor]]:
        h, w = x.shape[2], x.shape[3]
        _check_size(h, w)
        feats = self.backbone(x)
        out = resize_bilinear(self.head(feats[4]), (h, w), align_corners=True)
        if self.aux and self.training:
            aux_out = resize_bilinear(self.dsn(feats[3]), (h, w), align_corners=True)
            return out, aux_out
        return out


@register_model("dgcnet_resnet101", stride=DGCNET_STRIDE, default_classes=19, family="dgcnet",
                description="DGCNet (dual graph convolutional network, BMVC 2019), deep-stem "
                            "ResNet-101 at output stride 8; inputs multiples of 64",
                output_stride=BACKBONE_OUTPUT_STRIDE)
def dgcnet_resnet101(num_classes: int = 19, in_channels: int = 3, aux: bool = False,
                     **kw) -> DGCNet:
    """DGCNet with a deep-stem ResNet-101 backbone (the paper's Cityscapes model).

    67,776,723 trainable parameters at 19 classes and 3 input channels (72,506,598 with
    ``aux=True``). Inputs must be multiples of 64 on each side.
    """
    if kw:
        raise TypeError(f"dgcnet_resnet101: unexpected arguments {sorted(kw)}")
    return DGCNet(num_classes, in_channels=in_channels, aux=aux, depth=101)
