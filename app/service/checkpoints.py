"""Checkpoints for the services: where they are looked for, which one a request means, and
their metadata (``.ckpt`` with its ``.json`` sidecar, or an exported ``.onnx``/``.mindir`` with
``<name>.json``), read by :func:`segcore.meta.read_checkpoint_meta` without loading weights.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.requests import PathLike

__all__ = ["CHECKPOINT_SUFFIXES", "CheckpointEntry", "default_checkpoint_dirs",
           "list_checkpoints", "resolve_checkpoint", "check_checkpoint", "describe_checkpoint"]

log = logging.getLogger(__name__)

#: checkpoint file suffixes :func:`list_checkpoints` looks for
CHECKPOINT_SUFFIXES: Tuple[str, ...] = (".ckpt", ".onnx", ".mindir")

_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint found by :func:`list_checkpoints`.

    ``meta`` is the ``segcore.checkpoint.CheckpointMeta``; ``label`` a short text for pickers.
    """

    path: str
    meta: Any
    size_bytes: int
    modified: str

    @property
    def label(self) -> str:
        m = self.meta
        bands = ",".join(str(b) for b in m.bands)
        return f"{Path(self.path).name} ({m.model}, {m.num_classes} class(es), bands {bands})"

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "modified": self.modified,
                "meta": self.meta.to_dict()}


def default_checkpoint_dirs() -> List[Path]:
    """Where checkpoints are looked for: ``$ROADSEG_MODELS`` (``os.pathsep``-separated), then
    the project's ``resources/models``."""
    dirs = [Path(p) for p in os.environ.get("ROADSEG_MODELS", "").split(os.pathsep) if p]
    dirs.append(_REPO_ROOT / "resources" / "models")
    return dirs


def list_checkpoints(dirs: Optional[Sequence[PathLike]] = None) -> List[CheckpointEntry]:
    """Checkpoints (``.ckpt``/``.onnx``/``.mindir`` with a metadata sidecar) in ``dirs`` (not
    recursive).

    Files without readable metadata are skipped with a warning in the log. Sorted by directory
    order, then file name. ``dirs`` default: :func:`default_checkpoint_dirs`.
    """
    from segcore.errors import SegcoreError
    from segcore.meta import read_checkpoint_meta

    found: List[CheckpointEntry] = []
    seen = set()
    for d in (default_checkpoint_dirs() if dirs is None else [Path(x) for x in dirs]):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in CHECKPOINT_SUFFIXES or not p.is_file():
                continue
            key = p.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                meta = read_checkpoint_meta(p)
            except (SegcoreError, TypeError, KeyError, ValueError) as exc:
                log.warning("skipping %s: %s", p, exc)
                continue
            st = p.stat()
            found.append(CheckpointEntry(
                path=str(p), meta=meta, size_bytes=int(st.st_size),
                modified=_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)
                .isoformat(timespec="seconds"),
            ))
    return found


def resolve_checkpoint(model: Optional[str], checkpoint: Optional[str],
                       dirs: Optional[Sequence[PathLike]] = None) -> Path:
    """The checkpoint file a request means.

    ``checkpoint`` given: that file (must exist). Only ``model``: the first checkpoint of that
    model in ``dirs`` (default :func:`default_checkpoint_dirs`). Neither: the bundled demo
    checkpoint ``resources/models/road_demo.ckpt``.

    Raises:
        UserError: nothing suitable found (the message says where it looked).
    """
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise UserError(f"{p}: checkpoint file not found")
        if p.is_dir():
            raise UserError(f"{p}: is a directory, not a checkpoint file")
        return p
    search = default_checkpoint_dirs() if dirs is None else [Path(d) for d in dirs]
    if model is not None:
        for entry in list_checkpoints(search):
            if entry.meta.model == model:
                return Path(entry.path)
        raise UserError(f"no checkpoint for model {model!r} in "
                        f"{', '.join(str(d) for d in search)} (pass a checkpoint file)")
    demo = _REPO_ROOT / "resources" / "models" / "road_demo.ckpt"
    if demo.exists():
        return demo
    raise UserError(f"no checkpoint given and the bundled {demo} is not there "
                    "(pass a checkpoint file)")


def check_checkpoint(path: PathLike) -> Path:
    """``path`` as a readable checkpoint (``.ckpt`` with its sidecar) or exported
    ``.onnx``/``.mindir`` (with ``<name>.json``);
    :class:`UserError` naming the file otherwise. Reads the metadata (cheap), not the weights."""
    from segcore.meta import EXPORT_SUFFIXES, read_checkpoint_meta, read_export_doc

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: checkpoint not found")
    if not p.is_file():
        raise UserError(f"{p}: not a file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{p}: checkpoint is not readable (permission denied)")
    try:
        if p.suffix.lower() in EXPORT_SUFFIXES:
            read_export_doc(p)  # an export of a network without metadata has no model fields
        else:
            read_checkpoint_meta(p)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    return p


def describe_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Metadata of a checkpoint file (``.ckpt``, ``.onnx`` or ``.mindir``) as a JSON-ready dict.

    Raises:
        UserError: not a RoadSeg checkpoint (missing/unreadable metadata).
    """
    from segcore.meta import read_checkpoint_meta

    try:
        return read_checkpoint_meta(path).to_dict()
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
