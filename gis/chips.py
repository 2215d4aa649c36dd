"""Training-chip geometry: chip windows, area-based train/val split, label rasterisation.

Pure GIS (numpy, rasterio, geopandas, shapely); no ``segcore`` import. The service layer
(``app.service.dataset``) uses these to cut an image and its labels into a chips dataset.

Windows are ``rasterio.windows.Window`` values in full-raster pixel coordinates. Chips lie
on a regular grid with step ``chip_size_px - overlap_px``; along an axis longer than one chip
the last chip is moved inwards so it ends at the raster edge (no padding, no dropped strip);
an axis shorter than one chip gives a single chip that reaches past the raster (read it
boundless and it is padded).

Split by area: neighbouring chips share context (and with overlap, pixels), so a random
per-chip split leaks training pixels into validation. :func:`split_windows_by_area` gives
validation one contiguous band of whole chips at the far end of the longer image axis and
keeps training chips at least ``gap_px`` pixels away from it; chips in the gap are dropped.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.features
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.windows import Window

from .errors import AOIError, CRSError
from .units import grid_centre_lonlat, is_metric
from .units import metric_crs as _metric_crs

__all__ = ["chip_offsets", "chip_windows", "ChipSplit", "split_windows_by_area",
           "line_widths_m", "rasterize_lines", "align_mask", "window_bounds"]

logger = logging.getLogger(__name__)


def chip_offsets(length: int, chip_size_px: int, overlap_px: int = 0) -> List[int]:
    """Chip start offsets along one axis of ``length`` pixels.

    Regular steps of ``chip_size_px - overlap_px``; when ``length > chip_size_px`` the last
    chip is shifted to end exactly at ``length`` (it then overlaps its neighbour more). When
    ``length <= chip_size_px`` there is one chip at 0.

    Raises:
        ValueError: ``chip_size_px < 1`` or ``overlap_px`` outside ``[0, chip_size_px)``.
    """
    if chip_size_px < 1:
        raise ValueError(f"chip size must be >= 1 pixel, got {chip_size_px}")
    if not 0 <= overlap_px < chip_size_px:
        raise ValueError(f"overlap must be in [0, chip size {chip_size_px}), got {overlap_px}")
    if length <= chip_size_px:
        return [0]
    step = chip_size_px - overlap_px
    n = math.ceil((length - chip_size_px) / step) + 1
    offs = [i * step for i in range(n)]
    offs[-1] = length - chip_size_px
    # the shifted last chip can coincide with the one before it
    return sorted(set(offs))


def chip_windows(width: int, height: int, chip_size_px: int,
                 overlap_px: int = 0) -> List[Window]:
    """All chip windows of a ``width`` x ``height`` raster, row-major (see :func:`chip_offsets`).

    Every window is ``chip_size_px`` square; it reaches past the raster only on an axis
    shorter than one chip.
    """
    rows = chip_offsets(height, chip_size_px, overlap_px)
    cols = chip_offsets(width, chip_size_px, overlap_px)
    return [Window(c, r, chip_size_px, chip_size_px) for r in rows for c in cols]


@dataclass(frozen=True)
class ChipSplit:
    """Result of :func:`split_windows_by_area`.

    ``train`` / ``val`` / ``gap``: the windows of each group (input order kept).
    ``axis``: ``"x"`` (column bands) or ``"y"`` (row bands). ``val_start_px``: first pixel
    (column or row) of the validation band; ``train_end_px``: training chips end at or before
    it (``val_start_px - gap_px``).
    """

    train: Tuple[Window, ...]
    val: Tuple[Window, ...]
    gap: Tuple[Window, ...]
    axis: str
    val_start_px: int
    train_end_px: int


def split_windows_by_area(windows: Sequence[Window], width: int, height: int,
                          val_fraction: float, gap_px: int) -> ChipSplit:
    """Split chip windows into a training area and a validation band without leakage.

    The band is taken along the longer raster axis (columns when ``width >= height``): the
    validation band is made of the last chip columns (rows) whose starts cover about
    ``val_fraction`` of the chip columns (at least one when ``val_fraction > 0``); training
    keeps the chips that end at least ``gap_px`` pixels before the band starts, so no training
    pixel lies within ``gap_px`` of a validation pixel. Chips in between are in ``gap``.

    Args:
        windows: chip windows (from :func:`chip_windows`).
        width, height: raster size in pixels.
        val_fraction: share of chip columns (rows) for validation, in ``[0, 1)``.
        gap_px: minimum pixel distance between the training area and the validation band.

    Raises:
        ValueError: ``val_fraction`` outside ``[0, 1)`` or ``gap_px < 0``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    if gap_px < 0:
        raise ValueError(f"gap must be >= 0 pixels, got {gap_px}")
    axis = "x" if width >= height else "y"
    wins = list(windows)

    def start(w: Window) -> int:
        return int(w.col_off if axis == "x" else w.row_off)

    def end(w: Window) -> int:
        return int(w.col_off + w.width if axis == "x" else w.row_off + w.height)

    length = width if axis == "x" else height
    if val_fraction == 0.0 or not wins:
        return ChipSplit(tuple(wins), (), (), axis, length, length)
    starts = sorted({start(w) for w in wins})
    n_val = max(1, int(round(len(starts) * val_fraction)))
    if n_val >= len(starts):
        # one chip column only: nothing can be both disjoint and in the same band
        return ChipSplit((), tuple(wins), (), axis, starts[0], starts[0])
    val_start = starts[len(starts) - n_val]
    train_end = val_start - gap_px
    train, val, gap = [], [], []
    for w in wins:
        if start(w) >= val_start:
            val.append(w)
        elif end(w) <= train_end:
            train.append(w)
        else:
            gap.append(w)
    return ChipSplit(tuple(train), tuple(val), tuple(gap), axis, val_start, train_end)


