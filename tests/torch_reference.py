"""Reference PyTorch networks for the weight-import tests (tests only; needs torch).

Written for these tests from the papers and the published key layouts, so that their
``state_dict`` keys are exactly those of the releases we import:

* :class:`TorchResNet` - torchvision's ResNet layout (``conv1, bn1, layer1..4`` of
  ``BasicBlock``/``Bottleneck`` with ``downsample.0/1``, ``fc``), built without torchvision;
* :class:`DinkNet34` - the D-LinkNet DeepGlobe release (``firstconv, firstbn, encoder1..4,
  dblock.dilate1..4, decoder4..1, finaldeconv1, finalconv2, finalconv3``); ``forward`` returns
  logits (the release applies a sigmoid at the end);
* :class:`TorchENet` - davidtvs/PyTorch-ENet (``initial_block``, ``downsample1_0``, ...,
  ``transposed_conv``), ``legacy_names=True`` for the older ``out_prelu`` naming;
* :class:`DualResNet` - ydhongHIT/DDRNet's DDRNet-23(-slim) segmentation model (``conv1``,
  ``layer1..5``, ``layer3_..5_``, ``compression3/4``, ``down3/4``, ``spp``, ``final_layer``,
  ``seghead_extra``);
* :class:`DualSeg` - lxtGH/GALD-DGCNet's DGCNet (stem ``conv1.0/1/3/4/6`` + ``bn1``,
  ``layer1..4``, ``head.*`` with ``gcn_local_attention.out.0/1``, ``dsn.0/1/3``).

:func:`randomize_bn` gives every BatchNorm non-trivial running statistics and affine values so
that an eval-mode comparison exercises the BN mapping.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- ResNet (torchvision)
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class TorchResNet(nn.Module):
    """torchvision-layout ResNet; ``features(x)`` returns (stem, layer1..layer4)."""

    def __init__(self, block: type, layers: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride,
                                           bias=False), nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)[-1]), 1))


def resnet34(num_classes: int = 1000) -> TorchResNet:
    return TorchResNet(BasicBlock, (3, 4, 6, 3), num_classes)


# ----------------------------------------------------------------------------- D-LinkNet release
class Dblock(nn.Module):
    def __init__(self, channel: int, n: int = 4) -> None:
        super().__init__()
        for i in range(n):
            d = 2 ** i
            setattr(self, f"dilate{i + 1}", nn.Conv2d(channel, channel, 3, dilation=d, padding=d))
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, h = x, x
        for i in range(self.n):
            h = F.relu(getattr(self, f"dilate{i + 1}")(h))
            out = out + h
        return out


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, n_filters: int) -> None:
        super().__init__()
        mid = in_channels // 4
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.norm1 = nn.BatchNorm2d(mid)
        self.deconv2 = nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, n_filters, 1)
        self.norm3 = nn.BatchNorm2d(n_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.deconv2(x)))
        return F.relu(self.norm3(self.conv3(x)))


class DinkNet34(nn.Module):
    """D-LinkNet-34 with the DeepGlobe release's attribute names; returns logits."""

    def __init__(self, num_classes: int = 1) -> None:
        super().__init__()
        filters = [64, 128, 256, 512]
        r = resnet34()
        self.firstconv, self.firstbn, self.firstmaxpool = r.conv1, r.bn1, r.maxpool
        self.encoder1, self.encoder2, self.encoder3, self.encoder4 = (r.layer1, r.layer2,
                                                                      r.layer3, r.layer4)
        self.dblock = Dblock(512)
        self.decoder4 = DecoderBlock(filters[3], filters[2])
        self.decoder3 = DecoderBlock(filters[2], filters[1])
        self.decoder2 = DecoderBlock(filters[1], filters[0])
        self.decoder1 = DecoderBlock(filters[0], filters[0])
        self.finaldeconv1 = nn.ConvTranspose2d(filters[0], 32, 4, 2, 1)
        self.finalconv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.finalconv3 = nn.Conv2d(32, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.firstmaxpool(F.relu(self.firstbn(self.firstconv(x))))
        e1 = self.encoder1(x)
        e2 = self.encoder2(e1)
        e3 = self.encoder3(e2)
        e4 = self.dblock(self.encoder4(e3))
        d4 = self.decoder4(e4) + e3
        d3 = self.decoder3(d4) + e2
        d2 = self.decoder2(d3) + e1
        d1 = self.decoder1(d2)
        out = F.relu(self.finaldeconv1(d1))
        out = F.relu(self.finalconv2(out))
        return self.finalconv3(out)


# ----------------------------------------------------------------------------- ENet (davidtvs)
def _act(relu: bool) -> nn.Module:
    return nn.ReLU() if relu else nn.PReLU()


class _Named(nn.Module):
    """Sets the output activation under the current (``out_activation``) or the older
    (``out_prelu``) attribute name."""

    legacy = False

    def _set_out(self, act: nn.Module) -> None:
        setattr(self, "out_prelu" if self.legacy else "out_activation", act)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "out_prelu" if self.legacy else "out_activation")(x)


