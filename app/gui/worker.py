"""Work off the UI thread: one helper for the whole GUI.

:class:`Worker` runs a function (or a generator function) in a worker thread and reports back
through Qt signals that are delivered on the UI thread, in order::

    started -> (progress | yielded)* -> returned | errored | cancelled -> finished

* ``progress_arg="on_progress"`` passes the worker's :meth:`Worker.report` to the function
  under that keyword; each call ``report(*values)`` becomes ``progress(values)``.
* ``cancel_arg="should_cancel"`` passes :meth:`Worker.is_cancelled` under that keyword: the
  function polls it and stops early (the service layer's convention). A generator function is
  also stopped between two items when :meth:`Worker.cancel` was called (``cancelled``), and a
  worker cancelled before its thread picked it up never runs (``cancelled``).
* ``owner``: a QObject (the panel that started the work): once it is deleted, the worker's
  remaining signals are dropped and the work is asked to stop.
* ``pool``: a :class:`WorkerPool` to share threads (e.g. one reader thread that serialises
  raster reads); without one, each worker gets its own thread.

:meth:`Worker.wait` blocks until the function is done and delivers the pending signals at once
(tests, scripts, screenshots). A worker keeps itself alive until its signals are delivered, so
callers need not hold a reference.

:class:`ExtractionRunner` drives :func:`app.service.extraction.run_extraction` with it.
"""
from __future__ import annotations

import inspect
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence, Set

import shiboken6
from PySide6.QtCore import QCoreApplication, QEvent, QObject, Qt, Signal, Slot

from app.service.extraction import ExtractionRequest, ExtractionResult, run_extraction

log = logging.getLogger(__name__)

#: workers started and not yet delivered (they must outlive their thread until then)
_LIVE: Set["Worker"] = set()
_LIVE_LOCK = threading.Lock()


