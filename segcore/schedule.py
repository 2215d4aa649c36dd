"""The learning-rate schedule, the monitored metric and the end-of-epoch stopping rules of
:mod:`segcore.train` (pure functions of the config and the run's counters; no MindSpore).

The D-LinkNet plateau rule (``plateau: true``): after more than ``plateau_patience`` epochs
without improvement the best weights are reloaded and the lr divided by ``plateau_factor``;
training ends when the lr falls below ``plateau_min_lr`` or after more than
``plateau_stop_patience`` epochs without improvement. ``early_stopping_patience`` ends training
after that many epochs without improvement.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

from .config import TrainConfig
from .errors import ConfigError


def lr_at(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based) before the plateau scale.

    ``poly``: ``lr * (1 - t/T)^power``; ``cosine``: ``min_lr + (lr - min_lr)(1 + cos(pi t/T))/2``;
    ``step``: ``lr * gamma^k`` with ``k`` = milestones passed (epochs) or
    ``epoch // lr_step_epochs``; ``constant``. A linear warmup from
    ``warmup_start_factor * lr`` over ``warmup_epochs`` precedes all of them.
    """
    base = cfg.lr
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if warm > 0 and step < warm:
        f = cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * step / warm
        return base * f
    T = max(1, total_steps - warm)
    t = min(max(step - warm, 0), T)
    sched = cfg.lr_schedule
    if sched == "poly":
        return max(cfg.min_lr, base * (1.0 - t / T) ** cfg.lr_power) if t < T else cfg.min_lr
    if sched == "cosine":
        return cfg.min_lr + (base - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / T))
    if sched == "step":
        epoch = step // max(1, steps_per_epoch)
        if cfg.lr_milestones:
            k = sum(1 for m in cfg.lr_milestones if epoch >= m)
        else:
            k = epoch // cfg.lr_step_epochs
        return max(cfg.min_lr, base * cfg.lr_gamma ** k)
    return base


def resolve_monitor(cfg: TrainConfig, task: str, has_val: bool) -> Tuple[str, bool]:
    """``(metric name, higher is better)`` for ``cfg.monitor`` (``auto``: ``iou`` for road
    models, ``miou`` multi-class, ``top1`` classifiers, ``train_loss`` without validation)."""
    m = cfg.monitor
    if m == "auto":
        if not has_val:
            m = "train_loss"
        elif task == "classification":
            m = "top1"
        else:
            m = "iou" if cfg.num_classes == 1 else "miou"
    if m == "loss":
        m = "val_loss" if has_val else "train_loss"
    if m in ("val_loss", "iou", "f1", "miou", "top1") and not has_val:
        raise ConfigError(f"monitor {m!r} needs a validation set (val_split or val_fraction)")
    return m, m not in ("train_loss", "val_loss")


def is_better(value: Optional[float], best: Optional[float], higher: bool) -> bool:
    """Whether ``value`` improves on ``best`` (a missing or non-finite value never does)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return False
    if best is None:
        return True
    return value > best if higher else value < best


def epoch_end_rule(cfg: TrainConfig, monitor: str, no_optim: int, lr: float
                   ) -> Tuple[str, bool]:
    """The stopping rules after an epoch with ``no_optim`` epochs without improvement and the
    current ``lr``: ``(stop reason or "", whether the plateau rule reloads the best weights and
    lowers the lr now)``."""
    if cfg.early_stopping_patience and no_optim >= cfg.early_stopping_patience:
        return (f"no improvement of {monitor} for {no_optim} epochs "
                "(early_stopping_patience)"), False
    if cfg.plateau:
        if no_optim > cfg.plateau_stop_patience:
            return f"plateau rule: no improvement for {no_optim} epochs", False
        if no_optim > cfg.plateau_patience:
            if lr < cfg.plateau_min_lr:
                return f"plateau rule: lr {lr:.3g} < {cfg.plateau_min_lr:g}", False
            return "", True
    return "", False


def plateau_lr_scale(cfg: TrainConfig, lr_scale: float) -> float:
    """The lr scale after one plateau step (divided by ``plateau_factor``)."""
    return float(lr_scale) / cfg.plateau_factor


__all__ = ["lr_at", "resolve_monitor", "is_better", "epoch_end_rule", "plateau_lr_scale"]
