"""The main job, GeoTIFF -> road network, as one Qt-free service call (CLI and GUI share it).

:func:`run_extraction` wires the two libraries together (README: "The main job" for the
outputs, "Layout" for which module owns which stage)::

    gis.io.open_raster (validate) -> segcore.predict.load_predictor (weights + metadata)
      -> gis.inference.run_tiled_inference(predict_fn)  -> <stem>_prob.tif, <stem>_mask.tif (COGs)
      -> gis.vectorize (centre lines, nodes, optional polygons)
      -> gis.vector_io.write_vectors                    -> <stem>_roads.gpkg (.shp/.geojson) + .qml
      -> <stem>_summary.json

``segcore`` and ``gis`` never see each other: the service hands the predictor's
``predict_batch`` to the tiled inference as a plain ``predict_fn(batch) -> probs`` callable and
turns the checkpoint metadata (bands, normalisation, tile size) into the inference arguments.

All-or-nothing outputs: everything is written into a hidden staging directory inside ``out_dir``
(:mod:`app.service.staging`) and moved into place only when the whole set is complete. A failed
or cancelled run removes the staging directory and leaves files from earlier runs untouched;
existing outputs are refused unless ``overwrite=True`` (checked before any work starts, and again
just before the commit).

Progress is reported through ``on_progress(done, total, stage)`` with the stages
:data:`STAGES` (``read``, ``infer``, ``mosaic``, ``vectorize``, ``write``); ``should_cancel()`` is
polled between batches and stages.

The parts around the job have their own modules: :mod:`app.service.requests` (request, result,
constants), :mod:`app.service.checkpoints`, :mod:`app.service.grid` (processing resolution),
:mod:`app.service.vectors` (mask -> vectors, edited networks), :mod:`app.service.preview` and
:mod:`app.service.rasters`. Their public names are re-exported here.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from app.service.checkpoints import (CHECKPOINT_SUFFIXES, CheckpointEntry,  # noqa: F401
                                     default_checkpoint_dirs, list_checkpoints,
                                     resolve_checkpoint)
from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error, disk_full_error
from app.service.grid import GSD_TOLERANCE, ProcessingGrid, processing_grid  # noqa: F401
from app.service.preview import make_preview, raster_overview
from app.service.rasters import raster_info
from app.service import requests as _requests
from app.service.requests import (BACKENDS, DEVICES, FORMATS, PRECISIONS,  # noqa: F401
                                  STAGES, TTA_MODES, CancelFn, ExtractionRequest,
                                  ExtractionResult, PathLike, PredictFn, ProgressFn,
                                  VectorizeParams, VectorizeResult, cancel_checker, output_paths,
                                  stage_progress)
from app.service.staging import Staging, refuse_existing
from app.service.staging import recover as recover_outputs
from app.service.vectors import (PIXEL_CRS_WKT, check_crs, check_pixel_formats,  # noqa: F401
                                 crs_string, export_network, inference_mask_source,
                                 network_summary, outputs_by_role, read_network, vector_targets,
                                 vectorize_mask, vectorize_mask_source, write_network)
from gis.errors import CancelledError
from gis.tiff_quiet import quiet_libtiff_errors
from segcore.meta import meta_get

__all__ = [
    *_requests.__all__,
    "CHECKPOINT_SUFFIXES",
    "GSD_TOLERANCE",
    "PIXEL_CRS_WKT",
    "CheckpointEntry",
    "run_extraction",
    "raster_info",
    "vectorize_mask",
    "export_network",
    "list_checkpoints",
    "make_preview",
    "read_network",
    "raster_overview",
    "default_checkpoint_dirs",
    "resolve_checkpoint",
    "input_normalizer",
]

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    return str(as_user_error(exc))


def _refuse_constant(info: Any, bands: Sequence[int], image: str) -> None:
    """A blank image (every used band one value) has nothing to detect: networks still paint
    "roads" on it (a 26 m road on an all-zero image), so it is refused in one line."""
    from gis.io import constant_value

    const = constant_value(info.path, bands)
    if const is not None:
        vals = ", ".join(f"{v:g}" for v in dict.fromkeys(const))
        raise UserError(f"{image}: the image is constant (every pixel of band(s) "
                        f"{', '.join(str(b) for b in dict.fromkeys(bands))} is {vals}): "
                        "nothing to detect roads in")


# --------------------------------------------------------------------------------------------
# the model: predictor, input normalisation and bands
# --------------------------------------------------------------------------------------------
@dataclass
class _Model:
    predict_fn: PredictFn
    normalize: Any
    bands: Optional[Tuple[int, ...]]
    tile_size_px: Optional[int]
    info: Dict[str, Any]
    workers: int = 1  # concurrent predict_fn calls (thread-safe ONNX Runtime sessions)
    gsd_m: Optional[float] = None  # ground resolution the network was trained at


_EIGHT_BIT_METHODS = ("meanstd", "imagenet", "uint8", "dlinknet")


def _normalizer_for(meta: Any, info: Any,
                    bands: Tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """The input normalisation of the checkpoint for this raster (a
    :class:`segcore.preprocess.Preprocessor`; gis only reads the scene statistics).

    ``percentile`` models get the stretch computed once over the whole raster (never per tile).
    Models trained on 8-bit imagery (``meanstd``/``dlinknet`` with a 0..255 scale) fed a
    non-uint8 raster (11/16-bit, float) first get the raster's 2-98 % stretch to 8-bit levels,
    i.e. the ``percentile`` method with the model's own mean/std.
    """
    from gis.io import compute_stretch
    from segcore.preprocess import preprocessor_from_meta

    base = preprocessor_from_meta(meta)
    if base.method == "percentile":
        lo, hi = compute_stretch(info.path, bands, percentiles=(base.low_pct, base.high_pct))
        return base.with_limits(lo, hi)
    dtypes = {info.dtypes[b - 1] for b in bands}
    if dtypes != {"uint8"} and base.method in _EIGHT_BIT_METHODS and (
            base.method == "dlinknet" or abs(base.scale - 1.0 / 255.0) < 1e-12):
        c = len(bands)
        a, b = base.output_affine(c)  # y = raw * a + b with a = 1 / (255 std), b = -mean / std
        std = tuple(float(1.0 / (255.0 * v)) for v in a)
        mean = tuple(float(-bv * sv) for bv, sv in zip(b, std))
        lo, hi = compute_stretch(info.path, bands)
        log.info("%s: %s data stretched (2-98 %%) to 8-bit levels for a model trained on 8-bit "
                 "imagery", info.path, "/".join(sorted(dtypes)))
        return preprocessor_from_meta({"method": "percentile", "mean": mean, "std": std},
                                      stretch=(lo, hi))
    return base


def input_normalizer(meta: Any, image: PathLike, bands: Sequence[int]
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """The checkpoint's input normalisation for ``image`` (what :func:`run_extraction` applies).

    For host-side pipelines that run the network elsewhere (``ascend310/preprocess.py``):
    ``meta`` is a :class:`segcore.checkpoint.CheckpointMeta` or the metadata dict written beside
    an exported model; ``bands`` are 1-based.
    """
    from gis.io import open_raster

    try:
        info = open_raster(image, allow_pixel_coords=True)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    return _normalizer_for(meta, info, tuple(int(b) for b in bands))


def _load_model(req: ExtractionRequest, info: Any) -> _Model:
    """Predictor and preprocessing of ``req`` (checkpoint metadata or injected predict_fn)."""
    if req.predict_fn is not None:
        return _Model(
            predict_fn=req.predict_fn, normalize=req.normalization, bands=req.bands,
            tile_size_px=req.tile_size_px,
            info={"name": req.model or "custom predict_fn", "checkpoint": None,
                  "backend": "callable", "device": None},
        )
    ckpt = resolve_checkpoint(req.model, req.checkpoint)
    from segcore.predict import concurrent_call_threads, load_predictor

    tile = req.tile_size_px
    load_kw: Dict[str, Any] = {}
    if ckpt.suffix.lower() not in (".onnx", ".mindir"):
        from segcore.checkpoint import read_metadata

        meta = read_metadata(ckpt)  # cheap checks before loading weights
        if req.model is not None and meta.model != req.model:
            raise UserError(f"{ckpt}: checkpoint holds model {meta.model!r}, not {req.model!r}")
        tile = int(tile or meta.tile_size_px)
        stride = max(1, int(meta.stride or 1))
        side = -(-tile // stride) * stride
        load_kw["input_hw"] = (side, side)
        _check_bands(req.bands or tuple(meta.bands), int(meta.in_channels), info, ckpt)
    # ONNX Runtime on the CPU: threads for the pipeline's concurrent inference workers (see
    # gis.inference.run_tiled_inference; MindSpore predictors ignore it)
    load_kw["threads"] = concurrent_call_threads()
    load_kw["precision"] = req.precision
    if req.precision == "int8":
        from app.service.calibration import calibration_provider

        load_kw["calibration"] = calibration_provider()
    predictor = load_predictor(str(ckpt), backend=req.backend, device=req.device, **load_kw)
    meta = predictor.meta
    task = str(meta_get(meta, "task", "segmentation"))
    if task != "segmentation":
        raise UserError(f"{ckpt}: a {task} model, not a segmentation model")
    name = meta_get(meta, "model", None)
    if req.model is not None and name is not None and name != req.model:
        raise UserError(f"{ckpt}: checkpoint holds model {name!r}, not {req.model!r}")
    fixed = getattr(predictor, "fixed_hw", None)
    if tile is None:
        tile = int(fixed[0]) if fixed else int(meta_get(meta, "tile_size_px", 512) or 512)
    if fixed and (tile > fixed[0] or tile > fixed[1]):
        raise UserError(f"{ckpt}: exported for {fixed[0]}x{fixed[1]} inputs, tile size {tile} "
                        "px is larger")
    bands = tuple(req.bands or meta_get(meta, "bands", None) or info.default_bands)
    in_ch = (meta_get(meta, "in_channels", None) or getattr(predictor, "in_channels", None)
             or len(bands))
    _check_bands(bands, int(in_ch), info, ckpt)
    normalize = (req.normalization if req.normalization is not None
                 else _normalizer_for(meta, info, bands))
    norm = dict(meta_get(meta, "normalization", None) or {"method": "meanstd"})
    return _Model(
        predict_fn=predictor.predict_batch, normalize=normalize, bands=bands, tile_size_px=tile,
        workers=int(getattr(predictor, "parallel_calls", 1) or 1),
        info={"name": name, "checkpoint": str(ckpt),
              "backend": type(predictor).__name__.replace("Predictor", "").lower() or req.backend,
              "device": req.device, "num_classes": int(meta_get(meta, "num_classes", 0) or 0),
              "precision": str(getattr(predictor, "precision", "fp32")),
              "bands": list(bands), "normalization": norm,
              "epoch": int(meta_get(meta, "epoch", 0) or 0),
              "gsd_m": meta_get(meta, "gsd_m", None),
              "metrics": dict(meta_get(meta, "metrics", None) or {})},
        gsd_m=float(meta_get(meta, "gsd_m", None)) if meta_get(meta, "gsd_m", None) else None,
    )


def _check_bands(bands: Sequence[int], in_channels: int, info: Any, ckpt: Path) -> None:
    bad = [b for b in bands if not 1 <= int(b) <= info.count]
    if bad:
        raise UserError(f"{info.path}: the model reads band {bad[0]} but the raster has "
                        f"{info.count} band(s) (checkpoint {ckpt.name})")
    if len(bands) != in_channels:
        raise UserError(f"{ckpt}: the network takes {in_channels} input bands, band selection "
                        f"{list(bands)} has {len(bands)}")


# --------------------------------------------------------------------------------------------
# the main job
# --------------------------------------------------------------------------------------------
def _return_freed_memory() -> None:
    """Give the memory freed by the last stage back to the system (glibc ``malloc_trim``).

    The raster stage's threads free their buffers into per-thread malloc arenas that glibc keeps;
    without this the vectorization's strips come on top of them (peak 961 -> 810 MB for a
    20000 x 20000 scene), and the GUI's long-lived process would keep them after a run. No-op
    where glibc is absent."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _resolve_aoi(req: ExtractionRequest, info: Any):
    from gis.aoi import aoi_window, bbox_aoi, load_aoi

    if req.aoi is not None:
        aoi = load_aoi(req.aoi)
    elif req.bbox is not None:
        aoi = bbox_aoi(*req.bbox, crs=req.bbox_crs)
    else:
        return None
    aoi_window(aoi, info)  # AOIError when outside the raster
    return aoi


