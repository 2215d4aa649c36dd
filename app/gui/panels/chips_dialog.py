"""Build training chips from the open image and its reviewed roads: which roads are the labels,
chip size, default road width and the dataset folder (the build itself is
:func:`app.service.dataset.build_chip_dataset`, the service of ``roadseg dataset build``)."""
from __future__ import annotations

from typing import Any, Dict

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QSpinBox, QToolButton, QVBoxLayout)

#: label choices: key -> text
LABELS = {"kept": "Kept edges (reviewed with Keep), buffered by their width",
          "reviewed": "All edges not deleted, buffered by their width"}


class BuildChipsDialog(QDialog):
    """Options of a chips build; :meth:`options` returns them for ``MainWindow.build_chips``."""

    def __init__(self, default_dir: str, counts: Dict[str, int], parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Build training chips")
        self.setObjectName("buildChipsDialog")
        self.labels = QComboBox()
        for key, text in LABELS.items():
            self.labels.addItem(f"{text} ({counts.get(key, 0)})", key)
        if not counts.get("kept"):
            self.labels.setCurrentIndex(1)
        self.chip = QSpinBox()
        self.chip.setRange(64, 2048)
        self.chip.setSingleStep(64)
        self.chip.setValue(256)
        self.chip.setSuffix(" px")
        self.width = QDoubleSpinBox()
        self.width.setRange(0.5, 50.0)
        self.width.setValue(6.0)
        self.width.setSuffix(" m")
        self.width.setToolTip("Road width for edges without a measured width (width_m)")
        self.out = QLineEdit(default_dir)
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        self.overwrite = QCheckBox("Replace an existing dataset there")
        form = QFormLayout()
        form.addRow("Road labels", self.labels)
        form.addRow("Chip size", self.chip)
        form.addRow("Default width", self.width)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        form.addRow("Dataset folder", row)
        form.addRow(self.overwrite)
        note = QLabel("Only chips with road in them are written, every chip as 'unreviewed': "
                      "review them in the Dataset review tab (accept, reject, correct the "
                      "mask), then train on the accepted ones.")
        note.setWordWrap(True)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.button(QDialogButtonBox.Ok).setText("Build chips")
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(bb)
        self.resize(560, self.sizeHint().height())

    def _browse(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Dataset folder", self.out.text())
        if d:
            self.out.setText(d)

    def options(self) -> Dict[str, Any]:
        return {"out_dir": self.out.text().strip(), "labels": self.labels.currentData(),
                "chip_size_px": self.chip.value(), "width_m": float(self.width.value()),
                "overwrite": self.overwrite.isChecked()}
