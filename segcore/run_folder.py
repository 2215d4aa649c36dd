"""The run folder of a training run: its file names, the training state, the events log and
the readers of both (used by :mod:`segcore.train`, which writes the folder, and by the service
and the GUI, which watch it).

A run folder (``TrainConfig.output_dir``) holds:

* ``epoch_NNN.ckpt`` every epoch, ``best.ckpt`` when the monitored metric improves and
  ``last.ckpt`` (weights + optimizer state) with their metadata sidecars,
* ``train_state.json`` (:data:`STATE_FILE`): epoch, step inside the epoch, global step, lr scale,
  best metric, plateau counter, loss scale, seed, status, history; what ``--resume`` reads,
* ``events.jsonl`` (:data:`EVENTS_FILE`): one JSON object per line (``type``
  start/step/epoch/checkpoint/plateau/end/error, ``step``, ``epoch``, ``loss``, ``lr``,
  ``metrics``, ``eta_s``, ``time``), written by :class:`EventLog`, read by :func:`read_events`
  (all at once) or :class:`EventTail` (incrementally, while the run grows it),
* ``config.yaml`` (:data:`CONFIG_FILE`): the resolved config the trainer ran with;
  ``launch_config.yaml`` (:data:`LAUNCH_CONFIG_FILE`): the resolved config a run was started
  from (msrun workers, the GUI's training panel),
* ``STOP`` (:data:`STOP_FILE`): asks a running trainer to save ``last.ckpt`` and stop,
* ``train_stdout.log`` (:data:`STDOUT_LOG`): the output of a ``roadseg train`` process that the
  GUI's training panel started.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

from .errors import CheckpointError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
EventFn = Callable[[Dict[str, Any]], None]

STATE_FILE = "train_state.json"
EVENTS_FILE = "events.jsonl"
STOP_FILE = "STOP"
CONFIG_FILE = "config.yaml"
LAUNCH_CONFIG_FILE = "launch_config.yaml"
BEST_CKPT = "best.ckpt"
LAST_CKPT = "last.ckpt"
#: stdout/stderr of a ``roadseg train`` process started by the GUI's training panel.
STDOUT_LOG = "train_stdout.log"
#: Files whose presence marks a folder that already holds a training run.
RUN_FILES = (STATE_FILE, EVENTS_FILE)


def epoch_checkpoint_name(epoch: int, suffix: str = ".ckpt") -> str:
    """``epoch_NNN.ckpt`` (or its sidecar with ``suffix=".json"``)."""
    return f"epoch_{int(epoch):03d}{suffix}"


@dataclass
class TrainResult:
    """Outcome of a training run (:func:`segcore.train.train`, or read back from a run folder
    with :func:`result_from_state`).

    ``status``: ``completed`` (all epochs / max_steps), ``early_stopped`` (patience or plateau
    rule), ``stopped`` (``should_stop``). ``epochs_done`` counts completed epochs;
    ``best_metric`` is the best value of ``monitor`` (None without any epoch).
    """

    status: str
    output_dir: Path
    epochs_done: int
    global_step: int
    monitor: str
    best_metric: Optional[float]
    best_epoch: Optional[int]
    best_checkpoint: Optional[Path]
    last_checkpoint: Optional[Path]
    history: List[Dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""


# ----------------------------------------------------------------------------- JSON helpers
def json_default(o: Any) -> Any:
    """``json.dump``'s ``default`` for numpy scalars and paths."""
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def clean_json(x: Any) -> Any:
    """Floats with nan/inf become None so events and sidecars stay strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean_json(v) for v in x]
    return x


def atomic_write_json(path: Path, obj: Dict[str, Any]) -> None:
    """Write ``obj`` to a temporary name beside ``path`` and rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(clean_json(obj), f, indent=2, default=json_default)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- events
class EventLog:
    """Appends events to ``<dir>/events.jsonl`` (only when ``write``) and forwards them."""

    def __init__(self, directory: Path, on_event: Optional[EventFn], write: bool) -> None:
        self.path = Path(directory) / EVENTS_FILE
        self.on_event = on_event
        self.write = write
        self._last_step_write = 0.0

    def emit(self, type_: str, **fields: Any) -> Dict[str, Any]:
        ev: Dict[str, Any] = {"type": type_, "time": round(time.time(), 3)}
        ev.update(fields)
        if self.write:
            now = time.monotonic()
            if type_ != "step" or fields.get("force") or now - self._last_step_write >= 1.0:
                if type_ == "step":
                    self._last_step_write = now
                line = json.dumps({k: v for k, v in ev.items() if k != "force"},
                                  default=json_default)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(line + "\n")
        ev.pop("force", None)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:  # noqa: BLE001  (a broken listener must not kill training)
                logger.exception("on_event callback failed")
        return ev