def run_extraction(
    req: ExtractionRequest,
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> ExtractionResult:
    """Run the whole GeoTIFF -> road network job of ``req``; never raises for input problems.

    Outputs in ``req.out_dir`` (``<stem>`` = image file stem): ``<stem>_prob.tif`` and
    ``<stem>_mask.tif`` (uint8 COGs in the image CRS, see :mod:`gis.inference`),
    ``<stem>_roads.gpkg`` (layers of edges and nodes, polygons on request; ``.shp``/``.geojson``
    on request; QGIS ``.qml`` styles) in ``req.target_crs`` or the image CRS, and
    ``<stem>_summary.json`` (the result's ``summary``).

    Args:
        req: the request.
        on_progress: ``on_progress(done, total, stage)`` with ``stage`` in :data:`STAGES`.
        should_cancel: polled between batches and stages; True -> ``status="cancelled"``.

    Returns:
        :class:`ExtractionResult`; ``status`` ``success``, ``failed`` (``error`` holds one line
        naming the file and the problem) or ``cancelled``. Failed and cancelled runs leave no
        files behind and earlier outputs untouched.
    """
    t_start = time.perf_counter()
    progress = stage_progress(on_progress)
    check = cancel_checker(should_cancel)
    timings: Dict[str, float] = {}
    summary: Dict[str, Any] = {"image": req.image, "parameters": req.to_dict()}
    staging: Optional[Staging] = None
    status = "failed"
    grid: Optional[ProcessingGrid] = None
    # a full disk: our one line, not libtiff's own lines on stderr (gis.tiff_quiet)
    quiet = quiet_libtiff_errors()
    quiet.__enter__()
    try:
        req.validate()
        target_crs = check_crs(req.target_crs, "target CRS")
        check_crs(req.bbox_crs if req.bbox is not None else None, "bbox CRS")
        from gis.inference import run_tiled_inference
        from gis.io import open_raster
        from segcore.onnx_infer import available_cores
        from segcore.tta import with_tta

        # ---- read: validate inputs and outputs, load the model -----------------------------
        t0 = time.perf_counter()
        progress(0, 3, "read")
        info = open_raster(req.image, allow_pixel_coords=req.allow_pixel_coords)
        check_pixel_formats(info.crs is None, req.formats, target_crs, req.image)
        aoi = _resolve_aoi(req, info)
        paths = output_paths(req)
        stem = req.stem or Path(req.image).stem
        recover_outputs(Path(req.out_dir))  # finish a commit a killed run left behind
        refuse_existing([paths["prob"], paths["mask"], paths["summary"]]
                         + vector_targets(paths[f"roads_{req.formats[0]}"], req.formats,
                                           req.polygons), req.overwrite)
        progress(1, 3, "read")
        check("while reading the input")
        model = _load_model(req, info)
        tile = int(model.tile_size_px or 512)
        overlap = int(req.overlap_px if req.overlap_px is not None else tile // 8)
        if overlap * 2 >= tile:
            raise UserError(f"overlap {overlap} px must be less than half the tile size {tile} px")
        bands = model.bands or info.default_bands
        bad = [b for b in bands if not 1 <= b <= info.count]
        if bad:
            raise UserError(f"{req.image}: band {bad[0]} requested but the raster has "
                            f"{info.count} band(s)")
        _refuse_constant(info, bands, req.image)
        grid = processing_grid(req, info, model.gsd_m)
        progress(2, 3, "read")
        check("after loading the model")
        staging = Staging(Path(req.out_dir))
        timings["read"] = time.perf_counter() - t0
        progress(3, 3, "read")

        # ---- infer + mosaic ----------------------------------------------------------------
        marks: Dict[str, float] = {}

        def inference_progress(done: int, total: int, stage: str) -> None:
            if stage != "inference":
                marks.setdefault("mosaic", time.perf_counter())
            progress(done, total, "infer" if stage == "inference" else "mosaic")

        t0 = time.perf_counter()
        inf = run_tiled_inference(
            grid.path, with_tta(model.predict_fn, req.tta),
            staging.path(paths["prob"].name), staging.path(paths["mask"].name),
            tile_size_px=tile, overlap_px=overlap, batch_size=int(req.batch_size),
            bands=tuple(bands), normalize=model.normalize,
            threshold=float(req.threshold), aoi=aoi, on_progress=inference_progress,
            should_cancel=should_cancel, overwrite=False,
            allow_pixel_coords=req.allow_pixel_coords, inference_workers=model.workers,
            cog_threads=available_cores(),
        )
        t1 = time.perf_counter()
        # wall time of tiling + prediction + blending, then of the COG conversion
        timings["infer"] = marks.get("mosaic", t1) - t0
        timings["mosaic"] = t1 - marks.get("mosaic", t1)
        # the network is done with: drop the predictor (an ONNX Runtime session and its arena,
        # ~90 MB for the bundled model) before the vectorizer's libraries and strips come in
        model.predict_fn = None
        check("after inference")

        # ---- vectorize -------------------------------------------------------------------------
        t0 = time.perf_counter()
        progress(0, 6, "vectorize")
        _return_freed_memory()
        net = vectorize_mask_source(inference_mask_source(inf), req.vectorize, req.polygons,
                                lambda d, t, s: progress(d, t, "vectorize"), should_cancel)
        timings["vectorize"] = time.perf_counter() - t0
        check("after vectorizing")

        # ---- write -----------------------------------------------------------------------------
        t0 = time.perf_counter()
        total_w = len(req.formats) + 2
        progress(0, total_w, "write")
        done = write_network(net, staging, stem, req.formats, target_crs, progress, 0, total_w)
        # ground area of the valid pixels (geodesic for geographic rasters, gis.io)
        win_area = grid.info.area_m2(inf.window) if info.crs is not None else None
        area_km2 = (win_area * inf.valid_pixels / max(1, inf.width * inf.height) / 1e6
                    if win_area is not None else None)
        netsum = network_summary(net)
        summary.update({
            "status": "success",
            "crs": crs_string(inf.crs),
            "vector_crs": target_crs or crs_string(inf.crs),
            "units": "m" if inf.crs is not None else "px",
            "resolution_m": list(info.resolution_m) if info.resolution_m else None,
            "window": [int(inf.window.col_off), int(inf.window.row_off), inf.width, inf.height],
            "processing_grid": grid.summary(),
            **netsum,
            "area_km2": area_km2,
            "road_density_km_per_km2": (netsum["road_km"] / area_km2) if area_km2 else None,
            "road_pixel_fraction": inf.positive_fraction,
            "valid_pixels": int(inf.valid_pixels),
            "tiles": int(inf.tiles),
            "tile_size_px": tile,
            "overlap_px": overlap,
            "bands": list(inf.bands),
            "tta": req.tta,
            "model": model.info,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        final = [Path(req.out_dir) / p.name for p in staging.files()] + [paths["summary"]]
        summary["outputs"] = outputs_by_role(final, stem)
        timings["write"] = time.perf_counter() - t0
        summary["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
        summary["timings_s"]["total"] = round(time.perf_counter() - t_start, 3)
        summary["inference_timings_s"] = {k: round(float(v), 3) for k, v in inf.timings.items()}
        with open(staging.path(paths["summary"].name), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
            f.write("\n")
        progress(done + 1, total_w, "write")
        check("before moving the outputs into place")
        committed = staging.commit(req.overwrite)
        progress(total_w, total_w, "write")
        status = "success"
        outputs = outputs_by_role(committed, stem)
        log.info("%s: %.2f km of road, %d edges -> %s", req.image, netsum["road_km"],
                 netsum["edges"], req.out_dir)
        return ExtractionResult("success", outputs, summary, None, False,
                                time.perf_counter() - t_start)
    except CancelledError as exc:
        status = "cancelled"
        log.info("%s: %s", req.image, exc)
        return ExtractionResult("cancelled", {}, summary, _one_line(exc), False,
                                time.perf_counter() - t_start)
    except UserError as exc:
        return ExtractionResult("failed", {}, summary, str(exc), False,
                                time.perf_counter() - t_start)
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        log.debug("extraction failed", exc_info=True)
        full = disk_full_error(exc, req.out_dir)
        return ExtractionResult("failed", {}, summary, str(full) if full else _one_line(exc),
                                False, time.perf_counter() - t_start)
    except Exception as exc:  # noqa: BLE001 - a bug: keep the traceback in the log
        full = disk_full_error(exc, req.out_dir)
        if full is not None:
            log.debug("extraction failed", exc_info=True)
            return ExtractionResult("failed", {}, summary, str(full), False,
                                    time.perf_counter() - t_start)
        log.exception("%s: extraction failed unexpectedly", req.image)
        return ExtractionResult("failed", {}, summary,
                                f"unexpected error: {type(exc).__name__}: {_one_line(exc)}",
                                True, time.perf_counter() - t_start)
    finally:
        if staging is not None:
            staging.discard(failed=status != "success")
        if grid is not None:
            grid.close()
        _return_freed_memory()
        quiet.__exit__(None, None, None)
