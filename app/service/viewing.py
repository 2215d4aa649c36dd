"""Qt-free helpers for map viewers (the GUI's canvas, layers and network review).

Everything here works in the *frame* of a base raster: scene coordinates are the base raster's
full-resolution pixel coordinates ``(col, row)`` (x right, y down; pixel centres at +0.5). A
:class:`GeoFrame` converts between those, the raster CRS and lon/lat. Other rasters are read in
the frame's CRS (a GDAL warped VRT when their CRS differs) and vectors are reprojected to it, so a
viewer only ever deals with pixel coordinates of one grid.

Reads for display are always decimated (``out_size`` pixels, GDAL overviews where present), so a
viewer never loads a large raster at full resolution.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.staging import atomic_file, atomic_write_text
from app.service.vectors import crs_string, is_pixel_crs

__all__ = [
    "RASTER_SUFFIXES",
    "VECTOR_SUFFIXES",
    "STRETCHES",
    "GeoFrame",
    "RasterSource",
    "RasterView",
    "open_frame",
    "frame_for_vectors",
    "open_raster_source",
    "compute_band_stretch",
    "read_view",
    "colourize",
    "load_vector_layers",
    "geometry_to_pixel_parts",
    "write_aoi",
    "read_aoi_pixels",
    "NetworkEdit",
    "load_network",
    "export_raster",
    "is_raster_file",
    "is_vector_file",
    "scale_denominator",
    "available_models",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
RASTER_SUFFIXES: Tuple[str, ...] = (".tif", ".tiff", ".vrt", ".img", ".jp2")
VECTOR_SUFFIXES: Tuple[str, ...] = (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".kml")
#: contrast stretches of :func:`compute_band_stretch`
STRETCHES: Tuple[str, ...] = ("none", "minmax", "percentile")
_PERCENTILES = {"minmax": (0.0, 100.0), "percentile": (2.0, 98.0)}
#: pixel size used for a frame built from vectors alone (the extent spans ~2000 pixels)
_VECTOR_FRAME_PX = 2000.0


def is_raster_file(path: PathLike) -> bool:
    """True for file names a viewer should open as a raster layer (by suffix)."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def is_vector_file(path: PathLike) -> bool:
    """True for file names a viewer should open as a vector layer (by suffix)."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


# --------------------------------------------------------------------------------------------
# frame
# --------------------------------------------------------------------------------------------
@dataclass
class GeoFrame:
    """The base grid of a map view.

    Attributes:
        width, height: size of the base raster in pixels.
        transform: 6-tuple ``(a, b, c, d, e, f)`` of the pixel -> CRS affine transform.
        crs: CRS as ``"EPSG:xxxx"`` or WKT; None for pixel coordinates (no georeference).
        resolution_m: ``(x, y)`` metres per pixel, None without CRS.
        path: the base raster ('' for a frame built from vectors).
    """

    width: int
    height: int
    transform: Tuple[float, float, float, float, float, float]
    crs: Optional[str]
    resolution_m: Optional[Tuple[float, float]] = None
    path: str = ""
    _to_lonlat: Any = field(default=None, repr=False, compare=False)

    @property
    def affine(self):
        from affine import Affine

        return Affine(*self.transform)

    def pixel_to_map(self, col: float, row: float) -> Tuple[float, float]:
        """Base-raster pixel coordinates -> CRS coordinates."""
        a, b, c, d, e, f = self.transform
        return a * col + b * row + c, d * col + e * row + f

    def map_to_pixel(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """CRS coordinates (arrays) -> base-raster pixel coordinates (float64 arrays)."""
        inv = ~self.affine
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f

    def pixel_to_lonlat(self, col: float, row: float) -> Optional[Tuple[float, float]]:
        """Lon/lat (degrees, WGS 84) of a pixel position; None without CRS."""
        if self.crs is None:
            return None
        if self._to_lonlat is None:
            from pyproj import Transformer

            self._to_lonlat = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        x, y = self.pixel_to_map(col, row)
        lon, lat = self._to_lonlat.transform(x, y)
        return float(lon), float(lat)

    @property
    def map_units(self) -> str:
        """Short name of the CRS units (``m``, ``°`` or ``px``)."""
        if self.crs is None:
            return "px"
        from pyproj import CRS

        return "°" if CRS.from_user_input(self.crs).is_geographic else "m"


def open_frame(path: PathLike) -> GeoFrame:
    """The :class:`GeoFrame` of a raster (also without CRS: pixel coordinates).

    Raises:
        UserError: missing, unreadable or truncated file (one line naming it).
    """
    from gis.io import open_raster

    try:
        info = open_raster(path, allow_pixel_coords=True)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    return GeoFrame(width=int(info.width), height=int(info.height),
                    transform=tuple(float(v) for v in tuple(info.transform)[:6]),
                    crs=crs_string(info.crs, wkt=True), resolution_m=info.resolution_m,
                    path=str(path))


def frame_for_vectors(bounds: Sequence[float], crs: Optional[str]) -> GeoFrame:
    """A frame covering ``bounds`` ``(minx, miny, maxx, maxy)`` in ``crs`` (for a view opened
    with vectors only): about 2000 pixels across, north up."""
    minx, miny, maxx, maxy = (float(v) for v in bounds)
    span = max(maxx - minx, maxy - miny)
    res = span / _VECTOR_FRAME_PX if span > 0 else 1.0
    pad = res * 50
    w = int(math.ceil((maxx - minx + 2 * pad) / res))
    h = int(math.ceil((maxy - miny + 2 * pad) / res))
    transform = (res, 0.0, minx - pad, 0.0, -res, maxy + pad)
    res_m = None
    if crs is not None and not is_pixel_crs(crs):
        from affine import Affine

        from gis.units import pixel_size_m

        res_m = pixel_size_m(crs, Affine(*transform), w, h)
    return GeoFrame(width=w, height=h, transform=transform, crs=crs, resolution_m=res_m, path="")


def scale_denominator(frame: GeoFrame, raster_px_per_screen_px: float, dpi: float = 96.0) -> \
        Optional[float]:
    """Map scale ``1:N`` of a view showing ``raster_px_per_screen_px`` base pixels per screen
    pixel at ``dpi``; None without a metric resolution."""
    if frame.resolution_m is None:
        return None
    m_per_px = (frame.resolution_m[0] + frame.resolution_m[1]) / 2.0
    metres_per_screen_px = m_per_px * raster_px_per_screen_px
    return metres_per_screen_px / (0.0254 / float(dpi))


# --------------------------------------------------------------------------------------------
# rasters
# --------------------------------------------------------------------------------------------
@dataclass
class RasterSource:
    """A raster as seen from a frame.

    Attributes:
        path: the file.
        count: number of bands; ``dtypes`` per band; ``nodata`` value or None.
        to_frame: 6-tuple affine mapping this raster's pixel coordinates (of the grid that
            :func:`read_view` reads, i.e. the warped grid when ``warped``) to frame pixels.
        width, height: size of that grid.
        warped: True when the raster's CRS differs from the frame's and reads go through a
            GDAL warped VRT in the frame CRS.
        default_bands: the first three non-alpha bands (or fewer).
        band_names: per band, ``"1: red"``-style labels.
        crs: the raster's own CRS text.
    """

    path: str
    count: int
    dtypes: Tuple[str, ...]
    nodata: Optional[float]
    to_frame: Tuple[float, float, float, float, float, float]
    width: int
    height: int
    warped: bool
    default_bands: Tuple[int, ...]
    band_names: Tuple[str, ...]
    crs: Optional[str]
    frame_crs: Optional[str] = None
    overview_levels: Tuple[int, ...] = ()

    @property
    def cheap_overview(self) -> bool:
        """True when a whole-raster decimated read is cheap: the raster has overviews or is
        small enough (<= 8192 px a side) to decimate on the fly."""
        return bool(self.overview_levels) or max(self.width, self.height) <= 8192

    def frame_rect(self) -> Tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of this raster in frame pixels."""
        from affine import Affine

        t = Affine(*self.to_frame)
        xs, ys = [], []
        for c, r in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height)):
            x, y = t @ (c, r)
            xs.append(x)
            ys.append(y)
        return min(xs), min(ys), max(xs), max(ys)


