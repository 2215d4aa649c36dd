"""Import published PyTorch weights into our MindSpore networks (``roadseg convert``).

The checkpoint is read by :mod:`segcore.torch_reader` (no torch, no pickled code run). Its
``state_dict`` is found under a ``state_dict`` / ``model`` / ``net`` / ``model_state_dict`` key
when nested, and a ``module.`` (DataParallel) or ``model.`` (HRNet-style ``FullModel``) prefix
shared by every key is stripped.

Every torch key is renamed by a *source layout* (the key layout of one published release),
then its parameter name follows the MindSpore cell it lands on:

* ``BatchNorm1d/2d``: ``weight, bias, running_mean, running_var`` -> ``gamma, beta,
  moving_mean, moving_variance``; ``num_batches_tracked`` has no counterpart and is dropped
  (listed in :attr:`ConversionReport.dropped`);
* ``PReLU``: ``weight`` -> ``w``;
* ``Conv1d``: ``(out, in, k)`` -> MindSpore's ``(out, in, 1, k)``;
* ``Conv2d`` / ``ConvTranspose2d`` / ``Linear`` (``nn.Dense``): same names and layouts
  (``ConvTranspose2d`` is ``(in, out / groups, kh, kw)`` in both; checked per cell).

Every value's shape is checked against the network: a mismatch raises
:class:`~segcore.errors.CheckpointError` naming the torch key, our parameter and both shapes.

Source layouts (:data:`LAYOUTS`; detected from the keys, or forced with ``source=``):

==========================  ===================================================================
``dinknet``                 zlckanata/DeepGlobe-Road-Extraction-Challenge ``DinkNet34/50``
                            (``firstconv``, ``encoder1..4``, ``dblock.dilateN``, ...) ->
                            ``dlinknet34/50`` (see ``TORCH_PREFIX_MAP`` in ``dlinknet.py``)
``torchvision_resnet``      torchvision ImageNet ResNet (``conv1, bn1, layer1..4, fc``) -> our
                            ``ResNet`` or the encoder of ``dlinknet*`` / ``deeplabv3*``; ``fc.*``
                            is a listed leftover, the decoder keeps its initialisation
``resnet_deep_stem``        deep-stem ImageNet ResNet (``conv1..3/bn1..3``, PSPNet/CCNet) -> the
                            backbone of ``dgcnet_resnet101``
``enet``                    davidtvs/PyTorch-ENet (both ``out_activation`` and the older
                            ``out_prelu`` names) -> ``enet``
``ddrnet``                  ydhongHIT/DDRNet segmentation models -> ``ddrnet23(_slim)``
``ddrnet_imagenet``         ydhongHIT/DDRNet ImageNet classifier -> ``ddrnet23_imagenet``, or the
                            backbone of ``ddrnet23(_slim)`` (``down5``, ``last_layer``, ``linear``
                            listed as leftovers)
``dgcnet``                  lxtGH/GALD-DGCNet ``DualSeg_res101`` -> ``dgcnet_resnet101``
``torchvision_deeplabv3``   torchvision ``deeplabv3_resnet101`` -> backbone and ASPP branches of
                            ``deeplabv3_resnet101(_os8)``; its head's extra 3x3 conv has no
                            counterpart, so ``classifier.1/2/4`` are leftovers and ``aspp.conv2``
                            keeps its initialisation (fine-tune before use)
==========================  ===================================================================

Auxiliary heads of the release (``dsn`` in DGCNet, ``seghead_extra`` in DDRNet,
``aux_classifier`` in torchvision) are listed as leftovers: the converted checkpoint is an
inference network.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import CheckpointError
from .torch_reader import load_torch_file

logger = logging.getLogger(__name__)

__all__ = ["ConversionReport", "SourceLayout", "LAYOUTS", "extract_state_dict",
           "read_torch_state_dict", "detect_layout", "convert_state_dict", "convert_checkpoint",
           "layouts_for"]

PathLike = Union[str, "os.PathLike[str]"]

#: Keys under which training scripts nest the state dict.
NESTING_KEYS = ("state_dict", "model", "net", "model_state_dict", "model_state", "network")
#: Prefixes shared by every key that wrappers add (DataParallel, HRNet ``FullModel``).
WRAPPER_PREFIXES = ("module.", "model.")

_BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
             "running_var": "moving_variance"}
_IMAGENET = {"method": "meanstd", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
             "scale": 255}


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversionReport:
    """What a conversion did.

    ``mapped``: ``(torch key, MindSpore parameter)`` pairs loaded. ``dropped``: torch entries
    without a MindSpore counterpart by design (``num_batches_tracked``). ``leftover``: torch keys
    the layout expects to be unused (``fc.*`` of an ImageNet backbone, auxiliary heads).
    ``unmapped``: torch keys with no counterpart that were not expected. ``missing``: network
    parameters the source should have provided but did not. ``not_covered``: network parameters
    outside what the source provides (the decoder when importing a backbone); they keep their
    initialisation. ``strict`` conversions fail on ``unmapped`` or ``missing``.
    """

    model: str
    source: str
    mapped: Tuple[Tuple[str, str], ...]
    dropped: Tuple[str, ...] = ()
    leftover: Tuple[str, ...] = ()
    unmapped: Tuple[str, ...] = ()
    missing: Tuple[str, ...] = ()
    not_covered: Tuple[str, ...] = ()
    stripped_prefix: str = ""
    nested_key: str = ""
    num_classes: Optional[int] = None
    output: str = ""

    @property
    def mapped_count(self) -> int:
        """Number of parameters loaded."""
        return len(self.mapped)

    @property
    def ok(self) -> bool:
        """True when nothing unexpected is left on either side."""
        return not self.unmapped and not self.missing

    def summary(self, limit: int = 8) -> str:
        """A few human-readable lines (counts plus the first ``limit`` names of each list)."""
        def names(items: Sequence[str]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f", ... (+{len(items) - limit})" if len(items) > limit else "")

        lines = [f"{self.model} <- {self.source} layout: {self.mapped_count} parameters mapped"
                 + (f" (prefix '{self.stripped_prefix}' stripped)" if self.stripped_prefix
                    else "")]
        if self.dropped:
            lines.append(f"  {len(self.dropped)} BatchNorm num_batches_tracked counters dropped")
        for label, items in (("leftover torch keys", self.leftover),
                             ("UNMAPPED torch keys", self.unmapped),
                             ("MISSING network parameters", self.missing),
                             ("network parameters left at initialisation", self.not_covered)):
            if items:
                lines.append(f"  {len(items)} {label}: {names(list(items))}")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict."""
        return {"model": self.model, "source": self.source, "mapped_count": self.mapped_count,
                "mapped": [list(p) for p in self.mapped], "dropped": list(self.dropped),
                "leftover": list(self.leftover), "unmapped": list(self.unmapped),
                "missing": list(self.missing), "not_covered": list(self.not_covered),
                "stripped_prefix": self.stripped_prefix, "nested_key": self.nested_key,
                "num_classes": self.num_classes, "output": self.output}

    def check_strict(self, where: str) -> None:
        """Raise :class:`CheckpointError` (prefixed by ``where``) unless :attr:`ok`."""
        if self.unmapped:
            raise CheckpointError(
                f"{where}: {len(self.unmapped)} torch weights have no counterpart in "
                f"{self.model} (e.g. {self.unmapped[0]}); wrong model or layout "
                f"({self.source})? use strict=False to keep going")
        if self.missing:
            raise CheckpointError(
                f"{where}: {len(self.missing)} {self.model} parameters are not in the "
                f"checkpoint (e.g. {self.missing[0]}); use strict=False to keep their "
                "initialisation")


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------
Renamer = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class SourceLayout:
    """A published key layout and how it lands on one of our networks.

    ``rename`` maps a torch *module path* (the key without its last component) to our module
    path, or ``None`` when it has no counterpart. ``scope`` lists our parameter-name prefixes
    the source is expected to fill (empty: every parameter). ``leftovers`` lists torch
    module-path prefixes expected to stay unused. ``signature`` are torch keys whose presence
    identifies the layout (all must be present). ``normalization`` / ``tile_size_px`` /
    ``bands`` describe the release's preprocessing for the metadata sidecar. ``head`` is the
    torch key whose given axis is the class count (``(key, axis)``), if the source has a head.
    """

    name: str
    description: str
    rename: Renamer
    signature: Tuple[str, ...]
    scope: Tuple[str, ...] = ()
    leftovers: Tuple[str, ...] = ()
    normalization: Dict[str, Any] = field(default_factory=lambda: dict(_IMAGENET))
    bands: Tuple[int, ...] = (1, 2, 3)
    tile_size_px: int = 512
    head: Optional[Tuple[str, int]] = None
    class_names: Tuple[str, ...] = ()


