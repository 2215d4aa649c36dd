"""CPU inference with ONNX Runtime, and the ONNX export cache, without MindSpore.

Everything the CPU extraction path needs once a checkpoint has an ONNX export lives here:
:class:`OnnxPredictor`, the cache names and folders (:func:`onnx_cache_path`,
:func:`find_cached_onnx`, :func:`writable_cache_folder`) and the sidecar readers of
:mod:`segcore.meta`. Importing MindSpore costs about 1.8 s and 500 MB, so an import-linter
contract in ``setup.cfg`` forbids it here, directly or through any other module, and
``tests/test_lean_inference.py`` checks a real extraction in a subprocess.

Cache folders, in order: ``<checkpoint folder>/.roadseg-cache`` (shared by every user of the
checkpoint) and ``$XDG_CACHE_HOME/roadseg/onnx`` (``~/.cache/roadseg/onnx``; per user). A valid
cached file is used from either, also where the folder is read-only; a new export goes into the
first folder the user can write. A cached file that does not load (truncated, corrupt) is
removed and rebuilt where its folder is writable, else the error names the file to delete.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from .errors import CheckpointError, InputSizeError
from .meta import (export_metadata_path, meta_from_dict, meta_get, read_export_doc,
                   sidecar_path)

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
#: name of the ONNX cache folder created next to a checkpoint
CACHE_DIRNAME = ".roadseg-cache"
PRECISIONS = ("fp32", "int8")


def run_in_fixed_batches(run, x: np.ndarray, fixed_batch: Optional[int]) -> np.ndarray:
    """``run(x)`` for a network exported with a fixed batch size: ``x`` is cut into chunks of
    ``fixed_batch`` (the last one zero-padded) and the outputs are joined; any batch size when
    ``fixed_batch`` is None."""
    if fixed_batch is None or x.shape[0] == fixed_batch:
        return run(x)
    outs = []
    b = int(fixed_batch)
    for i in range(0, x.shape[0], b):
        chunk = x[i:i + b]
        k = chunk.shape[0]
        if k < b:
            chunk = np.concatenate([chunk, np.zeros((b - k,) + chunk.shape[1:], chunk.dtype)])
        outs.append(run(np.ascontiguousarray(chunk))[:k])
    return np.concatenate(outs, 0)


def available_cores() -> int:
    """Cores this process may use: ``$ROADSEG_CORES`` when set (a batch worker process sets its
    thread count, so that one process per core does not start one thread per core each), else
    the CPUs it is allowed to run on (``taskset``/cpuset affinity), else ``os.cpu_count()``."""
    try:
        n = int(os.environ.get("ROADSEG_CORES", "0") or 0)
    except ValueError:
        n = 0
    if n > 0:
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _check_batch(batch: np.ndarray, channels: Optional[int], where: str) -> np.ndarray:
    x = np.asarray(batch)
    if x.ndim != 4:
        raise InputSizeError(f"{where}: expected a (N, C, H, W) batch, got shape {x.shape}")
    if channels is not None and x.shape[1] != channels:
        raise InputSizeError(f"{where}: batch has {x.shape[1]} bands, the network expects "
                             f"{channels}")
    return np.ascontiguousarray(x, dtype=np.float32)


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


def read_export_sidecar(exported: PathLike) -> Dict[str, Any]:
    """The metadata dict beside an exported file (``<name>.json``), read without MindSpore
    (:func:`segcore.meta.read_export_doc`)."""
    return read_export_doc(exported)


# ---------------------------------------------------------------------------------------------
# the export cache
# ---------------------------------------------------------------------------------------------
def checkpoint_key(checkpoint: PathLike) -> str:
    """First 16 hex digits of SHA-256 over the checkpoint's bytes and its sidecar's bytes."""
    h = hashlib.sha256()
    for p in (Path(checkpoint), sidecar_path(checkpoint)):
        if p.exists():
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def user_cache_dir() -> Path:
    """This user's ONNX cache folder: ``$XDG_CACHE_HOME/roadseg/onnx`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "roadseg" / "onnx"


