"""Seamless blending of overlapping tile predictions with a bounded strip buffer.

:class:`MosaicAccumulator` receives per-tile probabilities ``(K, T, T)`` in the row-major order of
:func:`gis.tiling.plan_tiles` and writes the blended result of the *area window* in horizontal row
strips as soon as no future tile can touch those rows.

Blending: ``out = sum_t(w_t * p_t) / sum_t(w_t)``. The weight of a tile is separable,
``w(y, x) = r(y) * r(x)``, where the 1-D profile ``r`` is 1 in the middle and falls with a
raised-cosine ramp across the ``overlap_px`` pixels shared with a neighbour; sides without a
neighbour (area edges) are not ramped, so weights are never zero at raster edges. The ramps of
two neighbours add up to exactly 1 across their overlap, so an identity prediction is reproduced
exactly (up to float rounding), and seams disappear.

Memory: the accumulator holds ``(K + 1) x tile_size_px x area_width`` float32 values (one strip the
height of a tile) plus a bool validity strip, independent of the raster height.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Optional

import numpy as np
from rasterio.windows import Window

from gis.tiling import Tile, tile_offsets

__all__ = [
    "MosaicAccumulator",
    "StripWriter",
    "ramp_profile",
    "probabilities_to_uint8",
    "PROB_SCALE",
    "PROB_NODATA",
    "MASK_BACKGROUND",
    "MASK_ROAD",
    "MASK_NODATA",
]

log = logging.getLogger(__name__)

#: probabilities are stored as ``round(p * PROB_SCALE)``: 0..254
PROB_SCALE = 254
#: uint8 probability value outside the AOI / valid-data area
PROB_NODATA = 255
#: mask values: background, road (K == 1; for K > 1 the mask holds the argmax class), nodata
MASK_BACKGROUND = 0
MASK_ROAD = 1
MASK_NODATA = 255

#: ``writer(row_off, probs, valid)``: ``row_off`` is the strip's first row relative to the area
#: window, ``probs`` float32 ``(K, h, area_width)``, ``valid`` bool ``(h, area_width)``.
StripWriter = Callable[[int, np.ndarray, np.ndarray], None]


def ramp_profile(
    length: int, overlap_px: int, ramp_start: bool, ramp_end: bool
) -> np.ndarray:
    """1-D blending weights of one tile side: float64 ``(length,)``, values in ``(0, 1]``.

    Raised cosine over the first/last ``overlap_px`` samples where a neighbour shares them
    (``ramp_start`` / ``ramp_end``), 1 elsewhere. ``r[k] + r_next[k] == 1`` across an overlap.
    """
    r = np.ones(length, dtype=np.float64)
    if overlap_px <= 0:
        return r
    k = np.arange(overlap_px, dtype=np.float64)
    up = 0.5 - 0.5 * np.cos(math.pi * (k + 0.5) / overlap_px)
    if ramp_start:
        r[:overlap_px] *= up
    if ramp_end:
        r[length - overlap_px:] *= up[::-1]
    return r


def probabilities_to_uint8(probs: np.ndarray, valid: Optional[np.ndarray] = None,
                           *, overwrite_input: bool = False) -> np.ndarray:
    """Quantise probabilities ``0..1`` to uint8 ``0..PROB_SCALE``; invalid pixels -> PROB_NODATA.

    ``round(p * PROB_SCALE)`` in float32 (halves to even), clipped to ``0..PROB_SCALE``.
    ``overwrite_input``: ``probs`` (float32) may serve as scratch space and is left holding the
    scaled values (the strip writer's own strips: no float temporary at all).
    """
    p = np.asarray(probs)
    if not (overwrite_input and p.dtype == np.float32 and p.flags.writeable):
        p = np.array(p, dtype=np.float32)  # a copy: the caller's array is left alone
    # in place: scale, round, clip (as maximum + minimum: numpy's clip is ~3x slower)
    np.multiply(p, np.float32(PROB_SCALE), out=p)
    np.rint(p, out=p)
    np.maximum(p, np.float32(0), out=p)
    np.minimum(p, np.float32(PROB_SCALE), out=p)
    q = p.astype(np.uint8)
    if valid is not None:
        valid = np.asarray(valid, bool)
        if not valid.all():
            np.copyto(q, np.uint8(PROB_NODATA), where=~valid)
    return q


class MosaicAccumulator:
    """Blend overlapping tile probabilities of one area into row strips.

    Args:
        area_window: the window of the raster being tiled (the same ``area_window`` given to
            :func:`gis.tiling.plan_tiles`, or the whole raster).
        num_classes: ``K``, channels of the probabilities.
        tile_size_px, overlap_px: the tiling parameters of the plan.
        writer: called as ``writer(row_off, probs, valid)`` for every finished strip, top to
            bottom, strips contiguous and covering the area exactly once (see :data:`StripWriter`).

    Tiles must be added in row-major order (non-decreasing ``window.row_off``), as
    :func:`gis.tiling.plan_tiles` returns them. Pixels of a tile window outside the area are
    ignored. Rows above the current tile row are flushed when the first tile of a new row arrives;
    :meth:`finish` flushes the rest.
    """

    def __init__(
        self,
        area_window: Window,
        num_classes: int,
        tile_size_px: int,
        overlap_px: int,
        writer: StripWriter,
    ) -> None:
        self.area = Window(
            int(area_window.col_off), int(area_window.row_off),
            int(area_window.width), int(area_window.height),
        )
        self.num_classes = int(num_classes)
        self.tile_size_px = int(tile_size_px)
        self.overlap_px = int(overlap_px)
        self._writer = writer
        aw, ah = int(self.area.width), int(self.area.height)
        # which tile offsets have neighbours: the same arithmetic as plan_tiles
        self._last_x = tile_offsets(aw, tile_size_px, overlap_px)[-1]
        self._last_y = tile_offsets(ah, tile_size_px, overlap_px)[-1]
        self.buffer_rows = min(self.tile_size_px, ah)
        self._sum = np.zeros((self.num_classes, self.buffer_rows, aw), np.float32)
        self._wsum = np.zeros((self.buffer_rows, aw), np.float32)
        self._valid = np.zeros((self.buffer_rows, aw), bool)
        self._prod = np.empty((self.num_classes, self.tile_size_px, self.tile_size_px), np.float32)
        self._top = 0  # area-relative row of buffer row 0
        self._flushed = 0  # area-relative rows already written
        self.max_buffer_rows_used = 0
        self._finished = False
        self._weights: dict = {}

    # ------------------------------------------------------------------------------------
    @property
    def rows_written(self) -> int:
        """Area rows already handed to the writer."""
        return self._flushed

    def _flush_until(self, row: int) -> None:
        """Write area rows ``[self._flushed, row)`` and slide the buffer down."""
        row = min(row, int(self.area.height))
        n = row - self._flushed
        if n <= 0:
            return
        a = self._flushed - self._top  # buffer index of the first row to flush (always 0)
        assert a == 0, "internal: buffer top out of sync"
        wsum = self._wsum[:n]
        # weights are positive: every pixel is covered when the smallest sum is (always the case
        # for a plan_tiles plan); a minimum costs less than a bool mask of the strip
        if wsum.min() > 0:
            probs = np.divide(self._sum[:, :n], wsum)
            valid = self._valid[:n].copy()
        else:
            covered = wsum > 0
            probs = np.divide(self._sum[:, :n], np.where(covered, wsum, np.float32(1.0)))
            valid = np.logical_and(self._valid[:n], covered)
        # both are new arrays: the writer may keep them
        self._writer(self._flushed, probs, valid)
        # slide
        keep = self.buffer_rows - n
        if keep > 0:
            self._sum[:, :keep] = self._sum[:, n:]
            self._wsum[:keep] = self._wsum[n:]
            self._valid[:keep] = self._valid[n:]
        self._sum[:, max(keep, 0):] = 0
        self._wsum[max(keep, 0):] = 0
        self._valid[max(keep, 0):] = False
        self._flushed = row
        self._top = row

    def add(self, tile: Tile, probs: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
        """Blend one tile.

        Args:
            tile: a tile of the plan (its ``window`` locates ``probs``).
            probs: float ``(K, T, T)`` probabilities over ``tile.window``.
            valid: optional bool ``(T, T)`` valid-data mask over ``tile.window`` (nodata, AOI);
                pixels never marked valid are written as invalid.
        """
        if self._finished:
            raise RuntimeError("MosaicAccumulator.add called after finish()")
        probs = np.asarray(probs)
        T = self.tile_size_px
        if probs.shape != (self.num_classes, T, T):
            raise ValueError(
                f"tile probabilities must have shape {(self.num_classes, T, T)}, got {probs.shape}"
            )
        ty = int(tile.window.row_off) - int(self.area.row_off)
        tx = int(tile.window.col_off) - int(self.area.col_off)
        if ty < self._top:
            raise ValueError(
                f"tile {tile.index} starts at area row {ty}, above rows already flushed "
                f"({self._top}): tiles must come in row-major order"
            )
        if ty > self._top:
            self._flush_until(ty)
        # weights: ramps only where a neighbour exists (at most 9 distinct tiles, cached)
        key = (ty > 0, ty < self._last_y, tx > 0, tx < self._last_x)
        weight = self._weights.get(key)
        if weight is None:
            ry = ramp_profile(T, self.overlap_px, key[0], key[1])
            rx = ramp_profile(T, self.overlap_px, key[2], key[3])
            weight = self._weights[key] = np.outer(ry, rx).astype(np.float32)
        # intersection of the tile with the area
        aw, ah = int(self.area.width), int(self.area.height)
        y0, y1 = max(ty, 0), min(ty + T, ah)
        x0, x1 = max(tx, 0), min(tx + T, aw)
        if y1 <= y0 or x1 <= x0:
            return
        sy, sx = slice(y0 - ty, y1 - ty), slice(x0 - tx, x1 - tx)
        w = weight[sy, sx]
        by = slice(y0 - self._top, y1 - self._top)
        if by.stop > self.buffer_rows:  # cannot happen for plan_tiles tiles
            raise ValueError(f"tile {tile.index} does not fit the strip buffer")
        # sum += p * w and wsum += w in place, through one reused product buffer
        dst = self._sum[:, by, x0:x1]
        prod = self._prod[:, : y1 - y0, : x1 - x0]
        np.multiply(probs[:, sy, sx].astype(np.float32, copy=False), w, out=prod)
        np.add(dst, prod, out=dst)
        wdst = self._wsum[by, x0:x1]
        np.add(wdst, w, out=wdst)
        if valid is None:
            self._valid[by, x0:x1] = True
        else:
            self._valid[by, x0:x1] |= np.asarray(valid, bool)[sy, sx]
        self.max_buffer_rows_used = max(self.max_buffer_rows_used, y1 - self._top)

    def finish(self) -> None:
        """Flush all remaining rows (call once, after the last tile)."""
        if not self._finished:
            self._flush_until(int(self.area.height))
            self._finished = True
