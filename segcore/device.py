"""Device selection: set the MindSpore context for ``cpu``, ``gpu`` or ``ascend``.

A requested accelerator that the installed MindSpore build or the machine does not provide
raises :class:`DeviceError` with one line saying what is missing, instead of MindSpore's long
runtime error (or a silent fallback to the CPU).
"""
from __future__ import annotations

import logging
import os
import shutil
from typing import Optional

from .errors import DeviceError

logger = logging.getLogger(__name__)

_TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend"}


def _gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0"):
        return True
    return shutil.which("nvidia-smi") is not None and os.path.exists("/proc/driver/nvidia")


def _ascend_visible() -> bool:
    return os.path.exists("/dev/davinci0") or os.path.exists("/dev/davinci_manager")


def device_available(device: str) -> bool:
    """Whether ``device`` (cpu/gpu/ascend) looks usable from this process (hardware present)."""
    device = device.lower()
    if device == "cpu":
        return True
    if device == "gpu":
        return _gpu_visible()
    if device == "ascend":
        return _ascend_visible()
    return False


def set_device(device: str = "cpu", mode: str = "pynative", device_id: Optional[int] = None,
               launch_blocking: bool = False) -> str:
    """Point MindSpore at ``device`` and execution ``mode`` (``pynative`` or ``graph``).

    ``launch_blocking`` (CPU, PyNative): run operators synchronously
    (``mindspore.runtime.launch_blocking``) for the rest of the process. On a small CPU the
    asynchronous pipeline's hand-offs between its queue threads cost more than they overlap
    for a network of many small operators (DDRNet-23-slim, 8x256² on 2 cores: 1.11 against
    1.26-1.30 s per training step) and less for one of big operators (D-LinkNet-34: 5.0
    against 4.5 s), so the training recipe chooses (``launch_blocking`` key).

    Returns the MindSpore target name (``"CPU"``, ``"GPU"``, ``"Ascend"``). Raises
    :class:`DeviceError` when the device is unknown or absent.
    """
    import mindspore as ms

    key = device.lower()
    if key not in _TARGETS:
        raise DeviceError(f"unknown device {device!r}; valid: cpu, gpu, ascend")
    if not device_available(key):
        raise DeviceError(f"device {key!r} requested but no {_TARGETS[key]} device is available "
                          "on this machine (use --device cpu)")
    target = _TARGETS[key]
    try:
        current = ms.get_context("device_target")
    except (RuntimeError, ValueError):  # pragma: no cover - older MindSpore
        current = None
    try:
        # MindSpore refuses set_device once kernels have run (a second run in one process, the
        # GUI, tests); asking again for the device already in use is not an error.
        if current != target or device_id is not None:
            ms.set_device(target, device_id) if device_id is not None else ms.set_device(target)
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeviceError(f"device {key!r}: MindSpore cannot use it ({first})") from exc
    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    if launch_blocking and target == "CPU" and mode != "graph":
        ms.runtime.launch_blocking()  # idempotent; lasts for the process
    logger.info("MindSpore %s on %s, %s mode", ms.__version__, target, mode)
    return target


def supports_amp(device: str) -> bool:
    """Mixed precision with dynamic loss scaling is used on GPU and Ascend only."""
    return device.lower() in ("gpu", "ascend")


__all__ = ["set_device", "device_available", "supports_amp"]