class EventTail:
    """Incremental reader of a growing ``events.jsonl``: each :meth:`read` returns the complete
    lines added since the last one (a half-written last line waits for the next call)."""

    def __init__(self, path: PathLike, from_end: bool = False) -> None:
        self.path = Path(path)
        self.offset = self.path.stat().st_size if (from_end and self.path.exists()) else 0
        self._buf = b""

    def read(self) -> List[Dict[str, Any]]:
        """New events since the last call (unreadable lines are skipped with a warning)."""
        if not self.path.exists():
            return []
        size = self.path.stat().st_size
        if size < self.offset:  # file replaced (overwrite): start again
            self.offset, self._buf = 0, b""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        self.offset += len(chunk)
        data = self._buf + chunk
        *lines, self._buf = data.split(b"\n")
        out = []
        for line in lines:
            ev = self._parse(line, warn=True)
            if ev is not None:
                out.append(ev)
        return out

    def pending(self) -> Optional[Dict[str, Any]]:
        """The last line still waiting for its newline, when it already is a whole event."""
        return self._parse(self._buf, warn=False)

    def _parse(self, line: bytes, warn: bool) -> Optional[Dict[str, Any]]:
        line = line.strip()
        if not line:
            return None
        try:
            return json.loads(line.decode("utf-8"))
        except ValueError:
            if warn:
                logger.warning("%s: skipping an unreadable event line", self.path)
            return None


def read_events(output_dir: PathLike) -> List[Dict[str, Any]]:
    """All events of ``<output_dir>/events.jsonl`` (a half-written last line is skipped)."""
    tail = EventTail(Path(output_dir) / EVENTS_FILE)
    out = tail.read()
    last = tail.pending()
    if last is not None:
        out.append(last)
    return out


# ----------------------------------------------------------------------------- state
def read_train_state(output_dir: PathLike) -> Dict[str, Any]:
    """The ``train_state.json`` of a run directory; :class:`CheckpointError` when absent."""
    p = Path(output_dir) / STATE_FILE
    if not p.is_file():
        raise CheckpointError(f"{p}: no training state to resume from")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: unreadable training state ({exc})") from exc


def _existing(path: Path) -> Optional[Path]:
    return path if path.exists() else None


def result_from_state(output_dir: PathLike, monitor: str = "") -> TrainResult:
    """The :class:`TrainResult` of a finished (or stopped) run read back from its folder (what
    a data-parallel launcher returns); ``monitor`` and ``stop_reason`` come from the last
    ``end`` event. A folder without ``train_state.json`` (a worker node that does not share
    node 0's run folder) gives a ``completed`` result without metrics."""
    out = Path(output_dir)
    if not (out / STATE_FILE).exists():
        return TrainResult("completed", out, 0, 0, monitor, None, None, None, None, [],
                           "state is written by node 0")
    st = read_train_state(out)
    reason = ""
    for ev in reversed(read_events(out)):
        if ev.get("type") == "end":
            monitor = ev.get("monitor", monitor)
            reason = ev.get("reason") or ""
            break
    return TrainResult(st.get("status", "unknown"), out, int(st.get("epoch", 0)),
                       int(st.get("global_step", 0)), monitor, st.get("best_metric"),
                       st.get("best_epoch"), _existing(out / BEST_CKPT),
                       _existing(out / LAST_CKPT), list(st.get("history", [])), reason)


def run_summary(output_dir: PathLike) -> Dict[str, Any]:
    """State of a run folder: ``status``, ``epoch``, ``global_step``, ``best_metric``,
    ``best_epoch``, ``best_checkpoint`` / ``last_checkpoint`` paths (None when absent),
    ``can_resume``. Never raises for a missing or unreadable state (all None then)."""
    out = Path(output_dir)
    p = out / STATE_FILE
    try:
        st = read_train_state(out) if p.is_file() else {}
    except CheckpointError:
        st = {}
    best, last = _existing(out / BEST_CKPT), _existing(out / LAST_CKPT)
    return {"status": st.get("status"), "epoch": st.get("epoch"),
            "global_step": st.get("global_step"), "best_metric": st.get("best_metric"),
            "best_epoch": st.get("best_epoch"),
            "best_checkpoint": str(best) if best else None,
            "last_checkpoint": str(last) if last else None,
            "can_resume": p.is_file() and st.get("status") != "completed"}


def holds_run(output_dir: PathLike) -> List[str]:
    """Names of the :data:`RUN_FILES` present in ``output_dir`` (empty: no run there)."""
    out = Path(output_dir)
    return [n for n in RUN_FILES if (out / n).exists()]


def clear_run(output_dir: PathLike) -> None:
    """Remove the files that mark a run (state, events, ``STOP``) before starting again there;
    checkpoints are replaced as the new run writes them."""
    out = Path(output_dir)
    for n in RUN_FILES + (STOP_FILE,):
        p = out / n
        if p.exists():
            p.unlink()


__all__ = ["STATE_FILE", "EVENTS_FILE", "STOP_FILE", "CONFIG_FILE", "LAUNCH_CONFIG_FILE",
           "BEST_CKPT", "LAST_CKPT", "STDOUT_LOG", "RUN_FILES", "epoch_checkpoint_name",
           "TrainResult", "EventLog", "EventTail", "read_events", "read_train_state",
           "result_from_state", "run_summary", "holds_run", "clear_run", "json_default",
           "clean_json", "atomic_write_json"]