def _prefix_renamer(table: Sequence[Tuple[str, str]], add: str = "") -> Renamer:
    """Rename by the first matching ``(torch prefix, our prefix)``, then prepend ``add``.

    Prefixes match whole components (``"layer1"`` matches ``layer1`` and ``layer1.0`` but not
    ``layer10``).
    """
    def rename(path: str) -> Optional[str]:
        for old, new in table:
            old_s = old.rstrip(".")
            if path == old_s or path.startswith(old_s + "."):
                path = new.rstrip(".") + path[len(old_s):]
                break
        return add + path

    return rename


def _dinknet_renamer() -> Renamer:
    from .models.dlinknet import TORCH_PREFIX_MAP

    return _prefix_renamer(list(TORCH_PREFIX_MAP.items()))


def _enet_renamer(path: str) -> Optional[str]:
    # davidtvs/PyTorch-ENet before 2019 named the output activation ``out_prelu``
    return re.sub(r"(^|\.)out_prelu$", r"\1out_activation", path)


_GALD_TABLE = (("conv1.0", "backbone.conv1"), ("conv1.1", "backbone.bn1"),
               ("conv1.3", "backbone.conv2"), ("conv1.4", "backbone.bn2"),
               ("conv1.6", "backbone.conv3"), ("bn1", "backbone.bn3"),
               ("layer1", "backbone.layer1"), ("layer2", "backbone.layer2"),
               ("layer3", "backbone.layer3"), ("layer4", "backbone.layer4"),
               ("dsn.0", "dsn.conv"), ("dsn.1", "dsn.bn"), ("dsn.3", "dsn.cls"))


