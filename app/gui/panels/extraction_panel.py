"""Extraction parameters: network, checkpoint (with its metadata), device, tiling, TTA,
threshold and output folder. The panel only builds an :class:`ExtractionRequest`."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QLabel, QLineEdit, QMessageBox,
                               QPushButton, QSizePolicy, QSpinBox, QToolButton, QVBoxLayout,
                               QWidget)

from app.service.checkpoints import describe_checkpoint, list_checkpoints
from app.service.errors import UserError
from app.service.requests import BACKENDS, DEVICES, TTA_MODES, ExtractionRequest
from app.service.viewing import available_models

log = logging.getLogger(__name__)
ANY_NETWORK = "(any network)"


def tiling_problem(tile_px: int, overlap_px: int) -> Optional[str]:
    """Why a tile/overlap pair cannot run (the extraction blends tiles with an overlap below
    half a tile), or None."""
    if overlap_px * 2 >= tile_px:
        return (f"overlap {overlap_px} px must be less than half the tile size {tile_px} px "
                f"(at most {max(0, (tile_px - 1) // 2)} px)")
    return None


class ExtractionPanel(QWidget):
    """Parameters of a run and the Run button.

    Signals:
        runRequested(): the user pressed Run.
        cancelRequested(): the user pressed Cancel.
        workspaceChanged(str): the user chose another workspace folder.
    """

    runRequested = Signal()
    cancelRequested = Signal()
    workspaceChanged = Signal(str)

    def __init__(self, settings: Any = None, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self._checkpoints: List[str] = []
        self._meta: Dict[str, Any] = {}

        self.network = QComboBox()
        self.network.setObjectName("network")
        self.network.addItem(ANY_NETWORK)
        try:
            for m in available_models():
                self.network.addItem(m["name"])
                self.network.setItemData(self.network.count() - 1, m["description"],
                                         Qt.ToolTipRole)
        except Exception as exc:  # noqa: BLE001 - the panel still works with a checkpoint file
            log.warning("cannot list networks: %s", exc)
        self.network.currentIndexChanged.connect(self._fill_checkpoints)

        self.checkpoint = QComboBox()
        self.checkpoint.setObjectName("checkpoint")
        self.checkpoint.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.checkpoint.setMinimumContentsLength(14)
        self.checkpoint.currentIndexChanged.connect(self._on_checkpoint)
        self.browse_ckpt = QToolButton()
        self.browse_ckpt.setText("…")
        self.browse_ckpt.setToolTip("Choose a checkpoint file (.ckpt with its .json, or .onnx)")
        self.browse_ckpt.clicked.connect(self._browse_checkpoint)
        self.meta_label = QLabel("no checkpoint")
        self.meta_label.setObjectName("checkpointMeta")
        self.meta_label.setWordWrap(True)
        self.meta_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.meta_label.setStyleSheet("color: palette(mid); font-size: 11px;")

        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.backend = QComboBox()
        self.backend.addItems(list(BACKENDS))
        self.tile = QSpinBox()
        self.tile.setRange(32, 4096)
        self.tile.setSingleStep(32)
        self.tile.setValue(512)
        self.tile.setSuffix(" px")
        self.overlap = QSpinBox()
        self.overlap.setRange(0, 1024)
        self.overlap.setSingleStep(8)
        self.overlap.setValue(64)
        self.overlap.setSuffix(" px")
        self.tiling_error = QLabel("")
        self.tiling_error.setObjectName("tilingError")
        self.tiling_error.setWordWrap(True)
        self.tiling_error.setStyleSheet("color: #d73a49;")
        self.tiling_error.setVisible(False)
        self.tile.valueChanged.connect(self._check_tiling)
        self.overlap.valueChanged.connect(self._check_tiling)
        self.batch = QSpinBox()
        self.batch.setRange(1, 64)
        self.batch.setValue(2)
        self.tta = QComboBox()
        self.tta.addItems(list(TTA_MODES))
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setSingleStep(0.05)
        self.threshold.setDecimals(2)
        self.threshold.setValue(0.5)
        self.use_aoi = QCheckBox("Limit to the AOI")
        self.use_aoi.setChecked(True)
        self.out_dir = QLineEdit()
        self.out_dir.setObjectName("outDir")
        self.out_dir.setPlaceholderText("output folder")
        self.out_dir.setToolTip("Where this image's outputs go (one folder per image in the "
                                "workspace unless you choose another)")
        browse_out = QToolButton()
        browse_out.setText("…")
        browse_out.setToolTip("Choose the output folder of this image")
        browse_out.clicked.connect(self._browse_out)
        self.overwrite = QCheckBox("Overwrite existing outputs")
        self.workspace_label = QLabel("")
        self.workspace_label.setObjectName("workspaceLabel")
        self.workspace_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.workspace_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.workspace_label.setStyleSheet("color: palette(mid); font-size: 11px;")
        self.workspace_btn = QToolButton()
        self.workspace_btn.setText("Change…")
        self.workspace_btn.setObjectName("changeWorkspace")
        self.workspace_btn.setToolTip("Choose the workspace: the folder that holds one output "
                                      "folder per image")
        self.workspace_btn.clicked.connect(self._browse_workspace)
        self.workspace = ""

        model_box = QGroupBox("Model")
        f1 = QFormLayout(model_box)
        f1.addRow("Network", self.network)
        ck = QHBoxLayout()
        ck.addWidget(self.checkpoint, 1)
        ck.addWidget(self.browse_ckpt)
        f1.addRow("Checkpoint", ck)
        f1.addRow(self.meta_label)
        dev = QHBoxLayout()
        dev.addWidget(self.device, 1)
        dev.addWidget(QLabel("Backend"))
        dev.addWidget(self.backend, 1)
        f1.addRow("Device", dev)

        tiling = QGroupBox("Inference")
        f2 = QFormLayout(tiling)
        f2.addRow("Tile size", self.tile)
        f2.addRow("Overlap", self.overlap)
        f2.addRow(self.tiling_error)
        f2.addRow("Batch size", self.batch)
        f2.addRow("TTA", self.tta)
        f2.addRow("Threshold", self.threshold)
        f2.addRow(self.use_aoi)

        out_box = QGroupBox("Output")
        f3 = QFormLayout(out_box)
        od = QHBoxLayout()
        od.addWidget(self.out_dir, 1)
        od.addWidget(browse_out)
        f3.addRow("Folder", od)
        ws = QHBoxLayout()
        ws.addWidget(self.workspace_label, 1)
        ws.addWidget(self.workspace_btn)
        f3.addRow("Workspace", ws)
        f3.addRow(self.overwrite)

        self.run_btn = QPushButton("Extract roads")
        self.run_btn.setObjectName("runButton")
        self.run_btn.setDefault(True)
        self.run_btn.setMinimumHeight(30)
        self.run_btn.clicked.connect(self.runRequested)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.cancelRequested)
        self.summary = QLabel("")
        self.summary.setObjectName("summary")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)

        lay = QVBoxLayout(self)
        lay.addWidget(model_box)
        lay.addWidget(tiling)
        lay.addWidget(out_box)
        btns = QHBoxLayout()
        btns.addWidget(self.run_btn, 1)
        btns.addWidget(self.cancel_btn)
        lay.addLayout(btns)
        lay.addWidget(self.summary)
        lay.addStretch(1)
        self.restore()
        self._fill_checkpoints()

    # ---- checkpoints ------------------------------------------------------------------------
    def _known_checkpoints(self) -> List[str]:
        paths: List[str] = []
        try:
            paths = [e.path for e in list_checkpoints()]
        except Exception as exc:  # noqa: BLE001
            log.warning("cannot list checkpoints: %s", exc)
        extra = self.settings.string_list("extraction/checkpoints") if self.settings else []
        for p in (extra or []):
            if p not in paths and os.path.exists(p):
                paths.append(p)
        return paths

    def _fill_checkpoints(self, *_args) -> None:
        net = self.network.currentText()
        cur = self.checkpoint_path()
        self.checkpoint.blockSignals(True)
        self.checkpoint.clear()
        self._checkpoints = []
        for p in self._known_checkpoints():
            try:
                meta = describe_checkpoint(p)
            except UserError:
                continue
            if net != ANY_NETWORK and meta.get("model") != net:
                continue
            self._meta[p] = meta
            self._checkpoints.append(p)
            self.checkpoint.addItem(f"{Path(p).name}  ({meta.get('model')})", p)
            self.checkpoint.setItemData(self.checkpoint.count() - 1, p, Qt.ToolTipRole)
        self.checkpoint.blockSignals(False)
        if cur in self._checkpoints:
            self.checkpoint.setCurrentIndex(self._checkpoints.index(cur))
        self._on_checkpoint()

    def add_checkpoint(self, path: str, select: bool = True) -> None:
        """Add a checkpoint file to the list (remembered in the settings)."""
        path = os.path.abspath(path)
        meta = describe_checkpoint(path)  # UserError for non-checkpoints
        if self.settings is not None:
            extra = self.settings.string_list("extraction/checkpoints")
            if path not in extra:
                self.settings.set_value("extraction/checkpoints", list(extra) + [path])
        net = self.network.currentText()
        if net != ANY_NETWORK and net != meta.get("model"):
            self.network.setCurrentIndex(0)
        self._fill_checkpoints()
        if select and path in self._checkpoints:
            self.checkpoint.setCurrentIndex(self._checkpoints.index(path))

    def checkpoint_path(self) -> Optional[str]:
        i = self.checkpoint.currentIndex()
        return self.checkpoint.itemData(i) if i >= 0 else None

    def checkpoint_meta(self, path: Optional[str]) -> Optional[Dict[str, Any]]:
        """The metadata of a listed checkpoint (None when unknown)."""
        if not path:
            return None
        if path not in self._meta:
            try:
                self._meta[path] = describe_checkpoint(path)
            except UserError:
                return None
        return self._meta[path]

    def select_checkpoint(self, path: str) -> None:
        """Make ``path`` (listed, or added) the extraction checkpoint (remembered)."""
        path = os.path.abspath(path)
        if path not in self._checkpoints:
            self.add_checkpoint(path, select=False)
        if path not in self._checkpoints:  # hidden by the network filter
            self.network.setCurrentIndex(0)
        if path in self._checkpoints:
            self.checkpoint.setCurrentIndex(self._checkpoints.index(path))
            self.save()

    def _on_checkpoint(self, *_args) -> None:
        p = self.checkpoint_path()
        meta = self._meta.get(p) if p else None
        if not meta:
            self.meta_label.setText("no checkpoint: choose one with …")
            return
        norm = meta.get("normalization", {})
        metrics = meta.get("metrics") or {}
        mtxt = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in list(metrics.items())[:4])
        self.meta_label.setText(
            f"<b>{meta.get('model')}</b> · {meta.get('num_classes')} class(es) · bands "
            f"{','.join(str(b) for b in meta.get('bands', []))} · tile "
            f"{meta.get('tile_size_px')} px (stride {meta.get('stride')})<br>"
            f"normalisation {norm.get('method', '?')} · epoch {meta.get('epoch', 0)}"
            + (f"<br>{mtxt}" if mtxt else "") + f"<br>created {meta.get('created', '')}")
        self.meta_label.setToolTip(json.dumps(meta, indent=1, default=str))
        if not self._restoring:
            tile = int(meta.get("tile_size_px") or 512)
            self.tile.setValue(tile)
            self.overlap.setValue(tile // 8)

    _restoring = False

    def _browse_checkpoint(self) -> None:
        start = self.settings.last_dir("checkpoint") if self.settings else ""
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint", start,
                                              "Checkpoints (*.ckpt *.onnx);;All files (*)")
        if path:
            if self.settings:
                self.settings.set_last_dir("checkpoint", path)
            self.choose_checkpoint(path)

    def choose_checkpoint(self, path: str) -> bool:
        """The user picked checkpoint file ``path``: checked now (a warning naming the file
        when it is not a usable checkpoint), then listed and selected."""
        from app.service.checkpoints import check_checkpoint

        try:
            check_checkpoint(path)
            self.add_checkpoint(path)
        except UserError as exc:
            msg = str(exc)
            if Path(path).name not in msg:
                msg = f"{path}: {msg}"
            self.last_warning = msg
            log.warning("%s", msg)
            if self.isVisible():
                box = QMessageBox(QMessageBox.Warning, "Not a usable checkpoint", msg,
                                  QMessageBox.Ok, self)
                box.setObjectName("checkpointWarning")
                box.setAttribute(Qt.WA_DeleteOnClose)
                box.open()
            return False
        return True

    last_warning = ""

    def _browse_out(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Output folder", self.out_dir.text())
        if d:
            self.out_dir.setText(d)

    def set_workspace(self, path: str) -> None:
        self.workspace = str(path)
        home = os.path.expanduser("~")
        shown = "~" + self.workspace[len(home):] if self.workspace.startswith(home + os.sep) \
            else self.workspace
        self.workspace_label.setText(shown)
        self.workspace_label.setToolTip(self.workspace)

    def _browse_workspace(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Workspace", self.workspace)
        if d:
            self.workspaceChanged.emit(d)

    def _check_tiling(self, *_args) -> Optional[str]:
        problem = tiling_problem(self.tile.value(), self.overlap.value())
        self.tiling_error.setText(problem or "")
        self.tiling_error.setVisible(bool(problem))
        self.run_btn.setEnabled(not problem and not self._running)
        return problem

    _running = False

    # ---- request ---------------------------------------------------------------------------
    def build_request(self, image: str, aoi_path: Optional[str]) -> ExtractionRequest:
        """The :class:`ExtractionRequest` of the current values (``aoi_path`` when the AOI
        option is on)."""
        ckpt = self.checkpoint_path()
        if not ckpt:
            raise UserError("choose a checkpoint first (Model ▸ Checkpoint ▸ …)")
        problem = tiling_problem(self.tile.value(), self.overlap.value())
        if problem:
            raise UserError(problem)
        out = self.out_dir.text().strip()
        if not out:
            raise UserError("choose an output folder (Output ▸ Folder)")
        net = self.network.currentText()
        req = ExtractionRequest(
            image=image, out_dir=out, model=None if net == ANY_NETWORK else net,
            checkpoint=ckpt, backend=self.backend.currentText(),
            device=self.device.currentText(),
            aoi=aoi_path if self.use_aoi.isChecked() else None,
            tile_size_px=self.tile.value(), overlap_px=self.overlap.value(),
            batch_size=self.batch.value(), tta=self.tta.currentText(),
            threshold=float(self.threshold.value()), overwrite=self.overwrite.isChecked(),
        )
        req.validate()
        self.save()
        return req

    def set_running(self, running: bool) -> None:
        self._running = running
        self.run_btn.setEnabled(not running and not tiling_problem(self.tile.value(),
                                                                   self.overlap.value()))
        self.cancel_btn.setEnabled(running)
        for w in (self.network, self.checkpoint, self.browse_ckpt, self.device, self.backend,
                  self.tile, self.overlap, self.batch, self.tta, self.threshold):
            w.setEnabled(not running)

    # ---- settings --------------------------------------------------------------------------
    def save(self) -> None:
        s = self.settings
        if s is None:
            return
        s.set_value("extraction/network", self.network.currentText())
        s.set_value("extraction/checkpoint", self.checkpoint_path() or "")
        s.set_value("extraction/device", self.device.currentText())
        s.set_value("extraction/backend", self.backend.currentText())
        s.set_value("extraction/tile", self.tile.value())
        s.set_value("extraction/overlap", self.overlap.value())
        s.set_value("extraction/batch", self.batch.value())
        s.set_value("extraction/tta", self.tta.currentText())
        s.set_value("extraction/threshold", float(self.threshold.value()))
        s.set_value("extraction/use_aoi", self.use_aoi.isChecked())

    def restore(self) -> None:
        s = self.settings
        if s is None:
            return
        self._restoring = True
        try:
            i = self.network.findText(s.value("extraction/network", ANY_NETWORK, str))
            self.network.setCurrentIndex(max(0, i))
            self.device.setCurrentText(s.value("extraction/device", "cpu", str))
            self.backend.setCurrentText(s.value("extraction/backend", "auto", str))
            self.tile.setValue(s.value("extraction/tile", 512, int))
            self.overlap.setValue(s.value("extraction/overlap", 64, int))
            self.batch.setValue(s.value("extraction/batch", 2, int))
            self.tta.setCurrentText(s.value("extraction/tta", "none", str))
            self.threshold.setValue(s.value("extraction/threshold", 0.5, float))
            self.use_aoi.setChecked(s.value("extraction/use_aoi", True, bool))
            self._fill_checkpoints()
            ck = s.value("extraction/checkpoint", "", str)
            if ck in self._checkpoints:
                self.checkpoint.setCurrentIndex(self._checkpoints.index(ck))
                self._on_checkpoint()
        finally:
            self._restoring = False
