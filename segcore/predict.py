"""Inference backends behind one small protocol, and the normalisation stored in checkpoints.

``Predictor.predict_batch(batch)``: ``batch`` float32 ``(N, C, H, W)``, already normalised (see
:func:`normalization_from_meta`); returns float32 probabilities ``(N, K, H, W)`` at the input size
(sigmoid for one-output road models, softmax over ``K`` otherwise; a classifier returns
``(N, K)``). Inputs whose sides are not multiples of the network stride are padded on the bottom
and right (reflection where possible, else zeros) and the output is cropped back. A predictor is
also callable, so it can be handed to ``gis`` as the ``predict_fn``.

Backends:

* :class:`MindSporePredictor` - a ``nn.Cell`` or a checkpoint, inference mode, any input size;
  optionally compiled with ``ms.jit``.
* :class:`MindIRPredictor` - an exported ``.mindir`` (``nn.GraphCell``), fixed input shape.
* :class:`OnnxPredictor` - an ``.onnx`` exported by :func:`segcore.export.export_model`, run by
  onnxruntime on the CPU with one intra-op thread per core. The exported graph has a fixed
  ``H x W`` (smaller inputs are padded up to it) and usually a dynamic batch.

:func:`load_predictor` picks one: on the CPU ``auto`` runs ONNX Runtime (about 3x faster than
MindSpore's CPU kernels here), exporting the checkpoint once into a cache folder keyed by the
checkpoint's SHA-256 (next to it, or per user where that folder is read-only; see
:mod:`segcore.onnx_infer`); on GPU/Ascend it runs MindSpore. Once the export is cached, CPU
inference never imports MindSpore.

:func:`normalization_from_meta` needs numpy only (the gis pipeline calls it).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import CheckpointError, ConfigError, SegcoreError
from .meta import meta_from_dict as _meta_from_dict
from .meta import meta_get
from .onnx_infer import OnnxPredictor as _LeanOnnxPredictor
from .onnx_infer import (CACHE_DIRNAME, PRECISIONS, _check_batch, available_cores,  # noqa: F401
                         run_in_fixed_batches, checkpoint_key, cpu_has_int8_dot,
                         logits_to_probabilities, onnx_cache_path, pad_to_multiple,
                         remove_cached, writable_cache_folder)
from .preprocess import preprocessor_from_meta

try:  # Python >= 3.8
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
BACKENDS = ("auto", "mindspore", "onnx")


# ---------------------------------------------------------------------------------------------
# normalisation (numpy only)
# ---------------------------------------------------------------------------------------------
def normalization_from_meta(meta: Any, stretch: Optional[Tuple[Sequence[float], Sequence[float]]]
                            = None) -> Callable[[np.ndarray], np.ndarray]:
    """The function turning raw tiles into network input, from checkpoint metadata: the
    :class:`segcore.preprocess.Preprocessor` of ``meta`` (see :mod:`segcore.preprocess` for the
    methods). ``stretch`` are the whole-scene ``(lo, hi)`` limits of a ``percentile`` model."""
    return preprocessor_from_meta(meta, stretch)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
@runtime_checkable
class Predictor(Protocol):
    """What every backend provides (see the module docstring)."""

    meta: Any
    num_classes: int
    stride: int

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``(N, C, H, W)`` normalised -> float32 probabilities ``(N, K, H, W)``."""
        ...