def _gald_renamer(path: str) -> Optional[str]:
    path = re.sub(r"\.gcn_local_attention\.out\.0$", ".gcn_local_attention.out_conv", path)
    path = re.sub(r"\.gcn_local_attention\.out\.1$", ".gcn_local_attention.out_bn", path)
    return _prefix_renamer(_GALD_TABLE)(path)


def _tv_deeplab_renamer(path: str) -> Optional[str]:
    if path.startswith("backbone."):
        return "resnet." + path[len("backbone."):]
    m = re.fullmatch(r"classifier\.0\.convs\.([0-3])\.([01])", path)
    if m:
        return f"aspp.aspp{int(m.group(1)) + 1}.aspp_conv.{m.group(2)}"
    m = re.fullmatch(r"classifier\.0\.convs\.4\.([12])", path)
    if m:
        return f"aspp.aspp_pooling.conv.{int(m.group(1)) - 1}"
    m = re.fullmatch(r"classifier\.0\.project\.([01])", path)
    if m:
        return "aspp.conv1" if m.group(1) == "0" else "aspp.bn1"
    return None  # classifier.1/2/4 (extra 3x3 conv + BN, classifier) and aux_classifier


def _identity(path: str) -> Optional[str]:
    return path


_TV_RESNET_SIG = ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight",
                  "layer4.0.conv1.weight")
