"""Facts about a raster for ``roadseg info`` and the GUI (also for rasters without CRS)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict

from app.service.errors import EXPECTED_ERRORS, as_user_error
from app.service.requests import PathLike
from app.service.vectors import crs_string

__all__ = ["raster_info"]

def raster_info(path: PathLike) -> Dict[str, Any]:
    """Facts about a raster for ``roadseg info`` and the GUI (also for rasters without CRS).

    Returns a JSON-ready dict: ``path``, ``width``, ``height``, ``count``, ``dtypes``, ``crs``
    (``"EPSG:xxxx"`` or WKT, None without CRS), ``crs_name``, ``geographic``, ``resolution_m``
    ``[x, y]``, ``pixel_size`` (in CRS units), ``nodata``, ``bounds`` ``[left, bottom, right,
    top]`` in the raster CRS, ``bounds_lonlat`` (None without CRS), ``area_km2``, ``has_alpha``,
    ``alpha_band``, ``has_mask``, ``colorinterp``, ``band_descriptions``, ``default_bands``,
    ``overview_levels``, ``file_size_bytes``.

    Raises:
        UserError: missing, unreadable or truncated file.
    """
    from gis.io import open_raster

    try:
        info = open_raster(path, allow_pixel_coords=True)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    bounds = [float(v) for v in info.bounds]
    lonlat = None
    crs_name = None
    if info.crs is not None:
        from pyproj import CRS as ProjCRS
        from pyproj import Transformer

        pc = ProjCRS.from_user_input(info.crs.to_wkt())
        crs_name = pc.name
        try:
            tr = Transformer.from_crs(pc, "EPSG:4326", always_xy=True)
            lon0, lat0, lon1, lat1 = tr.transform_bounds(*bounds, densify_pts=21)
            lonlat = [float(lon0), float(lat0), float(lon1), float(lat1)]
            if not all(math.isfinite(v) for v in lonlat):
                lonlat = None
        except Exception:  # noqa: BLE001 - a local/engineering CRS has no lon/lat
            lonlat = None
    res = list(info.resolution_m) if info.resolution_m is not None else None
    area_m2 = info.area_m2()  # geodesic for geographic rasters
    area = area_m2 / 1e6 if area_m2 is not None else None
    return {
        "path": str(path),
        "width": int(info.width),
        "height": int(info.height),
        "count": int(info.count),
        "dtypes": list(info.dtypes),
        "crs": crs_string(info.crs),
        "crs_name": crs_name,
        "geographic": bool(info.is_geographic),
        "resolution_m": res,
        "pixel_size": [float(abs(info.transform.a)), float(abs(info.transform.e))],
        "nodata": None if info.nodata is None or (isinstance(info.nodata, float)
                                                  and math.isnan(info.nodata))
        else float(info.nodata),
        "bounds": bounds,
        "bounds_lonlat": lonlat,
        "area_km2": area,
        "has_alpha": bool(info.has_alpha),
        "alpha_band": info.alpha_band,
        "has_mask": bool(info.has_mask),
        "colorinterp": list(info.colorinterp),
        "band_descriptions": list(info.band_descriptions),
        "default_bands": list(info.default_bands),
        "overview_levels": list(info.overview_levels),
        "file_size_bytes": int(Path(path).stat().st_size),
    }
