"""``roadseg train``: options map onto :class:`app.service.training.TrainingRequest`; the
progress line is drawn from the training events."""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Dict, Optional

import click

from app.cli import cli
from app.cli.options import device_option, overwrite_option, quiet_option
from app.service.training import TrainingRequest, list_configs, run_training


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt_metrics(metrics: Dict[str, Any]) -> str:
    keys = ("train_loss", "val_loss", "iou", "f1", "miou", "top1", "top5")
    parts = []
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)):
            parts.append(f"{k} {v:.4f}")
    return "  ".join(parts)


class _Progress:
    """One progress line on stderr (rewritten in place on a terminal) plus a line per epoch."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.epochs = None
        self.spe = None
        self._width = 0

    def _line(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            click.echo("\r" + text + " " * pad, err=True, nl=False)
            self._width = len(text)
        else:
            click.echo(text, err=True)

    def _end_line(self) -> None:
        if self.tty and self._width:
            click.echo("", err=True)
            self._width = 0

    def __call__(self, ev: Dict[str, Any]) -> None:
        if self.quiet:
            return
        t = ev.get("type")
        if t == "start":
            self.epochs, self.spe = ev.get("epochs"), ev.get("steps_per_epoch")
            what = "resuming" if ev.get("resumed") else "training"
            click.echo(f"{what} {ev.get('model')} on {ev.get('device')} "
                       f"(x{ev.get('world_size', 1)}): {ev.get('train_samples')} train / "
                       f"{ev.get('val_samples')} val samples, {ev.get('steps_per_epoch')} "
                       f"steps per epoch, monitor {ev.get('monitor')}", err=True)
        elif t == "step":
            spe = ev.get("steps_per_epoch") or self.spe or 0
            done = ev.get("step_in_epoch", 0)
            width = 20
            fill = int(width * done / spe) if spe else 0
            bar = "#" * fill + "-" * (width - fill)
            if self.tty or done == spe or done == 1:
                self._line(f"epoch {ev.get('epoch')}/{self.epochs} [{bar}] {done}/{spe} "
                           f"loss {ev.get('loss', float('nan')):.4f} lr {ev.get('lr', 0):.3g} "
                           f"eta {_fmt_eta(ev.get('eta_s'))}")
        elif t == "epoch":
            self._end_line()
            mark = " *" if ev.get("improved") else ""
            click.echo(f"epoch {ev.get('epoch')}: {_fmt_metrics(ev.get('metrics') or {})}{mark}",
                       err=True)
        elif t == "plateau":
            self._end_line()
            click.echo(f"plateau: best weights reloaded, lr -> {ev.get('lr'):.3g}", err=True)
        elif t == "end":
            self._end_line()


class _StopFlag:
    """SIGINT/SIGTERM ask for a clean stop (checkpoint, then exit 130); a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: Optional[int] = None  # the first signal that asked for the stop
        self._old: Dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        # MindSpore's data pipeline turns Ctrl+C into SIGTERM, so the two signals cannot be told
        # apart here: either one asks for a clean stop, a second one aborts
        if self.requested and self.signum is not None:
            raise KeyboardInterrupt
        self.requested = True
        if self.signum is None:
            self.signum = signum
        click.echo("\nroadseg: stopping after this step (saving a checkpoint); Ctrl+C again to "
                   "abort", err=True)

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


_RECIPES = ", ".join(p.stem for p in list_configs())


@cli.command("train", context_settings={"show_default": True})
@click.option("--config", "-c", "config", required=True,
              help=f"Training YAML, or a shipped recipe name ({_RECIPES}).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key (repeatable), e.g. --set crop_size=512 "
                   "--set val_fraction=0.1.")
@click.option("--data", "data_root", type=click.Path(file_okay=False), default=None,
              help="Dataset root (config key data_root).")
@click.option("--out", "output_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory for checkpoints, events.jsonl and train_state.json.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Number of epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size per device.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Base learning rate.")
@device_option(default=None, help="Device (default: the config's).")
@click.option("--amp/--no-amp", default=None,
              help="Mixed precision O2 with dynamic loss scaling (GPU/Ascend; fp32 on CPU).")
@click.option("--resume", is_flag=True, help="Continue the run in --out where it stopped.")
@overwrite_option("Start again in a directory that holds a run.")
@click.option("--init-checkpoint", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start from these weights (a different class count keeps a fresh head); "
                   "the new model inherits its gsd_m unless the config sets one.")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Data-parallel worker processes on this node (through msrun).")
@click.option("--nnodes", type=click.IntRange(min=1), default=1,
              help="Multi-node: number of nodes; run the same command on each node.")
@click.option("--node-rank", type=click.IntRange(min=0), default=0,
              help="Multi-node: this node's index (0 = the master node).")
@click.option("--master-addr", default="127.0.0.1",
              help="Multi-node: address of node 0, reachable from every node.")
@click.option("--master-port", type=click.IntRange(min=1, max=65535), default=None,
              help="Port of the msrun scheduler on node 0 (default: a free port; set it "
                   "explicitly for multi-node runs).")
@quiet_option()
def train_cmd(config: str, overrides, data_root, output_dir, epochs, batch_size, lr, device,
              amp, resume, overwrite, init_checkpoint, nproc, nnodes, node_rank, master_addr,
              master_port, quiet) -> None:
    """Train a segmentation network from a YAML recipe.

    Progress events are appended to OUT/events.jsonl (JSON lines: start, step, epoch,
    checkpoint, end, error). Ctrl+C (or SIGTERM, or a file OUT/STOP) stops after the current
    step and saves OUT/last.ckpt; --resume continues from there with the same optimizer state
    and ends with the same weights as an uninterrupted run (on CPU). A run stopped by a signal
    exits with 130 (SIGINT or SIGTERM); one stopped through OUT/STOP exits with 0.

    Data parallel: --nproc N starts N workers with MindSpore's msrun on this machine. For several
    machines run the same command on each with --nnodes, --node-rank, --master-addr and
    --master-port (the run directory should be on a shared file system; node 0 writes it).
    """
    req = TrainingRequest(config=config, overrides=tuple(overrides), data_root=data_root,
                          output_dir=output_dir, epochs=epochs, batch_size=batch_size, lr=lr,
                          device=device, amp=amp, init_checkpoint=init_checkpoint,
                          resume=resume, overwrite=overwrite, nproc=nproc, nnodes=nnodes,
                          node_rank=node_rank, master_addr=master_addr,
                          master_port=master_port)
    progress = _Progress(quiet)
    with _StopFlag() as stop:
        outcome = run_training(req, on_event=progress, should_stop=stop)
    best = (f"best {outcome.monitor} {outcome.best_metric:.4f} at epoch {outcome.best_epoch}"
            if isinstance(outcome.best_metric, (int, float)) else "no best metric")
    click.echo(f"{outcome.status}: {outcome.epochs_done} epochs, {outcome.global_step} steps, "
               f"{best}; checkpoints in {outcome.output_dir}")
    if outcome.status == "stopped" and stop.signum is not None:
        click.echo(f"roadseg: interrupted; continue with --resume --out {outcome.output_dir}",
                   err=True)
        click.get_current_context().exit(130)
