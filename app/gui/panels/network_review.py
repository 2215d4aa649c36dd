"""Review of the extracted road network (Map tab; the chips dataset review is
:mod:`app.gui.dataset_review`): attributes of the clicked edge, delete / keep, undo."""
from __future__ import annotations

from typing import Any, Dict, Optional

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


class NetworkReviewPanel(QWidget):
    """Shows the selected edges and the review actions (the main window applies them)."""

    deleteRequested = Signal()
    keepRequested = Signal()
    undoRequested = Signal()
    clearSelection = Signal()

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.hint = QLabel("Use the <b>Select</b> tool: click a road edge or drag a box "
                           "around several (Ctrl/Shift adds to the selection). "
                           "<b>Del</b> deletes, <b>K</b> keeps, <b>Ctrl+Z</b> undoes.")
        self.hint.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setObjectName("attributes")
        self.table.setHorizontalHeaderLabels(["Attribute", "Value"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        self.delete_btn = QPushButton("Delete")
        self.delete_btn.setToolTip("Delete the selected edges (Del)")
        self.keep_btn = QPushButton("Keep")
        self.keep_btn.setToolTip("Mark the selected edges as reviewed (K)")
        self.undo_btn = QPushButton("Undo")
        self.undo_btn.setToolTip("Undo the last delete/keep (Ctrl+Z)")
        self.delete_btn.clicked.connect(self.deleteRequested)
        self.keep_btn.clicked.connect(self.keepRequested)
        self.undo_btn.clicked.connect(self.undoRequested)
        self.counts = QLabel("No network loaded")
        self.counts.setObjectName("reviewCounts")
        self.counts.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.delete_btn)
        row.addWidget(self.keep_btn)
        row.addWidget(self.undo_btn)
        lay = QVBoxLayout(self)
        lay.addWidget(self.hint)
        lay.addWidget(self.table, 1)
        lay.addLayout(row)
        lay.addWidget(self.counts)
        self.set_selection({}, False)

    def set_selection(self, attrs: Dict[str, Any], can_undo: bool, count: int = 0) -> None:
        """Show ``attrs`` (one edge's attributes, or empty) for ``count`` selected edges."""
        self.table.setRowCount(0)
        rows = list(attrs.items())
        if count > 1:
            rows = [("selected edges", count)] + rows
        self.table.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            if isinstance(v, float):
                v = "—" if v != v else f"{v:.3f}"  # NaN: no value
            self.table.setItem(i, 0, QTableWidgetItem(str(k)))
            self.table.setItem(i, 1, QTableWidgetItem(str(v)))
        self.delete_btn.setEnabled(count > 0)
        self.keep_btn.setEnabled(count > 0)
        self.undo_btn.setEnabled(can_undo)

    def set_summary(self, summary: Optional[Dict[str, Any]]) -> None:
        if not summary:
            self.counts.setText("No network loaded")
            return
        self.counts.setText(f"{summary['edges']} edges, {summary['road_km']:.2f} km of road · "
                            f"{summary['deleted']} deleted · {summary['kept']} kept")