class _Reader:
    """Context manager: the dataset to read from (warped when needed)."""

    def __init__(self, src: RasterSource) -> None:
        self.src = src
        self._ds = None
        self._vrt = None

    def __enter__(self):
        import rasterio

        self._ds = rasterio.open(self.src.path)
        if self.src.warped:
            from rasterio.vrt import WarpedVRT

            self._vrt = WarpedVRT(self._ds, crs=self.src.frame_crs)
            return self._vrt
        return self._ds

    def __exit__(self, *exc) -> None:
        if self._vrt is not None:
            self._vrt.close()
        if self._ds is not None:
            self._ds.close()


def open_raster_source(path: PathLike, frame: GeoFrame) -> RasterSource:
    """Describe raster ``path`` in ``frame`` (a warped grid when the CRSs differ).

    Raises:
        UserError: unreadable file, or a raster without CRS on a georeferenced frame (or the
            other way round) where no position can be derived.
    """
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.errors import RasterioError

    p = str(path)
    try:
        with rasterio.open(p) as ds:
            crs = crs_string(ds.crs, wkt=True) if ds.crs else None
            alpha = [i for i, c in enumerate(ds.colorinterp, 1) if c == ColorInterp.alpha]
            data_bands = tuple(b for b in range(1, ds.count + 1) if b not in alpha)
            names = tuple(f"{i}: {ci.name}" + (f" ({d})" if d else "")
                          for i, (ci, d) in enumerate(zip(ds.colorinterp, ds.descriptions), 1))
            try:
                levels = tuple(ds.overviews(1))
            except RasterioError:
                levels = ()
            base = dict(path=p, count=ds.count, dtypes=tuple(ds.dtypes), nodata=ds.nodata,
                        default_bands=data_bands[:3] or (1,), band_names=names, crs=crs,
                        frame_crs=frame.crs, overview_levels=levels)
            if (crs is None) != (frame.crs is None):
                if crs is None and frame.path == "":
                    raise UserError(f"{p}: raster has no CRS and the map is georeferenced")
                if crs is None:
                    raise UserError(f"{p}: raster has no CRS and the map is georeferenced "
                                    f"(by {Path(frame.path).name})")
                raise UserError(f"{p}: the map is in pixel coordinates (its first raster has no "
                                "CRS); cannot place a georeferenced raster on it")
            same = crs is None or _same_crs(crs, frame.crs)
            if same:
                t = (~frame.affine) @ ds.transform
                return RasterSource(to_frame=tuple(t)[:6], width=ds.width, height=ds.height,
                                    warped=False, **base)
            from rasterio.vrt import WarpedVRT

            with WarpedVRT(ds, crs=frame.crs) as vrt:
                t = (~frame.affine) @ vrt.transform
                return RasterSource(to_frame=tuple(t)[:6], width=vrt.width, height=vrt.height,
                                    warped=True, **base)
    except UserError:
        raise
    except (RasterioError, OSError) as exc:
        raise UserError(f"{p}: cannot open raster: {str(exc).splitlines()[0]}") from exc