def window_bounds(window: Window, transform: Affine) -> Tuple[float, float, float, float]:
    """``(left, bottom, right, top)`` of ``window`` in the CRS of ``transform``."""
    return tuple(rasterio.windows.bounds(window, transform))  # type: ignore[return-value]


# ---------------------------------------------------------------------- label rasterising
def line_widths_m(gdf, width_m: float, width_attr: Optional[str] = None,
                  attr_scale_m: float = 1.0) -> np.ndarray:
    """Road width in metres per feature of ``gdf``: ``gdf[width_attr] * attr_scale_m`` where
    the attribute is present, numeric and > 0, else ``width_m``. ``(N,)`` float64.

    ``attr_scale_m`` turns e.g. a lane count into metres (3.5 m per lane).
    """
    out = np.full(len(gdf), float(width_m), dtype=np.float64)
    if width_attr is None or width_attr not in gdf.columns:
        return out
    import pandas as pd

    vals = pd.to_numeric(gdf[width_attr], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(vals) & (vals > 0)
    out[ok] = vals[ok] * float(attr_scale_m)
    return out


def rasterize_lines(gdf, *, crs: CRS, transform: Affine, width: int, height: int,
                    width_m: float = 6.0, width_attr: Optional[str] = None,
                    attr_scale_m: float = 1.0, metric_crs: Optional[CRS] = None,
                    source: str = "lines") -> np.ndarray:
    """Burn road centre lines, buffered to their width in metres, onto a raster grid.

    Args:
        gdf: GeoDataFrame of (Multi)LineStrings (other geometry types are ignored) with a CRS;
            it is reprojected as needed.
        crs, transform, width, height: the target grid (the image's).
        width_m: full road width in metres (default when the attribute is absent).
        width_attr, attr_scale_m: per-feature width from an attribute (see :func:`line_widths_m`).
        metric_crs: a metric CRS for buffering; default ``crs`` itself when it is projected in
            metres, else the UTM zone of the grid centre (:func:`gis.units.metric_crs`).
        source: name of the label file for error messages.

    Returns:
        ``(height, width)`` uint8 mask, 255 = road, 0 = background.

    Raises:
        CRSError: the lines or the grid have no CRS.
        AOIError: no line geometry, or none of the lines touches the grid.
    """
    import geopandas as gpd

    if gdf.crs is None:
        raise CRSError(f"{source}: label lines have no CRS")
    if crs is None:
        raise CRSError(f"{source}: the image has no CRS, cannot place the lines")
    if width_m <= 0:
        raise ValueError(f"road width must be > 0 m, got {width_m}")
    lines = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    lines = lines[lines.geom_type.isin(["LineString", "MultiLineString"])]
    if lines.empty:
        raise AOIError(f"{source}: no LineString features to rasterise")
    crs = CRS.from_user_input(crs)
    if metric_crs is None:
        metric_crs = crs if is_metric(crs) else \
            _metric_crs(crs, grid_centre_lonlat(crs, transform, width, height))
    widths = line_widths_m(lines, width_m, width_attr, attr_scale_m)
    metric = lines.to_crs(metric_crs)
    # round caps: separate lines that meet at a node join without notches (a dead end gets
    # half a width beyond its last vertex, as in the SpaceNet masks)
    polys = gpd.GeoSeries([g.buffer(w / 2.0, cap_style="round", join_style="round")
                           for g, w in zip(metric.geometry, widths)], crs=metric_crs)
    polys = polys.to_crs(crs)
    left, bottom, right, top = rasterio.transform.array_bounds(height, width, transform)
    from shapely.geometry import box

    grid = box(min(left, right), min(bottom, top), max(left, right), max(bottom, top))
    hit = polys.intersects(grid)
    if not bool(hit.any()):
        raise AOIError(f"{source}: none of the {len(polys)} lines lies inside the image "
                       f"bounds {tuple(round(v, 6) for v in grid.bounds)} ({crs.to_string()})")
    shapes = [(g, 255) for g in polys[hit]]
    return rasterio.features.rasterize(shapes, out_shape=(height, width), transform=transform,
                                       fill=0, dtype="uint8", all_touched=False)


def align_mask(mask_path: str, *, crs: Optional[CRS], transform: Affine, width: int,
               height: int) -> np.ndarray:
    """Read band 1 of a mask raster onto the image grid: values > 0 are road.

    A mask on the same grid is read as is; otherwise it is reprojected with nearest-neighbour
    resampling (areas the mask does not cover become 0).

    Returns:
        ``(height, width)`` uint8, 255 = road, 0 = background.

    Raises:
        CRSError: exactly one of the two rasters has a CRS, so they cannot be aligned.
        AOIError: the mask does not overlap the image.
    """
    with rasterio.open(mask_path) as src:
        same_grid = (src.width == width and src.height == height
                     and src.transform.almost_equals(transform)
                     and (src.crs == crs or (src.crs is None and crs is None)))
        if same_grid:
            arr = src.read(1)
            nod = src.nodata
            road = arr > 0
            if nod is not None and not np.isnan(nod):
                road &= arr != nod
            return np.where(road, 255, 0).astype(np.uint8)
        if (src.crs is None) != (crs is None):
            raise CRSError(f"{mask_path}: mask and image grids differ and only one of them has "
                           "a CRS")
        # two rasters in pixel coordinates: any one projected CRS on both sides makes the
        # reprojection a plain affine resampling (GDAL refuses to warp without a CRS)
        mcrs = src.crs if src.crs is not None else CRS.from_epsg(3857)
        dcrs = crs if crs is not None else mcrs
        mb = rasterio.warp.transform_bounds(mcrs, crs, *src.bounds) if src.crs else src.bounds
        ib = rasterio.transform.array_bounds(height, width, transform)
        # (pixel-coordinate grids run y downwards: order each side's bounds before comparing)
        mx, my = sorted((mb[0], mb[2])), sorted((mb[1], mb[3]))
        ix, iy = sorted((ib[0], ib[2])), sorted((ib[1], ib[3]))
        if mx[0] >= ix[1] or mx[1] <= ix[0] or my[0] >= iy[1] or my[1] <= iy[0]:
            raise AOIError(f"{mask_path}: mask does not overlap the image")
        src_arr = src.read(1)
        src_road = (src_arr > 0)
        if src.nodata is not None and not np.isnan(src.nodata):
            src_road &= src_arr != src.nodata
        out = np.zeros((height, width), dtype=np.uint8)
        rasterio.warp.reproject(src_road.astype(np.uint8) * 255, out,
                                src_transform=src.transform, src_crs=mcrs,
                                dst_transform=transform, dst_crs=dcrs,
                                resampling=Resampling.nearest, src_nodata=None, dst_nodata=0)
        return out


def valid_fraction(valid: np.ndarray) -> float:
    """Share of valid pixels of a ``(H, W)`` bool mask (1.0 for an empty array)."""
    return float(valid.mean()) if valid.size else 1.0


def chip_summary(split: ChipSplit) -> Dict[str, int]:
    """Counts per group, for logging."""
    return {"train": len(split.train), "val": len(split.val), "gap": len(split.gap)}