_DDR_BACKBONE = ("conv1.", "layer1.", "layer2.", "layer3.", "layer4.", "layer5.", "layer3_.",
                 "layer4_.", "layer5_.", "compression3.", "compression4.", "down3.", "down4.")


def _torchvision_resnet(add: str) -> SourceLayout:
    return SourceLayout(
        "torchvision_resnet", "torchvision ImageNet ResNet (conv1, bn1, layer1..4, fc)",
        _prefix_renamer((), add), _TV_RESNET_SIG, scope=(add,) if add else (),
        leftovers=("fc",))


def layouts_for(model_name: str) -> Tuple[SourceLayout, ...]:
    """The source layouts that can be converted into ``model_name`` (registry names plus the
    plain backbones ``resnet18`` .. ``resnet152``)."""
    if re.fullmatch(r"resnet(18|34|50|101|152)", model_name):
        return (_torchvision_resnet(""),)
    from .models import model_info

    info = model_info(model_name)  # UnknownModelError lists the valid names
    family = info.family
    if family == "dlinknet":
        return (SourceLayout(
            "dinknet", "D-LinkNet DeepGlobe release (DinkNet34/50: firstconv, encoder1..4, "
            "dblock, decoder1..4, finaldeconv1, finalconv2/3)", _dinknet_renamer(),
            ("firstconv.weight", "dblock.dilate1.weight", "finalconv3.weight"),
            normalization={"method": "dlinknet"}, tile_size_px=1024,
            head=("finalconv3.weight", 0), class_names=("background", "road")),
            _torchvision_resnet("encoder."))
    if family == "enet":
        return (SourceLayout(
            "enet", "davidtvs/PyTorch-ENet", _enet_renamer,
            ("initial_block.main_branch.weight", "transposed_conv.weight"),
            normalization={"method": "meanstd", "mean": [0.0, 0.0, 0.0],
                           "std": [1.0, 1.0, 1.0], "scale": 255},
            head=("transposed_conv.weight", 1)),)
    if family == "ddrnet" and info.task == "classification":
        return (SourceLayout(
            "ddrnet_imagenet", "ydhongHIT/DDRNet ImageNet classifier", _identity,
            ("down5.0.weight", "last_layer.0.weight", "linear.weight"),
            tile_size_px=224, head=("linear.weight", 0)),)
    if family == "ddrnet":
        return (SourceLayout(
            "ddrnet", "ydhongHIT/DDRNet segmentation release", _identity,
            ("spp.scale0.0.weight", "final_layer.conv2.weight"), leftovers=("seghead_extra",),
            tile_size_px=1024, head=("final_layer.conv2.weight", 0)),
            SourceLayout(
            "ddrnet_imagenet", "ydhongHIT/DDRNet ImageNet classifier (backbone only)",
            _identity, ("down5.0.weight", "last_layer.0.weight", "linear.weight"),
            scope=_DDR_BACKBONE, leftovers=("down5", "last_layer", "linear"),
            tile_size_px=1024))
    if family == "dgcnet":
        return (SourceLayout(
            "dgcnet", "lxtGH/GALD-DGCNet DualSeg_res101", _gald_renamer,
            ("conv1.0.weight", "conv1.6.weight", "head.conva.0.weight"), leftovers=("dsn",),
            normalization={"method": "meanstd", "mean": [122.7717 / 255, 115.9465 / 255,
                                                         102.9801 / 255],
                           "std": [1 / 255, 1 / 255, 1 / 255], "scale": 255},
            tile_size_px=768, head=("head.bottleneck.3.weight", 0)),
            SourceLayout(
            "resnet_deep_stem", "deep-stem ImageNet ResNet (conv1..3, bn1..3, layer1..4, fc)",
            _prefix_renamer((), "backbone."),
            ("conv1.weight", "conv2.weight", "conv3.weight", "bn3.running_mean",
             "layer1.0.conv1.weight"), scope=("backbone.",), leftovers=("fc",),
            tile_size_px=768))
    if family == "deeplabv3":
        return (SourceLayout(
            "torchvision_deeplabv3", "torchvision deeplabv3_resnet101 (backbone + ASPP "
            "branches; the head's 3x3 conv and classifier have no counterpart)",
            _tv_deeplab_renamer, ("backbone.conv1.weight", "classifier.0.project.0.weight"),
            scope=("resnet.", "aspp.aspp", "aspp.conv1.", "aspp.bn1."),
            leftovers=("classifier.1", "classifier.2", "classifier.4", "aux_classifier")),
            _torchvision_resnet("resnet."))
    raise CheckpointError(f"{model_name}: no PyTorch source layout is known for this model "
                          f"(family {family!r})")