def cache_folders(checkpoint: PathLike, cache_dir: Optional[PathLike] = None) -> List[Path]:
    """Where exports of ``checkpoint`` are looked for, in order (see the module docstring)."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    return [Path(checkpoint).parent / CACHE_DIRNAME, user_cache_dir()]


def cache_name(checkpoint: PathLike, input_hw: Tuple[int, int], precision: str = "fp32",
               key: Optional[str] = None) -> str:
    """``<stem>-<sha16>-<H>x<W>.onnx`` (``...-int8.onnx`` for the quantised network)."""
    ck = Path(checkpoint)
    key = key or checkpoint_key(ck)
    tail = "" if precision == "fp32" else f"-{precision}"
    return f"{ck.stem}-{key}-{int(input_hw[0])}x{int(input_hw[1])}{tail}.onnx"


def onnx_cache_path(checkpoint: PathLike, input_hw: Tuple[int, int],
                    cache_dir: Optional[PathLike] = None, precision: str = "fp32") -> Path:
    """The first cached export of ``checkpoint`` that exists, else where a new one goes in the
    first cache folder: ``<checkpoint dir>/.roadseg-cache/<stem>-<sha16>-<H>x<W>.onnx``."""
    name = cache_name(checkpoint, input_hw, precision)
    folders = cache_folders(checkpoint, cache_dir)
    for folder in folders:
        if (folder / name).exists():
            return folder / name
    return folders[0] / name


def _usable(path: Path) -> bool:
    side = export_metadata_path(path)
    return (path.is_file() and side.is_file() and os.access(path, os.R_OK)
            and os.access(side, os.R_OK))


def find_cached_onnx(checkpoint: PathLike, input_hw: Tuple[int, int],
                     cache_dir: Optional[PathLike] = None, precision: str = "fp32",
                     key: Optional[str] = None) -> Optional[Path]:
    """The first readable cached export (file and metadata) in :func:`cache_folders`."""
    name = cache_name(checkpoint, input_hw, precision, key)
    for folder in cache_folders(checkpoint, cache_dir):
        if _usable(folder / name):
            return folder / name
    return None


def writable_cache_folder(checkpoint: PathLike, cache_dir: Optional[PathLike] = None
                          ) -> Optional[Path]:
    """The first cache folder this user can create and write, or ``None``."""
    for folder in cache_folders(checkpoint, cache_dir):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    return None


def remove_cached(path: PathLike) -> bool:
    """Delete a cached export and its metadata; ``False`` where this user cannot."""
    p = Path(path)
    if not os.access(p.parent, os.W_OK | os.X_OK):
        return False
    for q in (p, export_metadata_path(p)):
        try:
            q.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# the predictor
# ---------------------------------------------------------------------------------------------
class OnnxPredictor:
    """onnxruntime (CPU execution provider) inference of an exported ``.onnx``.

    Args:
        onnx_path: the file written by :func:`segcore.export.export_model` (or its int8
            version from :func:`segcore.quantize.quantize_onnx`).
        meta: checkpoint metadata; default: read from ``<onnx_path>.json``.
        threads: intra-op threads (default: all cores). Fewer threads per call leave room for
            concurrent calls (``parallel_calls``): on 2 cores, two single-threaded calls on
            consecutive batches ran ~8 % faster than one two-threaded call, and lose less to the
            pipeline's reader and writer threads.
        spin: let idle intra-op threads spin-wait for work (ONNX Runtime's default). Off by
            default here: spinning threads burn the cores that the tiling pipeline's reader and
            writer threads need (``ROADSEG_ORT_SPIN=1`` turns it back on).

    ``stride`` comes from the export metadata (recorded by the exporter from the registry) or
    the checkpoint metadata; the registry itself is not consulted (it imports MindSpore).
    """

    meta: Any = None
    num_classes: int = 1
    stride: int = 1
    in_channels: Optional[int] = None
    task: str = "segmentation"

    def __init__(self, onnx_path: PathLike, meta: Any = None,
                 threads: Optional[int] = None, spin: Optional[bool] = None) -> None:
        import onnxruntime as ort

        path = Path(onnx_path)
        if not path.exists():
            raise CheckpointError(f"{path}: ONNX file not found")
        export_info: Dict[str, Any] = {}
        doc: Optional[Dict[str, Any]] = None
        try:
            doc = read_export_sidecar(path)
        except CheckpointError:
            if meta is None:
                raise
        if doc is not None:
            export_info = dict(doc.get("export", {}))
            if meta is None:
                meta = meta_from_dict(doc)
        self.meta = meta
        self.source = str(path)
        self.precision = str(export_info.get("precision", "fp32"))
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
        self.in_channels = shape[1] if isinstance(shape[1], int) else meta_get(meta,
                                                                                 "in_channels")
        self.fixed_hw = (tuple(shape[2:4]) if len(shape) == 4 and all(
            isinstance(v, int) for v in shape[2:4]) else None)
        self.task = str(meta_get(meta, "task", "segmentation"))
        self.stride = int(export_info.get("stride") or meta_get(meta, "stride", 1) or 1)
        self.num_classes = int(meta_get(meta, "num_classes", 0) or 0)
        self.export_info = export_info

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.predict_batch(batch)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return run_in_fixed_batches(lambda c: self.session.run(None, {self.input_name: c})[0],
                                    x, self.fixed_batch)

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

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """float32 ``(N, C, H, W)`` normalised -> float32 probabilities ``(N, K, H, W)`` (``(N,
        K)`` for a classifier)."""
        return logits_to_probabilities(self.predict_logits(batch))


def cpu_has_int8_dot() -> bool:
    """Whether this CPU has the int8 dot-product instructions that make ONNX Runtime's int8
    kernels pay off (AVX-512 VNNI, AVX-VNNI or AMX; read from ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False


__all__ = ["OnnxPredictor", "checkpoint_key", "onnx_cache_path", "find_cached_onnx",
           "writable_cache_folder", "user_cache_dir", "cache_folders", "cache_name",
           "remove_cached", "read_export_sidecar", "cpu_has_int8_dot", "CACHE_DIRNAME",
           "PRECISIONS", "logits_to_probabilities", "pad_to_multiple"]
