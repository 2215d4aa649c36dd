"""Export a network to MindIR or ONNX, with a metadata JSON beside the exported file.

``export_model(net_or_checkpoint, out_path, format="MINDIR"|"ONNX", input_size=(N, C, H, W))``
writes ``out_path`` and ``<out_path>.json`` (the checkpoint metadata plus the export details:
format, input shape, whether the batch axis is dynamic, input/output names). Both are written
under temporary names and renamed when complete; unless ``verify=False`` the exported file is
reloaded (``ms.load`` + ``nn.GraphCell`` for MindIR, onnxruntime for ONNX) and compared with the
network's own output before it is renamed into place, so a wrong file is never left behind.

The metadata file is ``<name>.json`` (``model.onnx`` -> ``model.onnx.json``), not ``<stem>.json``,
so exporting next to a checkpoint never overwrites the checkpoint's own sidecar.

MindSpore 2.8 ONNX-exporter gaps found and worked around here (all at export time only; the
network object is restored afterwards):

* ``nn.MaxPool2d(pad_mode="pad")`` (``MaxPool3DWithArgmax``) and ``nn.AvgPool2d(pad_mode="pad")``
  (``AvgPool3D``) have no converter: those cells are swapped for an explicit ``Pad`` + valid
  pooling (max pooling adds a constant ``-3e38`` border so padding never wins, average pooling
  rescales by the window count when ``count_include_pad=False``). ``ops.pad`` (``PadV3``) has no
  converter either, the old ``ops.Pad`` has.
* Bilinear resizing (``ResizeBilinearV2``, i.e. ``ops.interpolate``) has no working converter:
  ``segcore.models.layers.resize_bilinear`` is temporarily replaced in the model modules by an
  exact separable form ``A_h @ x @ A_w^T`` with constant interpolation matrices (both
  ``align_corners`` conventions). This fixes the exported spatial size.
* ``Conv``/``ConvTranspose`` ``pads`` are written in MindSpore order ``(top, bottom, left, right)``
  instead of ONNX ``(top, left, bottom, right)`` (silently wrong for asymmetric padding) and
  ``ConvTranspose`` gets a 4-d ``output_shape`` that onnxruntime rejects: the ONNX graph is
  patched afterwards (pads reordered, ``output_shape`` replaced by ``output_padding``).
* The batch axis is made symbolic after export where the graph allows it (checked by running a
  batch of two); otherwise the file keeps the exported batch size and the metadata says so.

* ENet's ``MaxPoolWithArgmaxV2`` / ``MaxUnpool2D`` (2x2, stride 2) have no converter: the pool
  returns a one-hot mask of the first maximum of every window instead of flat indices and the
  unpool multiplies a nearest 2x upsampling by that mask (all as constant-matrix products).

Operators without a converter that are not worked around raise :class:`ExportError` naming the
operator; no file is written.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import SegcoreError
from .meta import export_metadata_path, meta_as_dict, meta_get, read_export_doc

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

FORMATS = ("MINDIR", "ONNX")
_SUFFIX = {"MINDIR": ".mindir", "ONNX": ".onnx"}
#: relative error (max |a - b| / max |b|) accepted by the export self-check
VERIFY_RTOL = 1e-4

#: operators MindSpore 2.8 cannot write to ONNX that we do not work around -> what uses them
_KNOWN_GAPS = {
    "MaxPoolWithArgmaxV2": "max pooling with indices (ENet)",
    "MaxUnpool2D": "max unpooling (ENet)",
    "MaxPool3DWithArgmax": "padded max pooling",
    "AvgPool3D": "padded average pooling",
    "ResizeBilinearV2": "bilinear resize (ops.interpolate)",
    "PadV3": "ops.pad",
}


class ExportError(SegcoreError, RuntimeError):
    """A network that cannot be exported to the requested format (names the operator)."""


# ---------------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------------
def export_suffix(format: str) -> str:
    """File suffix of an export format: ``.mindir`` or ``.onnx``."""
    fmt = str(format).upper()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: mindir, onnx")
    return _SUFFIX[fmt]


def metadata_path(exported: PathLike) -> Path:
    """The metadata JSON written beside an exported file: ``<name>.json``."""
    return export_metadata_path(exported)


def read_export_metadata(exported: PathLike) -> Dict[str, Any]:
    """The metadata dict written beside ``exported`` by :func:`export_model`.

    Keys: the checkpoint metadata fields (``model``, ``num_classes``, ``bands``, ...) where known,
    plus ``export`` (``format``, ``input_shape``, ``dynamic_batch``, ``input_name``,
    ``output_name``, ``source_sha256``). Raises :class:`ExportError` naming the file when absent
    or unreadable.
    """
    return read_export_doc(exported, ExportError)


def file_sha256(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_json(path: Path, obj: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# ONNX-friendly replacements (export time only)
# ---------------------------------------------------------------------------------------------
def bilinear_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """``(n_out, n_in)`` float32 matrix of 1-d linear interpolation (the rows sum to 1).

    ``align_corners=False`` is the half-pixel convention (source ``(o + 0.5) * n_in / n_out -
    0.5`` clamped at 0), ``True`` maps the corner samples onto each other; both as PyTorch and
    MindSpore ``interpolate(mode="bilinear")`` without antialiasing.
    """
    m = np.zeros((n_out, n_in), np.float64)
    for o in range(n_out):
        if align_corners:
            src = o * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        else:
            src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(np.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[o, i0] += 1.0 - frac
        m[o, i1] += frac
    return m.astype(np.float32)


_CELLS: Dict[str, Any] = {}


def _export_cells():
    """The ONNX-friendly cells and functions (built lazily: MindSpore imported on first use)."""
    if _CELLS:
        return _CELLS
    import mindspore as ms
    from mindspore import nn, ops
    from mindspore.ops import constexpr

    @constexpr
    def _interp_mats(h, w, ho, wo, align_corners):
        return (ms.Tensor(bilinear_matrix(h, ho, align_corners)),
                ms.Tensor(np.ascontiguousarray(bilinear_matrix(w, wo, align_corners).T)))

    def resize_bilinear_matmul(x, size, align_corners=False):
        ah, awt = _interp_mats(x.shape[2], x.shape[3], size[0], size[1], align_corners)
        return ops.matmul(ops.matmul(ah, x), awt)

    @constexpr
    def _max_border(h, w, pt, pb, pl, pr):
        b = np.full((1, 1, h + pt + pb, w + pl + pr), -3.0e38, np.float32)
        b[..., pt:pt + h, pl:pl + w] = 0.0
        return ms.Tensor(b)

    @constexpr
    def _avg_rescale(h, w, kh, kw, sh, sw, pt, pb, pl, pr):
        ones = np.zeros((h + pt + pb, w + pl + pr), np.float64)
        ones[pt:pt + h, pl:pl + w] = 1.0
        ho = (h + pt + pb - kh) // sh + 1
        wo = (w + pl + pr - kw) // sw + 1
        cnt = np.empty((ho, wo), np.float64)
        for i in range(ho):
            for j in range(wo):
                cnt[i, j] = ones[i * sh:i * sh + kh, j * sw:j * sw + kw].sum()
        return ms.Tensor((kh * kw / cnt).astype(np.float32)[None, None])

    class PaddedMaxPool(nn.Cell):
        """``MaxPool2d(pad_mode="pad")`` as Pad(0) + constant -3e38 border + valid MaxPool."""

        def __init__(self, k, s, pads):
            super().__init__()
            pt, pb, pl, pr = pads
            self.pads = (pt, pb, pl, pr)
            self.pad = ops.Pad(((0, 0), (0, 0), (pt, pb), (pl, pr)))
            self.pool = nn.MaxPool2d(kernel_size=k, stride=s, pad_mode="valid")

        def construct(self, x):
            pt, pb, pl, pr = self.pads
            return self.pool(self.pad(x) + _max_border(x.shape[2], x.shape[3], pt, pb, pl, pr))

    class PaddedAvgPool(nn.Cell):
        """``AvgPool2d(pad_mode="pad")`` as Pad(0) + valid AvgPool (+ count rescale)."""

        def __init__(self, k, s, pads, count_include_pad):
            super().__init__()
            pt, pb, pl, pr = pads
            self.pads = (pt, pb, pl, pr)
            self.k = k
            self.s = s
            self.include = count_include_pad
            self.pad = ops.Pad(((0, 0), (0, 0), (pt, pb), (pl, pr)))
            self.pool = nn.AvgPool2d(kernel_size=k, stride=s, pad_mode="valid")

        def construct(self, x):
            out = self.pool(self.pad(x))
            if not self.include:
                pt, pb, pl, pr = self.pads
                out = out * _avg_rescale(x.shape[2], x.shape[3], self.k[0], self.k[1],
                                         self.s[0], self.s[1], pt, pb, pl, pr)
            return out

    @constexpr
    def _up2_mats(h, w):
        """Constant matrices: nearest 2x upsampling and the four interleaving scatters."""
        uh = np.zeros((2 * h, h), np.float32)
        uh[np.arange(2 * h), np.arange(2 * h) // 2] = 1.0
        uw = np.zeros((2 * w, w), np.float32)
        uw[np.arange(2 * w), np.arange(2 * w) // 2] = 1.0
        eh = [np.zeros((2 * h, h), np.float32) for _ in range(2)]
        ew = [np.zeros((w, 2 * w), np.float32) for _ in range(2)]
        for d in range(2):
            eh[d][2 * np.arange(h) + d, np.arange(h)] = 1.0
            ew[d][np.arange(w), 2 * np.arange(w) + d] = 1.0
        return (ms.Tensor(uh), ms.Tensor(np.ascontiguousarray(uw.T)), ms.Tensor(eh[0]),
                ms.Tensor(eh[1]), ms.Tensor(ew[0]), ms.Tensor(ew[1]))

    class MaxPool2x2WithMask(nn.Cell):
        """``MaxPoolWithArgmaxV2(2, 2)`` returning, instead of flat indices, a float one-hot
        mask ``(N, C, H, W)`` of the first maximum of every 2x2 window (row-major, as the
        argmax); consumed by :class:`Unpool2x2WithMask`."""

        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(kernel_size=2, stride=2, pad_mode="valid")

        def construct(self, x):
            m = self.pool(x)
            h, w = m.shape[2], m.shape[3]
            uh, uwt, eh0, eh1, ew0, ew1 = _up2_mats(h, w)
            m_up = ops.matmul(ops.matmul(uh, m), uwt)
            eq = ops.cast(ops.equal(x, m_up), x.dtype)
            e00 = eq[:, :, 0::2, 0::2]
            e01 = eq[:, :, 0::2, 1::2]
            e10 = eq[:, :, 1::2, 0::2]
            e11 = eq[:, :, 1::2, 1::2]
            s01 = e01 * (1.0 - e00)
            s10 = e10 * (1.0 - e00) * (1.0 - e01)
            s11 = e11 * (1.0 - e00) * (1.0 - e01) * (1.0 - e10)
            mask = (ops.matmul(ops.matmul(eh0, e00), ew0) + ops.matmul(ops.matmul(eh0, s01), ew1)
                    + ops.matmul(ops.matmul(eh1, s10), ew0)
                    + ops.matmul(ops.matmul(eh1, s11), ew1))
            return m, mask

    class Unpool2x2WithMask(nn.Cell):
        """``MaxUnpool2D(2, 2)`` from the mask of :class:`MaxPool2x2WithMask`: nearest 2x
        upsampling times the one-hot mask."""

        def construct(self, y, mask):
            uh, uwt, _, _, _, _ = _up2_mats(y.shape[2], y.shape[3])
            return ops.matmul(ops.matmul(uh, y), uwt) * mask

    _CELLS.update(resize=resize_bilinear_matmul, PaddedMaxPool=PaddedMaxPool,
                  PaddedAvgPool=PaddedAvgPool, MaxPool2x2WithMask=MaxPool2x2WithMask,
                  Unpool2x2WithMask=Unpool2x2WithMask)
    return _CELLS


def _replacement_for(cell) -> Optional[Any]:
    """An ONNX-exportable equivalent of a padded pooling cell, or ``None``."""
    from mindspore import nn

    cells = _export_cells()
    if isinstance(cell, nn.MaxPool2d) and getattr(cell, "use_pad", False):
        a = cell.max_pool.attrs
        if (getattr(cell, "return_indices", False) or a.get("ceil_mode")
                or tuple(a.get("dilation", (1, 1, 1)))[1:] != (1, 1)):
            return None
        k, s, p = tuple(a["ksize"])[1:], tuple(a["strides"])[1:], tuple(a["pads"])[1:]
        return cells["PaddedMaxPool"](k, s, (p[0], p[0], p[1], p[1]))
    if isinstance(cell, nn.AvgPool2d) and getattr(cell, "is_expand", False):
        a = cell.avg_pool.attrs
        if a.get("ceil_mode") or a.get("divisor_override", 0):
            return None
        k, s = tuple(a["kernel_size"])[-2:], tuple(a["strides"])[-2:]
        p = tuple(a["pad"])[-4:]
        return cells["PaddedAvgPool"](k, s, p, bool(a.get("count_include_pad", True)))
    return None


_PATCH_LOCK = threading.RLock()


def _is_2x2(prim, key: str) -> bool:
    a = prim.attrs
    return (tuple(a.get(key, ()))[-2:] == (2, 2) and tuple(a.get("strides", ()))[-2:] == (2, 2)
            and not a.get("ceil_mode", False) and tuple(a.get("dilation", (1, 1)))[-2:] == (1, 1)
            and tuple(a.get("pads", (0, 0)))[-2:] == (0, 0))


def _swap_argmax_pools(net, cells, notes: List[str]) -> List[Tuple[Any, str, Any]]:
    """Replace 2x2 ``MaxPoolWithArgmaxV2`` / ``MaxUnpool2D`` primitive attributes (ENet) by the
    mask-based cells, only when every such primitive in ``net`` is 2x2/stride 2 and both kinds
    are present (the mask replaces the indices between them)."""
    from mindspore import ops

    found = []
    for _name, cell in net.cells_and_names():
        for attr, prim in list(getattr(cell, "_primitives", {}).items()):
            if isinstance(prim, ops.MaxPoolWithArgmaxV2):
                found.append((cell, attr, prim, "pool", _is_2x2(prim, "kernel_size")))
            elif isinstance(prim, ops.MaxUnpool2D):
                ok = _is_2x2(prim, "ksize") and not tuple(prim.attrs.get("output_shape", ()))
                found.append((cell, attr, prim, "unpool", ok))
    kinds = {f[3] for f in found}
    if not found or kinds != {"pool", "unpool"} or not all(f[4] for f in found):
        return []
    swapped = []
    for cell, attr, prim, kind, _ in found:
        rep = cells["MaxPool2x2WithMask"]() if kind == "pool" else cells["Unpool2x2WithMask"]()
        cell._primitives.pop(attr, None)
        object.__delattr__(cell, attr)
        setattr(cell, attr, rep)
        swapped.append((cell, attr, prim))
    notes.append(f"{len(swapped)} MaxPoolWithArgmaxV2/MaxUnpool2D -> one-hot mask pooling/"
                 "unpooling")
    return swapped


@contextlib.contextmanager
def onnx_compatible(net) -> Iterator[List[str]]:
    """Within the block ``net`` uses ONNX-exportable equivalents (see the module docstring).

    Yields the list of rewrites done (for the log); everything is restored on exit.
    """
    from mindspore import nn

    cells = _export_cells()
    swapped: List[Tuple[Any, str, Any]] = []
    notes: List[str] = []
    with _PATCH_LOCK:
        for name, cell in list(net.cells_and_names()):
            for child_name, child in list(cell.name_cells().items()):
                rep = _replacement_for(child)
                if rep is not None:
                    swapped.append((cell, child_name, child))
                    if isinstance(cell, (nn.SequentialCell, nn.CellList)):
                        cell[int(child_name)] = rep
                    else:
                        setattr(cell, child_name, rep)
                    notes.append(f"{name + '.' if name else ''}{child_name}: "
                                 f"{type(child).__name__}(pad) -> Pad + valid pooling")
        prims = _swap_argmax_pools(net, cells, notes)
        patched: List[Tuple[Any, Any]] = []
        try:
            layers = sys.modules.get("segcore.models.layers")
            original = getattr(layers, "resize_bilinear", None) if layers else None
            if original is not None:
                for mod_name, mod in list(sys.modules.items()):
                    if (mod_name.startswith("segcore.models") and mod is not None
                            and getattr(mod, "resize_bilinear", None) is original):
                        patched.append((mod, original))
                        mod.resize_bilinear = cells["resize"]
                if patched:
                    notes.append("resize_bilinear -> constant-matrix matmul (if used)")
            yield notes
        finally:
            for mod, original in patched:
                mod.resize_bilinear = original
            for owner, attr, prim in reversed(prims):
                delattr(owner, attr)
                setattr(owner, attr, prim)
            for cell, child_name, child in reversed(swapped):
                if isinstance(cell, (nn.SequentialCell, nn.CellList)):
                    cell[int(child_name)] = child
                else:
                    setattr(cell, child_name, child)


# ---------------------------------------------------------------------------------------------
# ONNX graph fixes
# ---------------------------------------------------------------------------------------------
def _fix_onnx_graph(model) -> int:
    """Reorder MindSpore-order ``pads`` of Conv/ConvTranspose and replace ConvTranspose's 4-d
    ``output_shape`` by ``output_padding``. Returns the number of nodes changed."""
    import onnx
    from onnx import helper

    changed = 0
    declared: Dict[str, List[int]] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose"):
            continue
        for attr in list(node.attribute):
            if attr.name == "pads" and len(attr.ints) == 4:
                t, b, left, r = attr.ints
                if (t, b, left, r) != (t, left, b, r):
                    del attr.ints[:]
                    attr.ints.extend([t, left, b, r])
                    changed += 1
            if node.op_type == "ConvTranspose" and attr.name == "output_shape":
                declared[node.output[0]] = list(attr.ints)[-2:]
                node.attribute.remove(attr)
                changed += 1
    if declared:
        inferred = onnx.shape_inference.infer_shapes(model)
        shapes = {}
        for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in vi.type.tensor_type.shape.dim]
            shapes[vi.name] = dims
        for node in model.graph.node:
            if node.op_type != "ConvTranspose" or node.output[0] not in declared:
                continue
            want = declared[node.output[0]]
            got = shapes.get(node.output[0])
            if not got or None in got[-2:]:
                raise ExportError(f"ConvTranspose {node.name}: cannot infer its output size")
            extra = [w - g for w, g in zip(want, got[-2:])]
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [1, 1])
            if any(e < 0 or e >= s for e, s in zip(extra, strides)):
                raise ExportError(f"ConvTranspose {node.name}: output {got[-2:]} cannot be made "
                                  f"{want} with output_padding")
            if any(extra):
                node.attribute.append(helper.make_attribute("output_padding", extra))
    # stale shapes from the exporter would clash with the fixed nodes
    del model.graph.value_info[:]
    return changed


def _make_batch_dynamic(model) -> Any:
    """A copy of ``model`` whose input/output batch axis is the symbol ``N`` and whose Reshape
    targets copy the batch from their input (``0``). Caller must verify it."""
    import copy

    from onnx import numpy_helper

    m = copy.deepcopy(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    inits = {t.name: t for t in m.graph.initializer}
    consts = {}
    for node in m.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = a
    batch = model.graph.input[0].type.tensor_type.shape.dim[0].dim_value
    for node in m.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        name = node.input[1]
        if name in inits:
            arr = numpy_helper.to_array(inits[name]).copy()
            if arr.ndim == 1 and arr.size and arr[0] == batch:
                arr[0] = 0
                inits[name].CopyFrom(numpy_helper.from_array(arr, name))
        elif name in consts:
            arr = numpy_helper.to_array(consts[name].t).copy()
            if arr.ndim == 1 and arr.size and arr[0] == batch:
                arr[0] = 0
                consts[name].t.CopyFrom(numpy_helper.from_array(arr, consts[name].t.name))
    return m


def _unsupported_op(message: str) -> Optional[str]:
    for pat in (r"Can not find key (\w+) in convert map", r"the (\w+) operator in your model is "
                r"not support", r"Exporting (\w+) operator is not yet supported"):
        m = re.search(pat, message)
        if m:
            return m.group(1)
    return None


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
def _resolve_net(model: Any) -> Tuple[Any, Any, Optional[Path]]:
    """``(net, meta, checkpoint_path)`` from a network or a checkpoint path."""
    if isinstance(model, (str, os.PathLike)):
        from .models import load_model

        net, meta = load_model(model)
        return net, meta, Path(model)
    return model, getattr(model, "roadseg_meta", None), None


def _default_input_size(net, meta, input_size) -> Tuple[int, int, int, int]:
    if input_size is not None:
        size = tuple(int(v) for v in input_size)
        if len(size) == 2:
            size = (1, int(getattr(meta, "in_channels", 3) if meta is not None else 3)) + size
        if len(size) != 4 or min(size) < 1:
            raise ValueError(f"input_size must be (N, C, H, W) or (H, W), got {input_size}")
        return size  # type: ignore[return-value]
    if meta is None:
        raise ValueError("input_size is required when exporting a network without metadata")
    side = int(getattr(meta, "tile_size_px", 512))
    stride = int(getattr(meta, "stride", 1)) or 1
    side = -(-side // stride) * stride
    return (1, int(meta.in_channels), side, side)


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / max(float(np.abs(b).max()), 1e-12))


def _forward(net, x: np.ndarray) -> np.ndarray:
    import mindspore as ms

    out = net(ms.Tensor(x))
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out.asnumpy()


def export_model(model: Any, out_path: PathLike, format: str = "MINDIR",
                 input_size: Optional[Sequence[int]] = None, meta: Any = None,
                 dynamic_batch: bool = True, verify: bool = True,
                 overwrite: bool = True) -> Path:
    """Export ``model`` (an ``nn.Cell`` or a checkpoint path) to ``out_path``.

    Args:
        model: network (put in inference mode here) or ``.ckpt`` with its JSON sidecar.
        out_path: destination; the suffix ``.mindir`` / ``.onnx`` is added when missing.
        format: ``"MINDIR"`` or ``"ONNX"`` (case-insensitive).
        input_size: ``(N, C, H, W)`` or ``(H, W)``; default ``(1, in_channels, tile, tile)``
            from the checkpoint metadata (tile rounded up to the stride).
        meta: checkpoint metadata for a bare network (a checkpoint brings its own).
        dynamic_batch: make the batch axis dynamic (MindIR: exported with ``None`` batch; ONNX:
            symbolic ``N`` after a successful two-sample check); falls back to the fixed batch.
        verify: reload the file and require relative error < :data:`VERIFY_RTOL` against the
            network on a random input before renaming it into place.
        overwrite: replace an existing file at ``out_path`` (else :class:`FileExistsError`).

    Returns the path written. Raises :class:`ExportError` (naming the unsupported operator)
    when MindSpore cannot export the network, and leaves no file behind.
    """
    import mindspore as ms

    fmt = str(format).upper()
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: mindir, onnx")
    net, ck_meta, ck_path = _resolve_net(model)
    meta = ck_meta if ck_meta is not None else meta
    net.set_train(False)
    n, c, h, w = _default_input_size(net, meta, input_size)
    out = Path(out_path)
    if out.suffix.lower() != _SUFFIX[fmt]:
        out = out.with_name(out.name + _SUFFIX[fmt])
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (use overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    name = getattr(meta, "model", None) or type(net).__name__

    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.stem}.export-", dir=str(out.parent)))
    try:
        info: Dict[str, Any] = {"format": fmt, "input_shape": [n, c, h, w],
                                "dynamic_batch": False, "input_name": "x",
                                "output_name": None, "mindspore_version": ms.__version__}
        if fmt == "MINDIR":
            written = _export_mindir(net, tmpdir, x, dynamic_batch, info)
        else:
            written = _export_onnx(net, tmpdir, x, dynamic_batch, info, name)
        if verify:
            _verify(net, written, fmt, x, info, name)
        doc = meta_as_dict(meta)
        if ck_path is not None:
            doc["source_checkpoint"] = ck_path.name
            info["source_sha256"] = file_sha256(ck_path)
        info.setdefault("stride", _network_stride(meta))
        info.setdefault("precision", "fp32")
        doc["export"] = info
        _make_readable(written)
        os.replace(written, out)
        _atomic_write_json(metadata_path(out), doc)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    logger.info("exported %s to %s (%s, input %s, dynamic batch %s)", name, out, fmt,
                info["input_shape"], info["dynamic_batch"])
    return out


def _network_stride(meta: Any) -> Optional[int]:
    """The input-size multiple of the exported network (registry, else metadata), recorded so
    that ONNX inference needs neither the registry nor MindSpore."""
    name = meta_get(meta, "model")
    try:
        from .models import model_info

        return int(model_info(str(name)).stride)
    except Exception:  # noqa: BLE001  a bare network without metadata / unregistered name
        stride = meta_get(meta, "stride")
        return int(stride) if stride else None


def _make_readable(path: Path) -> None:
    """Give an exported file the usual mode (0666 less the umask): MindSpore leaves its files
    owner-read-only, which locks other users out of a shared cache."""
    mask = 0o022
    try:  # read without os.umask(), which would change it for every thread for a moment
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    mask = int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    os.chmod(path, 0o666 & ~mask)


def _export_mindir(net, tmpdir: Path, x: np.ndarray, dynamic_batch: bool,
                   info: Dict[str, Any]) -> Path:
    import mindspore as ms
    from mindspore import nn

    base = tmpdir / "model"
    path = base.with_suffix(".mindir")
    if dynamic_batch:
        try:
            ms.export(net, ms.Tensor(shape=[None] + list(x.shape[1:]), dtype=ms.float32),
                      file_name=str(base), file_format="MINDIR")
            x2 = np.concatenate([x[:1], x[:1][..., ::-1].copy()], 0)
            got = nn.GraphCell(ms.load(str(path)))(ms.Tensor(x2))
            got = (got[0] if isinstance(got, (tuple, list)) else got).asnumpy()
            want = _forward(net, x2)
            if got.shape == want.shape and _rel_err(got, want) < VERIFY_RTOL:
                info["dynamic_batch"] = True
                return path
            logger.info("MindIR with dynamic batch gives other results; exporting batch %d",
                        x.shape[0])
        except Exception as exc:  # noqa: BLE001  a shape-dependent op: retry static
            logger.info("MindIR with dynamic batch failed (%s); exporting with batch %d",
                        _first_line(exc), x.shape[0])
        if path.exists():
            path.unlink()
    try:
        ms.export(net, ms.Tensor(x), file_name=str(base), file_format="MINDIR")
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"MindIR export failed: {_first_line(exc)}") from exc
    return path


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip()
    return s.splitlines()[0] if s else type(exc).__name__


def _export_onnx(net, tmpdir: Path, x: np.ndarray, dynamic_batch: bool, info: Dict[str, Any],
                 name: str) -> Path:
    import mindspore as ms
    import onnx

    base = tmpdir / "model"
    with onnx_compatible(net) as notes:
        try:
            ms.export(net, ms.Tensor(x), file_name=str(base), file_format="ONNX")
        except Exception as exc:  # noqa: BLE001  MindSpore raises RuntimeError/TypeError
            op = _unsupported_op(str(exc))
            if op is not None:
                what = _KNOWN_GAPS.get(op, "")
                raise ExportError(
                    f"{name}: cannot export to ONNX: MindSpore {ms.__version__} has no ONNX "
                    f"converter for operator {op}" + (f" ({what})" if what else "")
                    + "; export to MindIR instead") from exc
            raise ExportError(f"{name}: ONNX export failed: {_first_line(exc)}") from exc
    for note in notes:
        logger.debug("ONNX export rewrite: %s", note)
    path = base.with_suffix(".onnx")
    model = onnx.load(str(path))
    _fix_onnx_graph(model)
    info["input_name"] = model.graph.input[0].name
    info["output_name"] = model.graph.output[0].name
    info["opset"] = int(model.opset_import[0].version) if model.opset_import else None
    info["rewrites"] = list(notes)
    model.graph.name = str(name)  # MindSpore numbers graphs per process: same file every time
    # MindSpore writes its file owner-read-only: save the patched graph under a new name and
    # rename it over (writing into that file fails for every user but root)
    fixed = tmpdir / "model_fixed.onnx"
    onnx.save(model, str(fixed))
    os.replace(fixed, path)
    if dynamic_batch:
        dyn = _make_batch_dynamic(model)
        dyn_path = tmpdir / "model_dynamic.onnx"
        onnx.save(dyn, str(dyn_path))
        try:
            x2 = np.concatenate([x[:1], x[:1][..., ::-1].copy()], 0)
            got = _run_onnx(dyn_path, x2, quiet=True)
            want = _forward(net, x2)
            if got.shape == want.shape and _rel_err(got, want) < VERIFY_RTOL:
                os.replace(dyn_path, path)
                info["dynamic_batch"] = True
            else:
                logger.info("%s: ONNX graph keeps a fixed batch of %d", name, x.shape[0])
        except Exception as exc:  # noqa: BLE001  onnxruntime rejects the symbolic batch
            logger.info("%s: ONNX dynamic batch not possible (%s); batch fixed at %d", name,
                        _first_line(exc), x.shape[0])
    return path


def _run_onnx(path: Path, x: np.ndarray, quiet: bool = False) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4 if quiet else 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _verify(net, path: Path, fmt: str, x: np.ndarray, info: Dict[str, Any], name: str) -> None:
    want = _forward(net, x)
    try:
        if fmt == "ONNX":
            got = _run_onnx(path, x)
        else:
            import mindspore as ms
            from mindspore import nn

            got = nn.GraphCell(ms.load(str(path)))(ms.Tensor(x))
            if isinstance(got, (tuple, list)):
                got = got[0]
            got = got.asnumpy()
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"{name}: the exported {fmt} file does not run: {_first_line(exc)}"
                          ) from exc
    if got.shape != want.shape:
        raise ExportError(f"{name}: exported {fmt} output shape {got.shape} differs from the "
                          f"network's {want.shape}")
    err = _rel_err(got, want)
    info["verified_rel_error"] = err
    if not err < VERIFY_RTOL:
        raise ExportError(f"{name}: exported {fmt} output differs from the network "
                          f"(relative error {err:.2e}); file not written")


__all__ = ["export_model", "export_suffix", "read_export_metadata", "metadata_path",
           "onnx_compatible", "bilinear_matrix", "file_sha256", "ExportError", "FORMATS",
           "VERIFY_RTOL"]