#: Every layout name, for the CLI's ``--source`` choice.
LAYOUTS = ("dinknet", "torchvision_resnet", "resnet_deep_stem", "enet", "ddrnet",
           "ddrnet_imagenet", "dgcnet", "torchvision_deeplabv3")


def detect_layout(model_name: str, torch_sd: Mapping[str, Any],
                  source: Optional[str] = None) -> SourceLayout:
    """The layout of ``torch_sd`` among :func:`layouts_for` ``(model_name)``.

    With ``source`` that layout is used (it must be one that converts into ``model_name``).
    Without it the first layout whose signature keys are all present wins; none matching
    raises :class:`CheckpointError` listing the candidates and a few of the torch keys.
    """
    cands = layouts_for(model_name)
    if source is not None:
        for lay in cands:
            if lay.name == source:
                return lay
        raise CheckpointError(f"source layout {source!r} does not convert into {model_name}; "
                              f"valid: {', '.join(c.name for c in cands)}")
    for lay in cands:
        if all(k in torch_sd for k in lay.signature):
            return lay
    sample = ", ".join(list(torch_sd)[:5])
    raise CheckpointError(
        f"unrecognised key layout for {model_name} (first keys: {sample}); expected one of: "
        + "; ".join(f"{c.name} ({c.description})" for c in cands))


# --------------------------------------------------------------------------------------------
# state dict extraction
# --------------------------------------------------------------------------------------------
def _is_array(v: Any) -> bool:
    """numpy arrays, and array-likes with a shape (a torch tensor handed in by a caller that
    has torch; nothing here imports it)."""
    return isinstance(v, np.ndarray) or (hasattr(v, "__array__") and hasattr(v, "shape")
                                         and not isinstance(v, (str, bytes)))


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj) and \
        any(_is_array(v) for v in obj.values())


def extract_state_dict(obj: Any, where: str = "checkpoint"
                       ) -> Tuple[Dict[str, np.ndarray], str, str]:
    """Find the ``state_dict`` in a loaded checkpoint object.

    Returns ``(state_dict, nested_key, stripped_prefix)``: the flat ``name -> ndarray`` dict
    (non-array entries dropped), the key it was nested under (``""`` at top level) and the
    wrapper prefix removed from every key (``"module."``, ``"model."`` or ``""``).
    """
    nested = ""
    cur = obj
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if _is_tensor_dict(cur):
            break
        if not isinstance(cur, dict):
            break
        key = next((k for k in NESTING_KEYS if k in cur and isinstance(cur[k], dict)), None)
        if key is None:
            break
        nested = f"{nested}.{key}" if nested else key
        cur = cur[key]
    if not _is_tensor_dict(cur):
        what = (f"dict with keys {', '.join(map(str, list(cur)[:6]))}"
                if isinstance(cur, dict) else type(cur).__name__)
        raise CheckpointError(f"{where}: no state_dict found ({what}); expected name -> tensor "
                              f"entries, possibly under one of {', '.join(NESTING_KEYS)}")
    sd = {k: np.asarray(v) for k, v in cur.items() if _is_array(v)}
    stripped = ""
    changed = True
    while changed:
        changed = False
        for pre in WRAPPER_PREFIXES:
            if all(k.startswith(pre) for k in sd):
                sd = {k[len(pre):]: v for k, v in sd.items()}
                stripped += pre
                changed = True
    return sd, nested, stripped