class InitialBlock(_Named):
    def __init__(self, in_channels: int, out_channels: int, relu: bool, legacy: bool) -> None:
        super().__init__()
        self.legacy = legacy
        self.main_branch = nn.Conv2d(in_channels, out_channels - in_channels, 3, 2, 1,
                                     bias=False)
        self.ext_branch = nn.MaxPool2d(3, stride=2, padding=1)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self._set_out(_act(relu))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.batch_norm(torch.cat((self.main_branch(x), self.ext_branch(x)), 1)))


class RegularBottleneck(_Named):
    def __init__(self, channels: int, kernel_size: int = 3, padding: int = 1, dilation: int = 1,
                 asymmetric: bool = False, dropout: float = 0.0, relu: bool = True,
                 legacy: bool = False) -> None:
        super().__init__()
        self.legacy = legacy
        mid = channels // 4
        self.ext_conv1 = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False),
                                       nn.BatchNorm2d(mid), _act(relu))
        if asymmetric:
            self.ext_conv2 = nn.Sequential(
                nn.Conv2d(mid, mid, (kernel_size, 1), padding=(padding, 0), dilation=dilation,
                          bias=False), nn.BatchNorm2d(mid), _act(relu),
                nn.Conv2d(mid, mid, (1, kernel_size), padding=(0, padding), dilation=dilation,
                          bias=False), nn.BatchNorm2d(mid), _act(relu))
        else:
            self.ext_conv2 = nn.Sequential(
                nn.Conv2d(mid, mid, kernel_size, padding=padding, dilation=dilation, bias=False),
                nn.BatchNorm2d(mid), _act(relu))
        self.ext_conv3 = nn.Sequential(nn.Conv2d(mid, channels, 1, bias=False),
                                       nn.BatchNorm2d(channels), _act(relu))
        self.ext_regul = nn.Dropout2d(p=dropout)
        self._set_out(_act(relu))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        return self._out(x + ext)


class DownsamplingBottleneck(_Named):
    def __init__(self, in_channels: int, out_channels: int, dropout: float, relu: bool,
                 legacy: bool) -> None:
        super().__init__()
        self.legacy = legacy
        mid = in_channels // 4
        self.main_max1 = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.ext_conv1 = nn.Sequential(nn.Conv2d(in_channels, mid, 2, 2, bias=False),
                                       nn.BatchNorm2d(mid), _act(relu))
        self.ext_conv2 = nn.Sequential(nn.Conv2d(mid, mid, 3, 1, 1, bias=False),
                                       nn.BatchNorm2d(mid), _act(relu))
        self.ext_conv3 = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False),
                                       nn.BatchNorm2d(out_channels), _act(relu))
        self.ext_regul = nn.Dropout2d(p=dropout)
        self._set_out(_act(relu))

    def forward(self, x: torch.Tensor):
        main, idx = self.main_max1(x)
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        n, ch, h, w = ext.shape
        main = torch.cat((main, torch.zeros(n, ch - main.shape[1], h, w, dtype=main.dtype)), 1)
        return self._out(main + ext), idx


