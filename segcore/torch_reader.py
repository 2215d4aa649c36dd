"""Read PyTorch checkpoint files without PyTorch and without running pickled code.

``torch.save`` writes a pickle whose tensors refer to raw storages kept beside it. Two layouts
exist:

* the zip format (torch >= 1.6): ``<archive>/data.pkl`` (the object pickle), the raw storages
  ``<archive>/data/<key>`` and a ``<archive>/byteorder`` record (``little``/``big``; absent in
  files older than torch 2.1, which were all little-endian);
* the legacy format (torch < 1.6, and ``_use_new_zipfile_serialization=False``): five pickles
  in a row - the magic number ``0x1950a86a20f9469cfc6c``, the protocol version 1001, a
  ``sys_info`` dict (byte order, type sizes), the object pickle and the sorted list of storage
  keys - followed by every storage as an 8-byte little-endian element count and its raw bytes.

Both object pickles are read by :class:`_RestrictedUnpickler`, whose ``find_class`` resolves
only the globals listed in :data:`ALLOWED_GLOBALS` (``collections.OrderedDict``, the tensor
rebuild functions of ``torch._utils``, the ``torch.*Storage`` dtype markers, a few harmless
builtins and numpy scalars) to our own numpy stand-ins. Anything else - ``os.system``,
``builtins.eval``, a pickled ``nn.Module`` class, a TorchScript class - raises
:class:`~segcore.errors.CheckpointError` naming the file and the global before anything is
called. Tensors come back as C-contiguous numpy arrays in their stored dtype (``bfloat16``
is widened to float32, the only lossless numpy equivalent).

Nothing here imports torch.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple, Union

import numpy as np

from .errors import CheckpointError

logger = logging.getLogger(__name__)

__all__ = ["load_torch_file", "ALLOWED_GLOBALS", "STORAGE_DTYPES", "LEGACY_MAGIC_NUMBER",
           "LEGACY_PROTOCOL_VERSION"]

PathLike = Union[str, "os.PathLike[str]"]

#: First pickle of a legacy-format file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: Second pickle of a legacy-format file.
LEGACY_PROTOCOL_VERSION = 1001

#: Deepest container nesting accepted in a checkpoint (a state_dict is 1-3 levels deep).
MAX_NESTING = 100
#: Largest object pickle (``data.pkl``) read from a zip checkpoint.
MAX_PICKLE_BYTES = 256 << 20
#: Storage bytes a zip checkpoint may decompress to beyond its own size: torch stores its
#: records uncompressed, so more than this much inflation means a zip bomb, not weights.
MAX_INFLATION_BYTES = 64 << 20

#: ``torch.<Name>Storage`` -> numpy dtype string ("bfloat16" is handled apart).
STORAGE_DTYPES: Dict[str, str] = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
    "BFloat16Storage": "bfloat16", "LongStorage": "i8", "IntStorage": "i4",
    "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
    "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16", "UntypedStorage": "u1",
}


# --------------------------------------------------------------------------------------------
# stand-ins for the allowed globals
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StorageType:
    """Marker for ``torch.<Name>Storage`` in a persistent id: only carries the dtype."""

    name: str
    dtype: str  # numpy dtype string or "bfloat16"

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize


@dataclass
class _Storage:
    """One raw storage of the file (``numel`` elements of ``stype``); ``data`` is filled once
    its bytes have been read (zip: on first use; legacy: after the object pickle)."""

    key: str
    stype: _StorageType
    numel: int
    data: Optional[np.ndarray] = None
    base: Optional["_Storage"] = None  # legacy storage views (torch < 1.0): a slice of ``base``
    base_offset: int = 0

    def array(self, path: str) -> np.ndarray:
        """The storage's elements (1-D); raises when its bytes were never read."""
        if self.base is not None:
            data = self.base.array(path)
            if self.base_offset < 0 or self.base_offset + self.numel > data.size:
                raise CheckpointError(f"{path}: storage view {self.key} lies outside its root "
                                      f"storage {self.base.key}")
            return data[self.base_offset:self.base_offset + self.numel]
        if self.data is None:
            raise CheckpointError(f"{path}: storage {self.key} was never read (truncated?)")
        return self.data


