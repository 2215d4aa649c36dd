"""Helpers that write tiny GeoTIFFs with a real CRS and transform for the gis tests.

Import as ``from gis_fixtures import ...`` (pytest puts tests/ on sys.path).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

#: a 1 m UTM 33N grid origin (central Europe)
UTM33_ORIGIN = (500000.0, 5000000.0)
#: a ~0.3 m geographic grid origin (Las Vegas, lon/lat)
WGS84_ORIGIN = (-115.17, 36.24)
WGS84_PIXEL_DEG = 2.7e-6


def utm_transform(res_m: float = 1.0, origin=UTM33_ORIGIN) -> Affine:
    return from_origin(origin[0], origin[1], res_m, res_m)


def wgs84_transform(res_deg: float = WGS84_PIXEL_DEG, origin=WGS84_ORIGIN) -> Affine:
    return from_origin(origin[0], origin[1], res_deg, res_deg)


def write_geotiff(
    path: Path,
    array: np.ndarray,
    *,
    crs: Optional[str] = "EPSG:32633",
    transform: Optional[Affine] = None,
    nodata: Optional[float] = None,
    alpha_band: Optional[int] = None,
    internal_mask: Optional[np.ndarray] = None,
    descriptions: Optional[Sequence[str]] = None,
    tiled: bool = False,
) -> Path:
    """Write ``array`` (``(C, H, W)`` or ``(H, W)``) as a GeoTIFF and return its path.

    ``alpha_band`` (1-based) marks that band as alpha; ``internal_mask`` (bool ``(H, W)``, True =
    valid) is written as a per-dataset internal mask band.
    """
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    c, h, w = arr.shape
    if transform is None:
        transform = utm_transform() if crs != "EPSG:4326" else wgs84_transform()
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype=arr.dtype.name,
        transform=transform, nodata=nodata,
    )
    if crs is not None:
        profile["crs"] = crs
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(arr)
            if alpha_band is not None:
                if c < 3:
                    ci = [ColorInterp.gray] * c
                else:
                    ci = ([ColorInterp.red, ColorInterp.green, ColorInterp.blue]
                          + [ColorInterp.undefined] * (c - 3))
                ci[alpha_band - 1] = ColorInterp.alpha
                ds.colorinterp = ci
            if internal_mask is not None:
                ds.write_mask(np.where(internal_mask, 255, 0).astype(np.uint8))
            if descriptions:
                for i, d in enumerate(descriptions, start=1):
                    ds.set_band_description(i, d)
    return Path(path)


def random_image(shape, dtype="uint8", seed: int = 0, high: Optional[float] = None) -> np.ndarray:
    """Reproducible random image of ``shape`` ``(C, H, W)``; ``high`` defaults per dtype."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.random(shape).astype(dt)
    if high is None:
        high = 255 if dt == np.uint8 else 2047
    return rng.integers(1, int(high) + 1, size=shape).astype(dt)


def truncate_file(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst`` (a file cut short)."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return Path(dst)


def corrupt_middle(src: Path, dst: Path, nbytes: int = 200) -> Path:
    """Copy ``src`` to ``dst`` with ``nbytes`` garbage bytes a third of the way in (the header and
    the last block stay intact, so the damage only shows when the middle is read)."""
    data = bytearray(Path(src).read_bytes())
    at = len(data) // 3
    data[at:at + nbytes] = b"\xff" * nbytes
    Path(dst).write_bytes(bytes(data))
    return Path(dst)