class UpsamplingBottleneck(_Named):
    def __init__(self, in_channels: int, out_channels: int, dropout: float, relu: bool,
                 legacy: bool) -> None:
        super().__init__()
        self.legacy = legacy
        mid = in_channels // 4
        self.main_conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                        nn.BatchNorm2d(out_channels))
        self.main_unpool1 = nn.MaxUnpool2d(kernel_size=2)
        self.ext_conv1 = nn.Sequential(nn.Conv2d(in_channels, mid, 1, bias=False),
                                       nn.BatchNorm2d(mid), _act(relu))
        self.ext_tconv1 = nn.ConvTranspose2d(mid, mid, kernel_size=2, stride=2, bias=False)
        self.ext_tconv1_bnorm = nn.BatchNorm2d(mid)
        self.ext_tconv1_activation = _act(relu)
        self.ext_conv2 = nn.Sequential(nn.Conv2d(mid, out_channels, 1, bias=False),
                                       nn.BatchNorm2d(out_channels))
        self.ext_regul = nn.Dropout2d(p=dropout)
        self._set_out(_act(relu))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, size) -> torch.Tensor:
        main = self.main_unpool1(self.main_conv1(x), idx, output_size=size)
        ext = self.ext_tconv1(self.ext_conv1(x), output_size=size)
        ext = self.ext_tconv1_activation(self.ext_tconv1_bnorm(ext))
        ext = self.ext_regul(self.ext_conv2(ext))
        return self._out(main + ext)


class TorchENet(nn.Module):
    """ENet with davidtvs/PyTorch-ENet's attribute names (PReLU encoder, ReLU decoder)."""

    def __init__(self, num_classes: int, legacy_names: bool = False) -> None:
        super().__init__()
        enc, dec, lg = False, True, legacy_names
        self.initial_block = InitialBlock(3, 16, enc, lg)
        self.downsample1_0 = DownsamplingBottleneck(16, 64, 0.01, enc, lg)
        for i in range(1, 5):
            setattr(self, f"regular1_{i}", RegularBottleneck(64, dropout=0.01, relu=enc,
                                                             legacy=lg))
        self.downsample2_0 = DownsamplingBottleneck(64, 128, 0.1, enc, lg)
        for stage in (2, 3):
            first = 1 if stage == 2 else 0
            kinds = [("regular", 1, False), ("dilated", 2, False), ("asymmetric", 0, True),
                     ("dilated", 4, False), ("regular", 1, False), ("dilated", 8, False),
                     ("asymmetric", 0, True), ("dilated", 16, False)]
            for j, (kind, d, asym) in enumerate(kinds):
                name = f"{kind}{stage}_{j + first}"
                if asym:
                    block = RegularBottleneck(128, kernel_size=5, padding=2, asymmetric=True,
                                              dropout=0.1, relu=enc, legacy=lg)
                else:
                    block = RegularBottleneck(128, padding=d, dilation=d, dropout=0.1, relu=enc,
                                              legacy=lg)
                setattr(self, name, block)
        self.stage2_names = [f"{k}2_{j + 1}" for j, k in enumerate(
            ["regular", "dilated", "asymmetric", "dilated", "regular", "dilated", "asymmetric",
             "dilated"])]
        self.stage3_names = [f"{k}3_{j}" for j, k in enumerate(
            ["regular", "dilated", "asymmetric", "dilated", "regular", "dilated", "asymmetric",
             "dilated"])]
        self.upsample4_0 = UpsamplingBottleneck(128, 64, 0.1, dec, lg)
        self.regular4_1 = RegularBottleneck(64, dropout=0.1, relu=dec, legacy=lg)
        self.regular4_2 = RegularBottleneck(64, dropout=0.1, relu=dec, legacy=lg)
        self.upsample5_0 = UpsamplingBottleneck(64, 16, 0.1, dec, lg)
        self.regular5_1 = RegularBottleneck(16, dropout=0.1, relu=dec, legacy=lg)
        self.transposed_conv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1,
                                                  bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_size = x.size()
        x = self.initial_block(x)
        s1 = x.size()
        x, i1 = self.downsample1_0(x)
        for i in range(1, 5):
            x = getattr(self, f"regular1_{i}")(x)
        s2 = x.size()
        x, i2 = self.downsample2_0(x)
        for name in self.stage2_names + self.stage3_names:
            x = getattr(self, name)(x)
        x = self.regular4_2(self.regular4_1(self.upsample4_0(x, i2, s2)))
        x = self.regular5_1(self.upsample5_0(x, i1, s1))
        return self.transposed_conv(x, output_size=in_size)