@dataclass
class _TensorRef:
    """A tensor waiting for its storage: ``_rebuild_tensor_v2`` arguments."""

    storage: _Storage
    offset: int
    size: Tuple[int, ...]
    stride: Tuple[int, ...]


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_ignored: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2``: records the view
    (requires_grad, backward hooks and metadata are ignored)."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("tensor rebuild without a storage")
    try:
        size_t = tuple(int(s) for s in size)
        stride_t = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise pickle.UnpicklingError(f"malformed tensor view ({exc})") from None
    if len(size_t) != len(stride_t):
        raise pickle.UnpicklingError(f"tensor size {size_t} and stride {stride_t} differ in rank")
    return _TensorRef(storage, offset, size_t, stride_t)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: the tensor itself."""
    return data


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which protocol-2 pickles use for ``bytes`` values."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed as latin1 bytes literal")
    return text.encode("latin1")


def _numpy_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """Stand-in for ``numpy.dtype``: numeric and boolean dtypes only."""
    dt = np.dtype(str(spec), copy=True)  # never hand out numpy's shared singletons
    if dt.kind not in "biufc":
        raise pickle.UnpicklingError(f"numpy dtype {dt} is not allowed")
    return dt


def _numpy_scalar(dtype: Any, data: Any = b"") -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar`` (e.g. a ``best_miou`` float64)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" \
            or not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _storage_types() -> Dict[Tuple[str, str], Any]:
    out: Dict[Tuple[str, str], Any] = {}
    for name, dt in STORAGE_DTYPES.items():
        st = _StorageType(name, dt)
        out[("torch", name)] = st
        out[("torch.cuda", name)] = st  # legacy GPU checkpoints (e.g. D-LinkNet's .th files)
    return out


#: ``(module, name)`` -> what the restricted unpickler returns for it. Nothing else resolves.
ALLOWED_GLOBALS: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): tuple,  # very old files pickle sizes as torch.Size(tuple)
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **_storage_types(),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` and turns persistent ids
    into :class:`_Storage` records through ``load_storage``."""

    def __init__(self, file: Any, path: str,
                 load_storage: Optional[Callable[[Tuple[Any, ...]], _Storage]]) -> None:
        super().__init__(file)
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        found = ALLOWED_GLOBALS.get((module, name))
        if found is None:
            raise CheckpointError(
                f"{self._path}: refusing to load: the pickle references {module}.{name}, which "
                "is not an allowed global (only tensors, storages and plain containers are; "
                "files that pickle code or whole modules cannot be read safely - save "
                "model.state_dict() instead)")
        if isinstance(found, _StorageType):
            # a fresh marker, so a BUILD opcode cannot alter the shared table entry
            return _StorageType(found.name, found.dtype)
        return found

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None:
            raise pickle.UnpicklingError("unexpected persistent id in a plain pickle")
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"malformed persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise CheckpointError(f"{self._path}: refusing to load: persistent object of kind "
                                  f"{kind!r} (a pickled module?); only storages are allowed")
        return self._load_storage(pid[1:])


# --------------------------------------------------------------------------------------------
# materialising tensors
# --------------------------------------------------------------------------------------------
def _decode_raw(raw: bytes, stype: _StorageType, numel: int, little: bool) -> np.ndarray:
    if stype.dtype == "bfloat16":
        u16 = np.frombuffer(raw, dtype="<u2" if little else ">u2", count=numel)
        return (u16.astype(np.uint32) << 16).view(np.float32)
    dt = np.dtype(stype.dtype)
    if dt.itemsize > 1:
        dt = dt.newbyteorder("<" if little else ">")
    arr = np.frombuffer(raw, dtype=dt, count=numel)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False) if dt.itemsize > 1 else arr


def _materialise(ref: _TensorRef, path: str) -> np.ndarray:
    data = ref.storage.array(path)
    if any(s < 0 for s in ref.size) or any(s < 0 for s in ref.stride) or ref.offset < 0:
        raise CheckpointError(f"{path}: tensor with negative size/stride/offset "
                              f"{ref.size}/{ref.stride}/{ref.offset}")
    if any(s == 0 for s in ref.size):
        return np.zeros(ref.size, dtype=data.dtype)
    if int(np.prod(ref.size, dtype=np.int64)) > data.size:
        raise CheckpointError(f"{path}: tensor view {ref.size} (stride {ref.stride}) has more "
                              f"elements than its storage ({data.size}); expanded views are "
                              "not supported")
    last = ref.offset + sum((n - 1) * st for n, st in zip(ref.size, ref.stride))
    if last >= data.size:
        raise CheckpointError(f"{path}: tensor view {ref.size} (stride {ref.stride}, offset "
                              f"{ref.offset}) reads past its storage of {data.size} elements")
    item = data.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[ref.offset:], shape=ref.size, strides=tuple(st * item for st in ref.stride),
        writeable=False)
    return np.array(view, order="C", copy=True)  # ascontiguousarray would make 0-d 1-d


