"""Tiled, blended, memory-bounded inference over a GeoTIFF.

:func:`run_tiled_inference` is the raster half of the pipeline::

    plan_inference: open_raster -> plan_tiles(area)
      -> TileBatchReader [reader thread: read_window + normalise, batch by batch]
      -> predict_fn (calling thread, or inference_workers threads)
      -> _Blender [blend thread: MosaicAccumulator -> uint8 row strips into temporary GTiffs]
      -> write_cogs: two COG conversions in parallel -> rename both

The pieces are usable alone: ``ascend310/preprocess.py`` iterates over :class:`TileBatchReader`
to write the batches a device will predict. Test-time augmentation is not done here: it is part
of ``predict_fn`` (:func:`segcore.tta.with_tta`).

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
from typing import (Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple, Union)

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
    "TilePlan",
    "TileBatch",
    "TileBatchReader",
    "plan_inference",
    "write_cogs",
    "run_tiled_inference",
]

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[int, int, str], None]
NormalizeSpec = Union[None, str, Mapping[str, Any], Normalizer, Callable[[np.ndarray], np.ndarray]]

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
    strip_rows: int = 0
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def positive_fraction(self) -> float:
        """Share of valid pixels classified positive (0 when nothing is valid)."""
        return self.positive_pixels / self.valid_pixels if self.valid_pixels else 0.0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _build_normalizer(spec: NormalizeSpec, info,
                      bands: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
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
    raise TypeError("normalize must be None, a method name, a mapping or a callable, "
                    f"not {type(spec).__name__}")


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


class _Stop(Exception):
    pass


def _batches(tiles: Sequence[Tile], batch_size: int) -> Iterator[List[Tile]]:
    for i in range(0, len(tiles), batch_size):
        yield list(tiles[i:i + batch_size])


# --------------------------------------------------------------------------------------------
# tiles: the plan and the tile-batch iterator
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TilePlan:
    """The tiles of one raster, in processing order (see :func:`plan_inference`).

    Attributes:
        info: the opened raster (:class:`gis.io.RasterInfo`).
        bands: 1-based source bands fed to the model.
        area: the processed window (whole raster or AOI window).
        tiles: the tiles (:func:`gis.tiling.plan_tiles`) covering ``area``, row by row.
        aoi: the AOI in the raster CRS (pixels outside it are invalid), or None.
        tile_size_px, overlap_px: the tiling.
    """

    info: Any
    bands: Tuple[int, ...]
    area: Window
    tiles: List[Tile]
    aoi: Optional[AOI]
    tile_size_px: int
    overlap_px: int

    @property
    def transform(self) -> Affine:
        """Affine transform of ``area`` (that of the outputs)."""
        return rasterio.windows.transform(self.area, self.info.transform)


def plan_inference(
    src_path: Union[str, os.PathLike],
    *,
    tile_size_px: int = 512,
    overlap_px: int = 64,
    bands: Optional[Sequence[int]] = None,
    aoi: Optional[AOI] = None,
    allow_pixel_coords: bool = False,
) -> TilePlan:
    """Open ``src_path`` and plan the tiles of a tiled inference (arguments as in
    :func:`run_tiled_inference`).

    Raises RasterReadError/CRSError (unreadable input, missing CRS), AOIError (AOI outside the
    raster) and ValueError (band selection).
    """
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
    return TilePlan(info, bands_t, area, tiles, aoi_geom, int(tile_size_px), int(overlap_px))


class TileBatch(NamedTuple):
    """One batch of the iterator: ``x`` float32 ``(n, C, T, T)`` normalised (invalid and padded
    pixels 0), ``valid`` bool ``(n, T, T)`` (inside the raster, its valid-data mask and the AOI)."""

    tiles: List[Tile]
    x: np.ndarray
    valid: np.ndarray


class TileBatchReader:
    """Iterator over the :class:`TileBatch` es of a :class:`TilePlan`, read ahead in a thread.

    A reader thread reads and normalises up to ``prefetch_batches`` batches ahead of the
    consumer (GDAL and large numpy operations release the GIL). Errors of the thread are raised
    by ``next()``. Use it as a context manager (or call :meth:`close`) so the thread stops when
    the consumer stops early::

        with TileBatchReader(plan, batch_size=4) as batches:
            for tiles, x, valid in batches:
                ...

    ``normalize`` takes the forms of :func:`run_tiled_inference`. ``read_s`` is the time the
    thread spent reading and normalising.
    """

    def __init__(self, plan: TilePlan, batch_size: int, normalize: NormalizeSpec = None,
                 prefetch_batches: int = 2):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.plan = plan
        self.batch_size = int(batch_size)
        self.norm = _build_normalizer(normalize, plan.info, plan.bands)
        self.q: "queue.Queue" = queue.Queue(maxsize=max(1, prefetch_batches))
        self.stop_event = threading.Event()
        self.read_s = 0.0
        self._thread = threading.Thread(target=self._run, name="gis-tile-reader", daemon=True)
        self._finished = False

    # ---- consumer side ------------------------------------------------------------------
    def start(self) -> "TileBatchReader":
        """Start the reader thread (done by the first ``iter()``)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def __iter__(self) -> "TileBatchReader":
        return self.start()

    def __next__(self) -> TileBatch:
        if self._finished:
            raise StopIteration
        kind, a, b, c = self.q.get()
        if kind == "done":
            self._finished = True
            raise StopIteration
        if kind == "error":
            self._finished = True
            raise a
        return TileBatch(a, b, c)

    def stop(self) -> None:
        """Ask the thread to stop (it ends at the next batch boundary)."""
        self.stop_event.set()

    def close(self, timeout: float = 10) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        self.stop()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout)

    def __enter__(self) -> "TileBatchReader":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- reader thread ------------------------------------------------------------------
    def _put(self, item) -> None:
        while not self.stop_event.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stop()

    def _run(self) -> None:
        plan = self.plan
        try:
            with _open(plan.info.path) as ds:
                c, t = len(plan.bands), plan.tile_size_px
                dtype = raw_dtype(ds, plan.bands)
                # tiles are read in the raster's own dtype into one reused buffer and converted
                # straight into the float32 batch (normalised on the way for a Normalizer);
                # bands of different dtypes go through read_window (which rasterio refuses)
                raw = None if dtype is None else np.empty((c, t, t), dtype)
                # any normaliser with fusable()/normalize_into() (gis.io.Normalizer, segcore's
                # Preprocessor) is applied per tile without a float copy
                fused = (callable(getattr(self.norm, "normalize_into", None))
                         and bool(self.norm.fusable(c)))
                for batch in _batches(plan.tiles, self.batch_size):
                    if self.stop_event.is_set():
                        raise _Stop()
                    t0 = time.perf_counter()
                    # a new batch array each time: the consumer may still hold earlier ones
                    x = np.empty((len(batch), c, t, t), np.float32)
                    valid = np.empty((len(batch), t, t), bool)
                    for i, tile in enumerate(batch):
                        if raw is not None:
                            read_window_raw(ds, tile.window, plan.bands, out=raw,
                                            valid_out=valid[i])
                            if fused:
                                self.norm.normalize_into(raw, x[i])
                            else:
                                np.copyto(x[i], raw, casting="unsafe")
                        else:
                            x[i], valid[i] = read_window(ds, tile.window, plan.bands,
                                                         boundless=True)
                        if plan.aoi is not None:
                            valid[i] &= aoi_mask(plan.aoi, tile.window, plan.info.transform)
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
        except BaseException as exc:  # noqa: BLE001 - worker thread: handed to the consumer
            try:
                self._put(("error", exc, None, None))
            except _Stop:
                return