class _Base:
    meta: Any = None
    num_classes: int = 1
    stride: int = 1
    in_channels: Optional[int] = None
    task: str = "segmentation"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_batch(batch)

    @property
    def normalize(self) -> Callable[[np.ndarray], np.ndarray]:
        """:func:`normalization_from_meta` of this predictor's metadata."""
        return normalization_from_meta(self.meta)

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``(N, C, H, W)`` normalised -> float32 probabilities ``(N, K, H, W)`` (``(N,
        K)`` for a classifier)."""
        return logits_to_probabilities(self.predict_logits(batch))


def _stride_of(meta: Any, model_name: Optional[str]) -> int:
    stride = meta_get(meta, "stride", None)
    if model_name:
        try:
            from .models import model_info

            stride = model_info(model_name).stride
        except Exception:  # noqa: BLE001  unknown/unregistered: keep the metadata's
            pass
    return int(stride or 1)


class MindSporePredictor(_Base):
    """MindSpore inference of a network or checkpoint.

    Args:
        model: an ``nn.Cell`` or a ``.ckpt`` path (with its JSON sidecar).
        device: ``cpu``, ``gpu`` or ``ascend`` (non-CPU devices set the MindSpore context).
        meta: metadata for a bare network (``model``, ``num_classes``, ``stride``, ...); a
            checkpoint brings its own.
        jit: compile the forward pass with ``mindspore.jit`` (graph mode for this call path).
        stride: input-size multiple (default: from the registry / metadata).
    """

    def __init__(self, model: Any, device: str = "cpu", meta: Any = None, jit: bool = False,
                 stride: Optional[int] = None) -> None:
        import mindspore as ms

        if device.lower() != "cpu":
            from .device import set_device

            set_device(device)
        if isinstance(model, (str, os.PathLike)):
            from .models import load_model

            net, meta = load_model(model)
            self.source = str(model)
        else:
            net = model
            self.source = type(net).__name__
        net.set_train(False)
        self.net = net
        self.meta = meta
        name = meta_get(meta, "model", None)
        self.stride = int(stride) if stride is not None else _stride_of(meta, name)
        self.num_classes = int(meta_get(meta, "num_classes", 0) or 0)
        self.in_channels = meta_get(meta, "in_channels", None)
        self.task = str(meta_get(meta, "task", "segmentation"))
        self._ms = ms
        self._fn = ms.jit(self.net.construct) if jit else self.net

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw network output: ``(N, K, H, W)`` logits at the input size (``(N, K)`` for a
        classifier)."""
        x = _check_batch(batch, self.in_channels, self.source)
        if self.task == "classification":
            out = self._fn(self._ms.Tensor(x))
            out = out[0] if isinstance(out, (tuple, list)) else out
            return out.asnumpy().astype(np.float32, copy=False)
        xp, (h, w) = pad_to_multiple(x, self.stride)
        out = self._fn(self._ms.Tensor(np.ascontiguousarray(xp)))
        out = out[0] if isinstance(out, (tuple, list)) else out
        y = out.asnumpy()
        if y.ndim != 4 or y.shape[2:] != xp.shape[2:]:
            raise SegcoreError(f"{self.source}: network returned shape {y.shape} for input "
                               f"{xp.shape}")
        if not self.num_classes:
            self.num_classes = int(y.shape[1])
        return np.ascontiguousarray(y[:, :, :h, :w], dtype=np.float32)


class OnnxPredictor(_LeanOnnxPredictor, _Base):
    """:class:`segcore.onnx_infer.OnnxPredictor` (ONNX Runtime on the CPU, no MindSpore) with the
    :attr:`normalize` helper of the other backends."""


class MindIRPredictor(OnnxPredictor):
    """MindSpore inference of an exported ``.mindir`` (``ms.load`` + ``nn.GraphCell``).

    The input shape recorded in ``<file>.json`` is fixed (a dynamic batch where the export
    made one); smaller inputs are padded up to it and cropped back, as for ONNX.
    """

    def __init__(self, mindir_path: PathLike, meta: Any = None, device: str = "cpu") -> None:
        import mindspore as ms
        from mindspore import nn

        from .export import read_export_metadata

        if device.lower() != "cpu":
            from .device import set_device

            set_device(device)
        path = Path(mindir_path)
        if not path.exists():
            raise CheckpointError(f"{path}: MindIR file not found")
        doc = read_export_metadata(path)
        info = dict(doc.get("export", {}))
        self.meta = meta if meta is not None else _meta_from_dict(doc)
        self.export_info = info
        self.source = str(path)
        try:
            self.cell = nn.GraphCell(ms.load(str(path)))
        except Exception as exc:  # noqa: BLE001  MindSpore raises RuntimeError/ValueError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a loadable MindIR file ({first})") from exc
        shape = [int(v) for v in info.get("input_shape", [1, 3, 0, 0])]
        self.fixed_batch = None if info.get("dynamic_batch") else shape[0]
        self.in_channels = shape[1]
        self.fixed_hw = (shape[2], shape[3]) if shape[2] and shape[3] else None
        self.task = str(meta_get(self.meta, "task", "segmentation"))
        self.stride = _stride_of(self.meta, meta_get(self.meta, "model", None))
        self.num_classes = int(meta_get(self.meta, "num_classes", 0) or 0)
        self._ms = ms

    def _run(self, x: np.ndarray) -> np.ndarray:
        def run(chunk: np.ndarray) -> np.ndarray:
            out = self.cell(self._ms.Tensor(chunk))
            return (out[0] if isinstance(out, (tuple, list)) else out).asnumpy()

        return run_in_fixed_batches(run, x, self.fixed_batch)


