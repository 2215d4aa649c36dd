"""Qt-free launcher of ``roadseg train`` as a separate process (the GUI's training panel).

* :func:`config_fields` reads a recipe's YAML keys (the form fields), :class:`TrainingForm`
  holds what the panel's form says, :func:`resolved_config` resolves it like ``roadseg train``
  would (the recipe, ``key=value`` overrides for changed fields, then the typed fields) and
  :func:`write_launch_config` writes that config to ``<out>/launch_config.yaml`` (staged and
  renamed). :func:`launch_command` is ``roadseg train --config <that file> --out <out>`` plus
  the options that are not config keys (``--nproc``, ``--resume``/``--overwrite``).
* :class:`TrainingProcess` starts it with :mod:`subprocess` (stdout/stderr to
  ``<out>/train_stdout.log``), so the app survives a crash of training; :meth:`poll_events`
  tails ``<out>/events.jsonl`` with :class:`segcore.run_folder.EventTail` (offset kept, a
  half-written last line waits for the next poll).
* Stop: the process is asked to stop by the file ``<out>/STOP`` (what ``segcore.train`` checks
  between steps, in every rank of a data-parallel run): it saves ``last.ckpt`` +
  ``train_state.json`` and exits with status ``stopped``. :meth:`TrainingProcess.resume` starts
  ``roadseg train --resume`` on the same run directory.

The run folder's file names and readers are :mod:`segcore.run_folder`'s (re-exported here for
the GUI).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from app.service.errors import UserError
from app.service.training import CONFIG_DIR, config_path, list_configs
from segcore.run_folder import (EVENTS_FILE, LAUNCH_CONFIG_FILE, STATE_FILE, STDOUT_LOG,
                                STOP_FILE, EventTail, run_summary)

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

DEVICES = ("cpu", "gpu", "ascend")
#: Keys the typed form widgets own (never ``key=value`` overrides from the form's fields).
TYPED_KEYS = ("model", "data_root", "output_dir", "epochs", "batch_size", "lr", "device",
              "init_checkpoint")


def list_networks() -> List[str]:
    """All registered networks (``segcore.list_models()``), sorted."""
    from segcore.models import list_models

    return list(list_models())


def list_recipes() -> List[str]:
    """Paths of the shipped training recipes (``resources/configs/*.yaml``)."""
    return [str(p) for p in list_configs()]


def recipe_for_model(model: str) -> Optional[str]:
    """The shipped recipe named after ``model``, if there is one."""
    p = CONFIG_DIR / f"{model}.yaml"
    return str(p) if p.is_file() else None


def config_fields(config: str) -> Dict[str, Any]:
    """The keys of a recipe as the form shows them: the YAML's own keys first (file order),
    then every other :class:`segcore.config.TrainConfig` key with its default."""
    from segcore.config import TrainConfig

    path = config_path(config)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the config ({str(exc).splitlines()[0]})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a config must be a flat mapping of keys to values")
    out: Dict[str, Any] = dict(raw)
    for k, v in TrainConfig().to_dict().items():
        out.setdefault(k, v)
    return out


def format_value(value: Any) -> str:
    """A config value as one line of YAML flow text (what a form field shows)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith(" ...") else text


@dataclass
class TrainingForm:
    """What the training panel's form holds.

    ``fields``: config keys edited in the form (YAML text or typed values); only keys whose
    value differs from the recipe file become ``--set`` overrides. ``statuses``: review
    statuses of chips datasets to train on (default accepted only).
    """

    config: str
    data_root: str
    output_dir: str
    model: Optional[str] = None
    device: str = "cpu"
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    init_checkpoint: Optional[str] = None
    nproc: int = 1
    fields: Dict[str, Any] = field(default_factory=dict)
    statuses: Sequence[str] = ("accepted",)
    overwrite: bool = True


def _same(a: Any, b: Any) -> bool:
    return format_value(a) == format_value(b)


def overrides_for(form: TrainingForm) -> List[str]:
    """``key=value`` strings for the form fields that differ from the recipe file."""
    base = config_fields(form.config)
    out: List[str] = []
    for key, value in form.fields.items():
        if key in TYPED_KEYS:
            continue
        if key in base and _same(value, base[key]):
            continue
        out.append(f"{key}={format_value(value)}")
    if form.model and form.model != base.get("model"):
        out.append(f"model={form.model}")
    ds = form.fields.get("dataset", base.get("dataset"))
    statuses = [s for s in form.statuses]
    if ds == "chips" and statuses and statuses != ["accepted"]:
        kwargs = dict(base.get("dataset_kwargs") or {})
        kwargs.update(form.fields.get("dataset_kwargs") or {})
        kwargs["statuses"] = statuses
        out = [o for o in out if not o.startswith("dataset_kwargs=")]
        out.append("dataset_kwargs=" + format_value(kwargs))
    return out


def roadseg_command() -> List[str]:
    """How to run ``roadseg`` with this interpreter (works without the console script)."""
    return [sys.executable, "-m", "app.cli"]


def resolved_config(form: TrainingForm, resume: bool = False):
    """The validated :class:`segcore.config.TrainConfig` that ``form`` asks for, resolved as
    ``roadseg train`` resolves its options (``resume``: continue its run, so no
    ``init_checkpoint`` from the form). :class:`UserError` (one line) when the form is
    incomplete or the config invalid."""
    from app.service.training import TrainingRequest, resolve_config

    if not form.output_dir:
        raise UserError("choose a run folder for the training outputs")
    if not resume and not form.data_root:
        raise UserError("choose the dataset folder to train on")
    if form.nproc < 1:
        raise UserError(f"number of workers must be >= 1, got {form.nproc}")
    init = form.init_checkpoint if not resume else None
    req = TrainingRequest(config=form.config, overrides=tuple(overrides_for(form)),
                          data_root=form.data_root or None, output_dir=form.output_dir,
                          epochs=form.epochs, batch_size=form.batch_size, lr=form.lr,
                          device=form.device or None, init_checkpoint=init or None)
    return resolve_config(req)


def check_config(form: TrainingForm) -> None:
    """Resolve the form's config like ``roadseg train`` would (``UserError`` when invalid), so
    the panel can refuse a bad form before starting a process."""
    resolved_config(form)


def write_launch_config(form: TrainingForm, resume: bool = False) -> Path:
    """Write the config ``form`` resolves to (:func:`resolved_config`) to
    ``<output_dir>/launch_config.yaml`` (staged and renamed) and return its path."""
    from segcore.config import save_resolved

    cfg = resolved_config(form, resume=resume)
    try:
        return save_resolved(cfg, cfg.output_dir, name=LAUNCH_CONFIG_FILE)
    except OSError as exc:
        raise UserError(f"{Path(cfg.output_dir) / LAUNCH_CONFIG_FILE}: cannot write the "
                        f"training config ({exc.strerror or exc})") from exc


def launch_command(config_file: PathLike, output_dir: PathLike, nproc: int = 1,
                   resume: bool = False, overwrite: bool = True) -> List[str]:
    """``roadseg train --config <config_file> --out <output_dir>`` with the options that are
    not config keys: ``--nproc`` (> 1), ``--resume`` or ``--overwrite``."""
    cmd = roadseg_command() + ["train", "--config", str(config_file), "--out", str(output_dir)]
    if nproc > 1:
        cmd += ["--nproc", str(int(nproc))]
    if resume:
        cmd.append("--resume")
    elif overwrite:
        cmd.append("--overwrite")
    return cmd


class TrainingProcess:
    """One ``roadseg train`` child process and its run folder.

    ``start()`` launches it (non-blocking); ``poll_events()`` returns new events;
    ``returncode`` is None while it runs; ``request_stop()`` writes ``STOP``; ``kill()`` ends it
    hard (no checkpoint). ``resume()`` starts ``--resume`` on the same folder.
    """

    def __init__(self, form: TrainingForm, env: Optional[Dict[str, str]] = None) -> None:
        self.form = form
        self.output_dir = Path(form.output_dir).expanduser().resolve()
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.tail: Optional[EventTail] = None
        self.command: List[str] = []
        self._log = None

    @property
    def events_path(self) -> Path:
        return self.output_dir / EVENTS_FILE

    @property
    def log_path(self) -> Path:
        return self.output_dir / STDOUT_LOG

    def _launch(self, resume: bool) -> None:
        if self.running:
            raise UserError(f"{self.output_dir}: training is already running")
        config_file = write_launch_config(self.form, resume=resume)  # a bad form: no folder
        self.command = launch_command(config_file, self.output_dir, nproc=self.form.nproc,
                                      resume=resume, overwrite=self.form.overwrite)
        stop = self.output_dir / STOP_FILE
        if stop.exists():
            stop.unlink()
        # a fresh run (--overwrite) truncates events.jsonl; a resumed one appends to it
        self.tail = EventTail(self.events_path, from_end=resume)
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("GLOG_v", "3")
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"]
                                    if env.get("PYTHONPATH") else "")
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")
        self._log.write(("$ " + " ".join(self.command) + "\n").encode())
        self._log.flush()
        logger.info("starting: %s", " ".join(self.command))
        try:
            self.proc = subprocess.Popen(self.command, stdout=self._log,
                                         stderr=subprocess.STDOUT, env=env,
                                         cwd=str(self.output_dir), start_new_session=True)
        except OSError as exc:
            raise UserError(f"cannot start roadseg train ({exc})") from exc

    def start(self) -> None:
        """Start a new run in ``output_dir`` (an earlier run there is replaced)."""
        if not self.form.overwrite and (self.output_dir / STATE_FILE).exists():
            raise UserError(f"{self.output_dir}: already holds a training run (resume it or "
                            "allow overwriting)")
        if self.form.overwrite and self.events_path.exists() and not self.running:
            self.events_path.unlink()
        self._launch(resume=False)

    def resume(self) -> None:
        """Continue the stopped run in ``output_dir`` (``roadseg train --resume``)."""
        if not (self.output_dir / STATE_FILE).exists():
            raise UserError(f"{self.output_dir}: nothing to resume (no {STATE_FILE})")
        self._launch(resume=True)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def poll_events(self) -> List[Dict[str, Any]]:
        return self.tail.read() if self.tail is not None else []

    def request_stop(self) -> None:
        """Ask for a clean stop: the trainer saves ``last.ckpt`` after the current step."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / STOP_FILE).write_text("stop requested from the GUI\n")

    def kill(self) -> None:
        """End the process at once (no checkpoint)."""
        if self.running:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout_s: Optional[float] = None) -> Optional[int]:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, max_chars: int = 2000) -> str:
        """The end of the child's stdout/stderr log."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - max_chars))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def summary(self) -> Dict[str, Any]:
        return run_summary(self.output_dir)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


__all__ = ["TrainingForm", "TrainingProcess", "EventTail", "resolved_config",
           "write_launch_config", "launch_command", "overrides_for", "config_fields",
           "format_value", "list_networks", "list_recipes", "recipe_for_model", "run_summary",
           "check_config", "roadseg_command", "DEVICES", "TYPED_KEYS", "STATE_FILE",
           "EVENTS_FILE", "STOP_FILE", "STDOUT_LOG", "LAUNCH_CONFIG_FILE"]
