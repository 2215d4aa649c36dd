"""Export dialog: vector format(s), target CRS, output file, result rasters."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFileDialog,
                               QFormLayout, QHBoxLayout, QLineEdit, QToolButton, QVBoxLayout,
                               QLabel)

FORMAT_LABELS = {"gpkg": "GeoPackage (.gpkg)", "shp": "Shapefile (.shp)",
                 "geojson": "GeoJSON (.geojson, always lon/lat)"}


class ExportDialog(QDialog):
    """Collects export options; :meth:`options` returns them."""

    def __init__(self, default_path: str, raster_crs: Optional[str], have_rasters: bool,
                 parent: Any = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export road network")
        self.path = QLineEdit(default_path)
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        self.formats = {k: QCheckBox(v) for k, v in FORMAT_LABELS.items()}
        self.formats["gpkg"].setChecked(True)
        self.crs = QComboBox()
        self.crs.setEditable(True)
        items = []
        if raster_crs:
            items.append(f"{raster_crs} (image CRS)" if len(raster_crs) < 40 else raster_crs)
        items += ["EPSG:4326", "EPSG:3857"]
        self.crs.addItems(items)
        self.crs.setToolTip("Any CRS pyproj understands (EPSG:xxxx, WKT, PROJ string)")
        self.rasters = QCheckBox("Also export the road mask and probability rasters")
        self.rasters.setChecked(have_rasters)
        self.rasters.setEnabled(have_rasters)
        self.raster_note = QLabel("")
        self.raster_note.setObjectName("rasterCrsNote")
        self.raster_note.setWordWrap(True)
        self.raster_note.setStyleSheet("color: #b06000;")
        self.deleted = QCheckBox("Include deleted edges (review = deleted)")
        self.deleted.setObjectName("includeDeleted")
        self.deleted.setToolTip("Every edge has its edge_id and review status (kept / "
                                "unreviewed); with this, the deleted ones are written too")
        self.overwrite = QCheckBox("Overwrite existing files")
        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("File", row)
        fm = QVBoxLayout()
        for cb in self.formats.values():
            fm.addWidget(cb)
        form.addRow("Formats", fm)
        form.addRow("Target CRS", self.crs)
        form.addRow(self.deleted)
        form.addRow(self.rasters)
        form.addRow(self.raster_note)
        form.addRow(self.overwrite)
        note = QLabel("QGIS styles (.qml, and the GeoPackage layer_styles table) are written "
                      "beside the data.")
        note.setWordWrap(True)
        bb = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(note)
        lay.addWidget(bb)
        self._raster_crs = raster_crs
        self.crs.currentTextChanged.connect(self._update_note)
        self.rasters.toggled.connect(self._update_note)
        self._update_note()

    def _update_note(self, *_args) -> None:
        """Rasters are not resampled: say so when the vectors go to another CRS."""
        crs = self.options()["target_crs"]
        show = bool(self.rasters.isChecked() and crs)
        self.raster_note.setText(f"The rasters stay in the image CRS ({self._raster_crs or 'none'}"
                                 f"); only the vectors are written in {crs}." if show else "")
        self.raster_note.setVisible(show)

    def _browse(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Export to", self.path.text(),
                                           "GeoPackage (*.gpkg);;Shapefile (*.shp);;"
                                           "GeoJSON (*.geojson)")
        if p:
            self.path.setText(p)

    def options(self) -> Dict[str, Any]:
        """``path`` (main file, suffix of the first chosen format), ``formats``,
        ``target_crs`` (None = image CRS), ``rasters``, ``overwrite``."""
        fmts: List[str] = [k for k, cb in self.formats.items() if cb.isChecked()] or ["gpkg"]
        base = Path(self.path.text().strip() or "roads.gpkg")
        if base.suffix.lower().lstrip(".") in FORMAT_LABELS:
            base = base.with_suffix("")
        crs = self.crs.currentText().replace(" (image CRS)", "").strip()
        if not crs or crs == self._raster_crs:
            crs = None
        return {"path": str(base.with_suffix("." + fmts[0])), "formats": fmts,
                "target_crs": crs, "rasters": self.rasters.isChecked(),
                "overwrite": self.overwrite.isChecked(),
                "include_deleted": self.deleted.isChecked()}
