"""Checkpoints: MindSpore ``.ckpt`` weights plus a JSON sidecar ``<stem>.json`` of metadata.

The sidecar carries everything inference needs so preprocessing is never copied by hand
(model name, class count, bands, normalisation, tile size, class names, metrics). Both files are
written to a temporary name and renamed when complete.

Optimizer state (moments, global step, beta powers) can be stored in the same ``.ckpt`` under
the prefix :data:`OPTIMIZER_PREFIX`; :func:`load_optimizer_state` restores it for exact resume.

This module knows files, not networks: building the network a checkpoint names is
:func:`segcore.models.load_model`.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from .errors import CheckpointError
# metadata (plain Python) lives in segcore.meta; re-exported here
from .meta import (FORMAT_VERSION, CheckpointMeta, _ckpt_path, _read_sidecar,  # noqa: F401
                   _roadseg_version, read_checkpoint_train_state, read_metadata,
                   sidecar_path)

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Parameter-name prefix of optimizer state entries inside a ``.ckpt``.
OPTIMIZER_PREFIX = "optimizer::"


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did: parameter names loaded, skipped for a shape mismatch
    (the head when fine-tuning to another class count), missing from the checkpoint and
    present in the checkpoint but unused by the network."""

    loaded: Tuple[str, ...]
    skipped_mismatch: Tuple[str, ...] = ()
    missing: Tuple[str, ...] = ()
    unexpected: Tuple[str, ...] = ()


