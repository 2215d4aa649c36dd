"""The training engine: ``train(config, on_event=None, should_stop=None) -> TrainResult``.

One epoch = ``steps_per_epoch`` optimizer steps over a per-epoch permutation of the training
samples (seeded by ``(seed, epoch)``, sharded by rank in data-parallel runs), then validation
with :class:`~segcore.metrics.ConfusionMatrix` (road IoU/F1 for one-output models, mIoU for
multi-class, top-1/top-5 for the classifier) and checkpoints in ``output_dir``:

* ``epoch_NNN.ckpt`` every epoch (weights + metadata sidecar),
* ``best.ckpt`` when the monitored metric improves,
* ``last.ckpt`` (weights + optimizer state) and ``train_state.json`` for exact resume
  (epoch, step inside the epoch, global step, lr scale, best metric, plateau counter, loss
  scale, seed); ``resume=True`` continues there,
* ``events.jsonl``: one JSON object per line (``type`` start/step/epoch/checkpoint/end/error,
  ``step``, ``epoch``, ``loss``, ``lr``, ``metrics``, ``eta_s``, ``time``); the same dicts go to
  ``on_event``. Step lines are written at most once a second (every step goes to ``on_event``).

``should_stop()`` is checked between steps; when it returns True the current state is saved to
``last.ckpt`` and ``train`` returns a result with ``status == "stopped"``. A file named ``STOP``
in ``output_dir`` has the same effect (for processes started by the GUI).

This module is the loop; the rest of training lives beside it:

* :mod:`segcore.run_folder`: the run folder's file names, :class:`TrainResult`, the events
  log and its readers, ``train_state.json``,
* :mod:`segcore.schedule`: the lr schedule, the monitored metric, early stopping and the
  D-LinkNet plateau rule,
* :mod:`segcore.builders`: datasets, per-epoch batches, loss and optimizer.

The names other code imports from here (``TrainResult``, ``lr_at``, ``read_events``,
``read_train_state``, ``build_datasets``, ``EventLog``, the file names) are re-exported.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .builders import (batches, build_datasets, build_loss, build_optimizer, enet_weights,
                       epoch_indices, inference_normalization, resolve_gsd, set_epoch)
from .checkpoint import CheckpointMeta, load_optimizer_state, load_weights, save_checkpoint
from .config import TrainConfig, save_resolved
from .errors import CheckpointError, ConfigError, DatasetError, SegcoreError
from .run_folder import (BEST_CKPT, EVENTS_FILE, LAST_CKPT, STATE_FILE, STOP_FILE, EventLog,
                         TrainResult, atomic_write_json, clean_json, epoch_checkpoint_name,
                         read_events, read_train_state)
from .schedule import epoch_end_rule, is_better, lr_at, plateau_lr_scale, resolve_monitor

logger = logging.getLogger(__name__)

EventFn = Callable[[Dict[str, Any]], None]
StopFn = Callable[[], bool]


class TrainingDivergedError(SegcoreError, FloatingPointError):
    """The loss or the weights became NaN/inf."""


# ----------------------------------------------------------------------------- helpers
def _assign(param, value: Any) -> None:
    """Overwrite ``param``'s values in its own storage (``ops.assign``)."""
    import mindspore as ms
    from mindspore import ops

    ops.assign(param, ms.Tensor(np.asarray(value), dtype=param.dtype))



