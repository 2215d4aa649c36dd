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
MindSpore's CPU kernels here), exporting the checkpoint once into a cache folder next to it, keyed
by the checkpoint's SHA-256; on GPU/Ascend it runs MindSpore.

:func:`normalization_from_meta` needs numpy only (the gis pipeline calls it).
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import CheckpointError, ConfigError, InputSizeError, SegcoreError

try:  # Python >= 3.8
    from typing import Protocol, runtime_checkable
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol, runtime_checkable  # type: ignore

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
BACKENDS = ("auto", "mindspore", "onnx")
#: name of the ONNX cache folder created next to a checkpoint
CACHE_DIRNAME = ".roadseg-cache"


# ---------------------------------------------------------------------------------------------
# normalisation (numpy only)
# ---------------------------------------------------------------------------------------------
def _meta_get(meta: Any, key: str, default: Any = None) -> Any:
    if meta is None:
        return default
    if isinstance(meta, Mapping):
        return meta.get(key, default)
    return getattr(meta, key, default)


def _scale_factor(scale: Any) -> float:
    """``scale`` as a multiplier: values > 1 are divisors (``255`` -> ``1/255``)."""
    s = float(1.0 / 255.0 if scale is None else scale)
    if s <= 0:
        raise ConfigError(f"normalisation scale must be > 0, got {scale}")
    return 1.0 / s if s > 1.0 else s


