"""Checkpoint metadata (the JSON sidecar ``<stem>.json``) in plain Python.

:class:`CheckpointMeta` and the sidecar readers live here, apart from :mod:`segcore.checkpoint`
(MindSpore weights), so that CPU inference with ONNX Runtime reads a checkpoint's metadata
without importing MindSpore (about 1.8 s and 500 MB). ``segcore.checkpoint`` re-exports all of
it; an import-linter contract in ``setup.cfg`` keeps this module free of MindSpore.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from .errors import CheckpointError

PathLike = Union[str, "os.PathLike[str]"]

#: Version of the sidecar layout.
FORMAT_VERSION = 1


def _roadseg_version() -> str:
    try:
        from importlib.metadata import version

        return version("roadseg-studio")
    except Exception:  # noqa: BLE001  (not installed: running from a source tree)
        return "0+unknown"


@dataclass(frozen=True)
class CheckpointMeta:
    """Metadata stored beside a checkpoint.

    ``bands`` are 1-based band indices of the source imagery, in the order the network sees
    them. ``normalization`` is a dict with a ``method`` key, e.g.
    ``{"method": "meanstd", "mean": [...], "std": [...], "scale": 255}``,
    ``{"method": "dlinknet"}`` (x / 255 * 3.2 - 1.6) or
    ``{"method": "percentile", "low": 2, "high": 98}``. ``tile_size_px`` / ``stride`` describe the
    tiling used in training and suggested for inference (``stride`` is the network's input-size
    multiple). ``task`` is ``"segmentation"`` or ``"classification"``.
    """

    model: str
    num_classes: int
    in_channels: int = 3
    bands: Tuple[int, ...] = (1, 2, 3)
    normalization: Dict[str, Any] = field(default_factory=lambda: {"method": "meanstd"})
    tile_size_px: int = 512
    stride: int = 32
    class_names: Tuple[str, ...] = ()
    task: str = "segmentation"
    metrics: Dict[str, Any] = field(default_factory=dict)
    epoch: int = 0
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    #: ground sample distance (metres per pixel) the network was trained at; inference resamples
    #: the input to it. None: any resolution (the input is used as it is).
    gsd_m: Optional[float] = None
    created: str = ""
    roadseg_version: str = ""

    def __post_init__(self) -> None:
        # tuples keep the frozen instance hashable-ish and comparable after a JSON round trip
        object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if not self.created:
            object.__setattr__(self, "created",
                               _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        if not self.roadseg_version:
            object.__setattr__(self, "roadseg_version", _roadseg_version())

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["bands"] = list(self.bands)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "CheckpointMeta":
        """Build from a sidecar dict; unknown keys are ignored (newer writers), missing
        required keys raise ``KeyError``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})



def _ckpt_path(path: PathLike) -> Path:
    p = Path(path)
    if p.suffix == ".json":
        p = p.with_suffix(".ckpt")
    return p


def sidecar_path(path: PathLike) -> Path:
    """The metadata file belonging to checkpoint ``path`` (``<stem>.json``)."""
    return _ckpt_path(path).with_suffix(".json")