# ----------------------------------------------------------------------------- trainer
class _Trainer:
    def __init__(self, cfg: TrainConfig, on_event: Optional[EventFn],
                 should_stop: Optional[StopFn], resume: bool, rank: int, world: int) -> None:
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.is_main = rank == 0
        self.resume = resume
        self.out = Path(cfg.output_dir)
        self.should_stop_fn = should_stop
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.events = EventLog(self.out, on_event, write=self.is_main)
        self.best_weights: Dict[str, np.ndarray] = {}

    # -- setup ---------------------------------------------------------------------------
    def setup(self) -> None:
        # the model's gsd_m (inherited from init_checkpoint) against the chips', before any step
        self.cfg = resolve_gsd(self.cfg)

        import mindspore as ms
        from mindspore import nn

        from .device import set_device, supports_amp
        from .models import create_model, model_info

        cfg = self.cfg
        if self.world == 1:
            set_device(cfg.device, cfg.mode, launch_blocking=cfg.launch_blocking)
        ms.set_seed(cfg.seed)
        np.random.seed(cfg.seed % (2 ** 32))
        self.info = model_info(cfg.model)
        self.task = self.info.task
        if self.task == "classification" and cfg.dataset != "imagenet":
            raise ConfigError(f"model {cfg.model} is a classifier: use dataset: imagenet")
        self.state = self._initial_state()
        self.train_ds, self.val_ds = build_datasets(cfg, cfg.seed)
        n = len(self.train_ds)
        per_rank = n // self.world
        if cfg.steps_per_epoch:
            self.steps_per_epoch = cfg.steps_per_epoch
        else:
            self.steps_per_epoch = per_rank // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise DatasetError(f"{cfg.data_root}: {n} training samples are fewer than one batch "
                               f"of {cfg.batch_size} x {self.world} device(s); lower batch_size "
                               "or set steps_per_epoch")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        class_weights = None
        if cfg.loss == "weighted_ce":
            if cfg.class_weights == "enet":
                class_weights = self.state.get("class_weights") or enet_weights(cfg,
                                                                                 self.train_ds)
                logger.info("ENet class weights: %s", class_weights)
            else:
                class_weights = list(cfg.class_weights)
            self.state["class_weights"] = class_weights

        self.aux = cfg.aux_weight > 0 and self.task != "classification"
        self.net = create_model(cfg.model, num_classes=cfg.num_classes,
                                in_channels=cfg.in_channels, aux=self.aux, **cfg.model_kwargs)
        if cfg.init_checkpoint and not self.resume:
            rep = load_weights(self.net, cfg.init_checkpoint, strict=False,
                               allow_head_mismatch=True)
            logger.info("initialised from %s: %d loaded, %d skipped (head), %d missing",
                        cfg.init_checkpoint, len(rep.loaded), len(rep.skipped_mismatch),
                        len(rep.missing))
        self.loss_fn = build_loss(cfg, self.task, class_weights)

        amp = cfg.amp_level
        if amp == "auto":
            amp = "O2" if supports_amp(cfg.device) else "O0"
        if amp != "O0" and not supports_amp(cfg.device):
            logger.warning("mixed precision %s is not used on %s: training in float32", amp,
                           cfg.device)
            amp = "O0"
        self.amp = amp
        if amp != "O0":
            try:
                self.net = ms.amp.auto_mixed_precision(self.net, amp)
            except Exception as exc:  # noqa: BLE001  (O1 rewrites the network's Python source)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise ConfigError(f"amp_level {amp} cannot be applied to {cfg.model} by "
                                  f"MindSpore ({type(exc).__name__}: {first[:120]}); use O2 "
                                  "or O0") from exc
            self.scaler = ms.amp.DynamicLossScaler(scale_value=cfg.loss_scale, scale_factor=2,
                                                   scale_window=1000)
            if self.state.get("loss_scale"):
                self.scaler.scale_value.set_data(
                    ms.Tensor(np.float32(self.state["loss_scale"])))
        else:
            self.scaler = None

        self.optimizer = build_optimizer(cfg, self.net.trainable_params(), self._lr_now())
        if self.resume:
            self._restore()

        self.grad_reducer = None
        if self.world > 1:
            self.grad_reducer = nn.DistributedGradReducer(self.optimizer.parameters, mean=True,
                                                          degree=self.world)
            from mindspore import ops
            self._allreduce_any = ops.AllReduce(ops.ReduceOp.SUM)  # CPU: SUM only
        self._build_step()

    def _initial_state(self) -> Dict[str, Any]:
        cfg = self.cfg
        st: Dict[str, Any] = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "lr_scale": 1.0,
                              "best_metric": None, "best_epoch": None, "no_optim": 0,
                              "seed": cfg.seed, "history": [], "loss_scale": None,
                              "model": cfg.model, "status": "running"}
        if self.resume:
            saved = read_train_state(self.out)
            if saved.get("model") != cfg.model:
                raise CheckpointError(f"{self.out / STATE_FILE}: was trained with "
                                      f"{saved.get('model')!r}, config says {cfg.model!r}")
            st.update(saved)
        return st

    def _restore(self) -> None:
        ckpt = self.out / self.state.get("checkpoint", LAST_CKPT)
        load_weights(self.net, ckpt, strict=True)
        n = load_optimizer_state(self.optimizer, ckpt)
        logger.info("resumed from %s: epoch %d, step %d (%d optimizer tensors)", ckpt,
                    self.state["epoch"], self.state["global_step"], n)

    def _lr_now(self) -> float:
        return lr_at(self.cfg, self.state["global_step"], self.total_steps,
                     self.steps_per_epoch) * float(self.state["lr_scale"])

    def _build_step(self) -> None:
        import mindspore as ms

        net, loss_fn, opt, scaler, reducer = (self.net, self.loss_fn, self.optimizer,
                                              self.scaler, self.grad_reducer)

        def forward(x, y):
            loss = loss_fn(net(x), y)
            if scaler is not None:
                return scaler.scale(loss), loss
            return loss, loss

        grad_fn = ms.value_and_grad(forward, None, opt.parameters, has_aux=True)

        def step(x, y):
            (_, loss), grads = grad_fn(x, y)
            if reducer is not None:
                grads = reducer(grads)
            if scaler is not None:
                grads = scaler.unscale(grads)
                finite = ms.amp.all_finite(grads)
                scaler.adjust(finite)
                if finite:
                    opt(grads)
            else:
                opt(grads)
            return loss

        from .models.layers import set_dropout_step

        jit = self.cfg.jit or self.cfg.mode == "graph"
        self.step_fn = ms.jit(step) if jit else step
        # dropout masks keyed to the step (exact resume); a compiled step keeps MindSpore's
        # own dropout operator, whose random state a resumed process cannot restore
        self._seeded_dropout = not jit and set_dropout_step(self.net, self.cfg.seed, 0,
                                                            self.rank) > 0

    # -- loop ----------------------------------------------------------------------------
    def _set_lr(self, lr: float) -> None:
        # in place: after the optimizer's first call its kernels keep reading the parameter's
        # original storage, so ``set_data`` would leave the first lr in force for the whole run
        _assign(self.optimizer.learning_rate, np.float32(lr))

    def _stop_requested(self) -> bool:
        flag = False
        if self.should_stop_fn is not None:
            try:
                flag = bool(self.should_stop_fn())
            except Exception:  # noqa: BLE001
                logger.exception("should_stop callback failed")
        if not flag and (self.out / STOP_FILE).exists():
            flag = True
        if self.world > 1:
            import mindspore as ms

            t = ms.Tensor(np.array([1.0 if flag else 0.0], np.float32))
            flag = bool(self._allreduce_any(t).asnumpy()[0] > 0)
        return flag

    def run(self) -> TrainResult:
        import mindspore as ms

        cfg, st = self.cfg, self.state
        self.monitor, self.higher = resolve_monitor(cfg, self.task, self.val_ds is not None)
        if self.is_main:
            save_resolved(cfg, self.out)
        self.events.emit("start", step=st["global_step"], epoch=st["epoch"],
                         total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                         epochs=cfg.epochs, model=cfg.model, device=cfg.device, amp=self.amp,
                         world_size=self.world, resumed=self.resume, monitor=self.monitor,
                         train_samples=len(self.train_ds),
                         val_samples=len(self.val_ds) if self.val_ds is not None else 0)
        t_start = time.monotonic()
        steps_this_run = 0
        status, reason = "completed", ""
        while st["epoch"] < cfg.epochs and st["global_step"] < self.total_steps:
            epoch = st["epoch"] + 1  # 1-based for humans and file names
            self.net.set_train(True)
            idx = epoch_indices(len(self.train_ds), self.steps_per_epoch, cfg.batch_size,
                                 cfg.seed, epoch, self.rank, self.world)
            start = st["step_in_epoch"] * cfg.batch_size
            set_epoch(self.train_ds, cfg.seed, epoch)
            losses: List[float] = list(st.get("epoch_losses", []))
            stopped = False
            for x, y in batches(self.train_ds, idx, cfg.batch_size, cfg.num_workers, start):
                if st["global_step"] >= self.total_steps:
                    break
                if self._stop_requested():
                    stopped = True
                    break
                lr = self._lr_now()
                self._set_lr(lr)
                if self._seeded_dropout:
                    from .models.layers import set_dropout_step

                    set_dropout_step(self.net, cfg.seed, st["global_step"], self.rank)
                loss = float(self.step_fn(ms.Tensor(x), ms.Tensor(y)).asnumpy())
                if not math.isfinite(loss) and self.scaler is None:
                    raise TrainingDivergedError(f"loss became {loss} at step {st['global_step']} "
                                             "(lower the learning rate)")
                losses.append(loss)
                st["global_step"] += 1
                st["step_in_epoch"] += 1
                steps_this_run += 1
                elapsed = time.monotonic() - t_start
                remaining = self.total_steps - st["global_step"]
                eta = elapsed / steps_this_run * remaining
                self.events.emit("step", step=st["global_step"], epoch=epoch,
                                 step_in_epoch=st["step_in_epoch"],
                                 steps_per_epoch=self.steps_per_epoch, loss=loss, lr=lr,
                                 eta_s=round(eta, 1),
                                 force=st["step_in_epoch"] == self.steps_per_epoch)
            st["epoch_losses"] = losses
            if stopped:
                status, reason = "stopped", "stop requested"
                self._save_last(epoch_done=False)
                break
            if st["step_in_epoch"] < self.steps_per_epoch and st["global_step"] < self.total_steps:
                continue  # pragma: no cover  (loader ended early: treat like a full epoch)
            done = self._finish_epoch(epoch, losses)
            if done:
                status, reason = "early_stopped", done
                break
        if status == "completed" and st["epoch"] >= cfg.epochs:
            reason = f"{cfg.epochs} epochs"
        elif status == "completed":
            reason = f"max_steps {cfg.max_steps}"
        st["status"] = status
        if self.is_main:
            self._write_state()
        if self.cfg.debug_save_rank_weights:
            self._save_rank_weights()
        best = self.out / BEST_CKPT
        last = self.out / LAST_CKPT
        self.events.emit("end", step=st["global_step"], epoch=st["epoch"], status=status,
                         reason=reason, best_metric=st["best_metric"],
                         best_epoch=st["best_epoch"], monitor=self.monitor,
                         best_checkpoint=str(best) if best.exists() else None)
        return TrainResult(status, self.out, st["epoch"], st["global_step"], self.monitor,
                           st["best_metric"], st["best_epoch"],
                           best if best.exists() else None, last if last.exists() else None,
                           list(st["history"]), reason)

    # -- epoch end -----------------------------------------------------------------------
    def _validate(self) -> Dict[str, Any]:
        import mindspore as ms

        from .metrics import ConfusionMatrix, topk_accuracy

        cfg = self.cfg
        self.net.set_train(False)
        n = len(self.val_ds)
        idx = np.arange(n)[self.rank::self.world]
        if cfg.val_steps:
            idx = idx[:cfg.val_steps * cfg.batch_size]
        losses: List[float] = []
        if self.task == "classification":
            logits_all, labels_all = [], []
        else:
            cm = ConfusionMatrix(max(2, cfg.num_classes), ignore_index=cfg.ignore_index)
        for x, y in batches(self.val_ds, idx, cfg.batch_size, cfg.num_workers):
            out = self.net(ms.Tensor(x))
            if isinstance(out, (tuple, list)):
                out = out[0]
            losses.append(float(self.loss_fn(out, ms.Tensor(y)).asnumpy()))
            logits = out.asnumpy().astype(np.float32)
            if self.task == "classification":
                logits_all.append(logits)
                labels_all.append(np.asarray(y).reshape(-1))
            elif cfg.num_classes == 1:
                cm.update_binary(logits, y, from_logits=True)
            else:
                cm.update(logits.argmax(axis=1), y)
        self.net.set_train(True)
        if self.task == "classification":
            if not logits_all:
                return {"val_loss": None}
            logits = np.concatenate(logits_all)
            labels = np.concatenate(labels_all)
            ks = [k for k in (1, 5) if k <= logits.shape[1]]
            acc = topk_accuracy(logits, labels, ks)
            vals = np.array([acc[k] * len(labels) for k in ks] + [np.sum(losses), len(losses),
                                                                  len(labels)], np.float64)
            if self.world > 1:
                vals = self._allreduce_sum(vals, as_int=False)
            out = {f"top{k}": float(vals[i] / vals[-1]) for i, k in enumerate(ks)}
            out["val_loss"] = float(vals[-3] / max(vals[-2], 1))
            return out
        loss_sum = np.array([np.sum(losses), len(losses)], np.float64)
        if self.world > 1:
            cm.matrix = self._allreduce_sum(cm.matrix)
            loss_sum = self._allreduce_sum(loss_sum, as_int=False)
        losses = [loss_sum[0] / loss_sum[1]] if loss_sum[1] else []
        names = list(cfg.class_names) or None
        summary = cm.summary(class_names=names if names and len(names) == cm.num_classes
                             else None)
        out = {"val_loss": float(np.mean(losses)) if losses else None,
               "miou": summary.get("miou"), "pixel_accuracy": summary.get("pixel_accuracy")}
        if cfg.num_classes == 1:
            out.update(iou=summary.get("positive_iou"), f1=summary.get("f1"),
                       precision=summary.get("precision"), recall=summary.get("recall"))
        else:
            out["per_class_iou"] = summary.get("per_class_iou")
        return clean_json(out)

    def _allreduce_sum(self, arr: np.ndarray, as_int: bool = True) -> np.ndarray:
        import mindspore as ms
        from mindspore import ops

        t = ms.Tensor(np.asarray(arr, np.float32))
        out = ops.AllReduce(ops.ReduceOp.SUM)(t).asnumpy().astype(np.float64)
        return out.round().astype(np.int64) if as_int else out

    def _meta(self, metrics: Dict[str, Any], epoch: int) -> CheckpointMeta:
        cfg = self.cfg
        names = list(cfg.class_names)
        if not names:
            names = (["background", "road"] if cfg.num_classes == 1
                     else [str(i) for i in range(cfg.num_classes)])
        return CheckpointMeta(model=cfg.model, num_classes=cfg.num_classes,
                              in_channels=cfg.in_channels, bands=tuple(cfg.bands),
                              normalization=inference_normalization(cfg),
                              tile_size_px=cfg.tile_size_px or max(cfg.crop_hw),
                              stride=int(self.info.stride), class_names=tuple(names),
                              task=self.task, metrics=clean_json(dict(metrics)), epoch=epoch,
                              model_kwargs=dict(cfg.model_kwargs),
                              gsd_m=float(cfg.gsd_m) if cfg.gsd_m else None)

    def _finish_epoch(self, epoch: int, losses: List[float]) -> str:
        """Validate, checkpoint, apply stopping rules. Returns a stop reason or ''."""
        cfg, st = self.cfg, self.state
        self._check_finite(epoch)
        train_loss = float(np.mean(losses)) if losses else float("nan")
        if self.world > 1:
            import mindspore as ms
            from mindspore import ops

            t = ms.Tensor(np.array([train_loss], np.float32))
            train_loss = float(ops.AllReduce(ops.ReduceOp.SUM)(t).asnumpy()[0]) / self.world
        metrics: Dict[str, Any] = {"train_loss": train_loss}
        if self.val_ds is not None and epoch % cfg.val_every == 0:
            metrics.update(self._validate())
        metrics = clean_json(metrics)
        value = metrics.get(self.monitor)
        improved = is_better(value, st["best_metric"], self.higher)
        st["epoch"] = epoch
        st["step_in_epoch"] = 0
        st["epoch_losses"] = []
        if improved:
            st["best_metric"], st["best_epoch"], st["no_optim"] = value, epoch, 0
            if cfg.plateau:  # every rank keeps its copy for the plateau rule's reload
                self.best_weights = {p.name: p.asnumpy().copy()
                                     for p in self.net.get_parameters()}
        elif value is not None:
            st["no_optim"] += 1
        lr = self._lr_now()
        st["history"].append({"epoch": epoch, "step": st["global_step"], "lr": lr, **metrics})
        self.events.emit("epoch", step=st["global_step"], epoch=epoch, loss=train_loss, lr=lr,
                         metrics=metrics, monitor=self.monitor, improved=improved,
                         best_metric=st["best_metric"])
        # checkpoints (rank 0 only)
        meta = self._meta(metrics, epoch)
        if self.is_main:
            p = save_checkpoint(self.net, self.out / epoch_checkpoint_name(epoch), meta)
            self.events.emit("checkpoint", step=st["global_step"], epoch=epoch, path=str(p),
                             kind="epoch")
            self._prune_epoch_checkpoints(epoch)
            if improved:
                p = save_checkpoint(self.net, self.out / BEST_CKPT, meta)
                self.events.emit("checkpoint", step=st["global_step"], epoch=epoch,
                                 path=str(p), kind="best", metric=value)
        # stopping rules
        reason, plateau_step = epoch_end_rule(cfg, self.monitor, st["no_optim"], lr)
        if plateau_step:
            self._plateau_step(epoch)
        self._save_last(epoch_done=True, meta=meta)
        return reason

    def _check_finite(self, epoch: int) -> None:
        bad = [p.name for p in self.net.get_parameters()
               if not np.all(np.isfinite(p.asnumpy()))]
        if bad:
            hint = (" (batch_size 1: BatchNorm after a global pooling sees one value per channel "
                    "and its variance is undefined; use batch_size >= 2)"
                    if self.cfg.batch_size == 1 else " (lower the learning rate)")
            raise TrainingDivergedError(f"epoch {epoch}: {len(bad)} parameters are NaN/inf, "
                                        f"e.g. {bad[0]}{hint}")

    def _plateau_step(self, epoch: int) -> None:
        st, cfg = self.state, self.cfg
        best = self.out / BEST_CKPT
        weights = self.best_weights
        if not weights and best.exists():  # resumed run: the copy in memory is gone, the file
            import mindspore as ms         # is identical

            weights = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(best)).items()}
        # in place, as the lr: weights loaded with set_data/load_param_into_net would be used
        # by the forward pass while the optimizer kept updating the old storage
        for p in self.net.get_parameters():
            if p.name in weights:
                _assign(p, weights[p.name])
        st["lr_scale"] = plateau_lr_scale(cfg, st["lr_scale"])
        new_lr = self._lr_now()
        logger.info("plateau rule at epoch %d: reloaded %s, lr -> %.3g", epoch, best.name, new_lr)
        self.events.emit("plateau", step=st["global_step"], epoch=epoch, lr=new_lr,
                         no_optim=st["no_optim"])

    def _prune_epoch_checkpoints(self, epoch: int) -> None:
        keep = self.cfg.keep_epoch_checkpoints
        if not keep:
            return
        old = epoch - keep
        for e in range(max(1, old - 2), old + 1):
            for suffix in (".ckpt", ".json"):
                p = self.out / epoch_checkpoint_name(e, suffix)
                if p.exists():
                    p.unlink()

    def _save_last(self, epoch_done: bool, meta: Optional[CheckpointMeta] = None) -> None:
        st = self.state
        if self.scaler is not None:
            st["loss_scale"] = float(self.scaler.scale_value.asnumpy())
        st["checkpoint"] = LAST_CKPT
        if not self.is_main:
            return
        if meta is None:
            meta = self._meta({}, st["epoch"])
        p = save_checkpoint(self.net, self.out / LAST_CKPT, meta, optimizer=self.optimizer,
                            train_state=clean_json(dict(st)))
        self._write_state()
        self.events.emit("checkpoint", step=st["global_step"], epoch=st["epoch"], path=str(p),
                         kind="last", epoch_complete=epoch_done)

    def _write_state(self) -> None:
        atomic_write_json(self.out / STATE_FILE, dict(self.state))

    def _save_rank_weights(self) -> None:
        """Debug aid for data-parallel tests: every rank writes its trainable weights."""
        import mindspore as ms

        d = self.out / "rank_weights"
        d.mkdir(parents=True, exist_ok=True)
        ms.save_checkpoint([{"name": p.name, "data": p} for p in self.net.trainable_params()],
                           str(d / f"rank_{self.rank}.ckpt"))