# --------------------------------------------------------------------------------------------
# blending
# --------------------------------------------------------------------------------------------
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
            except BaseException as exc:  # noqa: BLE001 - worker thread: put() re-raises it
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

    # ---- life cycle ---------------------------------------------------------------------
    @classmethod
    def open(cls, prob_path: Path, mask_path: Path, plan: TilePlan, num_classes: int,
             threshold: float) -> "_Blender":
        """Create the two temporary strip GTiffs over ``plan.area`` (``num_classes`` probability
        bands, one mask band) and start blending into them."""
        aw, ah = int(plan.area.width), int(plan.area.height)
        common = dict(
            driver="GTiff", width=aw, height=ah, crs=plan.info.crs, transform=plan.transform,
            dtype="uint8", tiled=True, blockxsize=256, blockysize=256, BIGTIFF="IF_SAFER",
        )
        opened: List[Any] = []
        try:
            with rasterio.Env(GDAL_PAM_ENABLED="NO"):
                opened.append(rasterio.open(prob_path, "w", count=num_classes,
                                            nodata=PROB_NODATA, **common))
                opened.append(rasterio.open(mask_path, "w", count=1, nodata=MASK_NODATA,
                                            **common))
        except RasterioError as exc:
            _close_all(opened)
            raise RasterWriteError(
                f"{prob_path}: cannot create temporary output: {str(exc).splitlines()[0]}"
            ) from exc
        b = cls(opened[0], opened[1], threshold)
        b.acc = MosaicAccumulator(plan.area, num_classes, plan.tile_size_px, plan.overlap_px,
                                  b.on_strip)
        b.start()
        return b

    def _stop_thread(self) -> None:
        self.q.put(None)
        self.join()

    def finish(self) -> None:
        """Flush the last strips, stop the thread and close the strip files (re-raises an
        error of the thread)."""
        self.put("finish")
        self._stop_thread()
        if self.error is not None:
            raise self.error
        _close_all([self.prob_ds, self.mask_ds])

    def abort(self) -> None:
        """Stop without flushing (on error or cancel) and close the strip files."""
        if self.is_alive():
            self.error = self.error or _Stop()
            self._stop_thread()
        _close_all([self.prob_ds, self.mask_ds])


