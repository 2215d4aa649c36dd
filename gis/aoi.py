"""Areas of interest: load or build a polygon, reproject it to the raster, turn it into a window
and a pixel mask.

An :class:`AOI` is a shapely (Multi)Polygon plus its CRS. Vector files in any CRS are accepted
(GeoJSON, Shapefile, GeoPackage: whatever geopandas/pyogrio reads); geometries are reprojected
with pyproj (``always_xy``, lon/lat order for geographic CRS) after densifying edges so straight
lines stay faithful in the target CRS.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import rasterio.features
import rasterio.windows
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from gis.errors import AOIError

__all__ = ["AOI", "load_aoi", "bbox_aoi", "aoi_window", "aoi_mask"]

log = logging.getLogger(__name__)

CRSLike = Union[CRS, str, int, None]

#: AOI edges closer than this (in pixels) to a pixel boundary snap to it when computing windows
_SLIVER_PX = 0.01


def _as_crs(crs: CRSLike) -> Optional[CRS]:
    if crs is None:
        return None
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, int):
        return CRS.from_epsg(crs)
    return CRS.from_user_input(crs)


@dataclass(frozen=True)
class AOI:
    """An area of interest.

    Attributes:
        geometry: shapely Polygon or MultiPolygon (valid, non-empty) in ``crs``.
        crs: its CRS, or None for pixel coordinates of an ungeoreferenced raster.
        source: where it came from (file path or ``"bbox"``), for messages.
    """

    geometry: BaseGeometry
    crs: Optional[CRS]
    source: str = ""

    @property
    def bounds(self) -> tuple:
        return tuple(self.geometry.bounds)

    def to_crs(self, crs: CRSLike) -> "AOI":
        """This AOI reprojected to ``crs`` (returned unchanged when the CRS already matches)."""
        dst = _as_crs(crs)
        if dst is None or self.crs is None:
            if (dst is None) != (self.crs is None):
                raise AOIError(
                    f"{self.source or 'AOI'}: cannot reproject between a CRS and pixel coordinates"
                )
            return self
        if self.crs == dst:
            return self
        import geopandas as gpd

        g = self.geometry
        # densify so that straight edges follow the curvature of the projection
        minx, miny, maxx, maxy = g.bounds
        step = max(maxx - minx, maxy - miny) / 64.0
        if step > 0:
            g = shapely.segmentize(g, step)
        out = gpd.GeoSeries([g], crs=self.crs).to_crs(dst).iloc[0]
        out = shapely.make_valid(out) if not out.is_valid else out
        return AOI(geometry=out, crs=dst, source=self.source)


def _polygonal(geom: BaseGeometry, source: str) -> BaseGeometry:
    geom = shapely.make_valid(geom) if not geom.is_valid else geom
    polys = [g for g in getattr(geom, "geoms", [geom])
             if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polys:
        raise AOIError(f"{source}: AOI has no polygon geometry (got {geom.geom_type})")
    return shapely.union_all(polys)


def load_aoi(path: Union[str, os.PathLike], raster_crs: CRSLike = None) -> AOI:
    """Read the union of all polygons of a vector file as an AOI.

    Args:
        path: GeoJSON / Shapefile / GeoPackage (first layer) with polygon features in any CRS.
            A file without CRS is taken to be EPSG:4326 for GeoJSON (RFC 7946) and refused
            otherwise.
        raster_crs: reproject the AOI to this CRS (normally the raster's); None keeps the file CRS.

    Raises:
        AOIError: missing/unreadable file, no polygon features, or no CRS.
    """
    import geopandas as gpd

    p = Path(path)
    if not p.exists():
        raise AOIError(f"{p}: AOI file not found")
    try:
        df = gpd.read_file(p)
    except Exception as exc:  # pyogrio/fiona raise a variety of errors
        raise AOIError(f"{p}: cannot read AOI file: {str(exc).splitlines()[0]}") from exc
    if df.empty:
        raise AOIError(f"{p}: AOI file has no features")
    crs = df.crs
    if crs is None:
        if p.suffix.lower() in (".geojson", ".json"):
            crs = "EPSG:4326"
        else:
            raise AOIError(f"{p}: AOI file has no CRS")
    geoms = [g for g in df.geometry if g is not None and not g.is_empty]
    if not geoms:
        raise AOIError(f"{p}: AOI file has only empty geometries")
    geom = _polygonal(shapely.union_all(geoms), str(p))
    aoi = AOI(geometry=geom, crs=CRS.from_user_input(crs), source=str(p))
    return aoi.to_crs(raster_crs) if raster_crs is not None else aoi


def bbox_aoi(minx: float, miny: float, maxx: float, maxy: float, crs: CRSLike) -> AOI:
    """A rectangular AOI; coordinates in ``crs`` (x = longitude/easting first).

    Raises:
        AOIError: an empty or inverted box.
    """
    if not (maxx > minx and maxy > miny):
        raise AOIError(f"bbox ({minx}, {miny}, {maxx}, {maxy}): empty or inverted box")
    return AOI(geometry=box(minx, miny, maxx, maxy), crs=_as_crs(crs), source="bbox")


def aoi_window(aoi: AOI, raster_info) -> Window:
    """Integer pixel window of the AOI's bounding box, rounded outwards and clipped to the raster.

    Edges within 0.01 px of a pixel boundary snap to it (reprojection noise adds no extra pixels).

    Args:
        aoi: the AOI in any CRS (reprojected to the raster CRS here).
        raster_info: a :class:`gis.io.RasterInfo` (uses ``crs``, ``transform``, ``width``,
            ``height``, ``path``).

    Raises:
        AOIError: the AOI does not overlap the raster.
    """
    a = aoi.to_crs(raster_info.crs)
    footprint = box(*raster_info.bounds)
    if not a.geometry.intersects(footprint):
        raise AOIError(
            f"{aoi.source or 'AOI'}: AOI does not overlap the raster {raster_info.path} "
            f"(AOI bounds {tuple(round(v, 6) for v in a.bounds)}, raster bounds "
            f"{tuple(round(v, 6) for v in raster_info.bounds)} in {raster_info.crs})"
        )
    geom = a.geometry.intersection(footprint)
    w = rasterio.windows.from_bounds(*geom.bounds, transform=raster_info.transform)
    eps = _SLIVER_PX  # reprojection noise must not add a whole row/column of pixels
    c0 = max(0, int(math.floor(w.col_off + eps)))
    r0 = max(0, int(math.floor(w.row_off + eps)))
    c1 = min(raster_info.width, int(math.ceil(w.col_off + w.width - eps)))
    r1 = min(raster_info.height, int(math.ceil(w.row_off + w.height - eps)))
    if c1 <= c0 or r1 <= r0:
        raise AOIError(
            f"{aoi.source or 'AOI'}: AOI overlaps the raster {raster_info.path} "
            "by less than a pixel"
        )
    return Window(c0, r0, c1 - c0, r1 - r0)


def aoi_mask(
    aoi: AOI,
    window: Window,
    transform: Affine,
    *,
    crs: CRSLike = None,
    all_touched: bool = False,
) -> np.ndarray:
    """Rasterise the AOI over a window: bool ``(window.height, window.width)``, True inside.

    Args:
        aoi: the AOI; it must be in the raster CRS unless ``crs`` is given (then reprojected).
        window: integer window of the raster (may reach past it).
        transform: the *full raster's* affine transform (the window's own transform is derived).
        all_touched: count pixels touched by the boundary as inside (default: pixel centres).
    """
    a = aoi.to_crs(crs) if crs is not None else aoi
    h, w = int(window.height), int(window.width)
    wt = rasterio.windows.transform(window, transform)
    return rasterio.features.geometry_mask(
        [a.geometry], out_shape=(h, w), transform=wt, invert=True, all_touched=all_touched
    )
