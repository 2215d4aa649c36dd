"""Training launcher: network, recipe (its YAML keys as form fields), dataset, device, epochs,
batch, learning rate, initial checkpoint and data-parallel workers; Start runs ``roadseg train``
as a separate process (:class:`app.service.training_runner.TrainingProcess`), so the app stays
responsive and survives a crash of training. Live loss and IoU curves, a progress bar with ETA
and the log come from ``<run>/events.jsonl``; Stop asks for a clean stop (the trainer saves
``last.ckpt``), Resume continues the run. When a run ends, its best checkpoint is reported
through ``on_checkpoint_ready(path)`` and the :attr:`TrainingPanel.checkpointReady` signal.

Embed: ``TrainingPanel(parent, on_checkpoint_ready=callback)``; standalone:
``python -m app.gui.training_panel [--data DIR] [--out DIR] [--screenshot PNG]``.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple

import yaml
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QLineEdit, QMessageBox, QPlainTextEdit, QProgressBar,
                               QPushButton, QScrollArea, QSpinBox, QSplitter, QToolButton,
                               QVBoxLayout, QWidget)

from app.gui.worker import Worker, error_text
from app.service.errors import UserError
from app.service.checkpoints import list_checkpoints
from app.service.training_runner import (DEVICES, STATE_FILE, TYPED_KEYS, TrainingForm,
                                         TrainingProcess, check_config, config_fields,
                                         format_value, list_networks, list_recipes,
                                         run_summary)

log = logging.getLogger(__name__)

DEFAULT_RECIPE = "road_demo_train"
#: Keys of the recipe that the form does not show (set elsewhere or meaningless in the GUI).
HIDDEN_KEYS = set(TYPED_KEYS) | {"debug_save_rank_weights"}


#: seconds between two looks at a running training's events file
WATCH_INTERVAL_S = 0.25


def watch_training(proc: TrainingProcess, should_cancel: Callable[[], bool],
                   interval_s: float = WATCH_INTERVAL_S
                   ) -> Generator[List[Dict[str, Any]], None, Optional[int]]:
    """Follow a started :class:`TrainingProcess` (in a :class:`Worker` thread): yields each
    batch of new events, returns the exit code once the process has ended and its last events
    were read, or None when cancelled first."""
    while not should_cancel():
        events = proc.poll_events()
        if events:
            yield events
        rc = proc.returncode
        if rc is not None:
            events = proc.poll_events()  # written between the read above and the exit
            if events:
                yield events
            return rc
        time.sleep(interval_s)
    return None


def format_eta(seconds: Optional[float]) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ------------------------------------------------------------------------------ chart
class LineChart(QWidget):
    """A small QPainter line chart: named series of ``(x, y)`` points, auto-scaled axes."""

    def __init__(self, title: str, x_label: str, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.title = title
        self.x_label = x_label
        self.series: Dict[str, List[Tuple[float, float]]] = {}
        self.colours: Dict[str, QColor] = {}
        self.y_range: Optional[Tuple[float, float]] = None
        self.setMinimumSize(220, 150)

    def add_series(self, name: str, colour: QColor) -> None:
        self.series.setdefault(name, [])
        self.colours[name] = QColor(colour)

    def add_point(self, name: str, x: float, y: Optional[float]) -> None:
        if y is None or not math.isfinite(float(y)):
            return
        self.series.setdefault(name, []).append((float(x), float(y)))
        self.update()

    def clear(self) -> None:
        for k in self.series:
            self.series[k] = []
        self.update()

    def point_count(self, name: Optional[str] = None) -> int:
        if name is not None:
            return len(self.series.get(name, []))
        return sum(len(v) for v in self.series.values())

    def paintEvent(self, event) -> None:  # noqa: N802
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        p.fillRect(self.rect(), self.palette().base())
        f = QFont(self.font())
        f.setPointSizeF(max(7.0, f.pointSizeF() - 1))
        p.setFont(f)
        fm = p.fontMetrics()
        left, right, top, bottom = fm.horizontalAdvance("0.000") + 10, 10, fm.height() + 8, \
            fm.height() + 10
        plot = QRectF(left, top, self.width() - left - right, self.height() - top - bottom)
        text = self.palette().text().color()
        p.setPen(text)
        p.drawText(QRectF(0, 2, self.width(), fm.height()), Qt.AlignHCenter, self.title)
        pts = [pt for v in self.series.values() for pt in v]
        grid = QColor(text)
        grid.setAlpha(40)
        p.setPen(QPen(grid, 1))
        p.drawRect(plot)
        if not pts:
            p.setPen(text)
            p.drawText(plot, Qt.AlignCenter, "no data yet")
            p.end()
            return
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        x0, x1 = min(xs), max(xs)
        if x1 <= x0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        y0, y1 = self.y_range if self.y_range else (min(ys), max(ys))
        if y1 <= y0:
            y0, y1 = y0 - 0.5, y1 + 0.5
        pad = (y1 - y0) * 0.05
        y0, y1 = (y0, y1) if self.y_range else (y0 - pad, y1 + pad)

        def to_px(x: float, y: float) -> QPointF:
            return QPointF(plot.left() + (x - x0) / (x1 - x0) * plot.width(),
                           plot.bottom() - (y - y0) / (y1 - y0) * plot.height())

        for k in range(5):  # y grid + labels
            yv = y0 + (y1 - y0) * k / 4
            yp = to_px(x0, yv).y()
            p.setPen(QPen(grid, 1))
            p.drawLine(QPointF(plot.left(), yp), QPointF(plot.right(), yp))
            p.setPen(text)
            p.drawText(QRectF(0, yp - fm.height() / 2, left - 4, fm.height()),
                       Qt.AlignRight | Qt.AlignVCenter, f"{yv:.3g}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignLeft, f"{x0:g}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignRight, f"{x1:g}")
        p.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), fm.height()),
                   Qt.AlignHCenter, self.x_label)
        lx = plot.left() + 6
        for name, data in self.series.items():
            c = self.colours.get(name, text)
            if data:
                path = QPainterPath(to_px(*data[0]))
                for pt in data[1:]:
                    path.lineTo(to_px(*pt))
                p.setPen(QPen(c, 1.8))
                p.setBrush(Qt.NoBrush)
                p.drawPath(path)
                if len(data) < 40:
                    p.setBrush(c)
                    for pt in data:
                        p.drawEllipse(to_px(*pt), 2.5, 2.5)
            p.setPen(QPen(c, 3))
            p.drawLine(QPointF(lx, plot.top() + 8), QPointF(lx + 14, plot.top() + 8))
            p.setPen(text)
            p.drawText(QPointF(lx + 18, plot.top() + 8 + fm.ascent() / 2 - 1), name)
            lx += 26 + fm.horizontalAdvance(name)
        p.end()


# ------------------------------------------------------------------------------ panel
class TrainingPanel(QWidget):
    """Form + Start/Stop/Resume + live curves (see the module docstring).

    Signals:
        checkpointReady(str, dict): the best checkpoint of a finished run and its metrics.
        trainingFinished(str): ``completed``, ``stopped``, ``early_stopped``, ``failed``.
        eventReceived(dict): every training event.
    """

    checkpointReady = Signal(str, dict)
    trainingFinished = Signal(str)
    eventReceived = Signal(dict)

    def __init__(self, parent: Optional[QWidget] = None,
                 on_checkpoint_ready: Optional[Callable[[str], None]] = None,
                 data_root: Optional[str] = None, output_dir: Optional[str] = None,
                 checkpoint_dirs: Optional[Sequence[str]] = None) -> None:
        super().__init__(parent)
        self.on_checkpoint_ready = on_checkpoint_ready
        self.checkpoint_dirs = list(checkpoint_dirs) if checkpoint_dirs else None
        self.process: Optional[TrainingProcess] = None
        self.total_steps = 0
        self.last_status: Optional[str] = None
        self.best_checkpoint: Optional[str] = None
        self._end_event: Optional[Dict[str, Any]] = None
        self._field_widgets: Dict[str, QWidget] = {}
        self._base_fields: Dict[str, Any] = {}

        # -- form ------------------------------------------------------------------------
        self.network = QComboBox()
        self.network.setObjectName("network")
        try:
            self.network.addItems(list_networks())
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot list networks: %s", exc)
        self.config = QComboBox()
        self.config.setObjectName("config")
        for p in list_recipes():
            self.config.addItem(Path(p).stem, p)
        self.config_browse = QToolButton()
        self.config_browse.setText("…")
        self.config_browse.setToolTip("Another training YAML")
        self.config_browse.clicked.connect(self._browse_config)
        self.data = QLineEdit(data_root or "")
        self.data.setObjectName("data")
        self.data.setPlaceholderText("chips dataset folder (manifest.json)")
        self._data_typed = bool(data_root)  # the user (not a recipe default) chose the dataset
        self.data.textEdited.connect(lambda _t: setattr(self, "_data_typed", True))
        data_browse = QToolButton()
        data_browse.setText("…")
        data_browse.clicked.connect(lambda: self._browse_dir(self.data, "Dataset folder"))
        self.status_boxes: Dict[str, QCheckBox] = {}
        sb = QHBoxLayout()
        sb.setContentsMargins(0, 0, 0, 0)
        for s in ("accepted", "edited", "unreviewed"):
            c = QCheckBox(s)
            c.setChecked(s == "accepted")
            c.setToolTip("Train on chips with this review status (chips datasets)")
            self.status_boxes[s] = c
            sb.addWidget(c)
        sb.addStretch(1)
        self.device = QComboBox()
        self.device.setObjectName("device")
        self.device.addItems(list(DEVICES))
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100000)
        self.batch = QSpinBox()
        self.batch.setRange(1, 4096)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 10.0)
        self.lr.setSingleStep(1e-4)
        self.init_ckpt = QComboBox()
        self.init_ckpt.setObjectName("initCheckpoint")
        self.init_ckpt.setMinimumContentsLength(14)
        self.init_ckpt.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        init_browse = QToolButton()
        init_browse.setText("…")
        init_browse.setToolTip("Fine-tune from another checkpoint file")
        init_browse.clicked.connect(self._browse_init)
        self.nproc = QSpinBox()
        self.nproc.setRange(1, 64)
        self.nproc.setToolTip("Data-parallel worker processes (msrun) on this machine")
        self._default_out = str(Path.home() / "RoadSeg" / "runs" / "train")
        self.out = QLineEdit(output_dir or self._default_out)
        self.out.setObjectName("out")
        out_browse = QToolButton()
        out_browse.setText("…")
        out_browse.clicked.connect(lambda: self._browse_dir(self.out, "Run folder"))

        def row(*ws: QWidget) -> QWidget:
            w = QWidget()
            h = QHBoxLayout(w)
            h.setContentsMargins(0, 0, 0, 0)
            for k, x in enumerate(ws):
                h.addWidget(x, 1 if k == 0 else 0)
            return w

        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        form.addRow("Network", self.network)
        form.addRow("Config", row(self.config, self.config_browse))
        form.addRow("Dataset", row(self.data, data_browse))
        sbw = QWidget()
        sbw.setLayout(sb)
        form.addRow("Use chips", sbw)
        form.addRow("Device", self.device)
        form.addRow("Epochs", self.epochs)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Initial weights", row(self.init_ckpt, init_browse))
        form.addRow("Workers", self.nproc)
        form.addRow("Run folder", row(self.out, out_browse))
        basic = QGroupBox("Training")
        basic.setLayout(form)

        self.fields_form = QFormLayout()
        self.fields_form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        fields_w = QWidget()
        fields_w.setLayout(self.fields_form)
        self.fields_scroll = QScrollArea()
        self.fields_scroll.setWidgetResizable(True)
        self.fields_scroll.setWidget(fields_w)
        adv = QGroupBox("Config fields (changed values are passed as --set)")
        al = QVBoxLayout(adv)
        al.setContentsMargins(4, 4, 4, 4)
        al.addWidget(self.fields_scroll)

        self.start_btn = QPushButton("Start")
        self.start_btn.setObjectName("start")
        self.start_btn.clicked.connect(self.start)
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setObjectName("stop")
        self.stop_btn.setToolTip("Save a checkpoint after the current step and stop")
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setObjectName("resume")
        self.resume_btn.setToolTip("Continue the stopped run in the run folder")
        self.resume_btn.clicked.connect(self.resume)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_btn)
        buttons.addWidget(self.stop_btn)
        buttons.addWidget(self.resume_btn)

        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(basic)
        lv.addWidget(adv, 1)
        lv.addLayout(buttons)

        # -- monitor ---------------------------------------------------------------------
        self.loss_chart = LineChart("Loss", "step")
        self.loss_chart.setObjectName("lossChart")
        self.loss_chart.add_series("train", QColor(31, 119, 180))
        self.loss_chart.add_series("val", QColor(255, 127, 14))
        self.iou_chart = LineChart("Validation IoU", "epoch")
        self.iou_chart.setObjectName("iouChart")
        self.iou_chart.add_series("IoU", QColor(44, 160, 44))
        self.iou_chart.y_range = (0.0, 1.0)
        charts = QHBoxLayout()
        charts.addWidget(self.loss_chart)
        charts.addWidget(self.iou_chart)
        self.progress = QProgressBar()
        self.progress.setObjectName("progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.state_label = QLabel("")
        self.state_label.setObjectName("state")
        self.state_label.setWordWrap(True)
        self.log_view = QPlainTextEdit()
        self.log_view.setObjectName("log")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(5000)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addLayout(charts, 2)
        rv.addWidget(self.progress)
        rv.addWidget(self.state_label)
        rv.addWidget(self.log_view, 1)

        split = QSplitter(Qt.Horizontal)
        split.addWidget(left)
        split.addWidget(right)
        split.setSizes([380, 620])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(split)

        self.monitor: Optional[Worker] = None   # follows the running process's events

        self.config.currentIndexChanged.connect(self._on_config)
        self.network.currentTextChanged.connect(self._on_network)
        j = self.config.findText(DEFAULT_RECIPE)
        self.config.setCurrentIndex(j if j >= 0 else 0)
        self._on_config()
        self.fill_checkpoints()
        self._update_buttons()

    # -- form ------------------------------------------------------------------------------
    def _browse_dir(self, edit: QLineEdit, title: str) -> None:
        d = QFileDialog.getExistingDirectory(self, title, edit.text())
        if d:
            edit.setText(d)
            if edit is self.data:
                self._data_typed = True

    def use_dataset(self, path: str) -> None:
        """The dataset open in the app (dataset review, or chips just built): it becomes the
        training dataset unless the user chose another one here."""
        if path and not self._data_typed:
            self.data.setText(str(path))

    def set_default_output(self, path: str) -> None:
        """Run folder to use unless the user (or the embedding app) chose one."""
        if self.out.text() == self._default_out:
            self.out.setText(str(path))
        self._default_out = str(path)

    def _browse_config(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Training config", "", "YAML (*.yaml *.yml)")
        if f:
            self.set_config(f)

    def _browse_init(self) -> None:
        f, _ = QFileDialog.getOpenFileName(self, "Initial weights", "",
                                           "Checkpoints (*.ckpt);;All files (*)")
        if f:
            from app.service.checkpoints import check_checkpoint

            try:
                check_checkpoint(f)
            except UserError as exc:
                self._message(str(exc) if Path(f).name in str(exc) else f"{f}: {exc}")
                return
            self.set_init_checkpoint(f)

    def set_config(self, path: str) -> None:
        """Use the training YAML ``path`` (added to the list when new)."""
        j = self.config.findData(str(path))
        if j < 0:
            self.config.addItem(Path(path).stem, str(path))
            j = self.config.count() - 1
        self.config.setCurrentIndex(j)

    def _on_config(self, *_: Any) -> None:
        path = self.config.currentData()
        if not path:
            return
        try:
            fields = config_fields(path)
        except UserError as exc:
            self._message(str(exc))
            return
        self._base_fields = fields
        while self.fields_form.rowCount():
            self.fields_form.removeRow(0)
        self._field_widgets.clear()
        for key, value in fields.items():
            if key in HIDDEN_KEYS:
                continue
            if isinstance(value, bool):
                w: QWidget = QCheckBox()
                w.setChecked(value)
            else:
                w = QLineEdit(format_value(value))
            w.setObjectName(f"field_{key}")
            self.fields_form.addRow(key, w)
            self._field_widgets[key] = w
        self.network.blockSignals(True)
        self.network.setCurrentText(str(fields.get("model", "")))
        self.network.blockSignals(False)
        self.device.setCurrentText(str(fields.get("device", "cpu")))
        self.epochs.setValue(int(fields.get("epochs", 1)))
        self.batch.setValue(int(fields.get("batch_size", 1)))
        self.lr.setValue(float(fields.get("lr", 1e-3)))
        if fields.get("data_root") and not self.data.text():
            self.data.setText(str(fields["data_root"]))

    def _on_network(self, name: str) -> None:
        # the recipe stays; only its model key changes (the form says which network trains)
        log.info("network %s", name)

    def set_field(self, key: str, value: Any) -> None:
        """Set a config field of the form (as the user would type it)."""
        w = self._field_widgets.get(key)
        if w is None:
            raise KeyError(f"no config field {key!r} in the form")
        if isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        else:
            w.setText(value if isinstance(value, str) else format_value(value))

    def field_values(self) -> Dict[str, Any]:
        """Config fields of the form, parsed as YAML scalars."""
        out: Dict[str, Any] = {}
        for key, w in self._field_widgets.items():
            if isinstance(w, QCheckBox):
                out[key] = w.isChecked()
                continue
            text = w.text().strip()
            try:
                out[key] = yaml.safe_load(text) if text else None
            except yaml.YAMLError:
                out[key] = text
        return out

    def fill_checkpoints(self, extra: Sequence[str] = ()) -> None:
        """Fill the initial-weights list from the checkpoint folders plus ``extra``."""
        keep = self.init_ckpt.currentData()
        self.init_ckpt.clear()
        self.init_ckpt.addItem("(none: random initialisation)", None)
        try:
            entries = [(e.path, e.label) for e in list_checkpoints(self.checkpoint_dirs)]
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot list checkpoints: %s", exc)
            entries = []
        seen = set()
        for path, label in entries + [(p, f"{Path(p).parent.name}/{Path(p).name}")
                                      for p in extra]:
            if path in seen:
                continue
            seen.add(path)
            self.init_ckpt.addItem(label, path)
            self.init_ckpt.setItemData(self.init_ckpt.count() - 1, path, Qt.ToolTipRole)
        j = self.init_ckpt.findData(keep) if keep else 0
        self.init_ckpt.setCurrentIndex(max(j, 0))

    def set_init_checkpoint(self, path: Optional[str]) -> None:
        """Fine-tune from ``path`` (added to the list when new); None = random weights."""
        if path is None:
            self.init_ckpt.setCurrentIndex(0)
            return
        j = self.init_ckpt.findData(str(path))
        if j < 0:
            self.fill_checkpoints(extra=[str(path)])
            j = self.init_ckpt.findData(str(path))
        self.init_ckpt.setCurrentIndex(j)

    def form(self) -> TrainingForm:
        """The :class:`TrainingForm` the widgets describe."""
        return TrainingForm(
            config=self.config.currentData() or "", data_root=self.data.text().strip(),
            output_dir=self.out.text().strip(), model=self.network.currentText() or None,
            device=self.device.currentText(), epochs=self.epochs.value(),
            batch_size=self.batch.value(), lr=self.lr.value(),
            init_checkpoint=self.init_ckpt.currentData(), nproc=self.nproc.value(),
            fields=self.field_values(),
            statuses=tuple(s for s, c in self.status_boxes.items() if c.isChecked()),
            overwrite=True)

    # -- run control -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def _message(self, text: str) -> None:
        self.state_label.setText(f"<span style='color:#d73a49'>{text}</span>")
        self.log_view.appendPlainText(text)

    def start(self) -> bool:
        """Start a new run from the form (the run folder is started afresh)."""
        if self.running:
            return False
        form = self.form()
        if not form.statuses:
            self._message("choose at least one review status of chips to train on")
            return False
        try:
            check_config(form)
            proc = TrainingProcess(form)
            if proc.events_path.exists() and (proc.output_dir / STATE_FILE).exists() \
                    and self.isVisible():
                ans = QMessageBox.question(self, "Training",
                                           f"{proc.output_dir} holds a run. Start again there?")
                if ans != QMessageBox.Yes:
                    return False
            proc.start()
        except UserError as exc:
            self._message(str(exc))
            return False
        self.process = proc
        self.loss_chart.clear()
        self.iou_chart.clear()
        self.log_view.clear()
        self.log_view.appendPlainText("$ " + " ".join(proc.command))
        self._begin()
        return True

    def resume(self) -> bool:
        """Continue the stopped run in the run folder (``roadseg train --resume``)."""
        if self.running:
            return False
        form = self.form()
        try:
            proc = TrainingProcess(form)
            proc.resume()
        except UserError as exc:
            self._message(str(exc))
            return False
        if self.process is not None:
            self.process.close()
        self.process = proc
        self.log_view.appendPlainText("$ " + " ".join(proc.command))
        self._begin()
        return True

    def _begin(self) -> None:
        self.last_status = None
        self._end_event = None
        self.progress.setRange(0, 0)
        self.progress.setFormat("starting…")
        self.state_label.setText("starting roadseg train…")
        if self.monitor is not None:
            self.monitor.cancel()
        proc = self.process
        self.monitor = Worker(watch_training, proc, cancel_arg="should_cancel", owner=self,
                              name="training-monitor")
        self.monitor.yielded.connect(self._on_events)
        self.monitor.returned.connect(lambda rc, proc=proc: self._on_exit(proc, rc))
        self.monitor.errored.connect(self._on_monitor_error)
        self.monitor.start()
        self._update_buttons()

    def stop(self) -> None:
        """Ask the running training to save a checkpoint and stop."""
        if self.running:
            self.process.request_stop()
            self.state_label.setText("stopping after this step (saving last.ckpt)…")
            self.log_view.appendPlainText("stop requested")
            self.stop_btn.setEnabled(False)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def _update_buttons(self) -> None:
        run = self.running
        self.start_btn.setEnabled(not run)
        self.stop_btn.setEnabled(run)
        can_resume = False
        if not run:
            out = Path(self.out.text().strip() or ".").expanduser()
            can_resume = run_summary(out)["status"] == "stopped"
        self.resume_btn.setEnabled(can_resume)

    # -- events ----------------------------------------------------------------------------
    def _on_events(self, events: List[Dict[str, Any]]) -> None:
        for ev in events:
            self.handle_event(ev)

    def _on_exit(self, proc: TrainingProcess, rc: Optional[int]) -> None:
        """The monitored process ended with ``rc`` (None: monitoring was cancelled)."""
        if rc is None or proc is not self.process:
            return
        self.monitor = None
        self._finished(rc)

    def _on_monitor_error(self, exc: BaseException) -> None:
        self.monitor = None
        self._message(f"cannot follow the training: {error_text(exc)}")
        self._update_buttons()

    def handle_event(self, ev: Dict[str, Any]) -> None:
        """Show one training event (curves, progress, log)."""
        t = ev.get("type")
        self.eventReceived.emit(ev)
        if t == "start":
            self.total_steps = int(ev.get("total_steps") or 0)
            self.progress.setRange(0, max(1, self.total_steps))
            self.progress.setValue(int(ev.get("step") or 0))
            self.progress.setFormat("%v / %m steps")
            what = "resumed" if ev.get("resumed") else "started"
            self.log_view.appendPlainText(
                f"{what}: {ev.get('model')} on {ev.get('device')} x{ev.get('world_size', 1)}, "
                f"{ev.get('train_samples')} train / {ev.get('val_samples')} val samples, "
                f"{ev.get('steps_per_epoch')} steps per epoch, {self.total_steps} steps")
        elif t == "step":
            step = int(ev.get("step") or 0)
            self.loss_chart.add_point("train", step, ev.get("loss"))
            self.progress.setValue(min(step, self.progress.maximum()))
            self.progress.setFormat(f"%v / %m steps · ETA {format_eta(ev.get('eta_s'))}")
            self.state_label.setText(
                f"epoch {ev.get('epoch')} · step {step} · loss {ev.get('loss', 0):.4f} · "
                f"lr {ev.get('lr', 0):.3g}")
        elif t == "epoch":
            m = ev.get("metrics") or {}
            step = int(ev.get("step") or 0)
            self.loss_chart.add_point("val", step, m.get("val_loss"))
            iou = m.get("iou", m.get("miou"))
            self.iou_chart.add_point("IoU", int(ev.get("epoch") or 0), iou)
            parts = [f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, (int, float))]
            mark = " (best)" if ev.get("improved") else ""
            self.log_view.appendPlainText(f"epoch {ev.get('epoch')}: {'  '.join(parts)}{mark}")
        elif t == "checkpoint":
            self.log_view.appendPlainText(f"saved {ev.get('kind', '')} checkpoint "
                                          f"{Path(str(ev.get('path'))).name}")
        elif t == "plateau":
            self.log_view.appendPlainText(f"plateau: lr -> {ev.get('lr')}")
        elif t == "error":
            self._message(f"training error: {ev.get('message')}")
        elif t == "end":
            self._end_event = ev
            self.last_status = str(ev.get("status"))
            bm = ev.get("best_metric")
            best = (f"best {ev.get('monitor')} {bm:.4f} at epoch {ev.get('best_epoch')}"
                    if isinstance(bm, (int, float)) else "no best metric")
            self.log_view.appendPlainText(f"{ev.get('status')}: {ev.get('reason', '')}; {best}")

    def _finished(self, rc: int) -> None:
        proc = self.process
        status = self.last_status
        if rc != 0 or status is None:
            status = "failed"
            tail = proc.log_tail(1500).strip().splitlines() if proc else []
            err = next((ln for ln in reversed(tail) if "error" in ln.lower()),
                       tail[-1] if tail else "")
            self._message(f"roadseg train exited with code {rc}: {err}")
        self.last_status = status
        self.progress.setRange(0, max(1, self.total_steps))
        if status == "completed":
            self.progress.setValue(self.progress.maximum())
        self.progress.setFormat(f"{status} · %v / %m steps")
        if status != "failed":
            self.state_label.setText(f"training {status}; run folder {proc.output_dir}")
        best = None
        if self._end_event and self._end_event.get("best_checkpoint"):
            best = str(self._end_event["best_checkpoint"])
        elif proc is not None:
            best = proc.summary().get("best_checkpoint")
        if proc is not None:
            proc.close()
        self._update_buttons()
        if best and Path(best).exists():
            self.best_checkpoint = best
            metrics: Dict[str, Any] = {}
            try:
                from app.service.checkpoints import describe_checkpoint

                metrics = dict(describe_checkpoint(best).get("metrics") or {})
            except Exception as exc:  # noqa: BLE001
                log.warning("cannot read %s: %s", best, exc)
            self.log_view.appendPlainText(f"best checkpoint: {best}")
            self.fill_checkpoints(extra=[best])
            self.checkpointReady.emit(best, metrics)
            if self.on_checkpoint_ready is not None:
                self.on_checkpoint_ready(best)
        self.trainingFinished.emit(status)

    def closeEvent(self, ev) -> None:  # noqa: N802
        # training keeps running in its own process; the run folder can be resumed later
        if self.monitor is not None:
            self.monitor.cancel()
            self.monitor = None
        super().closeEvent(ev)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m app.gui.training_panel [--data DIR] [--out DIR] [--screenshot PNG]``."""
    ap = argparse.ArgumentParser(prog="python -m app.gui.training_panel")
    ap.add_argument("--data", help="dataset folder")
    ap.add_argument("--out", help="run folder")
    ap.add_argument("--events", help="replay this events.jsonl into the panel (screenshots)")
    ap.add_argument("--screenshot", help="save a PNG of the panel and exit")
    args = ap.parse_args(argv)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    w = TrainingPanel(data_root=args.data, output_dir=args.out,
                      on_checkpoint_ready=lambda p: log.info("checkpoint ready: %s", p))
    w.setWindowTitle("RoadSeg Studio — training")
    w.resize(1040, 700)
    if args.events:
        from app.service.training_runner import EventTail

        for ev in EventTail(args.events).read():
            w.handle_event(ev)
    w.show()
    if args.screenshot:
        app.processEvents()
        w.grab().save(args.screenshot)
        return 0
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