def _close_all(datasets: Sequence[Any]) -> None:
    for ds in datasets:
        if not ds.closed:
            try:
                ds.close()
            except RasterioError:  # pragma: no cover
                pass


# --------------------------------------------------------------------------------------------
# COG writer
# --------------------------------------------------------------------------------------------
CogJob = Tuple[Path, Path, Dict[str, Any]]


def write_cogs(jobs: Sequence[CogJob], *, blocksize: int = 512, level: Optional[int] = 1,
               on_done: Optional[Callable[[int], None]] = None,
               threads: Optional[int] = None) -> None:
    """Convert each ``(gtiff, cog, options)`` of ``jobs`` with :func:`gis.io.cog_copy`, all in
    parallel, then remove the source GTiffs. ``options`` are ``cog_copy`` keywords
    (``overview_resampling``, ``predictor``). ``on_done(n)`` after the n-th conversion finished
    (all but the last).

    The conversions run in parallel (GDAL releases the GIL while compressing), each with a GDAL
    thread per core, so a cheap conversion (the mask) does not leave a core idle while a costly
    one (the probabilities) is still being compressed. ``threads``: GDAL threads per conversion,
    the cores this process may use (the caller knows: a batch worker has its share of the
    machine); default ``os.cpu_count()``.
    """
    cog_threads = max(1, int(threads or os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="gis-cog") as pool:
        futures = [
            pool.submit(cog_copy, a, b, blocksize=blocksize, level=level,
                        num_threads=cog_threads, **kw)
            for a, b, kw in jobs
        ]
        for n_done, fut in enumerate(as_completed(futures), start=1):
            fut.result()
            if n_done < len(jobs) and on_done is not None:
                on_done(n_done)
    for a, _, _ in jobs:
        _remove_quietly(a)


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
    cog_threads: Optional[int] = None,
) -> InferenceResult:
    """Run ``predict_fn`` over a raster tile by tile and write probability and mask COGs.

    The pieces: :func:`plan_inference` (tiles), :class:`TileBatchReader` (tile batches read
    ahead), ``predict_fn`` (calling thread or ``inference_workers`` threads), the blender thread
    (mosaic into temporary strip GTiffs) and :func:`write_cogs`; then both COGs are renamed to
    their final names.

    Args:
        src_path: input raster (GeoTIFF).
        predict_fn: ``float32 (N, C, T, T) normalised -> float32 (N, K, T, T)`` probabilities 0..1
            (test-time augmentation, if any, is part of it: :func:`segcore.tta.with_tta`).
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
        cog_threads: GDAL threads per COG conversion: the cores this process may use
            (default ``os.cpu_count()``; a batch worker passes its share of the machine).

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
    plan = plan_inference(src_path, tile_size_px=tile_size_px, overlap_px=overlap_px,
                          bands=bands, aoi=aoi, allow_pixel_coords=allow_pixel_coords)
    reader = TileBatchReader(plan, batch_size, normalize, prefetch_batches)
    cancel = should_cancel or (lambda: False)
    progress = on_progress or (lambda done, total, stage: None)
    log.info(
        "%s: %d tiles of %d px (overlap %d) over window %s, bands %s",
        src_path, len(plan.tiles), tile_size_px, overlap_px, plan.area, plan.bands,
    )

    strips = (temp_path_for(prob_path, "strips"), temp_path_for(mask_path, "strips"))
    cogs = (temp_path_for(prob_path, "cog"), temp_path_for(mask_path, "cog"))
    blender: Optional[_Blender] = None
    timings = {"read": 0.0, "wait": 0.0, "predict": 0.0, "blend": 0.0, "write": 0.0, "cog": 0.0}
    started = False

    def open_blender(num_classes: int) -> _Blender:
        nonlocal blender
        blender = _Blender.open(strips[0], strips[1], plan, num_classes, threshold)
        return blender

    try:
        if cancel():
            raise CancelledError(f"{src_path}: cancelled before start")
        reader.start()
        started = True
        _predict_into(reader, predict_fn, open_blender, int(inference_workers), timings,
                      progress, cancel, str(src_path))
        assert blender is not None
        blender.finish()
        timings["blend"], timings["write"] = blender.blend_s, blender.write_s

        if cancel():
            raise CancelledError(f"{src_path}: cancelled before writing outputs")
        t0 = time.perf_counter()
        progress(0, 2, "writing")
        write_cogs(
            [(strips[0], cogs[0], dict(overview_resampling="average", predictor=True)),
             (strips[1], cogs[1], dict(overview_resampling="nearest", predictor=False))],
            blocksize=cog_blocksize, level=cog_compress_level,
            on_done=lambda n: progress(n, 2, "writing"), threads=cog_threads,
        )
        if cancel():
            raise CancelledError(f"{src_path}: cancelled before replacing outputs")
        for final in (prob_path, mask_path):
            if final.exists() and not overwrite:
                raise OutputExistsError(f"{final}: output appeared while running (not overwritten)")
        os.replace(cogs[0], prob_path)
        os.replace(cogs[1], mask_path)
        progress(2, 2, "writing")
        timings["cog"] = time.perf_counter() - t0
    except BaseException:
        reader.stop()
        if blender is not None:
            blender.abort()
        if started:
            reader.close()
        for t in strips + cogs:
            _remove_quietly(t)
        raise
    finally:
        reader.stop()
        timings["read"] = reader.read_s
    timings["total"] = time.perf_counter() - t_start
    log.info("%s: inference done in %.2f s (%s)", src_path, timings["total"],
             ", ".join(f"{k}={v:.2f}" for k, v in timings.items()))
    assert blender is not None and blender.acc is not None
    return InferenceResult(
        prob_path=prob_path,
        mask_path=mask_path,
        window=plan.area,
        crs=plan.info.crs,
        transform=plan.transform,
        width=int(plan.area.width),
        height=int(plan.area.height),
        num_classes=int(blender.acc.num_classes),
        bands=plan.bands,
        tiles=len(plan.tiles),
        valid_pixels=blender.valid_pixels,
        positive_pixels=blender.positive_pixels,
        resolution_m=plan.info.resolution_m,
        strip_rows=blender.acc.buffer_rows,
        timings=timings,
    )


def _predict_into(reader: TileBatchReader, predict_fn: PredictFn,
                  open_blender: Callable[[int], _Blender], workers: int,
                  timings: Dict[str, float], progress: ProgressFn,
                  cancel: Callable[[], bool], src: str) -> None:
    """The inference loop: every batch of ``reader`` through ``predict_fn`` (``workers``
    concurrent calls on consecutive batches), handed to the blender in tile order; the blender
    is opened by ``open_blender(K)`` once the first result tells the class count K."""
    total = len(reader.plan.tiles)
    done = 0
    num_classes: Optional[int] = None
    blender: Optional[_Blender] = None
    progress(0, total, "inference")
    pool = (ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gis-predict")
            if workers > 1 else None)
    pending: "deque" = deque()  # (batch, valid, future | (probs, seconds)), in tile order

    def timed_predict(x: np.ndarray) -> Tuple[np.ndarray, float]:
        t = time.perf_counter()
        return _call_predict(predict_fn, x), time.perf_counter() - t

    def hand_over() -> None:
        """Oldest batch's probabilities -> the blender (tile order is kept)."""
        nonlocal num_classes, blender, done
        batch, valid, fut = pending.popleft()
        probs, dt = fut.result() if pool is not None else fut
        timings["predict"] += dt / workers  # concurrent calls: busy time per worker
        if num_classes is None:
            num_classes = int(probs.shape[1])
            blender = open_blender(num_classes)
        elif probs.shape[1] != num_classes:
            raise InferenceError(
                f"predict_fn returned {probs.shape[1]} classes after {num_classes} earlier"
            )
        assert blender is not None
        blender.put((batch, probs, valid))
        done += len(batch)
        progress(done, total, "inference")

    batches = iter(reader)
    try:
        while True:
            if cancel():
                raise CancelledError(f"{src}: cancelled after {done} of {total} tiles")
            t0 = time.perf_counter()
            item = next(batches, None)
            timings["wait"] += time.perf_counter() - t0
            if item is None:
                break
            if pool is None:
                pending.append((item.tiles, item.valid, timed_predict(item.x)))
            else:
                pending.append((item.tiles, item.valid, pool.submit(timed_predict, item.x)))
            while len(pending) >= workers:
                hand_over()
        while pending:
            hand_over()
    finally:
        if pool is not None:
            for entry in pending:
                entry[2].cancel()
            pool.shutdown(wait=True)