def _load_json_doc(side: Path, error: type, what: str) -> Any:
    """The parsed JSON of metadata file ``side``; ``error`` naming it when it is unreadable."""
    try:
        with open(side, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise error(f"{side}: unreadable {what} ({exc})") from exc


def _read_sidecar(path: PathLike) -> Dict[str, Any]:
    ckpt = _ckpt_path(path)
    side = sidecar_path(ckpt)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    if not side.exists():
        raise CheckpointError(f"{ckpt}: metadata sidecar {side.name} not found "
                              "(not a RoadSeg checkpoint?)")
    doc = _load_json_doc(side, CheckpointError, "checkpoint metadata")
    if not isinstance(doc, dict) or "model" not in doc or "num_classes" not in doc:
        raise CheckpointError(f"{side}: not RoadSeg checkpoint metadata "
                              "(needs 'model' and 'num_classes')")
    return doc


def read_metadata(path: PathLike) -> CheckpointMeta:
    """The :class:`CheckpointMeta` of checkpoint ``path`` (``.ckpt`` or its ``.json``).

    Raises :class:`CheckpointError` naming the file when either file is missing or the sidecar
    is unreadable or not checkpoint metadata.
    """
    doc = _read_sidecar(path)
    try:
        return CheckpointMeta.from_dict(doc)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{sidecar_path(path)}: invalid checkpoint metadata ({exc})") from exc


def read_checkpoint_train_state(path: PathLike) -> Optional[Dict[str, Any]]:
    """The ``train_state`` dict saved in the sidecar of checkpoint ``path``, or ``None`` (not the
    state file of a training run: that is :func:`segcore.train.read_train_state`)."""
    return _read_sidecar(path).get("train_state")


def meta_from_dict(doc: Mapping[str, Any]) -> Any:
    """A :class:`CheckpointMeta` from a metadata dict, or the dict itself when incomplete."""
    try:
        return CheckpointMeta.from_dict(dict(doc))
    except Exception:  # noqa: BLE001  (missing required keys: keep the dict)
        return dict(doc)


def meta_get(meta: Any, key: str, default: Any = None) -> Any:
    """Field ``key`` of checkpoint metadata held either as a :class:`CheckpointMeta` or as the
    dict written beside an exported model (or ``None``: ``default``)."""
    if meta is None:
        return default
    if isinstance(meta, Mapping):
        return meta.get(key, default)
    return getattr(meta, key, default)


def meta_as_dict(meta: Any) -> Dict[str, Any]:
    """Checkpoint metadata (:class:`CheckpointMeta`, dict, other dataclass or ``None``) as a
    plain dict."""
    if meta is None:
        return {}
    if isinstance(meta, dict):
        return dict(meta)
    if hasattr(meta, "to_dict"):
        return meta.to_dict()
    if is_dataclass(meta):
        return asdict(meta)
    return dict(vars(meta))


# --------------------------------------------------------------------------------------------
# exported models (.onnx / .mindir) and one reader for all three kinds
# --------------------------------------------------------------------------------------------
#: suffixes of exported models; their metadata is ``<name>.json`` (``model.onnx.json``)
EXPORT_SUFFIXES: Tuple[str, ...] = (".onnx", ".mindir")


def export_metadata_path(exported: PathLike) -> Path:
    """The metadata JSON written beside an exported file: ``<name>.json``."""
    p = Path(exported)
    return p.with_name(p.name + ".json")


def read_export_doc(exported: PathLike, error: type = CheckpointError) -> Dict[str, Any]:
    """The metadata dict beside an exported model: the checkpoint metadata fields where known,
    plus ``export`` (format, input shape, ...). ``error`` (a :class:`SegcoreError` class) is
    raised, naming the file, when it is absent, unreadable or not export metadata."""
    side = export_metadata_path(exported)
    if not side.exists():
        raise error(f"{exported}: metadata file {side.name} not found (not exported by "
                    "roadseg export?)")
    doc = _load_json_doc(side, error, "export metadata")
    if not isinstance(doc, dict) or "export" not in doc:
        raise error(f"{side}: not RoadSeg export metadata (no 'export' entry)")
    return doc


def read_checkpoint_doc(path: PathLike) -> Dict[str, Any]:
    """The metadata dict of a ``.ckpt`` (its ``<stem>.json`` sidecar) or of an exported
    ``.onnx``/``.mindir`` (``<name>.json``). Raises :class:`CheckpointError` naming the file."""
    if Path(path).suffix.lower() in EXPORT_SUFFIXES:
        return read_export_doc(path)
    return _read_sidecar(path)


def read_checkpoint_meta(path: PathLike) -> CheckpointMeta:
    """The :class:`CheckpointMeta` of a ``.ckpt``, ``.onnx`` or ``.mindir`` file, without
    loading weights. Raises :class:`CheckpointError` naming the file."""
    if Path(path).suffix.lower() not in EXPORT_SUFFIXES:
        return read_metadata(path)
    try:
        return CheckpointMeta.from_dict(read_export_doc(path))
    except (TypeError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{export_metadata_path(path)}: invalid checkpoint metadata "
                              f"({exc})") from exc


__all__ = ["CheckpointMeta", "FORMAT_VERSION", "EXPORT_SUFFIXES", "read_metadata",
           "read_checkpoint_train_state", "sidecar_path", "meta_from_dict", "meta_get",
           "meta_as_dict", "export_metadata_path", "read_export_doc", "read_checkpoint_doc",
           "read_checkpoint_meta"]
