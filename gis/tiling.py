"""Tiling arithmetic: pure functions, no I/O.

A raster area of ``width x height`` pixels is covered by square tiles of ``tile_size_px`` that
overlap their neighbours by ``overlap_px``. Tile origins advance by ``stride = tile_size_px -
overlap_px``; the number of tiles per axis is rounded *up* so the last partial tile is kept: its
read window reaches past the area (and possibly past the raster) and is padded by a boundless read,
never dropped.

Each tile also *owns* a ``core_window``: the tile window minus half the overlap on every side that
has a neighbour. Core windows partition the area exactly (every pixel belongs to exactly one core),
which is what vector tiling or per-tile statistics need. Blending in :mod:`gis.mosaic` uses the full
windows with smooth weights instead.

All windows are :class:`rasterio.windows.Window` values in pixel coordinates of the full raster
(column offset, row offset, width, height), integers only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

from rasterio.windows import Window

__all__ = ["Tile", "plan_tiles", "tile_offsets"]


@dataclass(frozen=True)
class Tile:
    """One tile of a tiling plan.

    Attributes:
        window: the read window, always ``tile_size_px x tile_size_px``; it may extend past the
            area and the raster (right/bottom edge tiles), to be filled by a boundless read.
        core_window: the part of the area this tile owns; core windows of a plan partition the
            area exactly and always lie inside both ``window`` and the area.
        index: ``(row, col)`` position of the tile in the plan grid; plans are row-major.
    """

    window: Window
    core_window: Window
    index: Tuple[int, int]

    @property
    def row_off(self) -> int:
        return int(self.window.row_off)

    @property
    def col_off(self) -> int:
        return int(self.window.col_off)


def tile_offsets(length: int, tile_size_px: int, overlap_px: int) -> List[int]:
    """Offsets (relative to the area start) of the tiles along one axis of ``length`` pixels.

    ``n = max(1, ceil((length - tile_size_px) / stride) + 1)`` tiles at ``i * stride``: the last
    one ends at or past ``length``. Validation is done by :func:`plan_tiles`.
    """
    stride = tile_size_px - overlap_px
    if length <= tile_size_px:
        return [0]
    n = math.ceil((length - tile_size_px) / stride) + 1
    return [i * stride for i in range(n)]


def _core_bounds(offsets: List[int], length: int, overlap_px: int) -> List[int]:
    """Boundaries ``b_0 = 0 < b_1 < ... < b_n = length`` of the core segments along one axis.

    Tile ``i`` owns ``[b_i, b_{i+1})``; ``b_i = offset_i + overlap_px // 2`` for interior tiles.
    """
    half = overlap_px // 2
    bounds = [0] + [off + half for off in offsets[1:]] + [length]
    return bounds


def plan_tiles(
    width: int,
    height: int,
    tile_size_px: int,
    overlap_px: int,
    area_window: Optional[Window] = None,
) -> List[Tile]:
    """Plan overlapping square tiles over a raster or a window of it.

    Args:
        width, height: raster size in pixels.
        tile_size_px: side of every tile window (pixels, > 0).
        overlap_px: overlap between neighbouring tiles (pixels, ``0 <= overlap_px < tile_size_px``).
        area_window: the part of the raster to tile (e.g. an AOI window); default the whole raster.
            It must have integer offsets and sizes and lie inside the raster.

    Returns:
        Tiles in row-major order (``index = (row, col)``). Tile windows are anchored at the area's
        top-left corner and advance by ``tile_size_px - overlap_px``; the last row/column of tiles
        may reach past the area and the raster. Core windows partition the area exactly.

    Raises:
        ValueError: on non-positive sizes, ``overlap_px >= tile_size_px``, negative overlap, or an
            area window that is empty, fractional or not inside the raster.
    """
    for name, value in (("width", width), ("height", height), ("tile_size_px", tile_size_px)):
        if int(value) != value or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if int(overlap_px) != overlap_px or overlap_px < 0:
        raise ValueError(f"overlap_px must be a non-negative integer, got {overlap_px!r}")
    if overlap_px >= tile_size_px:
        raise ValueError(
            f"overlap_px ({overlap_px}) must be smaller than tile_size_px ({tile_size_px})"
        )
    if area_window is None:
        area_window = Window(0, 0, width, height)
    vals = (area_window.col_off, area_window.row_off, area_window.width, area_window.height)
    if any(int(v) != v for v in vals):
        raise ValueError(f"area_window must have integer offsets and sizes, got {area_window}")
    c0, r0, aw, ah = (int(v) for v in vals)
    if aw <= 0 or ah <= 0:
        raise ValueError(f"area_window is empty: {area_window}")
    if c0 < 0 or r0 < 0 or c0 + aw > width or r0 + ah > height:
        raise ValueError(
            f"area_window {area_window} is not inside the {width}x{height} raster"
        )

    xs = tile_offsets(aw, tile_size_px, overlap_px)
    ys = tile_offsets(ah, tile_size_px, overlap_px)
    xb = _core_bounds(xs, aw, overlap_px)
    yb = _core_bounds(ys, ah, overlap_px)

    tiles: List[Tile] = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            window = Window(c0 + x, r0 + y, tile_size_px, tile_size_px)
            core = Window(c0 + xb[j], r0 + yb[i], xb[j + 1] - xb[j], yb[i + 1] - yb[i])
            tiles.append(Tile(window=window, core_window=core, index=(i, j)))
    return tiles