def read_torch_state_dict(path: PathLike) -> Tuple[Dict[str, np.ndarray], str, str]:
    """:func:`segcore.torch_reader.load_torch_file` + :func:`extract_state_dict`."""
    return extract_state_dict(load_torch_file(path), os.fspath(path))


# --------------------------------------------------------------------------------------------
# mapping
# --------------------------------------------------------------------------------------------
def _cell_kind(cell: Any) -> str:
    from mindspore import nn

    if isinstance(cell, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return "bn"
    if isinstance(cell, nn.PReLU):
        return "prelu"
    if isinstance(cell, nn.Conv1d):
        return "conv1d"
    if isinstance(cell, nn.Conv2dTranspose):
        return "convtranspose"
    if isinstance(cell, nn.Dense):
        return "dense"
    return "other"


def _np_dtype(param: Any) -> np.dtype:
    import mindspore as ms

    known = {ms.float32: np.float32, ms.float16: np.float16, ms.float64: np.float64,
             ms.int32: np.int32, ms.int64: np.int64}
    return np.dtype(known[param.dtype]) if param.dtype in known else param.asnumpy().dtype


def _in_scope(name: str, scope: Sequence[str]) -> bool:
    return not scope or any(name.startswith(s) for s in scope)


def _leftover(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p.rstrip(".") + ".") for p in prefixes)


def _shape_hint(theirs: Tuple[int, ...], ours: Tuple[int, ...]) -> str:
    if len(theirs) == len(ours) == 4 and theirs[0] == ours[0] and theirs[2:] == ours[2:] \
            and theirs[1] != ours[1]:
        return f" (input channels differ: the checkpoint expects {theirs[1]} bands?)"
    if len(theirs) == len(ours) and theirs[0] != ours[0] and theirs[1:] == ours[1:]:
        return " (different class count or width? check num_classes and the model variant)"
    return ""