# ---------------------------------------------------------------------------------------------
# load_predictor
# ---------------------------------------------------------------------------------------------
def concurrent_call_threads() -> int:
    """ONNX Runtime intra-op threads per call for a caller that runs calls concurrently (the
    tiling pipeline): half the cores, at least one, so two calls share the CPU."""
    return max(1, available_cores() // 2)


def _cached_onnx_predictor(path: Path, input_hw: Tuple[int, int], cache_dir: Optional[PathLike],
                           precision: str, key: str, meta: Any, threads: Optional[int]
                           ) -> Optional["OnnxPredictor"]:
    """An :class:`OnnxPredictor` of a valid cached export, or ``None``. A cached file that does
    not load is removed where this user may (so it is rebuilt), else skipped with a warning
    naming the file to delete."""
    from .onnx_infer import cache_folders, cache_name, read_export_sidecar

    name = cache_name(path, input_hw, precision, key)
    for folder in cache_folders(path, cache_dir):
        cand = folder / name
        if not cand.exists():
            continue
        try:
            read_export_sidecar(cand)  # a file without its metadata is as broken as a bad one
            return OnnxPredictor(cand, meta=meta, threads=threads)
        except CheckpointError as exc:
            if remove_cached(cand):
                logger.warning("%s; removed the broken cache file, it is rebuilt", exc)
            else:
                logger.warning("%s; delete %s and %s.json to rebuild it", exc, cand, cand.name)
    return None


def _export_to_cache(path: Path, meta: Any, input_hw: Tuple[int, int], folder: Path,
                     key: str) -> Path:
    from .export import export_model

    out = folder / _cache_name(path, input_hw, "fp32", key)
    logger.info("exporting %s to ONNX for CPU inference: %s", path, out)
    return export_model(path, out, format="ONNX",
                        input_size=(1, int(meta.in_channels)) + tuple(input_hw))


def _cache_name(path: Path, input_hw: Tuple[int, int], precision: str, key: str) -> str:
    from .onnx_infer import cache_name

    return cache_name(path, input_hw, precision, key)


def resolve_precision(precision: str, int8_available: bool) -> str:
    """``fp32``/``int8`` as asked; ``auto``: int8 where an int8 network exists and this CPU has
    int8 dot-product instructions (VNNI/AMX), else fp32."""
    p = str(precision or "fp32").lower()
    if p not in PRECISIONS + ("auto",):
        raise ConfigError(f"unknown precision {precision!r}; valid: auto, fp32, int8")
    if p == "auto":
        return "int8" if int8_available and cpu_has_int8_dot() else "fp32"
    return p


def load_predictor(source: PathLike, backend: str = "auto", device: str = "cpu",
                   input_hw: Optional[Tuple[int, int]] = None,
                   cache_dir: Optional[PathLike] = None, jit: bool = False,
                   threads: Optional[int] = None, precision: str = "fp32",
                   calibration: Optional[Callable[..., Any]] = None) -> _Base:
    """A predictor for a checkpoint (``.ckpt`` + sidecar) or an exported ``.onnx``/``.mindir``.

    Args:
        source: checkpoint, exported ``.onnx`` or exported ``.mindir`` path.
        backend: ``auto`` (ONNX Runtime on the CPU, MindSpore on GPU/Ascend), ``mindspore`` or
            ``onnx``.
        device: ``cpu``, ``gpu`` or ``ascend``.
        input_hw: tile size the ONNX export is made for (default: the checkpoint's
            ``tile_size_px`` rounded up to the metadata's stride).
        cache_dir: where ONNX exports of checkpoints are cached (default: a ``.roadseg-cache``
            folder next to the checkpoint, then ``$XDG_CACHE_HOME/roadseg/onnx``; see
            :mod:`segcore.onnx_infer`).
        jit: MindSpore backend: compile with ``ms.jit``.
        threads: ONNX Runtime intra-op threads per call (default: all cores).
        precision: ONNX on the CPU: ``fp32``, ``int8`` or ``auto`` (:func:`resolve_precision`).
        calibration: for ``int8`` without a cached int8 network: ``calibration(meta, (H, W))``
            returns float32 ``(N, C, H, W)`` batches of normalised real tiles for
            :func:`segcore.quantize.quantize_onnx`; without it a missing int8 network is an
            error naming ``roadseg export --precision int8``.

    With a valid cached export, CPU inference never imports MindSpore. With ``backend="auto"``
    a checkpoint whose network cannot be exported to ONNX (e.g. ENet) falls back to MindSpore
    with a warning; ``backend="onnx"`` raises the export error instead.
    """
    backend = backend.lower()
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix.lower() == ".onnx":
        if backend == "mindspore":
            raise ConfigError(f"{path}: an ONNX file needs backend onnx or auto")
        if device.lower() != "cpu":
            logger.warning("%s: ONNX models run on the CPU (device %s ignored)", path, device)
        return OnnxPredictor(path, threads=threads)
    if path.suffix.lower() == ".mindir":
        if backend == "onnx":
            raise ConfigError(f"{path}: a MindIR file needs backend mindspore or auto")
        return MindIRPredictor(path, device=device)
    use_onnx = backend == "onnx" or (backend == "auto" and device.lower() == "cpu")
    if not use_onnx:
        return MindSporePredictor(path, device=device, jit=jit)

    from .meta import read_metadata

    meta = read_metadata(path)
    if input_hw is None:  # the metadata's stride: the registry would import MindSpore
        stride = max(int(meta.stride or 1), 1)
        side = -(-int(meta.tile_size_px) // stride) * stride
        input_hw = (side, side)
    input_hw = (int(input_hw[0]), int(input_hw[1]))
    key = checkpoint_key(path)
    want = str(precision or "fp32").lower()
    if want in ("auto", "int8"):
        int8 = _cached_onnx_predictor(path, input_hw, cache_dir, "int8", key, meta, threads)
        if resolve_precision(want, int8 is not None) == "int8":
            if int8 is not None:
                return int8
            return _build_int8(path, meta, input_hw, cache_dir, key, threads, calibration,
                               backend)
    else:
        resolve_precision(want, False)  # validates the name
    cached = _cached_onnx_predictor(path, input_hw, cache_dir, "fp32", key, meta, threads)
    if cached is not None:
        return cached
    folder = writable_cache_folder(path, cache_dir)
    if folder is None:
        if backend == "onnx":
            raise CheckpointError(f"{path}: no writable folder for the ONNX cache (tried "
                                  f"{path.parent / CACHE_DIRNAME} and $XDG_CACHE_HOME)")
        logger.warning("%s: no writable ONNX cache folder; using MindSpore", path)
        return MindSporePredictor(path, device=device, jit=jit)
    from .export import ExportError

    try:
        out = _export_to_cache(path, meta, input_hw, folder, key)
    except ExportError as exc:
        if backend == "onnx":
            raise
        logger.warning("%s; using MindSpore on the CPU", exc)
        return MindSporePredictor(path, device=device, jit=jit)
    return OnnxPredictor(out, meta=meta, threads=threads)


def _build_int8(path: Path, meta: Any, input_hw: Tuple[int, int], cache_dir: Optional[PathLike],
                key: str, threads: Optional[int], calibration: Optional[Callable[..., Any]],
                backend: str) -> "OnnxPredictor":
    """Quantise the (cached or new) fp32 export into the cache and load it."""
    from .quantize import quantize_onnx

    if calibration is None:
        raise CheckpointError(f"{path}: no int8 network cached; make one with `roadseg export "
                              f"--checkpoint {path} --precision int8 --out FILE` or use "
                              "--precision fp32")
    fp32 = load_predictor(path, backend="onnx", input_hw=input_hw, cache_dir=cache_dir,
                          threads=threads, precision="fp32")
    folder = writable_cache_folder(path, cache_dir)
    if folder is None:
        raise CheckpointError(f"{path}: no writable folder for the int8 ONNX cache")
    out = folder / _cache_name(path, input_hw, "int8", key)
    logger.info("quantising %s to int8 for CPU inference: %s", fp32.source, out)
    note = getattr(calibration, "note", "") or ""
    quantize_onnx(fp32.source, out, calibration(meta, input_hw), calibration_note=note)
    return OnnxPredictor(out, meta=meta, threads=threads)


__all__ = ["Predictor", "MindSporePredictor", "OnnxPredictor", "MindIRPredictor", "load_predictor",
           "concurrent_call_threads", "resolve_precision",
           "normalization_from_meta", "logits_to_probabilities", "pad_to_multiple",
           "onnx_cache_path", "checkpoint_key", "BACKENDS", "PRECISIONS"]
