"""Extraction off the UI thread: a worker object moved to a QThread.

The worker calls :func:`app.service.extraction.run_extraction` with plain callables; progress
comes back through a queued Qt signal and cancel is a thread-safe flag polled by the service
between batches and stages (``should_cancel``).
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from app.service.extraction import ExtractionRequest, ExtractionResult, run_extraction

log = logging.getLogger(__name__)


class ExtractionWorker(QObject):
    """Runs one :class:`ExtractionRequest`; lives in a worker thread.

    Signals:
        progress(done, total, stage): from the service's ``on_progress``.
        finished(result): the :class:`ExtractionResult` (never raises; an unexpected exception
            becomes a failed result).
    """

    progress = Signal(int, int, str)
    finished = Signal(object)

    def __init__(self, request: ExtractionRequest,
                 run_fn: Callable[..., ExtractionResult] = run_extraction) -> None:
        super().__init__()
        self.request = request
        self._run_fn = run_fn
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop at the next check (thread-safe)."""
        self._cancel.set()

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    @Slot()
    def run(self) -> None:
        t0 = time.perf_counter()
        try:
            result = self._run_fn(self.request, on_progress=self._emit_progress,
                                  should_cancel=self._cancel.is_set)
        except Exception as exc:  # noqa: BLE001 - never let a worker exception escape the thread
            log.error("extraction crashed:\n%s", traceback.format_exc())
            result = ExtractionResult("failed", {}, {}, f"{type(exc).__name__}: {exc}", True,
                                      time.perf_counter() - t0)
        self.finished.emit(result)

    def _emit_progress(self, done: int, total: int, stage: str) -> None:
        self.progress.emit(int(done), int(total), str(stage))


class ExtractionRunner(QObject):
    """Owns the QThread + worker of one run; emits ``progress``/``finished`` on the UI thread
    and cleans the thread up when the run ends."""

    progress = Signal(int, int, str)
    finished = Signal(object)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.thread: Optional[QThread] = None
        self.worker: Optional[ExtractionWorker] = None
        self.started_at = 0.0

    def is_running(self) -> bool:
        return self.thread is not None

    def start(self, request: ExtractionRequest,
              run_fn: Callable[..., ExtractionResult] = run_extraction) -> None:
        if self.thread is not None:
            raise RuntimeError("an extraction is already running")
        self.thread = QThread()
        self.thread.setObjectName("roadseg-extraction")
        self.worker = ExtractionWorker(request, run_fn)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        self.worker.progress.connect(self.progress)
        # the thread's event loop ends as soon as the run returns, from the worker thread
        # itself: it never waits for the UI thread (which may be busy, or closing the window)
        self.worker.finished.connect(self.thread.quit, Qt.DirectConnection)
        self.worker.finished.connect(self._on_finished)
        self.started_at = time.perf_counter()
        self.thread.start()

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    @Slot(object)
    def _on_finished(self, result: Any) -> None:
        thread, worker = self.thread, self.worker
        self.thread = self.worker = None
        if thread is not None:
            thread.quit()
            thread.wait(10000)
        if worker is not None:
            worker.deleteLater()
        self.finished.emit(result)

    def wait(self, ms: int = 30000) -> bool:
        """Cancel and wait for a running thread (blocks the calling thread; the window does
        not use this: it cancels and closes when ``finished`` arrives)."""
        if self.thread is None:
            return True
        self.cancel()
        return self.thread.wait(ms)