def _per_band(values: Any, channels: int, what: str) -> np.ndarray:
    arr = np.asarray(values, np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(channels, arr[0], np.float32)
    if arr.size != channels:
        raise ConfigError(f"normalisation: {what} has {arr.size} values for {channels} bands")
    return arr


def normalization_from_meta(meta: Any, stretch: Optional[Tuple[Sequence[float], Sequence[float]]]
                            = None) -> Callable[[np.ndarray], np.ndarray]:
    """The function turning raw tiles into network input, from checkpoint metadata.

    Args:
        meta: a :class:`segcore.checkpoint.CheckpointMeta`, its sidecar dict, or the
            ``normalization`` dict itself (a mapping with a ``method`` key).
        stretch: ``(low, high)`` per-band raw values for ``method="percentile"`` computed once
            over the whole raster (the gis pipeline does this); without it each image's own
            percentiles are used.

    Methods (``meta.normalization["method"]``):

    * ``meanstd`` (default): ``(raw * s - mean) / std`` per band, ``s = 1/scale`` for
      ``scale > 1`` (``scale: 255``) or ``s = scale`` for ``scale <= 1``; defaults ImageNet
      mean/std and ``scale 255``.
    * ``dlinknet``: ``raw / 255 * 3.2 - 1.6`` (the D-LinkNet seed).
    * ``percentile``: ``(raw - low) / (high - low)`` clipped to 0..1 (``low``/``high`` are the
      percentiles, default 2 and 98), then ``mean``/``std`` if given.
    * ``none``: cast only.

    The returned function maps ``(C, H, W)`` or ``(N, C, H, W)`` of any numeric dtype to float32
    of the same shape.
    """
    norm = _meta_get(meta, "normalization", None) if not (
        isinstance(meta, Mapping) and "method" in meta) else meta
    norm = dict(norm or {"method": "meanstd"})
    method = str(norm.get("method", "meanstd")).lower()

    if method == "none":
        return lambda raw: np.asarray(raw, np.float32)

    if method == "dlinknet":
        def dlinknet(raw: np.ndarray) -> np.ndarray:
            return (np.asarray(raw, np.float32) * np.float32(3.2 / 255.0)
                    - np.float32(1.6)).astype(np.float32, copy=False)
        return dlinknet

    if method in ("meanstd", "imagenet", "uint8"):
        mean = norm.get("mean", (0.485, 0.456, 0.406))
        std = norm.get("std", (0.229, 0.224, 0.225))
        factor = np.float32(_scale_factor(norm.get("scale", 255)))

        def meanstd(raw: np.ndarray) -> np.ndarray:
            x = np.asarray(raw, np.float32)
            c = x.shape[-3]
            m = _per_band(mean, c, "mean")[:, None, None]
            s = _per_band(std, c, "std")[:, None, None]
            if np.any(s <= 0):
                raise ConfigError(f"normalisation: std must be > 0, got {std}")
            return ((x * factor - m) / s).astype(np.float32, copy=False)
        return meanstd

    if method == "percentile":
        lo_p = float(norm.get("low", 2.0))
        hi_p = float(norm.get("high", 98.0))
        mean, std = norm.get("mean"), norm.get("std")

        def percentile(raw: np.ndarray) -> np.ndarray:
            x = np.asarray(raw, np.float32)
            c = x.shape[-3]
            if stretch is not None:
                lo = _per_band(stretch[0], c, "stretch low")[:, None, None]
                hi = _per_band(stretch[1], c, "stretch high")[:, None, None]
            else:  # per image: over H, W (and per sample of a batch)
                flat = x.reshape(x.shape[:-2] + (-1,))
                lo = np.percentile(flat, lo_p, axis=-1)[..., None, None].astype(np.float32)
                hi = np.percentile(flat, hi_p, axis=-1)[..., None, None].astype(np.float32)
            y = np.clip((x - lo) / np.maximum(hi - lo, np.float32(1e-6)), 0.0, 1.0)
            if mean is not None and std is not None:
                y = (y - _per_band(mean, c, "mean")[:, None, None]) / \
                    _per_band(std, c, "std")[:, None, None]
            return y.astype(np.float32, copy=False)
        return percentile

    raise ConfigError(f"unknown normalisation method {method!r} (meanstd, dlinknet, percentile, "
                      "none)")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def logits_to_probabilities(logits: np.ndarray) -> np.ndarray:
    """Sigmoid for one channel (axis 1), softmax over axis 1 otherwise; float32, same shape."""
    z = np.asarray(logits, np.float32)
    if z.shape[1] == 1:
        out = np.empty_like(z)
        pos = z >= 0
        out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
        e = np.exp(z[~pos])
        out[~pos] = e / (1.0 + e)
        return out
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def pad_to_multiple(batch: np.ndarray, stride: int, min_hw: Optional[Tuple[int, int]] = None
                    ) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Pad ``(N, C, H, W)`` on the bottom/right to multiples of ``stride`` (and at least
    ``min_hw``). Reflection where the pad is smaller than the side, zeros otherwise.

    Returns ``(padded, (H, W))`` with the original size for :func:`crop`.
    """
    n, c, h, w = batch.shape
    stride = max(int(stride), 1)
    th, tw = -(-h // stride) * stride, -(-w // stride) * stride
    if min_hw is not None:
        th, tw = max(th, int(min_hw[0])), max(tw, int(min_hw[1]))
    if (th, tw) == (h, w):
        return batch, (h, w)
    ph, pw = th - h, tw - w
    mode = "reflect" if ph < h and pw < w else "constant"
    return np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode), (h, w)


def _check_batch(batch: np.ndarray, channels: Optional[int], where: str) -> np.ndarray:
    x = np.asarray(batch)
    if x.ndim != 4:
        raise InputSizeError(f"{where}: expected a (N, C, H, W) batch, got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise InputSizeError(f"{where}: batch has {x.shape[1]} bands, the network expects "
                             f"{channels}")
    return np.ascontiguousarray(x, dtype=np.float32)


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
    stride = _meta_get(meta, "stride", None)
    if model_name:
        try:
            from .registry import model_info

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
            from .checkpoint import load_model

            net, meta = load_model(model)
            self.source = str(model)
        else:
            net = model
            self.source = type(net).__name__
        net.set_train(False)
        self.net = net
        self.meta = meta
        name = _meta_get(meta, "model", None)
        self.stride = int(stride) if stride is not None else _stride_of(meta, name)
        self.num_classes = int(_meta_get(meta, "num_classes", 0) or 0)
        self.in_channels = _meta_get(meta, "in_channels", None)
        self.task = str(_meta_get(meta, "task", "segmentation"))
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


class OnnxPredictor(_Base):
    """onnxruntime (CPU execution provider) inference of an exported ``.onnx``.

    Args:
        onnx_path: the file written by :func:`segcore.export.export_model`.
        meta: checkpoint metadata; default: read from ``<onnx_path>.json``.
        threads: intra-op threads (default: all cores). Fewer threads per call leave room for
            concurrent calls (``parallel_calls``): on 2 cores, two single-threaded calls on
            consecutive batches ran ~8 % faster than one two-threaded call, and lose less to the
            pipeline's reader and writer threads.
        spin: let idle intra-op threads spin-wait for work (ONNX Runtime's default). Off by
            default here: spinning threads burn the cores that the tiling pipeline's reader and
            writer threads need (``ROADSEG_ORT_SPIN=1`` turns it back on).
    """

    def __init__(self, onnx_path: PathLike, meta: Any = None,
                 threads: Optional[int] = None, spin: Optional[bool] = None) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.exists():
            raise CheckpointError(f"{path}: ONNX file not found")
        export_info: Dict[str, Any] = {}
        if meta is None:
            from .export import read_export_metadata

            doc = read_export_metadata(path)
            export_info = dict(doc.get("export", {}))
            meta = _meta_from_dict(doc)
        self.meta = meta
        self.source = str(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or available_cores())
        #: calls that can usefully run at once (each on its own cores); the session is
        #: thread-safe, so the tiling pipeline runs this many batches concurrently
        self.parallel_calls = max(1, available_cores() // opts.intra_op_num_threads)
        if spin is None:
            spin = os.environ.get("ROADSEG_ORT_SPIN", "0") == "1"
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  onnxruntime raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first})") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        shape = list(inp.shape)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.in_channels = shape[1] if isinstance(shape[1], int) else _meta_get(meta,
                                                                                 "in_channels")
        self.fixed_hw = (tuple(shape[2:4]) if len(shape) == 4 and all(
            isinstance(v, int) for v in shape[2:4]) else None)
        self.task = str(_meta_get(meta, "task", "segmentation"))
        self.stride = _stride_of(meta, _meta_get(meta, "model", None))
        self.num_classes = int(_meta_get(meta, "num_classes", 0) or 0)
        self.export_info = export_info

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            return self.session.run(None, {self.input_name: x})[0]
        outs = []
        b = self.fixed_batch
        for i in range(0, x.shape[0], b):
            chunk = x[i:i + b]
            k = chunk.shape[0]
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k,) + chunk.shape[1:], chunk.dtype)])
            outs.append(self.session.run(None, {self.input_name: chunk})[0][:k])
        return np.concatenate(outs, 0)

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output: ``(N, K, H, W)`` logits at the input size."""
        x = _check_batch(batch, self.in_channels, self.source)
        if self.task == "classification":
            return np.asarray(self._run(x), np.float32)
        xp, (h, w) = pad_to_multiple(x, self.stride, self.fixed_hw)
        if self.fixed_hw is not None and xp.shape[2:] != self.fixed_hw:
            raise InputSizeError(
                f"{self.source}: exported for {self.fixed_hw[0]}x{self.fixed_hw[1]} inputs, got "
                f"{h}x{w}; use tiles of at most that size (e.g. eval --mode sliding) or "
                f"re-export with --input-size")
        y = self._run(np.ascontiguousarray(xp))
        if not self.num_classes:
            self.num_classes = int(y.shape[1])
        return np.ascontiguousarray(y[:, :, :h, :w], dtype=np.float32)


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
        self.task = str(_meta_get(self.meta, "task", "segmentation"))
        self.stride = _stride_of(self.meta, _meta_get(self.meta, "model", None))
        self.num_classes = int(_meta_get(self.meta, "num_classes", 0) or 0)
        self._ms = ms

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None or x.shape[0] == self.fixed_batch:
            out = self.cell(self._ms.Tensor(x))
            return (out[0] if isinstance(out, (tuple, list)) else out).asnumpy()
        outs = []
        b = self.fixed_batch
        for i in range(0, x.shape[0], b):
            chunk = x[i:i + b]
            k = chunk.shape[0]
            if k < b:
                chunk = np.concatenate([chunk, np.zeros((b - k,) + chunk.shape[1:], chunk.dtype)])
            out = self.cell(self._ms.Tensor(np.ascontiguousarray(chunk)))
            outs.append((out[0] if isinstance(out, (tuple, list)) else out).asnumpy()[:k])
        return np.concatenate(outs, 0)


def _meta_from_dict(doc: Mapping[str, Any]) -> Any:
    """A :class:`CheckpointMeta` from a metadata dict, or the dict itself when incomplete."""
    try:
        from .checkpoint import CheckpointMeta

        return CheckpointMeta.from_dict(dict(doc))
    except Exception:  # noqa: BLE001  (missing required keys: keep the dict)
        return dict(doc)


# ---------------------------------------------------------------------------------------------
# load_predictor
# ---------------------------------------------------------------------------------------------
def checkpoint_key(checkpoint: PathLike) -> str:
    """First 16 hex digits of SHA-256 over the checkpoint's bytes and its sidecar's bytes."""
    from .checkpoint import sidecar_path

    h = hashlib.sha256()
    for p in (Path(checkpoint), sidecar_path(checkpoint)):
        if p.exists():
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def onnx_cache_path(checkpoint: PathLike, input_hw: Tuple[int, int],
                    cache_dir: Optional[PathLike] = None) -> Path:
    """Where :func:`load_predictor` keeps the ONNX export of ``checkpoint``:
    ``<checkpoint dir>/.roadseg-cache/<stem>-<sha16>-<H>x<W>.onnx`` (or under ``cache_dir``)."""
    ck = Path(checkpoint)
    folder = Path(cache_dir) if cache_dir is not None else ck.parent / CACHE_DIRNAME
    return folder / f"{ck.stem}-{checkpoint_key(ck)}-{int(input_hw[0])}x{int(input_hw[1])}.onnx"


def _writable_cache(checkpoint: Path, cache_dir: Optional[PathLike]) -> Optional[Path]:
    candidates = [Path(cache_dir)] if cache_dir is not None else [
        checkpoint.parent / CACHE_DIRNAME,
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "roadseg" / "onnx"]
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    return None


def available_cores() -> int:
    """Cores this process may use: ``$ROADSEG_CORES`` when set (a batch worker process sets its
    thread count, so that one process per core does not start one thread per core each), else
    ``os.cpu_count()``."""
    try:
        n = int(os.environ.get("ROADSEG_CORES", "0") or 0)
    except ValueError:
        n = 0
    return n if n > 0 else (os.cpu_count() or 1)


def concurrent_call_threads() -> int:
    """ONNX Runtime intra-op threads per call for a caller that runs calls concurrently (the
    tiling pipeline): half the cores, at least one, so two calls share the CPU."""
    return max(1, available_cores() // 2)


def load_predictor(source: PathLike, backend: str = "auto", device: str = "cpu",
                   input_hw: Optional[Tuple[int, int]] = None,
                   cache_dir: Optional[PathLike] = None, jit: bool = False,
                   threads: Optional[int] = None) -> _Base:
    """A predictor for a checkpoint (``.ckpt`` + sidecar) or an exported ``.onnx``/``.mindir``.

    Args:
        source: checkpoint, exported ``.onnx`` or exported ``.mindir`` path.
        backend: ``auto`` (ONNX Runtime on the CPU, MindSpore on GPU/Ascend), ``mindspore`` or
            ``onnx``.
        device: ``cpu``, ``gpu`` or ``ascend``.
        input_hw: tile size the ONNX export is made for (default: the checkpoint's
            ``tile_size_px`` rounded up to the stride).
        cache_dir: where ONNX exports of checkpoints are cached (default: a ``.roadseg-cache``
            folder next to the checkpoint, else ``~/.cache/roadseg/onnx``).
        jit: MindSpore backend: compile with ``ms.jit``.
        threads: ONNX Runtime intra-op threads per call (default: all cores).

    With ``backend="auto"`` a checkpoint whose network cannot be exported to ONNX (e.g. ENet)
    falls back to MindSpore with a warning; ``backend="onnx"`` raises the export error instead.
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

    from .checkpoint import read_metadata
    from .export import ExportError, export_model

    meta = read_metadata(path)
    if input_hw is None:
        stride = _stride_of(meta, meta.model)
        side = -(-int(meta.tile_size_px) // stride) * stride
        input_hw = (side, side)
    folder = _writable_cache(path, cache_dir)
    if folder is None:
        if backend == "onnx":
            raise CheckpointError(f"{path}: no writable folder for the ONNX cache")
        logger.warning("%s: no writable ONNX cache folder; using MindSpore", path)
        return MindSporePredictor(path, device=device, jit=jit)
    cached = onnx_cache_path(path, input_hw, folder)
    if not cached.exists():
        logger.info("exporting %s to ONNX for CPU inference: %s", path, cached)
        try:
            export_model(path, cached, format="ONNX",
                         input_size=(1, int(meta.in_channels)) + tuple(input_hw))
        except ExportError as exc:
            if backend == "onnx":
                raise
            logger.warning("%s; using MindSpore on the CPU", exc)
            return MindSporePredictor(path, device=device, jit=jit)
    return OnnxPredictor(cached, meta=meta, threads=threads)


__all__ = ["Predictor", "MindSporePredictor", "OnnxPredictor", "MindIRPredictor", "load_predictor",
           "concurrent_call_threads",
           "normalization_from_meta", "logits_to_probabilities", "pad_to_multiple",
           "onnx_cache_path", "checkpoint_key", "BACKENDS"]
