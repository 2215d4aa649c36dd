"""RoadSeg Studio GIS layer: GeoTIFF in, road probabilities/masks out, then vectors.

Never imports segcore or MindSpore: the model is seen only as ``predict_fn(batch) -> probs``.

Raster half (stable API; names are re-exported here lazily, so ``import gis`` stays cheap):

* :mod:`gis.io`: ``open_raster(path, *, allow_pixel_coords=False) -> RasterInfo``,
  ``read_window(src, window, bands=None, *, boundless=True, fill_value=0) -> (data, valid)``,
  ``normalize(tile, method, *, mean, std, lo, hi)``, ``compute_stretch``, ``make_normalizer``,
  ``read_overview(path, max_size=1024, bands=None) -> Overview``,
  ``write_cog(path, array, *, crs, transform, nodata=None, dtype=None, overwrite=False, ...)``,
  ``gtiff_to_cog(src, dst, *, overwrite=False, ...)``,
  ``read_mask_raster(path, window=None) -> MaskRaster``, ``write_mask(path, mask, *, crs, transform,
  valid=None, overwrite=False)``.
* :mod:`gis.tiling`: ``Tile(window, core_window, index)``,
  ``plan_tiles(width, height, tile_size_px, overlap_px, area_window=None) -> list[Tile]``.
* :mod:`gis.mosaic`: ``MosaicAccumulator(area_window, num_classes, tile_size_px, overlap_px,
  writer)`` with ``add(tile, probs, valid=None)`` / ``finish()``; output value constants
  ``PROB_SCALE`` (254), ``PROB_NODATA`` (255), ``MASK_BACKGROUND`` (0), ``MASK_ROAD`` (1),
  ``MASK_NODATA`` (255).
* :mod:`gis.aoi`: ``AOI``, ``load_aoi(path, raster_crs=None)``, ``bbox_aoi(minx, miny, maxx, maxy,
  crs)``, ``aoi_window(aoi, raster_info)``, ``aoi_mask(aoi, window, transform)``.
* :mod:`gis.inference`: ``run_tiled_inference(src_path, predict_fn, out_prob_path, out_mask_path,
  *, tile_size_px=512, overlap_px=64, batch_size=4, bands=None, normalize=None,
  threshold=0.5, aoi=None, on_progress=None, should_cancel=None, overwrite=False,
  allow_pixel_coords=False) -> InferenceResult`` (test-time augmentation is part of
  ``predict_fn``); its pieces ``plan_inference`` and ``TileBatchReader`` (normalised tile
  batches, read ahead) and ``write_cogs``.
* :mod:`gis.errors`: ``GisError`` and its subclasses.

Vector half (import the modules): :mod:`gis.vectorize` (``vectorize_mask`` for arrays,
``vectorize_mask_file`` for GeoTIFFs, ``vectorize_source`` for any
:class:`gis.maskstrips.MaskSource`; all work in row strips, see :mod:`gis.maskstrips`, whose
``clean_mask_strips`` is the mask clean-up: small objects removed, small holes filled),
:mod:`gis.graph`, :mod:`gis.vector_io`, :mod:`gis.styles`, :mod:`gis.evaluate`.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "gis.io": (
        "RasterInfo", "Overview", "Normalizer", "open_raster", "read_window", "normalize",
        "compute_stretch", "make_normalizer", "read_overview", "write_cog", "gtiff_to_cog",
        "MaskRaster", "read_mask_raster", "write_mask",
    ),
    "gis.tiling": ("Tile", "plan_tiles"),
    "gis.mosaic": (
        "MosaicAccumulator", "PROB_SCALE", "PROB_NODATA", "MASK_BACKGROUND", "MASK_ROAD",
        "MASK_NODATA",
    ),
    "gis.aoi": ("AOI", "load_aoi", "bbox_aoi", "aoi_window", "aoi_mask"),
    "gis.inference": ("InferenceResult", "run_tiled_inference"),
    "gis.errors": (
        "GisError", "RasterReadError", "CRSError", "AOIError", "OutputExistsError",
        "OutputDirError", "CancelledError", "InferenceError", "RasterWriteError",
    ),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'gis' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(list(globals()) + __all__)
