"""The map canvas: a QGraphicsView with smooth pan/zoom, AOI drawing tools, edge picking and
drag-and-drop of rasters and vector files."""
from __future__ import annotations

import logging
import math
from typing import List, Optional, Tuple

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsScene, QGraphicsView

log = logging.getLogger(__name__)

TOOLS = ("pan", "select", "aoi_rect", "aoi_polygon")
ZOOM_STEP = 1.25
#: view scale limits (screen pixels per base-raster pixel)
MIN_SCALE, MAX_SCALE = 1e-4, 64.0


class MapCanvas(QGraphicsView):
    """Map view in base-raster pixel coordinates.

    Signals:
        cursorMoved(x, y): scene position under the mouse.
        viewChanged(): the visible area changed (debounced; rasters fetch detail on it).
        aoiDrawn(polygon): a finished AOI polygon, float64 ``(N, 2)`` scene coordinates.
        edgeClicked(x, y, additive): a click with the select tool (``additive`` with Ctrl/Shift).
        edgesBoxed(x0, y0, x1, y1, additive): a rectangle dragged with the select tool.
        filesDropped(paths): files dropped onto the map.
    """

    cursorMoved = Signal(float, float)
    viewChanged = Signal()
    aoiDrawn = Signal(object)
    edgeClicked = Signal(float, float, bool)
    edgesBoxed = Signal(float, float, float, float, bool)
    filesDropped = Signal(list)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.Antialiasing | QPainter.SmoothPixmapTransform)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.AnchorViewCenter)
        self.setViewportUpdateMode(QGraphicsView.SmartViewportUpdate)
        self.setBackgroundBrush(QBrush(QColor(38, 41, 46)))
        self.setMouseTracking(True)
        self.setAcceptDrops(True)
        self.setDragMode(QGraphicsView.NoDrag)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setFrameShape(QGraphicsView.NoFrame)
        self.tool = "pan"
        self._pan_from: Optional[QPointF] = None
        self._draw_pts: List[Tuple[float, float]] = []
        self._rubber: Optional[QGraphicsPathItem] = None
        self._rect_from: Optional[QPointF] = None
        self._select_from = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(120)
        self._debounce.timeout.connect(self.viewChanged)
        self.horizontalScrollBar().valueChanged.connect(self._schedule)
        self.verticalScrollBar().valueChanged.connect(self._schedule)

    # ---- geometry ------------------------------------------------------------------------
    def set_extent(self, width: float, height: float) -> None:
        """Set the scene to a ``width`` x ``height`` image with generous panning margins."""
        mx, my = max(width, 100.0), max(height, 100.0)
        self.scene().setSceneRect(QRectF(-mx, -my, width + 2 * mx, height + 2 * my))
        self._extent = QRectF(0, 0, width, height)

    def zoom_full(self) -> None:
        ext = getattr(self, "_extent", None)
        if ext is not None:
            self.fitInView(ext, Qt.KeepAspectRatio)
            self._schedule()

    def zoom_to(self, rect: QRectF) -> None:
        self.fitInView(rect, Qt.KeepAspectRatio)
        self._schedule()

    def current_scale(self) -> float:
        """Screen pixels per scene unit (base-raster pixel)."""
        return float(self.transform().m11())

    def zoom(self, factor: float, anchor: Optional[QPointF] = None) -> None:
        s = self.current_scale()
        factor = max(MIN_SCALE / s, min(MAX_SCALE / s, factor))
        if anchor is not None:
            old = self.transformationAnchor()
            self.setTransformationAnchor(QGraphicsView.NoAnchor)
            before = self.mapToScene(anchor.toPoint())
            self.scale(factor, factor)
            after = self.mapToScene(anchor.toPoint())
            d = after - before
            self.translate(d.x(), d.y())
            self.setTransformationAnchor(old)
        else:
            self.scale(factor, factor)
        self._schedule()

    def visible_rect(self) -> QRectF:
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def _schedule(self, *args) -> None:
        self._debounce.start()

    # ---- scale bar -----------------------------------------------------------------------
    #: metres per scene unit (base-raster pixel); None hides the scale bar
    metres_per_unit: Optional[float] = None

    def scale_bar(self) -> Optional[Tuple[float, float, str]]:
        """``(length_px, length_m, label)`` of a round scale bar about 120 screen pixels long."""
        s = self.current_scale()
        if not self.metres_per_unit or s <= 0:
            return None
        m_per_px = self.metres_per_unit / s
        target = 120 * m_per_px
        exp = math.floor(math.log10(target))
        nice = max(v * 10 ** exp for v in (1, 2, 5) if v * 10 ** exp <= target)
        label = f"{nice / 1000:g} km" if nice >= 1000 else (f"{nice:g} m" if nice >= 1
                                                             else f"{nice * 100:g} cm")
        return nice / m_per_px, nice, label

    def scrollContentsBy(self, dx: int, dy: int) -> None:  # noqa: N802
        # Qt scrolls by copying the viewport's pixels, the scale bar (drawn in viewport
        # coordinates) included: repaint the whole viewport so it does not smear while panning
        super().scrollContentsBy(dx, dy)
        self.viewport().update()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:  # noqa: N802
        bar = self.scale_bar()
        if bar is None:
            return
        length, _, label = bar
        painter.save()
        painter.resetTransform()
        x0, y0 = 14.0, self.viewport().height() - 16.0
        painter.setRenderHint(QPainter.Antialiasing, False)
        painter.fillRect(QRectF(x0 - 6, y0 - 22, length + 12, 30),
                         QColor(255, 255, 255, 170))
        pen = QPen(QColor(20, 20, 20), 2)
        painter.setPen(pen)
        painter.drawLine(QPointF(x0, y0), QPointF(x0 + length, y0))
        painter.drawLine(QPointF(x0, y0 - 5), QPointF(x0, y0 + 3))
        painter.drawLine(QPointF(x0 + length, y0 - 5), QPointF(x0 + length, y0 + 3))
        painter.drawText(QRectF(x0, y0 - 22, length, 16), Qt.AlignCenter, label)
        painter.restore()

    # ---- tools ---------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self._cancel_drawing()
        self.tool = tool
        cursor = {"pan": Qt.OpenHandCursor, "select": Qt.PointingHandCursor}.get(
            tool, Qt.CrossCursor)
        self.viewport().setCursor(cursor)

    def _cancel_drawing(self) -> None:
        self._draw_pts = []
        self._select_from = None
        self._rect_from = None
        if self._rubber is not None:
            self.scene().removeItem(self._rubber)
            self._rubber = None

    def _rubber_path(self, pts: List[Tuple[float, float]], close: bool) -> None:
        path = QPainterPath()
        if pts:
            path.moveTo(*pts[0])
            for p in pts[1:]:
                path.lineTo(*p)
            if close:
                path.closeSubpath()
        if self._rubber is None:
            self._rubber = QGraphicsPathItem()
            pen = QPen(QColor(255, 0, 200), 2, Qt.DashLine)
            pen.setCosmetic(True)
            self._rubber.setPen(pen)
            self._rubber.setBrush(QBrush(QColor(255, 0, 200, 30)))
            self._rubber.setZValue(1e6)
            self.scene().addItem(self._rubber)
        self._rubber.setPath(path)

    def _finish_polygon(self) -> None:
        pts = self._draw_pts
        self._cancel_drawing()
        if len(pts) >= 3:
            self.aoiDrawn.emit(np.asarray(pts + [pts[0]], np.float64))

    # ---- events --------------------------------------------------------------------------
    def wheelEvent(self, event) -> None:  # noqa: N802
        delta = event.angleDelta().y() or event.pixelDelta().y()
        if delta == 0:
            return
        self.zoom(ZOOM_STEP ** (delta / 120.0), event.position())
        event.accept()

    def mousePressEvent(self, event) -> None:  # noqa: N802
        pos = event.position()
        sp = self.mapToScene(pos.toPoint())
        if event.button() == Qt.MiddleButton or (event.button() == Qt.LeftButton
                                                 and self.tool == "pan"):
            self._pan_from = pos
            self.viewport().setCursor(Qt.ClosedHandCursor)
            event.accept()
            return
        if self.tool == "aoi_rect" and event.button() == Qt.LeftButton:
            self._rect_from = sp
            event.accept()
            return
        if self.tool == "aoi_polygon":
            if event.button() == Qt.LeftButton:
                self._draw_pts.append((sp.x(), sp.y()))
                self._rubber_path(self._draw_pts, False)
            elif event.button() == Qt.RightButton:
                self._finish_polygon()
            event.accept()
            return
        if self.tool == "select" and event.button() == Qt.LeftButton:
            self._select_from = (pos, sp)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = event.position()
        sp = self.mapToScene(pos.toPoint())
        self.cursorMoved.emit(sp.x(), sp.y())
        if self._pan_from is not None:
            d = pos - self._pan_from
            self._pan_from = pos
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(d.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(d.y()))
            event.accept()
            return
        if self._select_from is not None:
            p0, a = self._select_from
            if (pos - p0).manhattanLength() > 4:
                self._rubber_path([(a.x(), a.y()), (sp.x(), a.y()), (sp.x(), sp.y()),
                                   (a.x(), sp.y())], True)
        elif self._rect_from is not None:
            a = self._rect_from
            self._rubber_path([(a.x(), a.y()), (sp.x(), a.y()), (sp.x(), sp.y()),
                               (a.x(), sp.y())], True)
        elif self.tool == "aoi_polygon" and self._draw_pts:
            self._rubber_path(self._draw_pts + [(sp.x(), sp.y())], False)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._pan_from is not None and event.button() in (Qt.LeftButton, Qt.MiddleButton):
            self._pan_from = None
            self.set_tool(self.tool)  # restore the tool cursor
            event.accept()
            return
        if self._select_from is not None and event.button() == Qt.LeftButton:
            p0, a = self._select_from
            self._select_from = None
            boxed = self._rubber is not None
            self._cancel_drawing()
            additive = bool(event.modifiers() & (Qt.ControlModifier | Qt.ShiftModifier))
            b = self.mapToScene(event.position().toPoint())
            if boxed:
                self.edgesBoxed.emit(min(a.x(), b.x()), min(a.y(), b.y()), max(a.x(), b.x()),
                                     max(a.y(), b.y()), additive)
            else:
                self.edgeClicked.emit(a.x(), a.y(), additive)
            event.accept()
            return
        if self._rect_from is not None and event.button() == Qt.LeftButton:
            a, b = self._rect_from, self.mapToScene(event.position().toPoint())
            self._cancel_drawing()
            x0, x1 = sorted((a.x(), b.x()))
            y0, y1 = sorted((a.y(), b.y()))
            if (x1 - x0) * self.current_scale() > 3 and (y1 - y0) * self.current_scale() > 3:
                self.aoiDrawn.emit(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]],
                                            np.float64))
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if self.tool == "aoi_polygon":
            self._finish_polygon()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if self.tool == "aoi_polygon" and event.key() in (Qt.Key_Return, Qt.Key_Enter):
            self._finish_polygon()
            return
        if event.key() == Qt.Key_Escape:
            self._cancel_drawing()
            return
        if event.key() in (Qt.Key_Plus, Qt.Key_Equal):
            self.zoom(ZOOM_STEP)
            return
        if event.key() == Qt.Key_Minus:
            self.zoom(1 / ZOOM_STEP)
            return
        super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._schedule()

    # ---- drag and drop -------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragEnterEvent(event)

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            super().dragMoveEvent(event)

    def dropEvent(self, event) -> None:  # noqa: N802
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.filesDropped.emit(paths)
        else:
            super().dropEvent(event)
