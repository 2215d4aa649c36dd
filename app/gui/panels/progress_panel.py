"""Bottom panel: progress bar, stage, elapsed/ETA, Cancel, and the application log."""
from __future__ import annotations

import logging
import time
from typing import Optional

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QVBoxLayout, QWidget)

STAGE_TEXT = {"read": "Reading the image and the model", "infer": "Running the network on tiles",
              "mosaic": "Mosaicking probabilities", "vectorize": "Vectorizing road centre lines",
              "write": "Writing outputs"}
#: share of the whole run each stage roughly takes (for one overall progress bar)
STAGE_SPAN = {"read": (0.0, 0.05), "infer": (0.05, 0.80), "mosaic": (0.80, 0.85),
              "vectorize": (0.85, 0.95), "write": (0.95, 1.0)}


def format_seconds(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else \
        f"{s // 60}:{s % 60:02d}"


class _LogBridge(QObject):
    message = Signal(str, int)


class QtLogHandler(logging.Handler):
    """Logging handler that appends records to a panel from any thread (queued signal)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.bridge = _LogBridge()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                            "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bridge.message.emit(self.format(record), record.levelno)
        except Exception:  # noqa: BLE001 - a dying widget must not break logging
            pass


class ProgressPanel(QWidget):
    """Progress of the running extraction and the log."""

    cancelRequested = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar()
        self.bar.setObjectName("progressBar")
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setFormat("%p %")
        self.stage = QLabel("Idle")
        self.stage.setObjectName("stageLabel")
        self.stage.setMinimumWidth(260)
        self.times = QLabel("")
        self.times.setObjectName("timeLabel")
        self.cancel = QPushButton("Cancel")
        self.cancel.setObjectName("cancelButton")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self.cancelRequested)
        self.log = QPlainTextEdit()
        self.log.setObjectName("logView")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        f = QFont("monospace")
        f.setStyleHint(QFont.Monospace)
        f.setPointSize(9)
        self.log.setFont(f)
        row = QHBoxLayout()
        row.addWidget(self.stage)
        row.addWidget(self.bar, 1)
        row.addWidget(self.times)
        row.addWidget(self.cancel)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(row)
        lay.addWidget(self.log, 1)
        self._t0: Optional[float] = None
        self._fraction = 0.0
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._tick)
        self.handler = QtLogHandler()
        self.handler.bridge.message.connect(self.append_log)

    def append_log(self, text: str, level: int = logging.INFO) -> None:
        """One log line, coloured by its own level only (every line gets an explicit format,
        so an error's colour never carries over to the lines after it)."""
        colour = "#e06c75" if level >= logging.ERROR else "#d19a66" if level >= logging.WARNING \
            else None
        fmt = QTextCharFormat()
        fmt.setForeground(QColor(colour) if colour else self.log.palette().text().color())
        self.log.appendPlainText(text)
        cur = QTextCursor(self.log.document().lastBlock())
        cur.movePosition(QTextCursor.StartOfBlock)
        cur.movePosition(QTextCursor.EndOfBlock, QTextCursor.KeepAnchor)
        cur.setCharFormat(fmt)
        self.log.moveCursor(QTextCursor.End)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._fraction = 0.0
        self.bar.setValue(0)
        self.stage.setText("Starting…")
        self.times.setText("0:00 elapsed")
        self.cancel.setEnabled(True)
        self._timer.start()

    def set_progress(self, done: int, total: int, stage: str) -> None:
        lo, hi = STAGE_SPAN.get(stage, (0.0, 1.0))
        frac = lo + (hi - lo) * (done / total if total > 0 else 0.0)
        self._fraction = max(self._fraction, frac)
        self.bar.setValue(int(self._fraction * 1000))
        self.stage.setText(f"{STAGE_TEXT.get(stage, stage)} ({done}/{total})")
        self._tick()

    def _tick(self) -> None:
        if self._t0 is None:
            return
        el = time.perf_counter() - self._t0
        txt = f"{format_seconds(el)} elapsed"
        if self._fraction > 0.03:
            txt += f" · ETA {format_seconds(el * (1 - self._fraction) / self._fraction)}"
        self.times.setText(txt)

    def cancelling(self) -> None:
        self.stage.setText("Cancelling…")
        self.cancel.setEnabled(False)

    def finish(self, status: str, text: str) -> None:
        self._timer.stop()
        el = time.perf_counter() - self._t0 if self._t0 is not None else 0.0
        self._t0 = None
        self.cancel.setEnabled(False)
        if status == "success":
            self.bar.setValue(1000)
        else:  # a cancelled or failed run leaves no half-full bar behind
            self._fraction = 0.0
            self.bar.setValue(0)
        self.stage.setText(text)
        self.times.setText(f"{format_seconds(el)} total")