def train(config: TrainConfig, on_event: Optional[EventFn] = None,
          should_stop: Optional[StopFn] = None, resume: bool = False, rank: int = 0,
          world_size: int = 1) -> TrainResult:
    """Train ``config.model`` as described in the module docstring.

    Args:
        config: a validated :class:`TrainConfig`.
        on_event: called with every event dict (also written to ``events.jsonl`` on rank 0).
        should_stop: polled between steps; True saves ``last.ckpt`` and returns.
        resume: continue from ``<output_dir>/train_state.json`` and ``last.ckpt``.
        rank, world_size: data-parallel position (set by :mod:`segcore.distributed`).

    Raises:
        ConfigError, DatasetError, CheckpointError, DeviceError: bad input (one line).
    """
    config.validate()
    if resume and not (Path(config.output_dir) / STATE_FILE).exists():
        raise CheckpointError(f"{Path(config.output_dir) / STATE_FILE}: no training state to "
                              "resume from")
    trainer = _Trainer(config, on_event, should_stop, resume, rank, world_size)
    try:
        trainer.setup()
        return trainer.run()
    except Exception as exc:
        trainer.events.emit("error", message=str(exc).strip().splitlines()[0] if str(exc).strip()
                            else type(exc).__name__, error=type(exc).__name__)
        raise


__all__ = ["train", "TrainResult", "TrainingDivergedError", "lr_at", "read_train_state",
           "read_events", "EventLog",
           "build_datasets", "STATE_FILE", "EVENTS_FILE", "STOP_FILE"]