def _resolve(obj: Any, path: str, seen: Optional[Dict[int, Any]] = None,
             depth: int = 0) -> Any:
    """Replace every :class:`_TensorRef` in nested containers by its numpy array; containers
    nested deeper than :data:`MAX_NESTING` are refused."""
    if seen is None:
        seen = {}
    if depth > MAX_NESTING:
        raise CheckpointError(f"{path}: containers nested more than {MAX_NESTING} levels deep "
                              "(not a weights file)")
    depth += 1
    if isinstance(obj, _TensorRef):
        if id(obj) not in seen:
            seen[id(obj)] = _materialise(obj, path)
        return seen[id(obj)]
    if isinstance(obj, _Storage):
        return obj.array(path)
    if isinstance(obj, dict):  # OrderedDict included; keeps its type and order
        for k in list(obj.keys()):
            obj[k] = _resolve(obj[k], path, seen, depth)
        return obj
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = _resolve(v, path, seen, depth)
        return obj
    if isinstance(obj, tuple):
        return tuple(_resolve(v, path, seen, depth) for v in obj)
    return obj


def _storage_args(args: Tuple[Any, ...], path: str) -> Tuple[_StorageType, str, int]:
    if len(args) < 4 or not isinstance(args[0], _StorageType):
        raise CheckpointError(f"{path}: malformed storage reference {args!r:.120}")
    stype, key, _location, numel = args[:4]
    key = key.decode("ascii") if isinstance(key, bytes) else str(key)
    if not isinstance(numel, int) or numel < 0:
        raise CheckpointError(f"{path}: storage {key} has an invalid size {numel!r}")
    return stype, key, numel


