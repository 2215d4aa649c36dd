"""Data-parallel training through MindSpore's own ``msrun`` launcher.

``msrun`` starts ``worker_num`` copies of ``python -m segcore.distributed --config C`` (this
module); each worker calls ``mindspore.communication.init()``, switches to
``ParallelMode.DATA_PARALLEL`` with averaged gradients and runs :func:`segcore.train.train` with
its rank: every rank trains on its own shard of each epoch's permutation, gradients are
all-reduced, only rank 0 writes checkpoints, ``train_state.json`` and ``events.jsonl``.

Multi-node: run the same command on every node with ``nnodes`` > 1, that node's
``node_rank`` and the address/port of node 0 (``master_addr``/``master_port``).

``msrun`` runs ``python`` from ``PATH``; :func:`launch` puts the directory of the current
interpreter first on ``PATH`` so workers use the same virtual environment.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # pragma: no cover
    # msrun runs this file as a script: import the package (not this file's sibling modules)
    import pathlib as _pl
    import sys as _sys

    _here = _pl.Path(__file__).resolve().parent
    _sys.path[:] = [p for p in _sys.path if p and _pl.Path(p).resolve() != _here]
    _sys.path.insert(0, str(_here.parent))
    from segcore.distributed import worker_main as _worker_main

    _sys.exit(_worker_main())

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .errors import ConfigError, SegcoreError

logger = logging.getLogger(__name__)


class DistributedError(SegcoreError, RuntimeError):
    """A data-parallel run that could not start or whose workers failed."""


def free_port() -> int:
    """A TCP port that is free on this machine right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def msrun_executable() -> str:
    """Path of ``msrun`` (beside the interpreter, else on ``PATH``)."""
    beside = Path(sys.executable).parent / "msrun"
    if beside.exists():
        return str(beside)
    found = shutil.which("msrun")
    if not found:
        raise DistributedError("msrun (MindSpore's launcher) not found beside "
                               f"{sys.executable} nor on PATH")
    return found


def msrun_command(config_path: os.PathLike, nproc: int, log_dir: os.PathLike, *,
                  master_port: Optional[int] = None, master_addr: str = "127.0.0.1",
                  nnodes: int = 1, node_rank: int = 0, resume: bool = False) -> List[str]:
    """The ``msrun`` command line that trains ``config_path`` on ``nproc`` local workers
    (``nproc * nnodes`` in all)."""
    if nproc < 1 or nnodes < 1:
        raise ConfigError(f"nproc ({nproc}) and nnodes ({nnodes}) must be >= 1")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"node_rank {node_rank} outside [0, {nnodes})")
    port = master_port or free_port()
    cmd = [msrun_executable(), f"--worker_num={nproc * nnodes}", f"--local_worker_num={nproc}",
           f"--master_addr={master_addr}", f"--master_port={port}", f"--node_rank={node_rank}",
           f"--log_dir={log_dir}", "--join=True", "--cluster_time_out=120",
           # msrun runs "python <script> <args>": this file, which imports the package
           str(Path(__file__).resolve()), "--config", str(config_path)]
    if resume:
        cmd.append("--resume")
    return cmd


def _worker_env() -> Dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("GLOG_v", "3")
    # the workers import this package from wherever the launcher imported it
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def launch(config_path: os.PathLike, nproc: int, output_dir: os.PathLike, *,
           resume: bool = False, master_port: Optional[int] = None,
           master_addr: str = "127.0.0.1", nnodes: int = 1, node_rank: int = 0,
           on_event: Optional[Callable[[Dict[str, Any]], None]] = None,
           should_stop: Optional[Callable[[], bool]] = None, poll_s: float = 0.5,
           timeout_s: Optional[float] = None) -> int:
    """Run ``msrun`` for ``config_path`` and wait for it.

    Events that rank 0 appends to ``<output_dir>/events.jsonl`` are passed to ``on_event`` as
    they appear; ``should_stop()`` True writes ``<output_dir>/STOP``, which every rank sees
    between steps (they agree through an all-reduce), so all ranks stop at the same step.
    Returns 0 on success; raises :class:`DistributedError` with the end of the failing worker
    log otherwise.
    """
    from .run_folder import EVENTS_FILE, STOP_FILE, EventTail

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = out / "msrun_logs"
    log_dir.mkdir(exist_ok=True)
    stop_file = out / STOP_FILE
    if stop_file.exists():
        stop_file.unlink()
    tail = EventTail(out / EVENTS_FILE, from_end=True)
    cmd = msrun_command(config_path, nproc, log_dir, master_port=master_port,
                        master_addr=master_addr, nnodes=nnodes, node_rank=node_rank,
                        resume=resume)
    logger.info("launching: %s", " ".join(cmd))
    t0 = time.monotonic()
    with open(log_dir / "launcher.log", "w") as lf:
        proc = subprocess.Popen(cmd, env=_worker_env(), stdout=lf, stderr=subprocess.STDOUT,
                                cwd=str(out))
        try:
            while True:
                rc = proc.poll()
                if on_event is not None:
                    for ev in tail.read():
                        on_event(ev)
                if rc is not None:
                    break
                if should_stop is not None and not stop_file.exists() and should_stop():
                    stop_file.write_text("stop requested\n")
                if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                    proc.terminate()
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    raise DistributedError(f"msrun did not finish within {timeout_s:.0f} s "
                                           f"(logs in {log_dir})")
                time.sleep(poll_s)
        except KeyboardInterrupt:
            stop_file.write_text("interrupted\n")
            proc.wait()
            raise
    if stop_file.exists():
        stop_file.unlink()
    if rc != 0:
        raise DistributedError(f"data-parallel training failed (msrun exit {rc}): "
                               f"{_last_error(log_dir)} (logs in {log_dir})")
    return 0


def _last_error(log_dir: Path) -> str:
    for p in sorted(log_dir.glob("worker_*.log")):
        try:
            lines = p.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if "Error" in line or "error:" in line:
                return f"{p.name}: {line.strip()[:300]}"
    return "no error line in the worker logs"


# ----------------------------------------------------------------------------- worker side
def init_worker(device: str = "cpu") -> tuple:
    """Inside an ``msrun`` worker: set the device, ``init()`` communication and switch to data
    parallel with averaged gradients. Returns ``(rank, world_size)``."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    from .device import set_device

    set_device(device, "pynative")
    init()
    rank, world = get_rank(), get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL,
                                 gradients_mean=True, device_num=world)
    return rank, world


def worker_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of one worker: ``python -m segcore.distributed --config C [--resume]``."""
    from .config import load_config
    from .train import train

    ap = argparse.ArgumentParser(prog="segcore.distributed")
    ap.add_argument("--config", required=True)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(args.config)
    rank, world = init_worker(cfg.device)
    logger.info("worker rank %d of %d", rank, world)
    result = train(cfg, resume=args.resume, rank=rank, world_size=world)
    logger.info("rank %d finished: %s after %d steps", rank, result.status, result.global_step)
    return 0


if __name__ == "__main__":  # pragma: no cover  (python -m segcore.distributed)
    sys.exit(worker_main())