# ----------------------------------------------------------------------------- DDRNet (ydhongHIT)
class DDRBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, no_relu: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        out = out + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


class DDRBottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None, no_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 2)
        self.downsample = downsample
        self.no_relu = no_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + (x if self.downsample is None else self.downsample(x))
        return out if self.no_relu else F.relu(out)


def _ddr_layer(block: type, inplanes: int, planes: int, blocks: int,
               stride: int = 1) -> nn.Sequential:
    down = None
    if stride != 1 or inplanes != planes * block.expansion:
        down = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, stride,
                                       bias=False), nn.BatchNorm2d(planes * block.expansion))
    mods = [block(inplanes, planes, stride, down)]
    for i in range(1, blocks):
        mods.append(block(planes * block.expansion, planes, 1, no_relu=(i == blocks - 1)))
    return nn.Sequential(*mods)


def _brc(cin: int, cout: int, k: int, pool: Optional[nn.Module] = None) -> nn.Sequential:
    mods = ([pool] if pool is not None else []) + [
        nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)]
    return nn.Sequential(*mods)


class DAPPM(nn.Module):
    def __init__(self, inplanes: int, branch: int, outplanes: int) -> None:
        super().__init__()
        self.scale1 = _brc(inplanes, branch, 1, nn.AvgPool2d(5, 2, 2))
        self.scale2 = _brc(inplanes, branch, 1, nn.AvgPool2d(9, 4, 4))
        self.scale3 = _brc(inplanes, branch, 1, nn.AvgPool2d(17, 8, 8))
        self.scale4 = _brc(inplanes, branch, 1, nn.AdaptiveAvgPool2d((1, 1)))
        self.scale0 = _brc(inplanes, branch, 1)
        for i in range(1, 5):
            setattr(self, f"process{i}", _brc(branch, branch, 3))
        self.compression = _brc(branch * 5, outplanes, 1)
        self.shortcut = _brc(inplanes, outplanes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        xs = [self.scale0(x)]
        for i in range(1, 5):
            up = F.interpolate(getattr(self, f"scale{i}")(x), size=size, mode="bilinear",
                               align_corners=False)
            xs.append(getattr(self, f"process{i}")(up + xs[-1]))
        return self.compression(torch.cat(xs, 1)) + self.shortcut(x)


class SegmentHead(nn.Module):
    def __init__(self, inplanes: int, interplanes: int, outplanes: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, interplanes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(interplanes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(interplanes, outplanes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu(self.bn2(self.conv1(self.relu(self.bn1(x))))))


class DualResNet(nn.Module):
    """DDRNet-23(-slim) segmentation model with ydhongHIT/DDRNet's names; ``forward``
    upsamples the 1/8 logits bilinearly to the input size (as the training code does)."""

    def __init__(self, num_classes: int = 19, planes: int = 32, spp_planes: int = 128,
                 head_planes: int = 64, augment: bool = False) -> None:
        super().__init__()
        hi = planes * 2
        self.augment = augment
        self.conv1 = nn.Sequential(nn.Conv2d(3, planes, 3, 2, 1), nn.BatchNorm2d(planes),
                                   nn.ReLU(), nn.Conv2d(planes, planes, 3, 2, 1),
                                   nn.BatchNorm2d(planes), nn.ReLU())
        B = DDRBasicBlock
        self.layer1 = _ddr_layer(B, planes, planes, 2)
        self.layer2 = _ddr_layer(B, planes, planes * 2, 2, 2)
        self.layer3 = _ddr_layer(B, planes * 2, planes * 4, 2, 2)
        self.layer4 = _ddr_layer(B, planes * 4, planes * 8, 2, 2)
        self.compression3 = nn.Sequential(nn.Conv2d(planes * 4, hi, 1, bias=False),
                                          nn.BatchNorm2d(hi))
        self.compression4 = nn.Sequential(nn.Conv2d(planes * 8, hi, 1, bias=False),
                                          nn.BatchNorm2d(hi))
        self.down3 = nn.Sequential(nn.Conv2d(hi, planes * 4, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(planes * 4))
        self.down4 = nn.Sequential(nn.Conv2d(hi, planes * 4, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(planes * 4), nn.ReLU(),
                                   nn.Conv2d(planes * 4, planes * 8, 3, 2, 1, bias=False),
                                   nn.BatchNorm2d(planes * 8))
        self.layer3_ = _ddr_layer(B, planes * 2, hi, 2)
        self.layer4_ = _ddr_layer(B, hi, hi, 2)
        self.layer5_ = _ddr_layer(DDRBottleneck, hi, hi, 1)
        self.layer5 = _ddr_layer(DDRBottleneck, planes * 8, planes * 8, 1, 2)
        self.spp = DAPPM(planes * 16, spp_planes, planes * 4)
        if augment:
            self.seghead_extra = SegmentHead(hi, head_planes, num_classes)
        self.final_layer = SegmentHead(planes * 4, head_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        size = (h // 8, w // 8)

        def up(t: torch.Tensor, s) -> torch.Tensor:
            return F.interpolate(t, size=s, mode="bilinear", align_corners=False)

        l1 = self.layer1(self.conv1(x))
        l2 = self.layer2(F.relu(l1))
        l3 = self.layer3(F.relu(l2))
        x_ = self.layer3_(F.relu(l2))
        y = l3 + self.down3(F.relu(x_))
        x_ = x_ + up(self.compression3(F.relu(l3)), size)
        l4 = self.layer4(F.relu(y))
        x_ = self.layer4_(F.relu(x_))
        y = l4 + self.down4(F.relu(x_))
        x_ = x_ + up(self.compression4(F.relu(l4)), size)
        x_ = self.layer5_(F.relu(x_))
        y = up(self.spp(self.layer5(F.relu(y))), size)
        return up(self.final_layer(y + x_), (h, w))


# ----------------------------------------------------------------------------- DGCNet (GALD-DGCNet)
class GaldBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class SpatialGCN(nn.Module):
    def __init__(self, plane: int) -> None:
        super().__init__()
        inter = plane // 2
        self.node_k = nn.Conv2d(plane, inter, 1)
        self.node_v = nn.Conv2d(plane, inter, 1)
        self.node_q = nn.Conv2d(plane, inter, 1)
        self.conv_wg = nn.Conv1d(inter, inter, 1, bias=False)
        self.bn_wg = nn.BatchNorm1d(inter)
        self.out = nn.Sequential(nn.Conv2d(inter, plane, 1), nn.BatchNorm2d(plane))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, v, q = self.node_k(x), self.node_v(x), self.node_q(x)
        b, c, h, w = k.shape
        k = k.view(b, c, -1).permute(0, 2, 1)
        q = q.view(b, c, -1)
        v = v.view(b, c, -1).permute(0, 2, 1)
        av = torch.bmm(k, torch.softmax(torch.bmm(q, v), dim=2)).transpose(1, 2)
        avw = self.bn_wg(self.conv_wg(av)).view(b, c, h, -1)
        return F.relu(self.out(avw) + x)


class DualGCN(nn.Module):
    def __init__(self, planes: int, ratio: int = 4) -> None:
        super().__init__()
        n, s = planes // ratio, planes // ratio * 2
        self.phi = nn.Conv2d(planes, s, 1, bias=False)
        self.bn_phi = nn.BatchNorm2d(s)
        self.theta = nn.Conv2d(planes, n, 1, bias=False)
        self.bn_theta = nn.BatchNorm2d(n)
        self.conv_adj = nn.Conv1d(n, n, 1, bias=False)
        self.bn_adj = nn.BatchNorm1d(n)
        self.conv_wg = nn.Conv1d(s, s, 1, bias=False)
        self.bn_wg = nn.BatchNorm1d(s)
        self.conv3 = nn.Conv2d(s, planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        dw = [m for _ in range(3) for m in (
            nn.Conv2d(planes, planes, 3, 2, 1, groups=planes, bias=False),
            nn.BatchNorm2d(planes))]
        self.local = nn.Sequential(*dw)
        self.gcn_local_attention = SpatialGCN(planes)
        self.final = nn.Sequential(nn.Conv2d(planes * 2, planes, 1, bias=False),
                                   nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        local = self.gcn_local_attention(self.local(x))
        local = F.interpolate(local, size=(h, w), mode="bilinear", align_corners=True)
        spatial = x * local + x
        x_sqz = self.bn_phi(self.phi(x)).view(n, -1, h * w)
        b = self.bn_theta(self.theta(x)).view(n, -1, h * w)
        z_idt = torch.matmul(x_sqz, b.transpose(1, 2))
        z = self.bn_adj(self.conv_adj(z_idt.transpose(1, 2))).transpose(1, 2) + z_idt
        z = self.bn_wg(self.conv_wg(z))
        y = torch.matmul(z, b).view(n, -1, h, w)
        g = F.relu(x + self.bn3(self.conv3(y)))
        return self.final(torch.cat((spatial, g), 1))


class DualGCNHead(nn.Module):
    def __init__(self, inplanes: int, inter: int, num_classes: int) -> None:
        super().__init__()
        self.conva = nn.Sequential(nn.Conv2d(inplanes, inter, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(inter), nn.ReLU())
        self.dualgcn = DualGCN(inter)
        self.convb = nn.Sequential(nn.Conv2d(inter, inter, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(inter), nn.ReLU())
        self.bottleneck = nn.Sequential(
            nn.Conv2d(inplanes + inter, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter), nn.ReLU(), nn.Conv2d(inter, num_classes, 1, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([x, self.convb(self.dualgcn(self.conva(x)))], 1))


class DualSeg(nn.Module):
    """GALD-DGCNet ``DualSeg_res50/101`` with the release's names; ``forward`` returns the
    head's logits upsampled (align_corners=True) to the input size. ``ceil_mode`` is the
    release's stem max-pool setting; our network uses torchvision's (False), so the numerical
    comparison builds it with ``ceil_mode=False``."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 19,
                 ceil_mode: bool = True) -> None:
        super().__init__()
        self.inplanes = 128
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, 1, 1, bias=False))
        self.bn1 = nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=ceil_mode)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], dilation=2)
        self.layer4 = self._make_layer(512, layers[3], dilation=4, grid=(1, 2, 4))
        self.head = DualGCNHead(2048, 512, num_classes)
        self.dsn = nn.Sequential(nn.Conv2d(1024, 512, 3, 1, 1), nn.BatchNorm2d(512),
                                 nn.Dropout2d(0.1), nn.Conv2d(512, num_classes, 1, bias=True))

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1,
                    grid: Sequence[int] = (1,)) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
        mods = [GaldBottleneck(self.inplanes, planes, stride, dilation * grid[0], down)]
        self.inplanes = planes * 4
        mods += [GaldBottleneck(self.inplanes, planes, 1, dilation * grid[i % len(grid)])
                 for i in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        return F.interpolate(self.head(y), size=(h, w), mode="bilinear", align_corners=True)


# ----------------------------------------------------------------------------- helpers
def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN running statistics and affine values, random PReLU slopes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.2)
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, nn.PReLU):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5)
