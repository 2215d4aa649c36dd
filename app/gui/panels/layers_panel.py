"""Layers panel: visibility, order, opacity, and band / contrast choice for imagery."""
from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QComboBox, QFormLayout, QHBoxLayout, QLabel, QListWidget,
                               QListWidgetItem, QPushButton, QSlider, QVBoxLayout, QWidget)

from app.gui.layers import Layer, LayerStack, RasterLayer
from app.service.viewing import STRETCHES

STRETCH_LABELS = {"none": "none (raw values)", "minmax": "min – max",
                  "percentile": "2 – 98 % cumulative cut"}
KIND_LABELS = {"imagery": "Imagery", "probability": "Probability", "mask": "Road mask",
               "edges": "Road edges", "nodes": "Road nodes", "vector": "Vector", "aoi": "AOI"}


class LayersPanel(QWidget):
    """List of layers (top first) with a properties area for the selected one."""

    zoomToLayer = Signal(object)

    def __init__(self, stack: LayerStack, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.stack = stack
        self.list = QListWidget()
        self.list.setObjectName("layerList")
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentRowChanged.connect(self._on_current)
        self.list.itemDoubleClicked.connect(lambda it: self.zoomToLayer.emit(self.current_layer()))
        self.up = QPushButton("▲")
        self.down = QPushButton("▼")
        self.remove_btn = QPushButton("Remove")
        for b in (self.up, self.down):
            b.setFixedWidth(32)
        self.up.setToolTip("Move layer up")
        self.down.setToolTip("Move layer down")
        self.up.clicked.connect(lambda: self._move(-1))
        self.down.clicked.connect(lambda: self._move(1))
        self.remove_btn.clicked.connect(self._remove)
        row = QHBoxLayout()
        row.addWidget(self.up)
        row.addWidget(self.down)
        row.addStretch(1)
        row.addWidget(self.remove_btn)

        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setObjectName("opacity")
        self.opacity.valueChanged.connect(self._on_opacity)
        self.opacity_label = QLabel("100 %")
        self.band_r, self.band_g, self.band_b = QComboBox(), QComboBox(), QComboBox()
        self.stretch = QComboBox()
        for code in STRETCHES:
            self.stretch.addItem(STRETCH_LABELS.get(code, code), code)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.info.setStyleSheet("color: palette(mid);")
        for c in (self.band_r, self.band_g, self.band_b, self.stretch):
            c.activated.connect(self._on_bands)
        form = QFormLayout()
        op = QHBoxLayout()
        op.addWidget(self.opacity, 1)
        op.addWidget(self.opacity_label)
        form.addRow("Opacity", op)
        bands = QHBoxLayout()
        for lab, c in (("R", self.band_r), ("G", self.band_g), ("B", self.band_b)):
            bands.addWidget(QLabel(lab))
            bands.addWidget(c, 1)
        self.bands_row = QWidget()
        self.bands_row.setLayout(bands)
        bands.setContentsMargins(0, 0, 0, 0)
        form.addRow("Bands", self.bands_row)
        form.addRow("Stretch", self.stretch)
        self.form = form

        lay = QVBoxLayout(self)
        lay.addWidget(self.list, 1)
        lay.addLayout(row)
        lay.addLayout(form)
        lay.addWidget(self.info)
        self._updating = False
        stack.changed.connect(self.refresh)
        stack.layerChanged.connect(self._sync_checks)
        self.refresh()

    def _sync_checks(self) -> None:
        self._updating = True
        for i, layer in enumerate(self.stack.layers):
            it = self.list.item(i)
            if it is not None:
                it.setText(self._label(layer))
                want = Qt.Checked if layer.visible else Qt.Unchecked
                if it.checkState() != want:
                    it.setCheckState(want)
        self._updating = False

    def current_layer(self) -> Optional[Layer]:
        row = self.list.currentRow()
        return self.stack.layers[row] if 0 <= row < len(self.stack.layers) else None

    def select(self, layer: Layer) -> None:
        if layer in self.stack.layers:
            self.list.setCurrentRow(self.stack.layers.index(layer))

    def refresh(self) -> None:
        cur = self.current_layer()
        self._updating = True
        self.list.clear()
        for layer in self.stack.layers:
            it = QListWidgetItem(self._label(layer))
            it.setToolTip(KIND_LABELS.get(layer.kind, layer.kind))
            it.setFlags(it.flags() | Qt.ItemIsUserCheckable)
            it.setCheckState(Qt.Checked if layer.visible else Qt.Unchecked)
            self.list.addItem(it)
        self._updating = False
        if cur in self.stack.layers:
            self.list.setCurrentRow(self.stack.layers.index(cur))
        elif self.stack.layers:
            self.list.setCurrentRow(0)
        self._on_current(self.list.currentRow())

    @staticmethod
    def _label(layer: Layer) -> str:
        kind = KIND_LABELS.get(layer.kind, layer.kind)
        if layer.kind == "aoi":
            return "AOI" + ("" if not layer.is_empty() else "  (none: draw or load one)")
        if layer.name.lower() == kind.lower():
            return layer.name
        return f"{layer.name}  ·  {kind}" if layer.kind == "imagery" else layer.name

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if self._updating:
            return
        row = self.list.row(item)
        if 0 <= row < len(self.stack.layers):
            layer = self.stack.layers[row]
            on = item.checkState() == Qt.Checked
            if on != layer.visible:
                layer.set_visible(on)

    def _on_current(self, row: int) -> None:
        layer = self.current_layer()
        self._updating = True
        enabled = layer is not None
        for w in (self.opacity, self.remove_btn, self.up, self.down):
            w.setEnabled(enabled)
        self.opacity.setValue(int(round((layer.opacity if layer else 1.0) * 100)))
        self.opacity_label.setText(f"{self.opacity.value()} %")
        is_rgb = isinstance(layer, RasterLayer) and layer.render == "rgb"
        self.bands_row.setVisible(is_rgb)
        self.stretch.setVisible(is_rgb)
        self.form.labelForField(self.bands_row).setVisible(is_rgb)
        self.form.labelForField(self.stretch).setVisible(is_rgb)
        if is_rgb:
            names = list(layer.source.band_names)
            bands = list(layer.bands) + [layer.bands[-1]] * (3 - len(layer.bands))
            for c, b in zip((self.band_r, self.band_g, self.band_b), bands):
                c.clear()
                c.addItems(names)
                c.setCurrentIndex(b - 1)
            self.stretch.setCurrentIndex(max(0, self.stretch.findData(layer.stretch)))
        self.info.setText(layer.info_text() if isinstance(layer, RasterLayer) else
                          (f"{len(layer)} feature(s)" if hasattr(layer, "__len__") and layer
                           is not None and not isinstance(layer, RasterLayer) else ""))
        self._updating = False

    def _on_opacity(self, v: int) -> None:
        self.opacity_label.setText(f"{v} %")
        layer = self.current_layer()
        if layer is not None and not self._updating:
            layer.set_opacity(v / 100.0)

    def _on_bands(self, *_args) -> None:
        layer = self.current_layer()
        if self._updating or not isinstance(layer, RasterLayer) or layer.render != "rgb":
            return
        bands = [c.currentIndex() + 1 for c in (self.band_r, self.band_g, self.band_b)]
        if len(set(bands)) == 1:
            bands = bands[:1]
        layer.set_bands(bands, self.stretch.currentData())

    def _move(self, delta: int) -> None:
        layer = self.current_layer()
        if layer is not None:
            self.stack.move(layer, delta)
            self.select(layer)

    def _remove(self) -> None:
        layer = self.current_layer()
        if layer is not None:
            self.stack.remove(layer)
