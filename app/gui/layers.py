"""Map layers: graphics items on the canvas scene plus their display settings.

Scene coordinates are the base raster's pixel coordinates (see :mod:`app.service.viewing`).
Raster layers show a decimated overview of the whole raster and, when zoomed in past it, a
higher-resolution window of the current view read off the UI thread.
"""
from __future__ import annotations

import logging
import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import (QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPixmap,
                           QPolygonF)
from PySide6.QtWidgets import (QGraphicsItem, QGraphicsItemGroup, QGraphicsPathItem,
                               QGraphicsPixmapItem, QGraphicsScene)

from app.gui.worker import Worker, WorkerPool
from app.service import viewing

log = logging.getLogger(__name__)

#: longest side of the whole-extent overview image of a raster layer
OVERVIEW_MAX_PX = 1536
#: shared reader thread for view-dependent raster windows (one: GDAL handles are per read)
_VIEW_POOL = WorkerPool("roadseg-view", 1)


def rgba_to_pixmap(rgba: np.ndarray) -> QPixmap:
    """uint8 ``(h, w, 4)`` RGBA -> QPixmap (copied)."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    h, w = rgba.shape[:2]
    img = QImage(rgba.data, w, h, 4 * w, QImage.Format_RGBA8888)
    return QPixmap.fromImage(img.copy())


def _place(item: QGraphicsPixmapItem, pix: QPixmap, rect: Sequence[float]) -> None:
    x0, y0, x1, y1 = rect
    item.setPixmap(pix)
    item.setPos(x0, y0)
    sx = (x1 - x0) / max(1, pix.width())
    sy = (y1 - y0) / max(1, pix.height())
    from PySide6.QtGui import QTransform

    item.setTransform(QTransform.fromScale(sx, sy))


class Layer(QObject):
    """Base of all layers: a name, a kind, visibility, opacity and the items it owns."""

    changed = Signal()
    KIND = "layer"

    def __init__(self, name: str, scene: QGraphicsScene) -> None:
        super().__init__()
        self.name = name
        self.scene = scene
        self.visible = True
        self.opacity = 1.0
        self.z = 0.0
        self.group = QGraphicsItemGroup()
        self.group.setHandlesChildEvents(False)
        scene.addItem(self.group)

    @property
    def kind(self) -> str:
        return self.KIND

    def set_visible(self, on: bool) -> None:
        self.visible = bool(on)
        self.group.setVisible(self.visible)
        self.changed.emit()

    def set_opacity(self, value: float) -> None:
        self.opacity = float(min(1.0, max(0.0, value)))
        self.group.setOpacity(self.opacity)
        self.changed.emit()

    def set_z(self, z: float) -> None:
        self.z = z
        self.group.setZValue(z)

    def extent(self) -> Optional[QRectF]:
        r = self.group.childrenBoundingRect()
        return None if r.isNull() else r

    def update_view(self, rect: QRectF, viewport_px: Tuple[int, int]) -> None:
        """Called when the visible scene rectangle changes (rasters fetch detail)."""

    def remove(self) -> None:
        self.scene.removeItem(self.group)


class RasterLayer(Layer):
    """A raster drawn as RGB imagery (``rgb``), probability heat map (``heat``) or binary mask
    (``mask``)."""

    def __init__(self, name: str, scene: QGraphicsScene, source: "viewing.RasterSource",
                 render: str = "rgb", bands: Optional[Sequence[int]] = None,
                 stretch: str = "none", colour: Tuple[int, int, int] = (255, 40, 40)) -> None:
        super().__init__(name, scene)
        self.source = source
        self.render = render
        self.colour = colour
        if bands is None:
            bands = source.default_bands if render == "rgb" else (1,)
        self.bands: Tuple[int, ...] = tuple(int(b) for b in bands)
        self.stretch = stretch
        self.lo: Optional[np.ndarray] = None
        self.hi: Optional[np.ndarray] = None
        self.overview_item = QGraphicsPixmapItem()
        self.overview_item.setTransformationMode(Qt.SmoothTransformation)
        self.detail_item = QGraphicsPixmapItem()
        self.detail_item.setTransformationMode(Qt.FastTransformation)
        self.detail_item.setZValue(1)
        self.group.addToGroup(self.overview_item)
        self.group.addToGroup(self.detail_item)
        self.overview_scale = 1.0
        self._gen = 0
        self._last_view: Optional[Tuple[QRectF, Tuple[int, int]]] = None
        self.detail_reads = 0
        self.overview_ready = False
        self._ov_gen = 0
        self.refresh()

    @property
    def kind(self) -> str:
        return {"rgb": "imagery", "heat": "probability", "mask": "mask"}[self.render]

    def _colourize(self, view: "viewing.RasterView") -> np.ndarray:
        if self.render == "rgb":
            return viewing.colourize(view, "rgb", lo=self.lo, hi=self.hi)
        return viewing.colourize(view, self.render, colour=self.colour)

    def set_bands(self, bands: Sequence[int], stretch: Optional[str] = None) -> None:
        self.bands = tuple(int(b) for b in bands)
        if stretch is not None:
            self.stretch = stretch
        self.refresh()
        self.changed.emit()

    def refresh(self, background: Optional[bool] = None) -> None:
        """Recompute the stretch and the overview; drop the detail image.

        Large rasters without overviews (a whole-raster decimated read touches every block)
        are read off the UI thread: the layer shows up when the read is done.
        """
        if background is None:
            background = not self.source.cheap_overview
        self._gen += 1
        self._ov_gen = gen = self._gen
        self.detail_item.setVisible(False)
        if not background:
            self._place_overview(gen, *self._read_overview())
            return
        log.info("%s: no overviews, reading a decimated view in the background (build "
                 "overviews, e.g. gdaladdo, for faster display)", self.source.path)

        job = Worker(lambda: (gen, *self._read_overview()), pool=_VIEW_POOL, owner=self,
                     name="overview")
        job.returned.connect(lambda res: self._place_overview(*res))
        job.errored.connect(self._read_failed)
        job.start()

    def _read_failed(self, exc: BaseException) -> None:
        """A background read failed: shown in the log, the layer keeps what it shows."""
        log.warning("%s: read failed: %s", self.source.path, exc)

    def _read_overview(self):
        lo, hi = self.lo, self.hi
        if self.render == "rgb":
            lo, hi = viewing.compute_band_stretch(self.source, self.bands, self.stretch)
        view = viewing.read_view(self.source, None, (OVERVIEW_MAX_PX, OVERVIEW_MAX_PX),
                                 self.bands)
        if view is None:
            return None, None, lo, hi
        if self.render == "rgb":
            rgba = viewing.colourize(view, "rgb", lo=lo, hi=hi)
        else:
            rgba = viewing.colourize(view, self.render, colour=self.colour)
        return view, rgba, lo, hi

    def _place_overview(self, gen: int, view: Any, rgba: Any, lo: Any, hi: Any) -> None:
        if gen != self._ov_gen:
            return
        self.lo, self.hi = lo, hi
        if view is None:
            return
        self.overview_scale = max(view.window[2] / view.data.shape[2],
                                  view.window[3] / view.data.shape[1])
        _place(self.overview_item, rgba_to_pixmap(rgba), view.frame_rect)
        self.overview_ready = True
        self.changed.emit()
        if self._last_view is not None:
            self.update_view(*self._last_view)

    def set_visible(self, on: bool) -> None:
        super().set_visible(on)
        if self.visible and self._last_view is not None:
            self.update_view(*self._last_view)  # views changed while hidden

    def frame_px_per_source_px(self) -> float:
        a, b, _, d, e, _ = self.source.to_frame
        return math.sqrt(abs(a * e - b * d)) or 1.0

    def update_view(self, rect: QRectF, viewport_px: Tuple[int, int]) -> None:
        self._last_view = (QRectF(rect), viewport_px)
        if not self.visible:
            return
        vw, vh = max(1, viewport_px[0]), max(1, viewport_px[1])
        src_per_screen = rect.width() / vw / self.frame_px_per_source_px()
        if src_per_screen * 1.5 >= self.overview_scale:
            self.detail_item.setVisible(False)  # the overview is sharp enough
            self._gen += 1
            return
        self._gen += 1
        gen = self._gen
        pad_x, pad_y = rect.width() * 0.15, rect.height() * 0.15
        r = (rect.left() - pad_x, rect.top() - pad_y, rect.right() + pad_x, rect.bottom() + pad_y)
        out = (int(vw * 1.3), int(vh * 1.3))
        bands, src = self.bands, self.source

        def read() -> Tuple[int, Any, Any]:
            view = viewing.read_view(src, r, out, bands)
            return gen, view, (self._colourize(view) if view is not None else None)

        job = Worker(read, pool=_VIEW_POOL, owner=self, name="detail")
        job.returned.connect(lambda res: self._on_detail(*res))
        job.errored.connect(self._read_failed)
        job.start()

    def _on_detail(self, gen: int, view: Any, rgba: Any) -> None:
        if gen != self._gen or view is None:
            return
        import shiboken6

        if not shiboken6.isValid(self.detail_item):  # the layer was removed while reading
            return
        _place(self.detail_item, rgba_to_pixmap(rgba), view.frame_rect)
        self.detail_item.setVisible(True)
        self.detail_reads += 1

    def info_text(self) -> str:
        s = self.source
        return (f"{s.path}\n{s.width} x {s.height} px, {s.count} band(s) {', '.join(s.dtypes[:1])}"
                f"\nCRS {s.crs or 'none (pixel coordinates)'}" + (" (warped)" if s.warped else ""))


class PointsItem(QGraphicsItem):
    """Points drawn as fixed-size screen dots (cosmetic pen)."""

    def __init__(self, pts: np.ndarray, colour: QColor, size_px: float = 6.0) -> None:
        super().__init__()
        self.poly = QPolygonF([QPointF(float(x), float(y)) for x, y in pts])
        self.pen = QPen(colour, size_px)
        self.pen.setCosmetic(True)
        self.pen.setCapStyle(Qt.RoundCap)
        self._rect = self.poly.boundingRect().adjusted(-1, -1, 1, 1)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt API
        return self._rect

    def paint(self, painter: QPainter, option: Any, widget: Any = None) -> None:
        painter.setRenderHint(QPainter.Antialiasing, True)
        painter.setPen(self.pen)
        painter.drawPoints(self.poly)


def _path_for(kind: str, parts: List[np.ndarray]) -> QPainterPath:
    path = QPainterPath()
    for a in parts:
        if len(a) == 0:
            continue
        path.moveTo(float(a[0, 0]), float(a[0, 1]))
        for x, y in a[1:]:
            path.lineTo(float(x), float(y))
        if kind == "polygon":
            path.closeSubpath()
    return path


class VectorLayer(Layer):
    """A vector layer (lines, polygons or points) reprojected to the frame."""

    KIND = "vector"

    def __init__(self, name: str, scene: QGraphicsScene, gdf: Any, frame: "viewing.GeoFrame",
                 colour: QColor = QColor(0, 200, 255), width_px: float = 2.0) -> None:
        super().__init__(name, scene)
        self.gdf = gdf
        self.frame = frame
        self.colour = QColor(colour)
        self.width_px = width_px
        self.feature_items: List[QGraphicsItem] = []
        self.feature_parts: List[List[np.ndarray]] = []
        self._build()

    def _pen(self, colour: QColor, width: float, style=Qt.SolidLine) -> QPen:
        pen = QPen(colour, width)
        pen.setCosmetic(True)
        pen.setStyle(style)
        pen.setCapStyle(Qt.RoundCap)
        pen.setJoinStyle(Qt.RoundJoin)
        return pen

    def _build(self) -> None:
        pts: List[np.ndarray] = []
        for i, geom in enumerate(self.gdf.geometry):
            kind, parts = viewing.geometry_to_pixel_parts(geom, self.frame)
            self.feature_parts.append(parts)
            if kind == "point":
                pts.extend(parts)
                self.feature_items.append(None)
                continue
            item = QGraphicsPathItem(_path_for(kind, parts))
            item.setPen(self._pen(self.colour, self.width_px))
            if kind == "polygon":
                fill = QColor(self.colour)
                fill.setAlpha(50)
                item.setBrush(QBrush(fill))
            item.setData(0, i)
            self.group.addToGroup(item)
            self.feature_items.append(item)
        if pts:
            self.group.addToGroup(PointsItem(np.concatenate(pts), self.colour, 6.0))

    def __len__(self) -> int:
        return len(self.gdf)


class EdgesLayer(VectorLayer):
    """Road edges under review: colour by status (unreviewed, kept, deleted, selected)."""

    KIND = "edges"
    COLOURS = {"unreviewed": QColor(255, 200, 0), "kept": QColor(40, 220, 60),
               "deleted": QColor(150, 150, 150)}

    def __init__(self, name: str, scene: QGraphicsScene, edit: "viewing.NetworkEdit",
                 frame: "viewing.GeoFrame") -> None:
        self.edit = edit
        self.selected: set = set()
        super().__init__(name, scene, edit.all_edges, frame, self.COLOURS["unreviewed"], 2.5)
        self.restyle()

    def restyle(self) -> None:
        for i, item in enumerate(self.feature_items):
            if item is None:
                continue
            st = self.edit.status(i)
            if i in self.selected:
                item.setPen(self._pen(QColor(0, 255, 255), 5.0))
                item.setZValue(2)
            elif st == "deleted":
                item.setPen(self._pen(self.COLOURS["deleted"], 1.5, Qt.DashLine))
                item.setZValue(0)
            else:
                item.setPen(self._pen(self.COLOURS[st], 2.5))
                item.setZValue(1)

    def set_selection(self, ids: Sequence[int]) -> None:
        self.selected = {int(i) for i in ids}
        self.restyle()
        self.changed.emit()

    def in_rect(self, x0: float, y0: float, x1: float, y1: float) -> List[int]:
        """Ids of the edges with a vertex or segment inside the scene rectangle."""
        from shapely import box, intersects_xy
        from shapely.geometry import LineString

        area = QRectF(x0, y0, x1 - x0, y1 - y0)
        rect = box(x0, y0, x1, y1)
        out = []
        for i, item in enumerate(self.feature_items):
            if item is None or not item.boundingRect().intersects(area):
                continue
            for a in self.feature_parts[i]:
                hit = intersects_xy(rect, a[:, 0], a[:, 1]).any() or (
                    len(a) >= 2 and LineString(a).intersects(rect))
                if hit:
                    out.append(i)
                    break
        return out

    def pick(self, x: float, y: float, tol: float) -> Optional[int]:
        """Id of the edge nearest to scene point ``(x, y)`` within ``tol`` scene units."""
        best, best_d = None, tol
        area = QRectF(x - tol, y - tol, 2 * tol, 2 * tol)
        p = np.array([x, y])
        for i, item in enumerate(self.feature_items):
            if item is None or not item.isVisible():
                continue
            if not item.boundingRect().intersects(area):
                continue
            for a in self.feature_parts[i]:
                if len(a) < 2:
                    continue
                s0, s1 = a[:-1], a[1:]
                d = s1 - s0
                ll = (d ** 2).sum(axis=1)
                t = np.clip(((p - s0) * d).sum(axis=1) / np.where(ll > 0, ll, 1), 0, 1)
                proj = s0 + d * t[:, None]
                dist = float(np.sqrt(((proj - p) ** 2).sum(axis=1)).min())
                if dist <= best_d:
                    best, best_d = i, dist
        return best


class AoiLayer(Layer):
    """The area of interest: polygons in scene (frame pixel) coordinates."""

    KIND = "aoi"

    def __init__(self, scene: QGraphicsScene) -> None:
        super().__init__("AOI", scene)
        self.polygons: List[np.ndarray] = []
        self.items: List[QGraphicsPathItem] = []
        self.handles: List[QGraphicsItem] = []
        self.outside: Optional[QGraphicsPathItem] = None
        self.editing = False

    def set_polygons(self, polygons: Sequence[np.ndarray]) -> None:
        self.polygons = [np.asarray(p, np.float64) for p in polygons if len(p) >= 3]
        self._rebuild()
        self.changed.emit()

    def clear(self) -> None:
        self.set_polygons([])

    def is_empty(self) -> bool:
        return not self.polygons

    def _rebuild(self) -> None:
        for it in self.items + self.handles + ([self.outside] if self.outside else []):
            if it.group() is self.group:
                self.group.removeFromGroup(it)
            self.scene.removeItem(it)
        self.items, self.handles = [], []
        self.outside = None
        if self.polygons:
            # everything outside the AOI is dimmed, the AOI itself stays untinted
            self.outside = QGraphicsPathItem(self._outside_path())
            self.outside.setPen(QPen(Qt.NoPen))
            self.outside.setBrush(QBrush(QColor(0, 0, 0, 110)))
            self.group.addToGroup(self.outside)
        pen = QPen(QColor(255, 0, 200), 2.2, Qt.DashLine)
        pen.setCosmetic(True)
        for k, poly in enumerate(self.polygons):
            item = QGraphicsPathItem(_path_for("polygon", [poly]))
            item.setPen(pen)
            self.group.addToGroup(item)
            self.items.append(item)
            if self.editing:
                ring = poly[:-1] if len(poly) > 3 and np.allclose(poly[0], poly[-1]) else poly
                for j, (x, y) in enumerate(ring):
                    h = VertexHandle(self, k, j)
                    h.setPos(float(x), float(y))
                    self.scene.addItem(h)
                    h.setZValue(self.z + 0.5)
                    self.handles.append(h)

    def _outside_path(self) -> QPainterPath:
        path = QPainterPath()
        path.setFillRule(Qt.OddEvenFill)
        path.addRect(self.scene.sceneRect())
        for poly in self.polygons:
            path.addPath(_path_for("polygon", [poly]))
        return path

    def set_editing(self, on: bool) -> None:
        self.editing = bool(on)
        self._rebuild()

    def move_vertex(self, k: int, j: int, x: float, y: float) -> None:
        poly = self.polygons[k]
        closed = len(poly) > 3 and np.allclose(poly[0], poly[-1])
        poly[j] = (x, y)
        if closed and j == 0:
            poly[-1] = (x, y)
        self.items[k].setPath(_path_for("polygon", [poly]))
        if self.outside is not None:
            self.outside.setPath(self._outside_path())
        self.changed.emit()

    def remove(self) -> None:
        for h in self.handles:
            self.scene.removeItem(h)
        super().remove()


class VertexHandle(QGraphicsItem):
    """A draggable AOI vertex, fixed size on screen."""

    SIZE = 9.0

    def __init__(self, layer: AoiLayer, k: int, j: int) -> None:
        super().__init__()
        self.layer, self.k, self.j = layer, k, j
        self.setFlag(QGraphicsItem.ItemIsMovable, True)
        self.setFlag(QGraphicsItem.ItemIgnoresTransformations, True)
        self.setFlag(QGraphicsItem.ItemSendsGeometryChanges, True)
        self.setCursor(Qt.SizeAllCursor)

    def boundingRect(self) -> QRectF:  # noqa: N802
        s = self.SIZE
        return QRectF(-s / 2 - 1, -s / 2 - 1, s + 2, s + 2)

    def paint(self, painter: QPainter, option: Any, widget: Any = None) -> None:
        s = self.SIZE
        painter.setPen(QPen(QColor(80, 0, 60), 1))
        painter.setBrush(QColor(255, 255, 255))
        painter.drawRect(QRectF(-s / 2, -s / 2, s, s))

    def itemChange(self, change, value):  # noqa: N802
        if change == QGraphicsItem.ItemPositionHasChanged:
            p = self.pos()
            self.layer.move_vertex(self.k, self.j, p.x(), p.y())
        return super().itemChange(change, value)


class LayerStack(QObject):
    """Ordered layers (first = top) with z values kept in that order.

    Signals: ``changed`` when layers are added, removed or reordered; ``layerChanged`` when a
    layer's display settings change."""

    changed = Signal()
    layerChanged = Signal()

    def __init__(self, scene: QGraphicsScene) -> None:
        super().__init__()
        self.scene = scene
        self.layers: List[Layer] = []

    def add(self, layer: Layer, top: bool = True) -> Layer:
        if top:
            self.layers.insert(0, layer)
        else:
            self.layers.append(layer)
        layer.changed.connect(self.layerChanged)
        self._restack()
        return layer

    def remove(self, layer: Layer) -> None:
        if layer in self.layers:
            self.layers.remove(layer)
            layer.remove()
            self._restack()

    def clear(self) -> None:
        for layer in list(self.layers):
            self.remove(layer)

    def move(self, layer: Layer, delta: int) -> None:
        i = self.layers.index(layer)
        j = max(0, min(len(self.layers) - 1, i + delta))
        if i != j:
            self.layers.insert(j, self.layers.pop(i))
            self._restack()

    def by_kind(self, kind: str) -> List[Layer]:
        return [lyr for lyr in self.layers if lyr.kind == kind]

    def first(self, kind: str) -> Optional[Layer]:
        found = self.by_kind(kind)
        return found[0] if found else None

    def _restack(self) -> None:
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            layer.set_z(float((n - i) * 10))
        self.changed.emit()
