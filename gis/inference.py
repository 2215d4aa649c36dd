"""Tiled, blended, memory-bounded inference over a GeoTIFF.

:func:`run_tiled_inference` is the raster half of the pipeline::

    open_raster -> plan_tiles(area) -> [reader thread: read_window + normalise, batch by batch]
      -> predict_fn (+ test-time augmentation, calling thread)
      -> [blend thread: MosaicAccumulator -> uint8 row strips into temporary tiled GTiffs]
      -> two COG conversions in parallel -> rename both

The model is only seen through ``predict_fn(batch) -> probs``: ``batch`` float32 ``(N, C, T, T)``
already normalised, ``probs`` float32 ``(N, K, T, T)`` probabilities in 0..1 (K = 1 for roads).
This module never imports segcore or MindSpore.

Outputs (both uint8 COGs with the source CRS and the transform of the processed window):

* probability raster: K bands, ``round(p * 254)`` (0..254), nodata 255
  (:data:`gis.mosaic.PROB_NODATA`) outside the AOI and the source's valid-data mask;
* mask raster: 1 band, 0 background / 1 road (``p >= threshold``; for K > 1 the argmax class
  index), nodata 255 (:data:`gis.mosaic.MASK_NODATA`) in the same places.

Memory is bounded by the prefetch queue (``prefetch_batches``), the blend queue (two batches) and
the accumulator's strip (one tile height times the area width, ``K + 1`` float32 planes); the full
raster is never held. Reading, inference and blending/writing run in three threads so they overlap
(GDAL and large numpy operations release the GIL).
Nothing is written at the target names until both COGs are complete; on cancel or error every
temporary file is removed and existing files at the target names are left untouched.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
import rasterio.windows
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.windows import Window

from gis.aoi import AOI, aoi_mask, aoi_window
from gis.errors import CancelledError, InferenceError, OutputExistsError, RasterWriteError
from gis.io import (
    Normalizer,
    _open,
    _remove_quietly,
    check_output_path,
    cog_copy,
    make_normalizer,
    open_raster,
    raw_dtype,
    read_window,
    read_window_raw,
    temp_path_for,
)
from gis.mosaic import (
    MASK_BACKGROUND,
    MASK_NODATA,
    MASK_ROAD,
    PROB_NODATA,
    MosaicAccumulator,
    probabilities_to_uint8,
)
from gis.tiling import Tile, plan_tiles

__all__ = [
    "InferenceResult",
    "run_tiled_inference",
    "tta_transforms",
    "predict_with_tta",
    "TTA_MODES",
]

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int, str], None]
NormalizeSpec = Union[None, str, Mapping[str, Any], Normalizer, Callable[[np.ndarray], np.ndarray]]

TTA_MODES = ("none", "flips", "d4")


# --------------------------------------------------------------------------------------------
# test-time augmentation
# --------------------------------------------------------------------------------------------
def _hflip(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1]


def _vflip(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1, :]


def _rot(k: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: np.rot90(x, k, axes=(-2, -1))


def tta_transforms(mode: str) -> List[Tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]]:
    """``(forward, inverse)`` pairs acting on the last two axes of ``(..., H, W)`` arrays.

    ``"none"``: identity. ``"flips"``: identity, horizontal flip, vertical flip (3 passes).
    ``"d4"``: the 8 elements of the dihedral group (rotations by 0/90/180/270 degrees, each with and
    without a horizontal flip), the 8-way TTA of the D-LinkNet reference; tiles must be square.
    """
    ident = lambda x: x  # noqa: E731
    if mode == "none":
        return [(ident, ident)]
    if mode == "flips":
        return [(ident, ident), (_hflip, _hflip), (_vflip, _vflip)]
    if mode == "d4":
        out = []
        for k in range(4):
            fwd_r, inv_r = _rot(k), _rot(-k)
            out.append((fwd_r, inv_r))
            out.append(
                (lambda x, f=fwd_r: f(_hflip(x)), lambda y, i=inv_r: _hflip(i(y)))
            )
        return out
    raise ValueError(f"unknown TTA mode {mode!r} (choose from {', '.join(TTA_MODES)})")


def _call_predict(predict_fn: PredictFn, batch: np.ndarray) -> np.ndarray:
    probs = predict_fn(np.ascontiguousarray(batch, dtype=np.float32))
    probs = np.asarray(probs)
    n, _, h, w = batch.shape
    if probs.ndim != 4 or probs.shape[0] != n or probs.shape[2:] != (h, w):
        raise InferenceError(
            f"predict_fn returned shape {probs.shape} for a batch of shape {batch.shape}; "
            f"expected (N, K, H, W) = ({n}, K, {h}, {w})"
        )
    return probs.astype(np.float32, copy=False)


def predict_with_tta(predict_fn: PredictFn, batch: np.ndarray, mode: str = "none") -> np.ndarray:
    """Average ``predict_fn`` over the TTA transforms of ``batch`` (float32 ``(N, C, H, W)``).

    Each augmented batch is predicted separately (memory stays one batch) and transformed back
    before averaging. Returns float32 ``(N, K, H, W)``.
    """
    pairs = tta_transforms(mode)
    acc: Optional[np.ndarray] = None
    for fwd, inv in pairs:
        p = inv(_call_predict(predict_fn, fwd(batch)))
        acc = p.astype(np.float32, copy=True) if acc is None else acc + p
    assert acc is not None
    if len(pairs) > 1:
        acc /= np.float32(len(pairs))
    return np.ascontiguousarray(acc)


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferenceResult:
    """What :func:`run_tiled_inference` produced.

    Attributes:
        prob_path, mask_path: the written COGs.
        window: the window of the source raster that was processed (whole raster or AOI window);
            both outputs cover exactly this window.
        crs: output CRS (the source CRS, None for pixel coordinates).
        transform: affine transform of the outputs (the window's transform in the source).
        width, height: output size in pixels.
        num_classes: K, number of probability bands.
        bands: 1-based source bands fed to the model.
        tiles: number of tiles processed.
        valid_pixels: pixels inside the AOI and the valid-data mask.
        positive_pixels: valid pixels classified as road (K == 1) / non-zero class (K > 1).
        resolution_m: source pixel size in metres (None without CRS).
        tta: the TTA mode used.
        strip_rows: rows held by the blending buffer (one tile height, capped by the area height):
            the memory bound of the mosaic, independent of the raster height.
        timings: seconds spent: ``read`` (reader thread), ``wait`` (inference thread waiting for
            data), ``predict`` (summed ``predict_fn`` time / ``inference_workers``), ``blend``
            and ``write`` (blend thread), ``cog``, ``total``.
    """

    prob_path: Path
    mask_path: Path
    window: Window
    crs: Optional[CRS]
    transform: Affine
    width: int
    height: int
    num_classes: int
    bands: Tuple[int, ...]
    tiles: int
    valid_pixels: int
    positive_pixels: int
    resolution_m: Optional[Tuple[float, float]]
    tta: str
    strip_rows: int = 0
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def positive_fraction(self) -> float:
        """Share of valid pixels classified positive (0 when nothing is valid)."""
        return self.positive_pixels / self.valid_pixels if self.valid_pixels else 0.0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _build_normalizer(spec: NormalizeSpec, info, bands: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """``None``/``"auto"``/``"uint8"``/``"percentile"``/``"none"``, a mapping of
    :func:`gis.io.make_normalizer` keyword arguments (``method``, ``mean``, ``std``,
    ``percentiles``), or a ready callable."""
    if spec is None:
        return make_normalizer(info, bands, method="auto")
    if isinstance(spec, str):
        return make_normalizer(info, bands, method=spec)
    if isinstance(spec, Mapping):
        kw = dict(spec)
        kw.setdefault("method", "auto")
        return make_normalizer(info, bands, **kw)
    if callable(spec):
        return spec
    raise TypeError(f"normalize must be None, a method name, a mapping or a callable, not {type(spec).__name__}")


class _Stop(Exception):
    pass


def _batches(tiles: Sequence[Tile], batch_size: int) -> Iterator[List[Tile]]:
    for i in range(0, len(tiles), batch_size):
        yield list(tiles[i:i + batch_size])


class _Reader(threading.Thread):
    """Reads and normalises batches ahead of the inference loop (bounded queue)."""

    def __init__(self, path, tiles, batch_size, bands, norm, aoi_geom, transform, crs, prefetch,
                 tile_size):
        super().__init__(name="gis-tile-reader", daemon=True)
        self.path, self.tiles, self.batch_size = path, tiles, batch_size
        self.tile_size = int(tile_size)
        self.bands, self.norm = bands, norm
        self.aoi, self.transform, self.crs = aoi_geom, transform, crs
        self.q: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch))
        self.stop = threading.Event()
        self.read_s = 0.0

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop()

    def run(self) -> None:
        try:
            with _open(self.path) as ds:
                c, t = len(self.bands), self.tile_size
                dtype = raw_dtype(ds, self.bands)
                # tiles are read in the raster's own dtype into one reused buffer and converted
                # straight into the float32 batch (normalised on the way for a Normalizer);
                # bands of different dtypes go through read_window (which rasterio refuses)
                raw = None if dtype is None else np.empty((c, t, t), dtype)
                # any normaliser with fusable()/normalize_into() (gis.io.Normalizer, segcore's
                # Preprocessor) is applied per tile without a float copy
                fused = (callable(getattr(self.norm, "normalize_into", None))
                         and bool(self.norm.fusable(c)))
                for batch in _batches(self.tiles, self.batch_size):
                    if self.stop.is_set():
                        raise _Stop()
                    t0 = time.perf_counter()
                    # a new batch array each time: the inference workers still hold earlier ones
                    x = np.empty((len(batch), c, t, t), np.float32)
                    valid = np.empty((len(batch), t, t), bool)
                    for i, tile in enumerate(batch):
                        if raw is not None:
                            read_window_raw(ds, tile.window, self.bands, out=raw,
                                            valid_out=valid[i])
                            if fused:
                                self.norm.normalize_into(raw, x[i])
                            else:
                                np.copyto(x[i], raw, casting="unsafe")
                        else:
                            x[i], valid[i] = read_window(ds, tile.window, self.bands,
                                                         boundless=True)
                        if self.aoi is not None:
                            valid[i] &= aoi_mask(self.aoi, tile.window, self.transform)
                    if not fused:
                        y = np.asarray(self.norm(x), dtype=np.float32)
                        if not y.flags.writeable:
                            y = y.copy()
                        # (y may be x itself: x is this batch's own array, never reused)
                        x = y
                    # invalid / padded pixels -> 0 after normalisation (also clears NaN)
                    if not valid.all():
                        np.copyto(x, np.float32(0.0), where=~valid[:, None])
                    self.read_s += time.perf_counter() - t0
                    self._put(("batch", batch, x, valid))
            self._put(("done", None, None, None))
        except _Stop:
            return
        except BaseException as exc:  # handed to the consumer
            try:
                self._put(("error", exc, None, None))
            except _Stop:
                return


class _Blender(threading.Thread):
    """Blends predicted batches into the accumulator and writes finished strips.

    Runs beside the inference loop so that blending (numpy, releases the GIL on large arrays)
    and GTiff writing (GDAL, releases the GIL) overlap with the next ``predict_fn`` call.
    """

    def __init__(self, prob_ds, mask_ds, threshold: float):
        super().__init__(name="gis-blend-writer", daemon=True)
        self.prob_ds, self.mask_ds = prob_ds, mask_ds
        self.threshold = threshold
        self.acc: Optional[MosaicAccumulator] = None
        self.q: "queue.Queue" = queue.Queue(maxsize=2)
        self.error: Optional[BaseException] = None
        self.blend_s = 0.0
        self.write_s = 0.0
        self.valid_pixels = 0
        self.positive_pixels = 0

    def on_strip(self, row: int, probs: np.ndarray, valid: np.ndarray) -> None:
        t0 = time.perf_counter()
        all_valid = bool(valid.all())
        if probs.shape[0] == 1:
            road = np.greater_equal(probs[0], self.threshold)
            positive = np.count_nonzero(road if all_valid else road & valid)
            # bool as uint8 is 1 (MASK_ROAD) / 0 (MASK_BACKGROUND), without a copy
            mask8 = road.view(np.uint8) if (MASK_ROAD, MASK_BACKGROUND) == (1, 0) else \
                np.where(road, MASK_ROAD, MASK_BACKGROUND).astype(np.uint8)
            if not all_valid:
                np.copyto(mask8, np.uint8(MASK_NODATA), where=~valid)
        else:
            mask8 = np.argmax(probs, axis=0).astype(np.uint8)
            if not all_valid:
                np.copyto(mask8, np.uint8(MASK_NODATA), where=~valid)
            positive = np.count_nonzero((mask8 != MASK_NODATA) & (mask8 != MASK_BACKGROUND))
        # the strip is the accumulator's new array, handed over: quantised in place
        prob8 = probabilities_to_uint8(probs, valid, overwrite_input=True)
        self.valid_pixels += int(np.count_nonzero(valid))
        self.positive_pixels += int(positive)
        h, w = mask8.shape
        win = Window(0, row, w, h)
        self.prob_ds.write(prob8, window=win)
        self.mask_ds.write(mask8, 1, window=win)
        self.write_s += time.perf_counter() - t0

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain until the sentinel
            t0 = time.perf_counter()
            w0 = self.write_s
            try:
                if item == "finish":
                    assert self.acc is not None
                    self.acc.finish()
                else:
                    batch, probs, valid = item
                    assert self.acc is not None
                    for i, tile in enumerate(batch):
                        self.acc.add(tile, probs[i], valid[i])
            except BaseException as exc:
                self.error = exc
            self.blend_s += (time.perf_counter() - t0) - (self.write_s - w0)

    def put(self, item) -> None:
        """Queue work; re-raises an error of the thread in the caller."""
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


# --------------------------------------------------------------------------------------------
# main entry point
# --------------------------------------------------------------------------------------------
#: Upper bound of GDAL's block cache (MB) while a tiled inference runs. GDAL's default (5 % of
#: the RAM or more) let the cached blocks of the input and of the two strip files grow with the
#: raster (peak RSS 9 GB for a 20000 x 20000 scene); a bounded cache keeps memory flat.
GDAL_CACHE_MB = 256
#: Lower bound (MB) of the same cache.
GDAL_CACHE_MIN_MB = 16


def gdal_cache_bytes(width: int, count: int, itemsize: int, block_rows: int,
                     tile_size_px: int) -> int:
    """``GDAL_CACHEMAX`` of a tiled inference over a raster ``width`` pixels wide, in **bytes**
    (rasterio hands an integer to ``GDALSetCacheMax64``, which counts bytes: the former
    ``GDAL_CACHEMAX=256`` was a 256-byte cache, in which every tile read decoded its input blocks
    again, up to four per tile).

    The tile reader needs the blocks of one row of tiles plus the next block row
    (``tile_size_px + block_rows`` rows of every band: a pixel-interleaved GTiff caches all bands
    of a decoded block), the strip writers one 256-row block row of the two strip files (up to
    5 uint8 planes); half as much again as slack, within ``GDAL_CACHE_MIN_MB..GDAL_CACHE_MB``.
    """
    need = (int(tile_size_px) + int(block_rows)) * int(width) * int(count) * int(itemsize)
    need += 256 * int(width) * 5
    need = need * 3 // 2
    return int(min(max(need, GDAL_CACHE_MIN_MB << 20), GDAL_CACHE_MB << 20))


def _cache_bytes_for(src_path: Any, tile_size_px: int) -> int:
    try:
        with _open(src_path) as ds:
            itemsize = max(np.dtype(d).itemsize for d in ds.dtypes)
            return gdal_cache_bytes(ds.width, ds.count, itemsize, ds.block_shapes[0][0],
                                    tile_size_px)
    except Exception:  # noqa: BLE001  the run itself reports an unreadable input
        return GDAL_CACHE_MB << 20


def _bounded_gdal_cache(fn: Callable[..., "InferenceResult"]) -> Callable[..., "InferenceResult"]:
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> "InferenceResult":
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return fn(*args, **kwargs)  # raises the TypeError of the call
        src = bound.arguments.get("src_path")
        tile = bound.arguments.get("tile_size_px", sig.parameters["tile_size_px"].default)
        try:
            tile = int(tile)
        except (TypeError, ValueError):
            tile = 512
        with rasterio.Env(GDAL_CACHEMAX=_cache_bytes_for(src, tile)):
            return fn(*args, **kwargs)

    return wrapper


@_bounded_gdal_cache
def run_tiled_inference(
    src_path: Union[str, os.PathLike],
    predict_fn: PredictFn,
    out_prob_path: Union[str, os.PathLike],
    out_mask_path: Union[str, os.PathLike],
    *,
    tile_size_px: int = 512,
    overlap_px: int = 64,
    batch_size: int = 4,
    bands: Optional[Sequence[int]] = None,
    normalize: NormalizeSpec = None,
    tta: str = "none",
    threshold: float = 0.5,
    aoi: Optional[AOI] = None,
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    overwrite: bool = False,
    allow_pixel_coords: bool = False,
    prefetch_batches: int = 2,
    cog_blocksize: int = 512,
    cog_compress_level: Optional[int] = 1,
    inference_workers: int = 1,
) -> InferenceResult:
    """Run ``predict_fn`` over a raster tile by tile and write probability and mask COGs.

    Args:
        src_path: input raster (GeoTIFF).
        predict_fn: ``float32 (N, C, T, T) normalised -> float32 (N, K, T, T)`` probabilities 0..1.
            Called from the calling thread only, unless ``inference_workers`` > 1.
        out_prob_path, out_mask_path: output COG paths (see module docstring for values).
        tile_size_px, overlap_px: tiling (:func:`gis.tiling.plan_tiles`); edge tiles are padded.
        batch_size: tiles per ``predict_fn`` call (the last batch may be smaller).
        bands: 1-based source bands (repeats allowed); default the first three non-alpha bands.
        normalize: None/"auto" (uint8 -> /255, others -> 2-98 % stretch computed once on a
            decimated read of the whole raster), "uint8", "percentile", "none", a mapping of
            :func:`gis.io.make_normalizer` keywords (e.g. ``{"mean": [...], "std": [...]}``), or a
            callable ``(N, C, T, T) raw float32 -> normalised float32``. Invalid and padded pixels
            are set to 0 after normalisation.
        tta: "none", "flips" (3 passes) or "d4" (8 passes), inverse-transformed and averaged.
        threshold: probability threshold of the mask (K == 1).
        aoi: optional AOI (any CRS): only its window is processed, pixels outside it are nodata.
        on_progress: ``on_progress(done, total, stage)``; stage ``"inference"`` once per batch
            (done/total in tiles), then ``"writing"`` (0..2 COGs).
        should_cancel: polled before every batch and before each COG conversion; True ->
            :class:`CancelledError`.
        overwrite: replace existing outputs (otherwise :class:`OutputExistsError` before any work).
        allow_pixel_coords: accept a raster without CRS (outputs then have no CRS).
        prefetch_batches: batches the reader thread may read ahead.
        cog_blocksize: internal tile size of the output COGs.
        cog_compress_level: DEFLATE level of the COGs (default 1: converts ~2.5x faster than
            GDAL's default 6 for ~17 % larger probability files; None: GDAL's default).
        inference_workers: concurrent ``predict_fn`` calls on consecutive batches (results are
            still blended in tile order). ``predict_fn`` must then be thread-safe; on the CPU, N
            single-threaded ONNX Runtime calls keep the cores busier than one N-threaded call
            while the reader and writer threads take their share.

    Returns:
        :class:`InferenceResult`.

    Raises:
        RasterReadError, CRSError: unreadable input / missing CRS.
        RasterWriteError: an output could not be written.
        AOIError: the AOI does not overlap the raster.
        OutputExistsError: an output exists and ``overwrite`` is False.
        InferenceError: ``predict_fn`` returned a wrongly shaped array.
        CancelledError: ``should_cancel()`` returned True.
    """
    t_start = time.perf_counter()
    if tta not in TTA_MODES:
        raise ValueError(f"unknown TTA mode {tta!r} (choose from {', '.join(TTA_MODES)})")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in 0..1, got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if inference_workers < 1:
        raise ValueError(f"inference_workers must be >= 1, got {inference_workers}")
    prob_path = check_output_path(out_prob_path, overwrite)
    mask_path = check_output_path(out_mask_path, overwrite)
    if prob_path.resolve() == mask_path.resolve():
        raise ValueError(f"{prob_path}: probability and mask outputs must be different files")
    info = open_raster(src_path, allow_pixel_coords=allow_pixel_coords)
    if bands is None:
        bands_t = info.default_bands
    else:
        bands_t = tuple(int(b) for b in bands)
        bad = [b for b in bands_t if not 1 <= b <= info.count]
        if not bands_t or bad:
            raise ValueError(
                f"{src_path}: band selection {bands_t} invalid for {info.count} bands (1-based)"
            )
    aoi_geom = None
    if aoi is not None:
        area = aoi_window(aoi, info)
        aoi_geom = aoi.to_crs(info.crs)
    else:
        area = Window(0, 0, info.width, info.height)
    tiles = plan_tiles(info.width, info.height, tile_size_px, overlap_px, area_window=area)
    norm = _build_normalizer(normalize, info, bands_t)
    out_transform = rasterio.windows.transform(area, info.transform)
    aw, ah = int(area.width), int(area.height)
    cancel = should_cancel or (lambda: False)
    progress = on_progress or (lambda done, total, stage: None)
    log.info(
        "%s: %d tiles of %d px (overlap %d) over window %s, bands %s, tta=%s",
        src_path, len(tiles), tile_size_px, overlap_px, area, bands_t, tta,
    )

    tmp_prob_g = temp_path_for(prob_path, "strips")
    tmp_mask_g = temp_path_for(mask_path, "strips")
    tmp_prob_c = temp_path_for(prob_path, "cog")
    tmp_mask_c = temp_path_for(mask_path, "cog")
    temps = [tmp_prob_g, tmp_mask_g, tmp_prob_c, tmp_mask_c]
    reader: Optional[_Reader] = None
    blender: Optional[_Blender] = None
    datasets: List[Any] = []
    timings = {"read": 0.0, "wait": 0.0, "predict": 0.0, "blend": 0.0, "write": 0.0, "cog": 0.0}
    num_classes: Optional[int] = None

    def start_blender(k: int) -> _Blender:
        common = dict(
            driver="GTiff", width=aw, height=ah, crs=info.crs, transform=out_transform,
            dtype="uint8", tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER",
        )
        try:
            with rasterio.Env(GDAL_PAM_ENABLED="NO"):
                datasets.append(rasterio.open(tmp_prob_g, "w", count=k, nodata=PROB_NODATA, **common))
                datasets.append(rasterio.open(tmp_mask_g, "w", count=1, nodata=MASK_NODATA, **common))
        except RasterioError as exc:
            raise RasterWriteError(
                f"{tmp_prob_g}: cannot create temporary output: {str(exc).splitlines()[0]}"
            ) from exc
        b = _Blender(datasets[0], datasets[1], threshold)
        b.acc = MosaicAccumulator(area, k, tile_size_px, overlap_px, b.on_strip)
        b.start()
        return b

    def stop_blender(b: _Blender) -> None:
        b.q.put(None)
        b.join()

    try:
        if cancel():
            raise CancelledError(f"{src_path}: cancelled before start")
        reader = _Reader(
            info.path, tiles, batch_size, bands_t, norm, aoi_geom, info.transform,
            info.crs, prefetch_batches, tile_size_px,
        )
        reader.start()

        done = 0
        total = len(tiles)
        progress(0, total, "inference")
        workers = int(inference_workers)
        pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gis-predict")
                if workers > 1 else None)
        pending: "deque" = deque()  # (batch, valid, future | (probs, seconds)), in tile order

        def timed_predict(x: np.ndarray) -> Tuple[np.ndarray, float]:
            t = time.perf_counter()
            return predict_with_tta(predict_fn, x, tta), time.perf_counter() - t

        def hand_over() -> None:
            """Oldest batch's probabilities -> the blender (tile order is kept)."""
            nonlocal num_classes, blender, done
            batch, valid, fut = pending.popleft()
            probs, dt = fut.result() if pool is not None else fut
            timings["predict"] += dt / workers  # concurrent calls: busy time per worker
            if num_classes is None:
                num_classes = int(probs.shape[1])
                blender = start_blender(num_classes)
            elif probs.shape[1] != num_classes:
                raise InferenceError(
                    f"predict_fn returned {probs.shape[1]} classes after {num_classes} earlier"
                )
            assert blender is not None
            blender.put((batch, probs, valid))
            done += len(batch)
            progress(done, total, "inference")

        try:
            while True:
                if cancel():
                    raise CancelledError(f"{src_path}: cancelled after {done} of {total} tiles")
                t0 = time.perf_counter()
                kind, batch, x, valid = reader.q.get()
                timings["wait"] += time.perf_counter() - t0
                if kind == "done":
                    break
                if kind == "error":
                    raise batch
                if pool is None:
                    pending.append((batch, valid, timed_predict(x)))
                else:
                    pending.append((batch, valid, pool.submit(timed_predict, x)))
                while len(pending) >= workers:
                    hand_over()
            while pending:
                hand_over()
        finally:
            if pool is not None:
                for item in pending:
                    item[2].cancel()
                pool.shutdown(wait=True)
        assert blender is not None and num_classes is not None
        blender.put("finish")
        stop_blender(blender)
        if blender.error is not None:
            raise blender.error
        timings["blend"], timings["write"] = blender.blend_s, blender.write_s
        for ds in datasets:
            ds.close()

        if cancel():
            raise CancelledError(f"{src_path}: cancelled before writing outputs")
        t0 = time.perf_counter()
        progress(0, 2, "writing")
        jobs = [
            (tmp_prob_g, tmp_prob_c, dict(overview_resampling="average", predictor=True)),
            (tmp_mask_g, tmp_mask_c, dict(overview_resampling="nearest", predictor=False)),
        ]
        # the two conversions run in parallel (GDAL releases the GIL while compressing), each
        # with a GDAL thread per core: the cheap mask conversion no longer leaves a core idle
        # while the probabilities are still being compressed (same bytes)
        # (a batch worker process sets ROADSEG_CORES to its share of the machine)
        cores = os.environ.get("ROADSEG_CORES", "").strip()
        cog_threads = (int(cores) if cores.isdigit() else 0) or os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="gis-cog") as pool:
            futures = [
                pool.submit(cog_copy, a, b, blocksize=cog_blocksize, level=cog_compress_level,
                            num_threads=cog_threads, **kw)
                for a, b, kw in jobs
            ]
            for n_done, fut in enumerate(as_completed(futures), start=1):
                fut.result()
                if n_done < 2:
                    progress(n_done, 2, "writing")
        for a, _, _ in jobs:
            _remove_quietly(a)
        if cancel():
            raise CancelledError(f"{src_path}: cancelled before replacing outputs")
        for final in (prob_path, mask_path):
            if final.exists() and not overwrite:
                raise OutputExistsError(f"{final}: output appeared while running (not overwritten)")
        os.replace(tmp_prob_c, prob_path)
        os.replace(tmp_mask_c, mask_path)
        progress(2, 2, "writing")
        timings["cog"] = time.perf_counter() - t0
    except BaseException:
        if reader is not None:
            reader.stop.set()
        if blender is not None and blender.is_alive():
            blender.error = blender.error or _Stop()
            stop_blender(blender)
        for ds in datasets:
            if not ds.closed:
                try:
                    ds.close()
                except RasterioError:  # pragma: no cover
                    pass
        if reader is not None:
            reader.join(timeout=10)
        for t in temps:
            _remove_quietly(t)
        raise
    finally:
        if reader is not None:
            reader.stop.set()
            timings["read"] = reader.read_s
    timings["total"] = time.perf_counter() - t_start
    log.info("%s: inference done in %.2f s (%s)", src_path, timings["total"],
             ", ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    return InferenceResult(
        prob_path=prob_path,
        mask_path=mask_path,
        window=area,
        crs=info.crs,
        transform=out_transform,
        width=aw,
        height=ah,
        num_classes=int(num_classes),
        bands=bands_t,
        tiles=len(tiles),
        valid_pixels=blender.valid_pixels,
        positive_pixels=blender.positive_pixels,
        resolution_m=info.resolution_m,
        tta=tta,
        strip_rows=blender.acc.buffer_rows if blender.acc is not None else 0,
        timings=timings,
    )