def _same_crs(a: Optional[str], b: Optional[str]) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    from pyproj import CRS

    return CRS.from_user_input(a) == CRS.from_user_input(b)


def compute_band_stretch(src: RasterSource, bands: Sequence[int], mode: str = "percentile") \
        -> Tuple[np.ndarray, np.ndarray]:
    """Display limits ``(lo, hi)`` (float32 ``(C,)``, raw units) of ``bands`` for ``mode``.

    ``none``: the data type's range for 8-bit data (0..255), min-max for other types;
    ``minmax``: min and max of a decimated read; ``percentile``: its 2nd and 98th percentiles.
    """
    from gis.io import compute_stretch

    if mode not in STRETCHES:
        raise UserError(f"unknown contrast stretch {mode!r} (choose from {', '.join(STRETCHES)})")
    bands = tuple(int(b) for b in bands)
    if mode == "none" and all(src.dtypes[b - 1] == "uint8" for b in bands):
        return np.zeros(len(bands), np.float32), np.full(len(bands), 255.0, np.float32)
    pct = _PERCENTILES.get(mode, (0.0, 100.0))
    try:
        with _Reader(src) as ds:
            return compute_stretch(ds, bands, percentiles=pct, max_size=512)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc


@dataclass(frozen=True)
class RasterView:
    """A decimated read for display.

    Attributes:
        data: float32 ``(C, h, w)`` raw values (NaN outside valid data), ``C = len(bands)``.
        valid: bool ``(h, w)``.
        window: ``(col_off, row_off, width, height)`` read, in the source grid's pixels.
        frame_rect: ``(x0, y0, x1, y1)`` of that window in frame pixels (axis-aligned when the
            source grid is north up).
    """

    data: np.ndarray
    valid: np.ndarray
    window: Tuple[int, int, int, int]
    frame_rect: Tuple[float, float, float, float]


