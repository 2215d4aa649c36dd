"""The processing grid of an extraction: the input raster, or a VRT resampling it to the
model's ground resolution (``gsd_m`` in the checkpoint metadata, or ``--gsd``).

Rasters, window and vectors of a run are all on this grid; the VRT is read window by window
(GDAL picks overviews where present), so resampling never holds the whole scene in memory.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional
from xml.sax.saxutils import escape

import numpy as np

from app.service.errors import UserError
from app.service.requests import ExtractionRequest

log = logging.getLogger(__name__)

@dataclass
class ProcessingGrid:
    """The raster the tiles are read from: the input itself, or a VRT resampling it to the
    model's ground resolution (rasters, window and vectors are then on that grid)."""

    path: str
    info: Any
    gsd_m: Optional[float]
    input_gsd_m: Optional[float]
    resampled: bool
    tmpdir: Optional[str] = None

    def summary(self) -> Dict[str, Any]:
        return {"gsd_m": self.gsd_m, "input_gsd_m": self.input_gsd_m,
                "resampled": self.resampled, "width": int(self.info.width),
                "height": int(self.info.height),
                "transform": [float(v) for v in tuple(self.info.transform)[:6]]}

    def close(self) -> None:
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


#: resampling is skipped when the input is within this relative difference of the target GSD
GSD_TOLERANCE = 0.05


def processing_grid(req: ExtractionRequest, info: Any,
                    model_gsd: Optional[float]) -> ProcessingGrid:
    """Decide the processing ground resolution and, when it differs from the input's, write a
    VRT that resamples the input to it on the fly (area average when shrinking, bilinear when
    enlarging; GDAL reads overviews where present, windows only, so memory stays bounded)."""
    native = req.gsd is not None and str(req.gsd).lower() == "native"
    target = None if native else (float(req.gsd) if req.gsd is not None else model_gsd)
    return grid_at_gsd(req.image, info, target, req.input_gsd_m, "the model expects",
                       "pass --input-gsd METRES (or --gsd native to use it as it is)")


def raster_gsd(info: Any, input_gsd_m: Optional[float] = None) -> Optional[float]:
    """Ground resolution of a raster (:class:`gis.io.RasterInfo`) in metres per pixel: the
    geometric mean of its pixel sides where it has a CRS, else ``input_gsd_m`` (or None)."""
    if info.resolution_m is not None:
        return float(np.sqrt(info.resolution_m[0] * info.resolution_m[1]))
    return float(input_gsd_m) if input_gsd_m else None


def grid_at_gsd(image: str, info: Any, target: Optional[float], input_gsd_m: Optional[float],
                who: str = "the model expects",
                fix: str = "pass --input-gsd METRES") -> ProcessingGrid:
    """The raster ``image`` (described by ``info``) on a grid of ``target`` metres per pixel:
    itself when ``target`` is None or within :data:`GSD_TOLERANCE` of its own resolution, else a
    resampling VRT (:func:`write_resampling_vrt`) in a temporary folder (``close()`` removes it).
    A raster without CRS needs ``input_gsd_m``; without it :class:`UserError` names ``image``,
    what expects ``target`` (``who``) and the ``fix``."""
    from gis.io import open_raster

    in_gsd = raster_gsd(info, input_gsd_m)
    if target is None or (in_gsd is not None and abs(in_gsd / target - 1.0) <= GSD_TOLERANCE):
        return ProcessingGrid(info.path, info, target if in_gsd is None else in_gsd, in_gsd, False)
    if in_gsd is None:
        raise UserError(f"{image}: raster has no CRS, so its ground resolution is unknown "
                        f"and {who} {target:g} m: {fix}")
    factor = target / in_gsd  # source pixels per processing pixel
    tmpdir = tempfile.mkdtemp(prefix="roadseg-grid-")
    vrt = os.path.join(tmpdir, f"{Path(image).stem}_{target:g}m.vrt")
    try:
        write_resampling_vrt(os.path.abspath(info.path), vrt, factor, info.crs is not None)
        ginfo = open_raster(vrt, allow_pixel_coords=True)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    log.info("%s: resampled from %.3g m to %.3g m (%dx%d -> %dx%d px)", image,
             in_gsd, target, info.width, info.height, ginfo.width, ginfo.height)
    return ProcessingGrid(vrt, ginfo, target, in_gsd, True, tmpdir)


def write_resampling_vrt(src_path: str, vrt_path: str, factor: float, has_crs: bool) -> None:
    """A VRT of ``src_path`` with pixels ``factor`` times larger (same CRS and extent)."""
    import rasterio
    import rasterio.shutil as rio_shutil
    from rasterio.enums import Resampling
    from rasterio.transform import Affine
    from rasterio.vrt import WarpedVRT

    resampling = Resampling.average if factor > 1 else Resampling.bilinear
    with rasterio.open(src_path) as src:
        w = max(1, int(round(src.width / factor)))
        h = max(1, int(round(src.height / factor)))
        t = src.transform * Affine.scale(src.width / w, src.height / h)
        if has_crs:
            with WarpedVRT(src, crs=src.crs, transform=t, width=w, height=h,
                           resampling=resampling) as v:
                rio_shutil.copy(v, vrt_path, driver="VRT")
            return
        # no CRS (pixel coordinates): a plain VRT whose sources are read resampled
        bands = []
        for b in range(1, src.count + 1):
            nd = src.nodatavals[b - 1]
            nd_xml = f"<NoDataValue>{nd!r}</NoDataValue>" if nd is not None else ""
            bands.append(
                f'<VRTRasterBand dataType="{_gdal_type(src.dtypes[b - 1])}" band="{b}">{nd_xml}'
                f'<ComplexSource resampling="{resampling.name}">'
                f'<SourceFilename relativeToVRT="0">{escape(src_path)}</SourceFilename>'
                f"<SourceBand>{b}</SourceBand>"
                f'<SrcRect xOff="0" yOff="0" xSize="{src.width}" ySize="{src.height}"/>'
                f'<DstRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>'
                f"{'<NODATA>' + repr(nd) + '</NODATA>' if nd is not None else ''}"
                "</ComplexSource></VRTRasterBand>")
        gt = ", ".join(repr(float(v)) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
        Path(vrt_path).write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}">'
                                  f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}"
                                  "</VRTDataset>", encoding="utf-8")


def _gdal_type(dtype: str) -> str:
    return {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
            "uint32": "UInt32", "int32": "Int32", "float32": "Float32",
            "float64": "Float64"}.get(str(dtype), "Float32")