# --------------------------------------------------------------------------------------------
# the two file formats
# --------------------------------------------------------------------------------------------
def _read_record(zf: zipfile.ZipFile, info: zipfile.ZipInfo, need: int, path: str) -> bytes:
    """The first ``need`` bytes of a zip record, decompressed in bounded chunks (never more)."""
    chunks, have = [], 0
    try:
        with zf.open(info) as fh:
            while have < need:
                chunk = fh.read(min(need - have, 1 << 22))
                if not chunk:
                    break
                chunks.append(chunk)
                have += len(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: broken zip record {info.filename} ({exc})") from exc
    if have < need:
        raise CheckpointError(f"{path}: record {info.filename} has {have} bytes, {need} "
                              "expected (truncated file?)")
    return b"".join(chunks)


def _load_zip(path: str) -> Any:
    budget = [os.path.getsize(path) + MAX_INFLATION_BYTES]
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable zip checkpoint ({exc})") from exc
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                raise CheckpointError(f"{path}: a TorchScript archive, not a state_dict "
                                      "checkpoint (save model.state_dict() instead)")
            raise CheckpointError(f"{path}: zip file without <archive>/data.pkl "
                                  "(not a PyTorch checkpoint)")
        prefix = pkl[0][: -len("data.pkl")]
        little = True
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").strip()
            if order not in (b"little", b"big"):
                raise CheckpointError(f"{path}: unknown byte order {order!r}")
            little = order == b"little"
        storages: Dict[str, _Storage] = {}

        def load_storage(args: Tuple[Any, ...]) -> _Storage:
            stype, key, numel = _storage_args(args, path)
            if key in storages:
                return storages[key]
            record = f"{prefix}data/{key}"
            try:
                info = zf.getinfo(record)
            except KeyError:
                raise CheckpointError(f"{path}: storage record {record} is missing") from None
            need = numel * stype.itemsize
            if info.file_size < need:
                raise CheckpointError(f"{path}: storage {record} has {info.file_size} bytes, "
                                      f"{need} expected (truncated file?)")
            budget[0] -= need
            if budget[0] < 0:
                raise CheckpointError(f"{path}: storages add up to more bytes than the file "
                                      f"can hold ({MAX_INFLATION_BYTES >> 20} MB beyond its "
                                      "size); refusing a zip bomb")
            raw = _read_record(zf, info, need, path)  # only what the tensor needs
            st = _Storage(key, stype, numel, _decode_raw(raw, stype, numel, little))
            storages[key] = st
            return st

        pinfo = zf.getinfo(pkl[0])
        if pinfo.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{path}: {pkl[0]} declares {pinfo.file_size} bytes (more "
                                  f"than {MAX_PICKLE_BYTES >> 20} MB: not a weights file)")
        data = _read_record(zf, pinfo, pinfo.file_size, path)
        try:
            obj = _RestrictedUnpickler(io.BytesIO(data), path, load_storage).load()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001  (any unpickling failure means a broken file)
            raise CheckpointError(f"{path}: broken checkpoint pickle ({exc})") from exc
    logger.debug("%s: zip checkpoint, %d storages, %s-endian", path, len(storages),
                 "little" if little else "big")
    return _resolve(obj, path)


def _hint(path: str) -> str:
    if path.lower().endswith((".ckpt", ".mindir")):
        return "; MindSpore files need no conversion (load them with segcore.checkpoint)"
    if path.lower().endswith(".onnx"):
        return "; ONNX models are not PyTorch checkpoints"
    return ""


def _load_legacy(path: str) -> Any:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        def plain() -> Any:
            return _RestrictedUnpickler(f, path, None).load()

        try:
            magic = plain()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive "
                                  f"nor a legacy torch.save file: {exc}){_hint(path)}") from exc
        if magic != LEGACY_MAGIC_NUMBER:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (wrong magic number)"
                                  f"{_hint(path)}")
        storages: Dict[str, _Storage] = {}

        def load_storage(args: Tuple[Any, ...]) -> _Storage:
            stype, key, numel = _storage_args(args, path)
            view = args[4] if len(args) > 4 else None
            if key not in storages:
                storages[key] = _Storage(key, stype, numel)
            elif storages[key].stype != stype:
                raise CheckpointError(f"{path}: storage {key} is used with two dtypes")
            if view is None:
                return storages[key]
            # torch < 1.0 storage views: (view_key, offset, size) in elements of the root
            vkey, voff, vsize = view
            vkey = vkey.decode("ascii") if isinstance(vkey, bytes) else str(vkey)
            return _Storage(vkey, stype, int(vsize), base=storages[key], base_offset=int(voff))

        try:
            version = plain()
            if version != LEGACY_PROTOCOL_VERSION:
                raise CheckpointError(f"{path}: unsupported legacy protocol {version!r}")
            sys_info = plain()
            little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) \
                else True
            obj = _RestrictedUnpickler(f, path, load_storage).load()
            keys = plain()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: broken legacy checkpoint ({exc})") from exc
        if not isinstance(keys, list):
            raise CheckpointError(f"{path}: broken legacy checkpoint (no storage key list)")
        for key in keys:
            key = key.decode("ascii") if isinstance(key, bytes) else str(key)
            st = storages.get(key)
            if st is None:
                raise CheckpointError(f"{path}: storage {key} listed but never referenced")
            head = f.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: truncated before storage {key}")
            (numel,) = struct.unpack("<q", head)
            if numel != st.numel:
                raise CheckpointError(f"{path}: storage {key} has {numel} elements, "
                                      f"{st.numel} expected")
            need = numel * st.stype.itemsize
            if need > size - f.tell():
                raise CheckpointError(f"{path}: truncated in storage {key} ({size - f.tell()} "
                                      f"of {need} bytes left)")
            raw = f.read(need)
            if len(raw) != need:
                raise CheckpointError(f"{path}: truncated in storage {key} ({len(raw)} of "
                                      f"{need} bytes)")
            st.data = _decode_raw(raw, st.stype, numel, little)
    logger.debug("%s: legacy checkpoint, %d storages", path, len(storages))
    return _resolve(obj, path)


def load_torch_file(path: PathLike) -> Any:
    """Load the object saved by ``torch.save`` at ``path``, safely and without torch.

    Returns the saved object with every tensor replaced by a C-contiguous numpy array
    (its stored dtype; bfloat16 as float32) - for a ``state_dict`` an ``OrderedDict`` of
    ``name -> ndarray``. Containers (dict, OrderedDict, list, tuple, set) and plain values are
    kept. Raises :class:`~segcore.errors.CheckpointError` naming the file for a missing,
    truncated or foreign file and for any pickled global outside :data:`ALLOWED_GLOBALS`
    (which is never called).
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"{p}: PyTorch checkpoint not found")
    if zipfile.is_zipfile(p):
        return _load_zip(p)
    with open(p, "rb") as f:
        head = f.read(262)
    if len(head) > 261 and head[257:262] == b"ustar":
        raise CheckpointError(f"{p}: tar-based checkpoint of torch < 0.4 is not supported; "
                              "re-save it with a newer torch (torch.save(state_dict, ...))")
    return _load_legacy(p)