def read_view(src: RasterSource, frame_rect: Optional[Sequence[float]], out_size: Tuple[int, int],
              bands: Sequence[int], *, resampling: str = "nearest") -> Optional[RasterView]:
    """Read the part of ``src`` under ``frame_rect`` (frame pixels ``x0, y0, x1, y1``; None for
    the whole raster) decimated to at most ``out_size`` ``(w, h)`` pixels (never more than the
    source resolution).

    Returns:
        a :class:`RasterView`, or None when the rectangle misses the raster.

    Raises:
        UserError: the read fails (corrupt or truncated file).
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioError
    from rasterio.windows import Window

    t = Affine(*src.to_frame)
    if frame_rect is None:
        c0, r0, c1, r1 = 0, 0, src.width, src.height
    else:
        x0, y0, x1, y1 = (float(v) for v in frame_rect)
        inv = ~t
        cs, rs = [], []
        for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1)):
            c, r = inv @ (x, y)
            cs.append(c)
            rs.append(r)
        c0 = max(0, int(math.floor(min(cs))))
        r0 = max(0, int(math.floor(min(rs))))
        c1 = min(src.width, int(math.ceil(max(cs))))
        r1 = min(src.height, int(math.ceil(max(rs))))
    if c1 <= c0 or r1 <= r0:
        return None
    w, h = c1 - c0, r1 - r0
    ow, oh = max(1, int(out_size[0])), max(1, int(out_size[1]))
    scale = max(1.0, w / ow, h / oh)
    ow, oh = max(1, int(round(w / scale))), max(1, int(round(h / scale)))
    bands = tuple(int(b) for b in bands)
    bad = [b for b in bands if not 1 <= b <= src.count]
    if bad:
        raise UserError(f"{src.path}: band {bad[0]} out of range 1..{src.count}")
    uniq = sorted(set(bands))
    win = Window(c0, r0, w, h)
    rs_mode = Resampling.average if resampling == "average" else Resampling.nearest
    try:
        with _Reader(src) as ds:
            raw = ds.read(uniq, window=win, out_shape=(len(uniq), oh, ow), resampling=rs_mode)
            m = ds.dataset_mask(window=win, out_shape=(oh, ow), resampling=Resampling.nearest)
    except (RasterioError, OSError) as exc:
        raise UserError(f"{src.path}: cannot read window {c0},{r0} {w}x{h}: "
                        f"{str(exc).splitlines()[0]}") from exc
    pos = {b: i for i, b in enumerate(uniq)}
    data = np.stack([raw[pos[b]] for b in bands]).astype(np.float32)
    valid = m > 0
    if np.issubdtype(raw.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    data[:, ~valid] = np.nan
    fx0, fy0 = t @ (c0, r0)
    fx1, fy1 = t @ (c1, r1)
    rect = (min(fx0, fx1), min(fy0, fy1), max(fx0, fx1), max(fy0, fy1))
    return RasterView(data=data, valid=valid, window=(c0, r0, w, h), frame_rect=rect)


#: colour ramp of probability heat maps (value 0..1 -> RGB), transparent below ``min_alpha_at``
_HEAT = np.array([
    (0.00, 48, 18, 59), (0.25, 70, 131, 243), (0.50, 26, 228, 182),
    (0.75, 250, 186, 57), (1.00, 180, 4, 38)], np.float32)


def colourize(view: RasterView, kind: str, *, lo: Optional[Sequence[float]] = None,
              hi: Optional[Sequence[float]] = None, colour: Tuple[int, int, int] = (255, 40, 40),
              prob_scale: float = 254.0) -> np.ndarray:
    """RGBA uint8 ``(h, w, 4)`` rendering of a :class:`RasterView` for display.

    Args:
        kind: ``rgb`` (3 bands stretched with ``lo``/``hi``; 1 band -> grey), ``heat``
            (probability in band 1: uint8 0..``prob_scale`` or float 0..1, drawn with a
            colour ramp; values below 0.05 are transparent), ``mask`` (non-zero valid pixels
            drawn in ``colour``, the rest transparent).
    """
    data, valid = view.data, view.valid
    h, w = valid.shape
    out = np.zeros((h, w, 4), np.uint8)
    if kind == "rgb":
        c = data.shape[0]
        lo_a = np.asarray(lo if lo is not None else [0.0] * c, np.float32).reshape(-1, 1, 1)
        hi_a = np.asarray(hi if hi is not None else [255.0] * c, np.float32).reshape(-1, 1, 1)
        span = np.where(hi_a > lo_a, hi_a - lo_a, 1.0)
        v = np.clip((np.nan_to_num(data, nan=0.0) - lo_a) / span * 255.0 + 0.5, 0, 255)
        v = v.astype(np.uint8)
        if c == 1:
            v = np.repeat(v, 3, axis=0)
        out[..., :3] = np.moveaxis(v[:3], 0, -1)
        out[..., 3] = np.where(valid, 255, 0)
    elif kind == "heat":
        p = np.nan_to_num(data[0], nan=0.0).astype(np.float32)
        if p.size and np.nanmax(p) > 1.0:
            p = p / np.float32(prob_scale)
        p = np.clip(p, 0.0, 1.0)
        for k in range(3):
            out[..., k] = np.interp(p, _HEAT[:, 0], _HEAT[:, k + 1]).astype(np.uint8)
        alpha = np.clip(p / 0.05, 0.0, 1.0) * 255.0
        out[..., 3] = np.where(valid, alpha, 0).astype(np.uint8)
    elif kind == "mask":
        on = valid & (np.nan_to_num(data[0], nan=0.0) != 0)
        out[on, 0], out[on, 1], out[on, 2] = colour
        out[on, 3] = 255
    else:
        raise ValueError(f"unknown rendering kind {kind!r} (rgb, heat, mask)")
    return out


def export_raster(src: PathLike, dst: PathLike, overwrite: bool = False,
                  style: Optional[str] = None) -> List[str]:
    """Copy a result raster (mask / probability GeoTIFF) to ``dst`` through a temporary name,
    with a QGIS ``.qml`` style beside it when ``style`` is ``"mask"`` or ``"probability"``.

    Returns:
        the written paths.

    Raises:
        UserError: ``dst`` exists without ``overwrite``, or the copy fails.
    """
    from gis.styles import raster_qml

    s, d = Path(src), Path(dst)
    outs = [d] + ([d.with_suffix(".qml")] if style else [])
    if not overwrite:
        for p in outs:
            if p.exists():
                raise UserError(f"{p}: output exists (allow overwriting to replace it)")
    if not d.parent.is_dir():
        raise UserError(f"{d}: output directory {d.parent} does not exist")
    try:
        with atomic_file(d) as tmp:
            shutil.copyfile(s, tmp)
        if style:
            atomic_write_text(d.with_suffix(".qml"), raster_qml(style, road_value=1))
    except OSError as exc:
        raise UserError(f"{d}: cannot write ({exc.strerror or exc})") from exc
    return [str(p) for p in outs]


# --------------------------------------------------------------------------------------------
# vectors
# --------------------------------------------------------------------------------------------
def load_vector_layers(path: PathLike, frame_crs: Optional[str]) -> Dict[str, Any]:
    """Every layer of a vector file as GeoDataFrames reprojected to ``frame_crs``.

    Layers without CRS are taken as EPSG:4326 for GeoJSON (RFC 7946) and as already in the frame
    CRS otherwise. GeoPackage style tables and non-spatial layers are skipped.

    Returns:
        layer name -> GeoDataFrame (name = file stem for single-layer formats).

    Raises:
        UserError: unreadable file or no spatial layer.
    """
    import geopandas as gpd
    import pyogrio

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: vector file not found")
    try:
        listed = pyogrio.list_layers(p)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
        raise UserError(f"{p}: cannot read vector file: {str(exc).splitlines()[0]}") from exc
    out: Dict[str, Any] = {}
    for name, gtype in listed:
        if gtype is None or str(name) == "layer_styles":
            continue
        try:
            gdf = gpd.read_file(p, layer=str(name)) if len(listed) > 1 else gpd.read_file(p)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"{p}: cannot read layer {name}: {str(exc).splitlines()[0]}") from exc
        if gdf.crs is None:
            if p.suffix.lower() in (".geojson", ".json") and frame_crs is not None:
                gdf = gdf.set_crs("EPSG:4326")
        if gdf.crs is not None and frame_crs is not None:
            gdf = gdf.to_crs(frame_crs)
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
        out[str(name) if len(listed) > 1 else p.stem] = gdf
    if not out:
        raise UserError(f"{p}: no spatial layer in the file")
    return out


def geometry_to_pixel_parts(geom: Any, frame: GeoFrame) -> Tuple[str, List[np.ndarray]]:
    """A shapely geometry (frame CRS) as ``(kind, parts)`` in frame pixels.

    ``kind`` is ``point``, ``line`` or ``polygon``; ``parts`` float64 ``(N, 2)`` arrays of
    ``(col, row)`` (points: one ``(N, 2)`` array of all points; polygons: exterior and interior
    rings, closed).
    """
    gt = geom.geom_type
    geoms = list(getattr(geom, "geoms", [geom]))

    def px(coords) -> np.ndarray:
        a = np.asarray(coords, np.float64)[:, :2]
        c, r = frame.map_to_pixel(a[:, 0], a[:, 1])
        return np.stack([c, r], axis=1)

    if gt in ("Point", "MultiPoint"):
        pts = np.concatenate([np.asarray(g.coords, np.float64)[:, :2] for g in geoms])
        return "point", [px(pts)]
    if gt in ("LineString", "MultiLineString", "LinearRing"):
        return "line", [px(g.coords) for g in geoms if len(g.coords) >= 2]
    if gt in ("Polygon", "MultiPolygon"):
        parts = []
        for g in geoms:
            parts.append(px(g.exterior.coords))
            parts.extend(px(r.coords) for r in g.interiors)
        return "polygon", parts
    if gt == "GeometryCollection":
        kinds, parts = "line", []
        for g in geoms:
            k, p = geometry_to_pixel_parts(g, frame)
            kinds = k
            parts.extend(p)
        return kinds, parts
    return "line", []


# --------------------------------------------------------------------------------------------
# AOI
# --------------------------------------------------------------------------------------------
def write_aoi(polygons_px: Sequence[np.ndarray], frame: GeoFrame, path: PathLike) -> str:
    """Write AOI polygons drawn in frame pixels (each ``(N, 2)`` ``(col, row)``, N >= 3) to a
    GeoPackage in the frame CRS (what ``ExtractionRequest.aoi`` reads). Returns the path.

    Raises:
        UserError: fewer than 3 points, a frame without CRS, or a write failure.
    """
    import geopandas as gpd
    import shapely
    from shapely.geometry import Polygon

    if frame.crs is None:
        raise UserError("AOIs need a georeferenced image (this one has no CRS)")
    polys = []
    for ring in polygons_px:
        ring = np.asarray(ring, np.float64)
        if len(ring) < 3:
            raise UserError(f"an AOI polygon needs at least 3 points, got {len(ring)}")
        xs, ys = zip(*(frame.pixel_to_map(c, r) for c, r in ring))
        poly = Polygon(list(zip(xs, ys)))
        if not poly.is_valid:
            poly = shapely.make_valid(poly)
        if poly.is_empty or poly.area == 0:
            raise UserError("the AOI polygon is empty (all points on a line)")
        polys.append(poly)
    if not polys:
        raise UserError("no AOI drawn")
    p = Path(path)
    try:
        with atomic_file(p) as tmp:
            gpd.GeoDataFrame({"name": ["aoi"] * len(polys)}, geometry=polys,
                             crs=frame.crs).to_file(tmp, driver="GPKG", layer="aoi")
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{p}: cannot write AOI: {str(exc).splitlines()[0]}") from exc
    return str(p)


def read_aoi_pixels(path: PathLike, frame: GeoFrame) -> List[np.ndarray]:
    """The polygons of an AOI file (any CRS) as exterior rings in frame pixels
    (float64 ``(N, 2)``).

    Raises:
        UserError: unreadable file, no polygons, or no CRS.
    """
    from gis.aoi import load_aoi

    if frame.crs is None:
        raise UserError("AOIs need a georeferenced image (this one has no CRS)")
    try:
        aoi = load_aoi(path, raster_crs=frame.crs)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    geoms = list(getattr(aoi.geometry, "geoms", [aoi.geometry]))
    out = []
    for g in geoms:
        a = np.asarray(g.exterior.coords, np.float64)
        c, r = frame.map_to_pixel(a[:, 0], a[:, 1])
        out.append(np.stack([c, r], axis=1))
    return out


# --------------------------------------------------------------------------------------------
# network review
# --------------------------------------------------------------------------------------------
def load_network(path: PathLike, frame_crs: Optional[str]) -> Tuple[Any, Any]:
    """``(edges, nodes)`` GeoDataFrames of a road network file (GeoPackage with ``edges`` and
    ``nodes`` layers, or ``<stem>_edges``/``<stem>_nodes`` shapefiles/GeoJSON) in ``frame_crs``.

    Raises:
        UserError: no ``edges`` layer.
    """
    import geopandas as gpd

    p = Path(path)
    layers = load_vector_layers(p, frame_crs)
    edges = layers.get("edges")
    nodes = layers.get("nodes")
    if edges is None:
        for name, gdf in layers.items():
            if name.endswith("edges"):
                edges = gdf
            elif name.endswith("nodes"):
                nodes = gdf
    if edges is None:
        raise UserError(f"{p}: no 'edges' layer (not a road network file)")
    if nodes is None:
        sib = p.with_name(p.name.replace("edges", "nodes"))
        if sib != p and sib.exists():
            nodes = next(iter(load_vector_layers(sib, frame_crs).values()))
        else:
            nodes = gpd.GeoDataFrame({"node_id": [], "degree": []}, geometry=[],
                                     crs=edges.crs)
    return edges.reset_index(drop=True), nodes.reset_index(drop=True)


class NetworkEdit:
    """An editable road network: edges can be deleted or marked as kept, with undo.

    Edge ids are the row positions of the edges table given at construction. The current
    network (:meth:`edges` / :meth:`nodes`) leaves out deleted edges and nodes no edge uses
    any more, with ``degree`` recomputed from the remaining ``u``/``v``.

    An edges table written by :meth:`export` (columns ``edge_id`` and ``review``) opens with
    its review status: ``kept`` and ``deleted`` edges come back as such.
    """

    #: attribute columns written by :meth:`export` (short enough for Shapefiles)
    ID_COLUMN, REVIEW_COLUMN = "edge_id", "review"

    def __init__(self, edges: Any, nodes: Any) -> None:
        edges = edges.reset_index(drop=True)
        review = None
        if self.REVIEW_COLUMN in edges.columns:
            review = edges[self.REVIEW_COLUMN].astype(str).to_numpy()
            edges = edges.drop(columns=[self.REVIEW_COLUMN])
        if self.ID_COLUMN in edges.columns:
            edges = edges.drop(columns=[self.ID_COLUMN])
        self._edges = edges
        self._nodes = nodes.reset_index(drop=True)
        self.deleted: set = set() if review is None else set(np.flatnonzero(review == "deleted")
                                                              .tolist())
        self.kept: set = set() if review is None else set(np.flatnonzero(review == "kept")
                                                           .tolist())
        self._undo: List[Tuple[str, frozenset, frozenset]] = []

    @property
    def all_edges(self) -> Any:
        """The original edges table (ids = row positions)."""
        return self._edges

    def __len__(self) -> int:
        return len(self._edges) - len(self.deleted)

    def attributes(self, edge_id: int) -> Dict[str, Any]:
        """Attribute values (no geometry) of one edge, with ``status``
        (``deleted``/``kept``/``unreviewed``)."""
        row = self._edges.iloc[int(edge_id)]
        d = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()
             if k != self._edges.geometry.name}
        d["status"] = self.status(edge_id)
        return d

    def status(self, edge_id: int) -> str:
        if edge_id in self.deleted:
            return "deleted"
        return "kept" if edge_id in self.kept else "unreviewed"

    def _apply(self, what: str, ids: Sequence[int]) -> int:
        ids = frozenset(int(i) for i in ids if 0 <= int(i) < len(self._edges))
        if not ids:
            return 0
        self._undo.append((what, frozenset(self.deleted), frozenset(self.kept)))
        if what == "delete":
            self.deleted |= ids
            self.kept -= ids
        else:
            self.kept |= ids
            self.deleted -= ids
        return len(ids)

    def delete(self, ids: Sequence[int]) -> int:
        """Delete edges (undoable); returns how many ids were valid."""
        return self._apply("delete", ids)

    def keep(self, ids: Sequence[int]) -> int:
        """Mark edges as reviewed and kept (restores deleted ones); undoable."""
        return self._apply("keep", ids)

    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> Optional[str]:
        """Undo the last delete/keep; returns its name or None when nothing is left."""
        if not self._undo:
            return None
        what, deleted, kept = self._undo.pop()
        self.deleted, self.kept = set(deleted), set(kept)
        return what

    def edges(self) -> Any:
        """The current edges (deleted ones left out), original row ids in column ``edge_id``."""
        e = self._edges.copy()
        e.insert(0, "edge_id", np.arange(len(e)))
        keep = ~e["edge_id"].isin(sorted(self.deleted))
        return e[keep].reset_index(drop=True)

    def nodes(self) -> Any:
        """Nodes still used by a current edge, with ``degree`` recomputed."""
        n = self._nodes.copy()
        e = self.edges()
        if not {"u", "v"} <= set(e.columns) or "node_id" not in n.columns:
            return n
        deg = np.bincount(np.concatenate([e["u"].to_numpy(np.int64), e["v"].to_numpy(np.int64)]),
                          minlength=int(n["node_id"].max()) + 1 if len(n) else 0)
        ids = n["node_id"].to_numpy(np.int64)
        d = deg[ids] if len(ids) else np.zeros(0, np.int64)
        n["degree"] = d
        return n[d > 0].reset_index(drop=True)

    def summary(self) -> Dict[str, Any]:
        """``edges``, ``deleted``, ``kept``, ``road_km`` of the current network."""
        e = self.edges()
        km = float(e["length_m"].sum() / 1000.0) if "length_m" in e.columns else float("nan")
        return {"edges": int(len(e)), "deleted": len(self.deleted), "kept": len(self.kept),
                "road_km": km}

    def review_table(self, include_deleted: bool = False) -> Any:
        """The edges with ``edge_id`` (this network's edge ids) and ``review`` (``kept``,
        ``unreviewed``, and ``deleted`` rows only with ``include_deleted``)."""
        e = self._edges.copy()
        e.insert(0, self.ID_COLUMN, np.arange(len(e), dtype=np.int64))
        e.insert(1, self.REVIEW_COLUMN, [self.status(i) for i in range(len(e))])
        if not include_deleted:
            e = e[e[self.REVIEW_COLUMN] != "deleted"]
        return e.reset_index(drop=True)

    def export(self, path: PathLike, target_crs: Optional[str] = None, overwrite: bool = False,
               formats: Optional[Sequence[str]] = None, include_deleted: bool = False) -> Any:
        """Write the reviewed network with ``app.service.extraction.export_network`` (QGIS
        styles included): every edge with its ``edge_id`` and ``review`` status; deleted edges
        are left out unless ``include_deleted`` (then their nodes stay too). Returns its
        ``VectorizeResult``."""
        from app.service.extraction import export_network

        e = self.review_table(include_deleted)
        nodes = self._nodes if include_deleted else self.nodes()
        return export_network(e, nodes, path, target_crs=target_crs or None,
                              overwrite=overwrite, formats=formats)


def available_models() -> List[Dict[str, Any]]:
    """Registered segmentation networks for pickers: ``name``, ``stride``, ``description``."""
    from segcore.models import list_models, model_info

    out = []
    for name in list_models():
        info = model_info(name)
        if getattr(info, "task", "segmentation") != "segmentation":
            continue
        out.append({"name": name, "stride": int(info.stride),
                    "description": str(getattr(info, "description", ""))})
    return out