def convert_state_dict(model_name: str, torch_sd: Mapping[str, Any], net: Any, *,
                       source: Optional[str] = None) -> Tuple[Dict[str, Any], ConversionReport]:
    """Map a PyTorch ``state_dict`` onto ``net`` (an ``nn.Cell`` built for ``model_name``).

    ``torch_sd``: ``name -> ndarray`` (from :func:`read_torch_state_dict`, or any array-likes
    such as a live ``model.state_dict()``; a wrapper prefix ``module.``/``model.`` shared by
    every key is stripped here too). ``source`` forces a
    layout (see :func:`layouts_for`); otherwise it is detected from the keys.

    Returns ``(param_dict, report)``: ``param_dict`` maps our parameter names to
    ``mindspore.Parameter`` (float values cast to the parameter's dtype) ready for
    ``mindspore.load_param_into_net``; ``report`` is a :class:`ConversionReport`. Raises
    :class:`CheckpointError` for a value whose shape differs from the network's (naming the
    torch key, our parameter and both shapes) and for two torch keys landing on one parameter.
    Missing or unexpected keys never raise here (see :meth:`ConversionReport.check_strict`).
    """
    import mindspore as ms

    sd, _, stripped = extract_state_dict(dict(torch_sd), "state_dict")
    layout = detect_layout(model_name, sd, source)
    cells = dict(net.cells_and_names())
    params = {p.name: p for p in net.get_parameters()}
    out: Dict[str, Any] = {}
    mapped: List[Tuple[str, str]] = []
    dropped: List[str] = []
    leftover: List[str] = []
    unmapped: List[str] = []
    origin: Dict[str, str] = {}
    for key, value in sd.items():
        module, _, attr = key.rpartition(".")
        if attr == "num_batches_tracked":
            dropped.append(key)
            continue
        target_mod = layout.rename(module) if module else None
        cell = cells.get(target_mod) if target_mod is not None else None
        name = None
        kind = _cell_kind(cell) if cell is not None else "other"
        if cell is not None:
            if kind == "bn":
                our_attr = _BN_NAMES.get(attr)
            elif kind == "prelu":
                our_attr = "w" if attr == "weight" else None
            else:
                our_attr = attr
            if our_attr is not None:
                cand = f"{target_mod}.{our_attr}" if target_mod else our_attr
                name = cand if cand in params else None
        if name is None:
            (leftover if _leftover(key, layout.leftovers) else unmapped).append(key)
            continue
        if name in origin:
            raise CheckpointError(f"torch keys {origin[name]} and {key} both map onto {name} "
                                  f"({layout.name} layout)")
        param = params[name]
        arr = np.asarray(value)
        if kind == "conv1d" and attr == "weight" and arr.ndim == 3:
            arr = arr.reshape(arr.shape[0], arr.shape[1], 1, arr.shape[2])
        if kind == "convtranspose" and attr == "weight":
            group = int(getattr(cell, "group", 1) or 1)
            expect = (cell.in_channels, cell.out_channels // group)
            if tuple(param.shape[:2]) != expect:  # MindSpore changed its layout: refuse
                raise CheckpointError(f"{name}: MindSpore Conv2dTranspose weight {param.shape} "
                                      f"is not (in, out/groups, kh, kw) = {expect}; cannot "
                                      "map ConvTranspose2d weights")
        if tuple(arr.shape) != tuple(param.shape):
            raise CheckpointError(
                f"shape mismatch: torch {key} {tuple(np.shape(value))} -> {name} "
                f"{tuple(param.shape)}{_shape_hint(tuple(arr.shape), tuple(param.shape))}")
        np_dtype = _np_dtype(param)
        if arr.dtype.kind in "fc" and np.dtype(np_dtype).kind in "iub":
            raise CheckpointError(f"torch {key} holds {arr.dtype} values but {name} is "
                                  f"{param.dtype}")
        out[name] = ms.Parameter(ms.Tensor(arr.astype(np_dtype, copy=False)), name=name,
                                 requires_grad=param.requires_grad)
        origin[name] = key
        mapped.append((key, name))
    missing = sorted(n for n in params if n not in out and _in_scope(n, layout.scope))
    not_covered = sorted(n for n in params if n not in out and not _in_scope(n, layout.scope))
    head_classes = None
    if layout.head is not None and layout.head[0] in sd:
        head_classes = int(np.shape(sd[layout.head[0]])[layout.head[1]])
    report = ConversionReport(model_name, layout.name, tuple(mapped), tuple(dropped),
                              tuple(leftover), tuple(unmapped), tuple(missing),
                              tuple(not_covered), stripped, "", head_classes)
    logger.info("%s <- %s: %d mapped, %d dropped, %d leftover, %d unmapped, %d missing, "
                "%d left at initialisation", model_name, layout.name, len(mapped), len(dropped),
                len(leftover), len(unmapped), len(missing), len(not_covered))
    return out, report


def _infer_model_kwargs(model_name: str, layout: SourceLayout,
                        sd: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    """Builder options the weights imply (ENet: one PReLU slope per layer or per channel)."""
    if layout.name == "enet":
        w = sd.get("initial_block.out_activation.weight", sd.get("initial_block.out_prelu.weight"))
        if w is not None and np.size(w) > 1:
            return {"prelu": "channel"}
    return {}


def _class_names(given: Sequence[str], layout: SourceLayout,
                 num_classes: int) -> Tuple[str, ...]:
    if given:
        return tuple(given)
    expected = 2 if num_classes == 1 else num_classes
    return layout.class_names if len(layout.class_names) == expected else ()


def convert_checkpoint(src_pth: PathLike, model_name: str, out_ckpt: PathLike,
                       num_classes: Optional[int] = None, in_channels: int = 3,
                       strict: bool = True, *, source: Optional[str] = None,
                       overwrite: bool = False,
                       class_names: Sequence[str] = ()) -> ConversionReport:
    """Convert the PyTorch checkpoint ``src_pth`` into a RoadSeg checkpoint ``out_ckpt``.

    Builds ``model_name`` through the registry with ``num_classes`` (default: the class count
    of the checkpoint's head when it has one, else the registry default) and ``in_channels``,
    maps the weights (:func:`convert_state_dict`), loads them and writes ``out_ckpt`` (.ckpt)
    plus its metadata sidecar (model, classes, bands, the release's normalisation and tile
    size) through :func:`segcore.checkpoint.save_checkpoint` (temporary names, then renamed).

    ``strict``: unexpected torch keys or missing network parameters raise
    :class:`CheckpointError` before anything is written (expected leftovers such as ``fc.*``
    of an ImageNet backbone never do; parameters outside a backbone import keep their
    initialisation and are listed in ``report.not_covered``). An existing ``out_ckpt`` is
    refused unless ``overwrite``. ``class_names`` go into the sidecar (default: the release's,
    e.g. background/road for D-LinkNet). Returns the :class:`ConversionReport` (``output`` set).
    """
    import mindspore as ms

    from .checkpoint import CheckpointMeta, save_checkpoint, sidecar_path
    from .models import create_model, model_info

    src = os.fspath(src_pth)
    out = Path(out_ckpt)
    if out.suffix != ".ckpt":
        out = out.with_suffix(".ckpt")
    if not overwrite and (out.exists() or sidecar_path(out).exists()):
        raise CheckpointError(f"{out}: already exists (pass overwrite=True / --overwrite)")
    info = model_info(model_name)  # UnknownModelError lists the valid names
    obj = load_torch_file(src)
    sd, nested, stripped = extract_state_dict(obj, src)
    try:
        layout = detect_layout(model_name, sd, source)
    except CheckpointError as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    head_classes = None
    if layout.head is not None and layout.head[0] in sd:
        head_classes = int(np.shape(sd[layout.head[0]])[layout.head[1]])
    if num_classes is None:
        num_classes = head_classes if head_classes is not None else info.default_classes
    kwargs = _infer_model_kwargs(model_name, layout, sd)
    net = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    net.set_train(False)
    try:
        params, report = convert_state_dict(model_name, sd, net, source=layout.name)
    except CheckpointError as exc:
        raise CheckpointError(f"{src}: {exc}") from None
    if strict:
        report.check_strict(src)
    not_loaded, _ = ms.load_param_into_net(net, params, strict_load=True)
    if not_loaded and strict and any(n in params for n in not_loaded):
        raise CheckpointError(f"{src}: MindSpore refused parameters {not_loaded[:3]}")
    meta = CheckpointMeta(model=model_name, num_classes=num_classes, in_channels=in_channels,
                          bands=tuple(range(1, in_channels + 1)) if in_channels != 3
                          else layout.bands,
                          normalization=dict(layout.normalization),
                          tile_size_px=layout.tile_size_px, stride=info.stride,
                          class_names=_class_names(class_names, layout, num_classes),
                          task=info.task,
                          model_kwargs=kwargs)
    path = save_checkpoint(net, out, meta)
    report = replace(report, nested_key=nested,
                     stripped_prefix=stripped or report.stripped_prefix,
                     num_classes=num_classes, output=str(path))
    logger.info("converted %s -> %s (%s, %d parameters)", src, path, layout.name,
                report.mapped_count)
    return report
