"""Pictures of results: the PNG preview of a road network over its image, and decimated RGB
views of rasters for map canvases."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.requests import PathLike
from app.service.staging import atomic_file, missing_dir, refuse_existing
from app.service.vectors import is_pixel_crs
from gis.errors import OutputDirError

__all__ = ["make_preview", "raster_overview", "draw_lines", "pixel_mapper", "line_thickness"]

log = logging.getLogger(__name__)

#: BGR colours of the preview: centre lines, dead ends, junctions
_PREVIEW_LINE = (0, 215, 255)
_PREVIEW_END = (60, 60, 230)
_PREVIEW_JUNCTION = (230, 120, 40)
#: sub-pixel drawing: coordinates in 1/16 px
_SHIFT = 4


def line_thickness(img: np.ndarray) -> int:
    """Line width in pixels that reads well on a picture of this size."""
    return max(2, int(round(max(img.shape[:2]) / 350)))


def pixel_mapper(transform: Any):
    """``coords (N, 2+) in the picture's CRS -> int32 (N, 2)`` pixel positions for OpenCV's
    sub-pixel drawing (``shift`` = :data:`_SHIFT`) through the picture's affine ``transform``."""
    inv = ~transform

    def to_px(coords: np.ndarray) -> np.ndarray:
        c = np.asarray(coords, dtype=float)[:, :2]
        cols = inv.a * c[:, 0] + inv.b * c[:, 1] + inv.c
        rows = inv.d * c[:, 0] + inv.e * c[:, 1] + inv.f
        return np.round(np.column_stack([cols, rows]) * (1 << _SHIFT)).astype(np.int32)

    return to_px


def draw_lines(bgr: np.ndarray, geometries: Any, to_px, colour, thick: int) -> None:
    """Draw (multi)line geometries onto ``bgr`` in place, anti-aliased."""
    import cv2

    for geom in geometries:
        if geom is None or geom.is_empty:
            continue
        for part in getattr(geom, "geoms", [geom]):
            cv2.polylines(bgr, [to_px(np.asarray(part.coords))], False, colour,
                          thickness=thick, lineType=cv2.LINE_AA, shift=_SHIFT)


def make_preview(
    image_path: PathLike,
    roads_path: PathLike,
    png_path: PathLike,
    *,
    max_size: int = 1024,
    overwrite: bool = False,
) -> Path:
    """Draw the road network of a GeoPackage (layers ``edges``/``nodes``) over a decimated RGB
    view of the image and save it as PNG (OpenCV; no matplotlib).

    Args:
        image_path: the imagery (decimated so the longer side is <= ``max_size`` pixels).
        roads_path: ``.gpkg`` written by :func:`run_extraction` / :func:`vectorize_mask`;
            layers are reprojected to the image CRS.
        png_path: output picture (temporary name, renamed when complete).

    Returns:
        ``png_path``. Raises :class:`UserError` for unreadable inputs or an existing output.
    """
    import cv2
    import geopandas as gpd

    from gis.io import read_overview

    png = Path(png_path)
    try:
        refuse_existing([png], overwrite)
        if not png.parent.is_dir():
            raise OutputDirError(missing_dir(png))
        ov = read_overview(image_path, max_size=max_size)
        layers = {}
        for name in ("edges", "nodes"):
            try:
                g = gpd.read_file(roads_path, layer=name)
            except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
                raise UserError(f"{roads_path}: cannot read layer {name!r} "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                                ) from exc
            if ov.crs is not None and g.crs is not None and not is_pixel_crs(g.crs):
                g = g.to_crs(ov.crs.to_wkt())
            layers[name] = g
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise as_user_error(exc) from exc

    bgr = np.ascontiguousarray(ov.rgb[:, :, ::-1])
    thick = line_thickness(bgr)
    to_px = pixel_mapper(ov.transform)
    draw_lines(bgr, layers["edges"].geometry, to_px, _PREVIEW_LINE, thick)
    nodes = layers["nodes"]
    for geom, deg in zip(nodes.geometry, nodes.get("degree", [0] * len(nodes))):
        if geom is None or geom.is_empty or int(deg) == 2:
            continue
        colour = _PREVIEW_END if int(deg) == 1 else _PREVIEW_JUNCTION
        p = to_px(np.array([[geom.x, geom.y]]))[0]
        cv2.circle(bgr, (int(p[0]), int(p[1])), (thick + 2) << _SHIFT, colour, -1, cv2.LINE_AA,
                   _SHIFT)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise UserError(f"{png}: PNG encoding failed")
    with atomic_file(png) as tmp:
        tmp.write_bytes(buf.tobytes())
        if png.exists() and not overwrite:
            raise UserError(f"{png}: output exists (use overwrite to replace it)")
    return png


def raster_overview(path: PathLike, max_size: int = 1024) -> Any:
    """A decimated RGB view of a raster for map canvases (:class:`gis.io.Overview`: ``rgb``
    uint8 ``(H, W, 3)``, ``valid``, ``transform``, ``crs``, ``scale``).

    Raises:
        UserError: missing, unreadable or truncated file.
    """
    from gis.io import read_overview

    try:
        return read_overview(path, max_size=max_size)
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise as_user_error(exc) from exc
