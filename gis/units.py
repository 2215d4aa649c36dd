"""Metres and UTM zones: the one place where CRS units become metres.

Lengths, areas and thresholds of the pipeline are in metres. A projected CRS gives them through
its linear unit (:func:`metre_factor`); anything else (geographic degrees, a CRS in feet for
measuring buffers) is measured in the WGS 84 / UTM zone that holds the data
(:func:`utm_crs_for_lonlat`, :func:`metric_crs`). Plain pyproj and math: light to import.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

from pyproj import CRS, Transformer

__all__ = ["utm_epsg_for_lonlat", "utm_crs_for_lonlat", "metre_factor", "is_metric", "metric_crs",
           "bounds_centre_lonlat", "grid_centre_lonlat", "pixel_size_m"]


def _crs(crs: Any) -> CRS:
    return crs if isinstance(crs, CRS) else CRS.from_user_input(crs)


def utm_epsg_for_lonlat(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone (326xx north, 327xx south) containing ``(lon, lat)``."""
    lon = ((lon + 180.0) % 360.0) - 180.0
    zone = int(math.floor((lon + 180.0) / 6.0)) + 1
    zone = min(max(zone, 1), 60)
    return (32600 if lat >= 0 else 32700) + zone


def utm_crs_for_lonlat(lon: float, lat: float) -> CRS:
    """The WGS 84 / UTM zone CRS containing ``(lon, lat)`` (:func:`utm_epsg_for_lonlat`)."""
    return CRS.from_epsg(utm_epsg_for_lonlat(lon, lat))


def metre_factor(crs: Any) -> Optional[float]:
    """Metres per coordinate unit of a projected CRS (1.0 for metres, 0.3048 for feet); None for
    a geographic or engineering CRS (degrees and pixels are not a fixed length)."""
    c = _crs(crs)
    if not c.is_projected:
        return None
    f = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return float(f or 1.0)


def is_metric(crs: Any) -> bool:
    """True for a projected CRS in metres."""
    f = metre_factor(crs)
    return f is not None and abs(f - 1.0) < 1e-12


def metric_crs(crs: Any, lonlat_centre: Tuple[float, float]) -> CRS:
    """``crs`` itself when it is projected in metres, else the UTM zone at ``lonlat_centre``."""
    c = _crs(crs)
    if is_metric(c):
        return c
    return utm_crs_for_lonlat(float(lonlat_centre[0]), float(lonlat_centre[1]))


def bounds_centre_lonlat(crs: Any, bounds: Sequence[float]) -> Tuple[float, float]:
    """Lon/lat of the centre of ``bounds`` ``(minx, miny, maxx, maxy)`` given in ``crs`` (the
    bounds are taken to lon/lat first, so a projected box's centre is its lon/lat box's)."""
    c = _crs(crs)
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    if not c.is_geographic:
        tr = Transformer.from_crs(c, "EPSG:4326", always_xy=True)
        minx, miny, maxx, maxy = tr.transform_bounds(minx, miny, maxx, maxy)
    return (minx + maxx) / 2.0, (miny + maxy) / 2.0


def grid_centre_lonlat(crs: Any, transform: Any, width: int, height: int
                       ) -> Tuple[float, float]:
    """Lon/lat of the centre of a ``width`` x ``height`` grid with affine ``transform``."""
    c = _crs(crs)
    x, y = transform @ (width / 2.0, height / 2.0)
    if c.is_geographic and c.to_epsg() == 4326:
        return float(x), float(y)
    lon, lat = Transformer.from_crs(c, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


def pixel_size_m(crs: Any, transform: Any, width: int, height: int
                 ) -> Optional[Tuple[float, float]]:
    """Pixel size ``(x, y)`` in metres of a ``width`` x ``height`` grid with affine
    ``transform``; for a geographic CRS measured at the grid centre in its UTM zone; None
    without a CRS."""
    if crs is None:
        return None
    c = _crs(crs)
    f = metre_factor(c)
    if f is not None:
        return (float(math.hypot(transform.a, transform.d) * f),
                float(math.hypot(transform.b, transform.e) * f))
    lon, lat = grid_centre_lonlat(c, transform, width, height)
    tr = Transformer.from_crs(c, utm_crs_for_lonlat(lon, lat), always_xy=True)
    cx, cy = width / 2.0, height / 2.0
    pts = [transform @ (cx, cy), transform @ (cx + 1, cy), transform @ (cx, cy + 1)]
    xs, ys = tr.transform([p[0] for p in pts], [p[1] for p in pts])
    return (float(math.hypot(xs[1] - xs[0], ys[1] - ys[0])),
            float(math.hypot(xs[2] - xs[0], ys[2] - ys[0])))