class WorkerPool:
    """A named set of threads shared by workers (``max_workers=1`` runs them one by one, in
    the order they were started)."""

    def __init__(self, name: str, max_workers: int = 1) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)

    def submit(self, fn: Callable[[], None]) -> None:
        self._executor.submit(fn)

    def shutdown(self) -> None:
        """No new work; queued workers not started yet are dropped (their ``cancelled`` and
        ``finished`` are never delivered: cancel them first if something waits for that)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class Worker(QObject):
    """One function call in a worker thread (see the module docstring).

    Signals (all on the UI thread):
        started(): the function began running.
        progress(tuple): the values of one ``report(*values)`` call.
        yielded(object): one item of a generator function.
        returned(object): the return value.
        errored(object): the exception the function raised (logged with its traceback).
        cancelled(): stopped by :meth:`cancel` before it returned.
        finished(): always last, whatever the outcome.
    """

    started = Signal()
    progress = Signal(tuple)
    yielded = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    finished = Signal()

    # emitted from the worker thread, queued to this object (which lives on the UI thread)
    _t_started = Signal()
    _t_progress = Signal(tuple)
    _t_yielded = Signal(object)
    _t_done = Signal()

    def __init__(self, fn: Callable[..., Any], *args: Any,
                 progress_arg: Optional[str] = None, cancel_arg: Optional[str] = None,
                 pool: Optional[WorkerPool] = None, owner: Optional[QObject] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__()
        self.fn, self.args, self.kwargs = fn, args, dict(kwargs)
        if progress_arg:
            self.kwargs[progress_arg] = self.report
        if cancel_arg:
            self.kwargs[cancel_arg] = self.is_cancelled
        self.pool = pool
        self.owner = owner
        self.name = name or getattr(fn, "__name__", "worker")
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._outcome: Optional[tuple] = None   # ("returned", value) | ("errored", exc) | ...
        self._delivered = False
        self._started = False
        self.started_at = 0.0
        self._t_started.connect(self._relay_started, Qt.QueuedConnection)
        self._t_progress.connect(self._relay_progress, Qt.QueuedConnection)
        self._t_yielded.connect(self._relay_yielded, Qt.QueuedConnection)
        self._t_done.connect(self._deliver, Qt.QueuedConnection)

    # -- control (UI thread) -------------------------------------------------------------
    def start(self) -> "Worker":
        """Run the function in a worker thread; returns self (connect signals first)."""
        if self._started:
            raise RuntimeError(f"worker {self.name} was already started")
        self._started = True
        self.started_at = time.perf_counter()
        with _LIVE_LOCK:
            _LIVE.add(self)
        if self.pool is not None:
            self.pool.submit(self._run)
        else:
            threading.Thread(target=self._run, name=f"roadseg-{self.name}", daemon=True).start()
        return self

    def cancel(self) -> None:
        """Ask the work to stop (thread-safe; see the module docstring for what stops)."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def is_running(self) -> bool:
        """Started and its outcome not delivered yet."""
        return self._started and not self._delivered

    def is_done(self) -> bool:
        """The function has ended (its signals may still be on their way)."""
        return self._done.is_set()

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Block until the function has ended, then deliver its pending signals now (call on
        the UI thread). True when it ended within ``timeout_s``."""
        if not self._started:
            return False
        if not self._done.wait(timeout_s):
            return False
        QCoreApplication.sendPostedEvents(self, QEvent.MetaCall)
        self._deliver()
        return True

    # -- worker thread -------------------------------------------------------------------
    def report(self, *values: Any) -> None:
        """Progress from the function (any thread): becomes ``progress(values)``."""
        self._t_progress.emit(tuple(values))

    def _run(self) -> None:
        try:
            if self._cancel.is_set():
                self._outcome = ("cancelled", None)
                return
            self._t_started.emit()
            result = self.fn(*self.args, **self.kwargs)
            if inspect.isgenerator(result):
                result = self._drain(result)
            if self._outcome is None:
                self._outcome = ("returned", result)
        except BaseException as exc:  # noqa: BLE001 - delivered as `errored`, never escapes
            log.debug("worker %s raised:\n%s", self.name, traceback.format_exc())
            self._outcome = ("errored", exc)
        finally:
            self._done.set()
            try:
                self._t_done.emit()
            except RuntimeError:  # the worker was deleted meanwhile (interpreter shutdown)
                pass

    def _drain(self, gen: Any) -> Any:
        while True:
            if self._cancel.is_set():
                gen.close()
                self._outcome = ("cancelled", None)
                return None
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            self._t_yielded.emit(item)

    # -- delivery (UI thread) ------------------------------------------------------------
    def _owner_alive(self) -> bool:
        if self.owner is None or shiboken6.isValid(self.owner):
            return True
        self._cancel.set()
        return False

    @Slot()
    def _relay_started(self) -> None:
        if self._owner_alive():
            self.started.emit()

    @Slot(tuple)
    def _relay_progress(self, values: tuple) -> None:
        if not self._delivered and self._owner_alive():
            self.progress.emit(values)

    @Slot(object)
    def _relay_yielded(self, item: Any) -> None:
        if not self._delivered and self._owner_alive():
            self.yielded.emit(item)

    @Slot()
    def _deliver(self) -> None:
        if self._delivered or not self._done.is_set():
            return
        self._delivered = True
        with _LIVE_LOCK:
            _LIVE.discard(self)
        if not self._owner_alive():
            return
        kind, value = self._outcome or ("cancelled", None)
        try:
            if kind == "returned":
                self.returned.emit(value)
            elif kind == "errored":
                self.errored.emit(value)
            else:
                self.cancelled.emit()
        finally:
            self.finished.emit()


def live_workers() -> Sequence[Worker]:
    """Workers started and not delivered yet (diagnostics, tests)."""
    with _LIVE_LOCK:
        return list(_LIVE)


def error_text(exc: BaseException) -> str:
    """``Type: message`` of an exception for one line in a dialog or log."""
    return f"{type(exc).__name__}: {exc}"


def error_details(exc: BaseException) -> str:
    """The traceback of an exception a worker delivered (for a dialog's details)."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class ExtractionRunner(QObject):
    """One extraction run at a time on a :class:`Worker`; emits ``progress(done, total,
    stage)`` and ``finished(result)`` on the UI thread (an unexpected exception becomes a
    failed :class:`ExtractionResult`, never a crash)."""

    progress = Signal(int, int, str)
    finished = Signal(object)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.worker: Optional[Worker] = None
        self.started_at = 0.0

    def is_running(self) -> bool:
        return self.worker is not None

    def start(self, request: ExtractionRequest,
              run_fn: Callable[..., ExtractionResult] = run_extraction) -> None:
        if self.worker is not None:
            raise RuntimeError("an extraction is already running")
        w = Worker(run_fn, request, progress_arg="on_progress", cancel_arg="should_cancel",
                   name="extraction")
        w.progress.connect(self._on_progress)
        w.returned.connect(self._on_returned)
        w.errored.connect(self._on_errored)
        w.cancelled.connect(self._on_cancelled)
        self.worker = w
        self.started_at = time.perf_counter()
        w.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def wait(self, ms: int = 30000) -> bool:
        """Cancel and wait for a running extraction (blocks the calling thread; the window
        does not use this: it cancels and closes when ``finished`` arrives)."""
        if self.worker is None:
            return True
        self.cancel()
        return self.worker.wait(ms / 1000.0)

    def _on_progress(self, values: tuple) -> None:
        done, total, stage = values
        self.progress.emit(int(done), int(total), str(stage))

    def _end(self, result: Any) -> None:
        self.worker = None
        self.finished.emit(result)

    def _on_returned(self, result: Any) -> None:
        self._end(result)

    def _on_errored(self, exc: BaseException) -> None:
        log.error("extraction crashed:\n%s", error_details(exc))
        self._end(ExtractionResult("failed", {}, {}, error_text(exc), True,
                                   time.perf_counter() - self.started_at))

    def _on_cancelled(self) -> None:
        self._end(ExtractionResult("cancelled", {}, {}, "cancelled before it started", False,
                                   time.perf_counter() - self.started_at))


__all__ = ["Worker", "WorkerPool", "ExtractionRunner", "live_workers", "error_text",
           "error_details"]
