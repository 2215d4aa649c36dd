"""Training service: ``TrainingRequest`` -> resolved config -> ``segcore.train`` (one process) or
``msrun`` data parallel (``nproc`` > 1), returning segcore's
:class:`~segcore.run_folder.TrainResult`. Qt-free; the GUI's training panel starts
``roadseg train`` as a subprocess and reads ``<output_dir>/events.jsonl``; to stop it, it writes
``<output_dir>/STOP`` (or sends SIGINT/SIGTERM to the process). The run folder's file names and
readers are :mod:`segcore.run_folder`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from segcore.run_folder import (LAUNCH_CONFIG_FILE, STATE_FILE, TrainResult, clear_run,
                                holds_run, result_from_state)

EventFn = Callable[[Dict[str, Any]], None]
StopFn = Callable[[], bool]

#: The recipes shipped with RoadSeg Studio.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "resources" / "configs"


@dataclass(frozen=True)
class TrainingRequest:
    """What ``roadseg train`` (or the GUI) asks for.

    ``config``: a YAML path or the name of a shipped recipe (``dlinknet34``, ``road_demo``);
    ``overrides``: ``key=value`` strings applied after the file; the typed options below win
    over both. ``nproc`` > 1 (or ``nnodes`` > 1) trains data parallel through ``msrun``
    (``nproc`` workers on this node, ``nproc * nnodes`` in all).
    """

    config: str
    overrides: Tuple[str, ...] = ()
    data_root: Optional[str] = None
    output_dir: Optional[str] = None
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    device: Optional[str] = None
    amp: Optional[bool] = None
    init_checkpoint: Optional[str] = None
    resume: bool = False
    overwrite: bool = False
    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: Optional[int] = None
    timeout_s: Optional[float] = None


def list_configs() -> List[Path]:
    """The shipped recipe files, sorted by name."""
    return sorted(CONFIG_DIR.glob("*.yaml"))


def config_path(name_or_path: str) -> Path:
    """A YAML path as given, or ``resources/configs/<name>.yaml`` for a recipe name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise UserError(f"{p}: config file not found")
        return p
    cand = CONFIG_DIR / f"{name_or_path}.yaml"
    if cand.is_file():
        return cand
    names = ", ".join(q.stem for q in list_configs())
    raise UserError(f"unknown config {name_or_path!r}: not a file and not a recipe ({names})")


def resolve_config(req: TrainingRequest):
    """Load the YAML, apply ``overrides`` and the typed options; returns a validated
    ``segcore.config.TrainConfig`` (``UserError`` for bad input)."""
    from segcore.config import load_config, replace

    try:
        cfg = load_config(config_path(req.config), req.overrides)
        changes: Dict[str, Any] = {}
        for key, value in (("data_root", req.data_root), ("output_dir", req.output_dir),
                           ("epochs", req.epochs), ("batch_size", req.batch_size),
                           ("lr", req.lr), ("device", req.device),
                           ("init_checkpoint", req.init_checkpoint)):
            if value is not None:
                changes[key] = str(Path(value).expanduser().resolve()) if key in (
                    "data_root", "output_dir", "init_checkpoint") else value
        if req.amp is not None:
            changes["amp_level"] = "O2" if req.amp else "O0"
        if "output_dir" not in changes:
            changes["output_dir"] = str(Path(cfg.output_dir).expanduser().resolve())
        return replace(cfg, **changes)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc


def _prepare_output(cfg, req: TrainingRequest) -> Path:
    out = Path(cfg.output_dir)
    if req.resume:
        if not (out / STATE_FILE).exists():
            raise UserError(f"{out}: nothing to resume (no {STATE_FILE})")
        return out
    existing = holds_run(out)
    if existing and not req.overwrite:
        raise UserError(f"{out}: already holds a training run ({existing[0]}); use --resume to "
                        "continue it or --overwrite to start again")
    if existing:
        clear_run(out)
    return out


def run_training(req: TrainingRequest, on_event: Optional[EventFn] = None,
                 should_stop: Optional[StopFn] = None) -> TrainResult:
    """Train as ``req`` asks; progress events go to ``on_event``, ``should_stop`` is polled
    between steps. Expected problems (bad config, missing data, no GPU, nothing to resume)
    raise :class:`UserError` with one line."""
    from segcore.config import save_resolved

    cfg = resolve_config(req)
    if req.nproc < 1 or req.nnodes < 1:
        raise UserError(f"--nproc ({req.nproc}) and --nnodes ({req.nnodes}) must be >= 1")
    out = _prepare_output(cfg, req)
    try:
        if req.nproc == 1 and req.nnodes == 1:
            from segcore.train import train

            return train(cfg, on_event=on_event, should_stop=should_stop, resume=req.resume)
        from segcore.distributed import launch

        launch_cfg = save_resolved(cfg, out, name=LAUNCH_CONFIG_FILE)
        launch(launch_cfg, req.nproc, out, resume=req.resume, master_port=req.master_port,
               master_addr=req.master_addr, nnodes=req.nnodes, node_rank=req.node_rank,
               on_event=on_event, should_stop=should_stop, timeout_s=req.timeout_s)
        return result_from_state(out)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc


__all__ = ["TrainingRequest", "TrainResult", "run_training", "resolve_config",
           "list_configs", "config_path", "CONFIG_DIR"]