def _atomic_write_json(path: Path, obj: Dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def optimizer_state_params(optimizer) -> List[Any]:
    """Parameters of ``optimizer`` that are its own state (not the network's weights)."""
    net_ids = {id(p) for p in optimizer.parameters}
    out, seen = [], set()
    for _, p in optimizer.parameters_and_names():
        if id(p) in net_ids or p.name in seen:
            continue
        seen.add(p.name)
        out.append(p)
    return out


def _write_staged(entries: List[Dict[str, Any]], path: PathLike, doc: Dict[str, Any]) -> Path:
    """Write ``entries`` (``mindspore.save_checkpoint`` form) to ``path`` (``.ckpt`` suffix
    enforced, folder made) and ``doc`` to its sidecar, each under a temporary name renamed when
    complete, the weights first, so a sidecar never points at a half-written ``.ckpt``.
    Returns the ``.ckpt`` path."""
    import mindspore as ms

    path = _ckpt_path(path)
    if path.suffix != ".ckpt":
        path = path.with_suffix(".ckpt")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.ckpt")
    try:
        ms.save_checkpoint(entries, str(tmp))
        os.replace(tmp, path)
    except Exception as exc:
        if tmp.exists():
            tmp.unlink()
        raise CheckpointError(f"{path}: cannot write checkpoint ({exc})") from exc
    _atomic_write_json(sidecar_path(path), doc)
    return path


def save_checkpoint(net, path: PathLike, meta: CheckpointMeta, optimizer=None,
                    train_state: Optional[Dict[str, Any]] = None) -> Path:
    """Write ``net``'s parameters to ``path`` (``.ckpt``) and ``meta`` to ``<stem>.json``.

    With ``optimizer`` its state (moments, global step, ...) is stored too under
    :data:`OPTIMIZER_PREFIX`. ``train_state`` (JSON-serialisable dict) goes into the sidecar
    under ``"train_state"``. Both files are written to temporary names and renamed, the weights
    first, so a sidecar never points at a half-written ``.ckpt``. Returns the ``.ckpt`` path.
    """
    entries = [{"name": p.name, "data": p} for p in net.get_parameters()]
    if optimizer is not None:
        entries += [{"name": OPTIMIZER_PREFIX + p.name, "data": p}
                    for p in optimizer_state_params(optimizer)]
    doc = {"format_version": FORMAT_VERSION, **meta.to_dict()}
    if train_state is not None:
        doc["train_state"] = train_state
    path = _write_staged(entries, path, doc)
    logger.info("saved checkpoint %s (epoch %d)", path, meta.epoch)
    return path


def _load_param_dict(path: PathLike) -> Dict[str, Any]:
    import mindspore as ms

    ckpt = _ckpt_path(path)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: checkpoint file not found")
    try:
        return ms.load_checkpoint(str(ckpt))
    except Exception as exc:  # MindSpore raises ValueError/RuntimeError for broken files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{ckpt}: not a readable MindSpore checkpoint ({msg})") from exc


def load_weights(net, path: PathLike, strict: bool = True,
                 allow_head_mismatch: bool = False) -> LoadReport:
    """Load the network weights of checkpoint ``path`` into ``net`` (in place).

    ``strict``: every network parameter must be in the checkpoint and every checkpoint weight
    must be used, otherwise :class:`CheckpointError`. ``allow_head_mismatch``: parameters whose
    shape differs (the classifier head when fine-tuning to another class count) keep their
    fresh initialisation and are reported in ``LoadReport.skipped_mismatch``; without it a
    shape mismatch is an error. Optimizer entries in the file are ignored here.
    """
    import mindspore as ms

    ckpt = _ckpt_path(path)
    raw = _load_param_dict(ckpt)
    weights = {k: v for k, v in raw.items() if not k.startswith(OPTIMIZER_PREFIX)}
    params = {p.name: p for p in net.get_parameters()}
    mismatched = sorted(k for k, p in params.items()
                        if k in weights and tuple(weights[k].shape) != tuple(p.shape))
    if mismatched and not allow_head_mismatch:
        k = mismatched[0]
        raise CheckpointError(
            f"{ckpt}: parameter {k} has shape {tuple(weights[k].shape)} in the checkpoint but "
            f"{tuple(params[k].shape)} in the network ({len(mismatched)} mismatched; "
            "different class count? fine-tune with allow_head_mismatch)")
    missing = sorted(k for k in params if k not in weights)
    unexpected = sorted(k for k in weights if k not in params)
    if strict and (missing or unexpected):
        what = (f"{len(missing)} network parameters missing (e.g. {missing[0]})" if missing
                else f"{len(unexpected)} unused checkpoint weights (e.g. {unexpected[0]})")
        raise CheckpointError(f"{ckpt}: does not fit the network: {what}")
    to_load = {k: v for k, v in weights.items() if k in params and k not in mismatched}
    ms.load_param_into_net(net, to_load, strict_load=False)
    if mismatched:
        logger.warning("%s: skipped %d parameters with a different shape (head): %s", ckpt,
                       len(mismatched), ", ".join(mismatched))
    if missing:
        logger.warning("%s: %d network parameters not in the checkpoint", ckpt, len(missing))
    return LoadReport(tuple(sorted(to_load)), tuple(mismatched), tuple(missing), tuple(unexpected))


def load_optimizer_state(optimizer, path: PathLike) -> int:
    """Restore the optimizer state saved with ``save_checkpoint(..., optimizer=...)``.

    Returns the number of state tensors restored; raises :class:`CheckpointError` when the file
    has no optimizer state or it does not fit ``optimizer`` (other optimizer or network).
    """
    import mindspore as ms

    raw = _load_param_dict(path)
    state = {k[len(OPTIMIZER_PREFIX):]: v for k, v in raw.items()
             if k.startswith(OPTIMIZER_PREFIX)}
    if not state:
        raise CheckpointError(f"{_ckpt_path(path)}: has no optimizer state")
    own = optimizer_state_params(optimizer)
    names = {p.name for p in own}
    missing = sorted(names - set(state))
    if missing:
        raise CheckpointError(f"{_ckpt_path(path)}: optimizer state does not fit "
                              f"({len(missing)} entries missing, e.g. {missing[0]})")
    for p in own:
        v = state[p.name]
        if tuple(v.shape) != tuple(p.shape):
            raise CheckpointError(f"{_ckpt_path(path)}: optimizer entry {p.name} has shape "
                                  f"{tuple(v.shape)}, expected {tuple(p.shape)}")
        p.set_data(ms.Tensor(v.asnumpy(), dtype=p.dtype))
    return len(own)


def average_checkpoints(paths: List[PathLike], out: PathLike) -> Path:
    """Write the element-wise mean of the network weights of ``paths`` to ``out``.

    Averaging the checkpoints of the low-learning-rate tail of one run (stochastic weight
    averaging) gives a flatter, usually better-generalising solution at no training cost. All
    checkpoints must hold the same parameter names and shapes (one network) and be of the same
    model; integer entries (counters) are taken from the last file, optimizer state is dropped
    (the result is for inference or ``--init-checkpoint``). Batch-norm running statistics are
    averaged like the weights, which is close enough for checkpoints of one run's tail. The
    sidecar is the last checkpoint's metadata with its metrics cleared and ``averaged_from``
    listing the inputs. Written under a temporary name and renamed.
    """
    import mindspore as ms
    import numpy as np

    files = [_ckpt_path(p) for p in paths]
    if len(files) < 2:
        raise CheckpointError("averaging needs at least two checkpoints")
    metas = [read_metadata(f) for f in files]
    models = sorted({m.model for m in metas})
    if len(models) > 1:
        raise CheckpointError(f"{files[0]}: cannot average checkpoints of different networks "
                              f"({', '.join(models)})")
    sums: Dict[str, Any] = {}
    names: Optional[List[str]] = None
    for f in files:
        raw = _load_param_dict(f)
        weights = {k: v.asnumpy() for k, v in raw.items() if not k.startswith(OPTIMIZER_PREFIX)}
        if names is None:
            names = sorted(weights)
        elif sorted(weights) != names:
            raise CheckpointError(f"{f}: holds other parameters than {files[0]}")
        for k, v in weights.items():
            if k in sums and sums[k].shape != v.shape:
                raise CheckpointError(f"{f}: parameter {k} has shape {v.shape}, "
                                      f"{sums[k].shape} in {files[0]}")
            if np.issubdtype(v.dtype, np.floating):
                sums[k] = sums[k] + v.astype(np.float64) if k in sums else v.astype(np.float64)
            else:
                sums[k] = v
    n = float(len(files))
    entries = []
    for k in names or []:
        v = sums[k]
        if v.dtype == np.float64:
            v = (v / n).astype(np.float32)
        entries.append({"name": k, "data": ms.Tensor(v)})
    dest = _write_staged(entries, out, {"format_version": FORMAT_VERSION, **metas[-1].to_dict(),
                                  "metrics": {}, "averaged_from": [str(f) for f in files]})
    logger.info("averaged %d checkpoints into %s", len(files), dest)
    return dest


__all__ = ["CheckpointMeta", "LoadReport", "save_checkpoint", "read_metadata",
           "read_checkpoint_train_state", "average_checkpoints",
           "load_weights", "load_optimizer_state", "sidecar_path",
           "OPTIMIZER_PREFIX", "optimizer_state_params"]
