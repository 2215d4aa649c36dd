"""Requests and results of the extraction services, and the callbacks they report through.

:class:`ExtractionRequest` is what the CLI options and the GUI panels build for
:func:`app.service.extraction.run_extraction`; :class:`ExtractionResult` and
:class:`VectorizeResult` are what the services hand back. Qt-free and light to import (no
GDAL/geopandas): the CLI's ``--help`` and the GUI's panels import it at start-up.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from app.service.errors import UserError
from gis.errors import CancelledError
from gis.vectorize_params import VectorizeParams  # not gis.vectorize: ~1.4 s of imports
from segcore.tta import TTA_MODES

__all__ = [
    "STAGES",
    "FORMATS",
    "TTA_MODES",
    "BACKENDS",
    "DEVICES",
    "PRECISIONS",
    "ExtractionRequest",
    "ExtractionResult",
    "VectorizeParams",
    "VectorizeResult",
    "output_paths",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]
PredictFn = Callable[[np.ndarray], np.ndarray]

#: progress stages of :func:`run_extraction`, in order
STAGES: Tuple[str, ...] = ("read", "infer", "mosaic", "vectorize", "write")
#: vector output formats (file suffixes)
FORMATS: Tuple[str, ...] = ("gpkg", "shp", "geojson")
BACKENDS: Tuple[str, ...] = ("auto", "mindspore", "onnx")
DEVICES: Tuple[str, ...] = ("cpu", "gpu", "ascend")
PRECISIONS: Tuple[str, ...] = ("auto", "fp32", "int8")


@dataclass(frozen=True)
class ExtractionRequest:
    """Everything one extraction run needs; built by the CLI options or the GUI panels.

    Attributes:
        image: input GeoTIFF.
        out_dir: output directory (created when missing; removed again when a run that created
            it fails or is cancelled).
        model: registered model name. With ``checkpoint`` it must match the checkpoint's
            metadata; alone it picks the checkpoint of that model from
            :func:`default_checkpoint_dirs`.
        checkpoint: ``.ckpt`` (with its ``.json`` metadata sidecar) or an exported ``.onnx`` /
            ``.mindir`` file. Neither
            ``model`` nor ``checkpoint``: the bundled ``resources/models/road_demo.ckpt``.
        backend: ``auto``, ``mindspore`` or ``onnx`` (see ``segcore.predict.load_predictor``).
        precision: ONNX on the CPU: ``fp32``, ``int8`` (made at first use, calibrated on the
            bundled sample scene) or ``auto`` (int8 where one is cached and the CPU has VNNI).
        device: ``cpu``, ``gpu`` or ``ascend``.
        aoi: vector file (GeoJSON/GPKG/SHP, any CRS) whose polygons bound the processed area.
        bbox: ``(minx, miny, maxx, maxy)`` in ``bbox_crs``; alternative to ``aoi``.
        bbox_crs: CRS of ``bbox`` (default lon/lat).
        tile_size_px: inference tile size; default the checkpoint's ``tile_size_px`` (the
            predictor pads tiles up to a multiple of the network stride).
        overlap_px: overlap between tiles; default ``tile_size_px // 8``.
        batch_size: tiles per forward pass.
        tta: ``none``, ``flips`` (3 passes) or ``d4`` (8 passes).
        threshold: road probability threshold of the mask (0..1).
        vectorize: centre-line thresholds in metres (:class:`gis.vectorize.VectorizeParams`).
        formats: vector formats to write, any of :data:`FORMATS` (GeoPackage always first).
        polygons: also write road-surface polygons.
        target_crs: CRS of the vector outputs (default the raster CRS); rasters keep theirs.
        overwrite: replace existing outputs.
        allow_pixel_coords: accept a raster without CRS; outputs are then in pixel coordinates
            and metre thresholds are applied as if one pixel were one metre.
        bands: 1-based source bands fed to the network (default: the checkpoint's bands).
        normalization: override of the input normalisation: a ``gis.io.make_normalizer`` method
            name or keyword mapping, or a callable ``(N,C,H,W) raw float32 -> normalised``.
            Default: the checkpoint metadata (with ``predict_fn`` and no override: ``auto``).
        predict_fn: a ready ``float32 (N,C,T,T) -> (N,K,T,T)`` probability callable used instead
            of loading a checkpoint (tests, custom models, remote inference).
        stem: base name of the outputs (default the image's file stem).
    """

    image: str
    out_dir: str
    model: Optional[str] = None
    checkpoint: Optional[str] = None
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    aoi: Optional[str] = None
    bbox: Optional[Tuple[float, float, float, float]] = None
    bbox_crs: str = "EPSG:4326"
    tile_size_px: Optional[int] = None
    overlap_px: Optional[int] = None
    batch_size: int = 2
    tta: str = "none"
    threshold: float = 0.5
    vectorize: VectorizeParams = field(default_factory=VectorizeParams)
    formats: Tuple[str, ...] = ("gpkg",)
    polygons: bool = False
    target_crs: Optional[str] = None
    overwrite: bool = False
    allow_pixel_coords: bool = False
    bands: Optional[Tuple[int, ...]] = None
    normalization: Any = field(default=None, compare=False)
    predict_fn: Optional[PredictFn] = field(default=None, compare=False, repr=False)
    stem: Optional[str] = None
    #: processing ground resolution: None = the model's ``gsd_m`` (input used as is for models
    #: without one), ``"native"`` = never resample, or metres per pixel
    gsd: Optional[Union[str, float]] = None
    #: ground resolution of a raster without CRS (with ``allow_pixel_coords``), metres per pixel
    input_gsd_m: Optional[float] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "image", str(self.image))
        object.__setattr__(self, "out_dir", str(self.out_dir))
        if self.checkpoint is not None:
            object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if self.aoi is not None:
            object.__setattr__(self, "aoi", str(self.aoi))
        if self.bbox is not None:
            object.__setattr__(self, "bbox", tuple(float(v) for v in self.bbox))
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(b) for b in self.bands))
        fmts = tuple(dict.fromkeys(str(f).lower().lstrip(".") for f in (self.formats or ("gpkg",))))
        object.__setattr__(self, "formats", fmts)

    def validate(self) -> None:
        """Check option values (not files). Raises :class:`UserError` with one line."""
        if self.aoi is not None and self.bbox is not None:
            raise UserError("give either an AOI file or a bbox, not both")
        if self.bbox is not None and len(self.bbox) != 4:
            raise UserError(f"bbox needs 4 numbers (minx miny maxx maxy), got {len(self.bbox)}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise UserError(f"unknown output format {bad[0] if bad else ''!r} "
                            f"(choose from {', '.join(FORMATS)})")
        if self.tta not in TTA_MODES:
            raise UserError(f"unknown TTA mode {self.tta!r} (choose from {', '.join(TTA_MODES)})")
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r} (choose from {', '.join(BACKENDS)})")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r} (choose from "
                            f"{', '.join(PRECISIONS)})")
        if self.device not in DEVICES:
            raise UserError(f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise UserError(f"threshold must be between 0 and 1, got {self.threshold}")
        if int(self.batch_size) < 1:
            raise UserError(f"batch size must be at least 1, got {self.batch_size}")
        if self.tile_size_px is not None and int(self.tile_size_px) < 8:
            raise UserError(f"tile size must be at least 8 pixels, got {self.tile_size_px}")
        if self.overlap_px is not None and int(self.overlap_px) < 0:
            raise UserError(f"overlap must be >= 0 pixels, got {self.overlap_px}")
        if self.stem is not None and (not self.stem or "/" in self.stem or os.sep in self.stem):
            raise UserError(f"invalid output name {self.stem!r}")
        if self.gsd is not None and str(self.gsd).lower() != "native":
            try:
                g = float(self.gsd)
            except (TypeError, ValueError):
                raise UserError(f"--gsd must be metres per pixel or 'native', got {self.gsd!r}") \
                    from None
            if not g > 0:
                raise UserError(f"--gsd must be > 0 m, got {self.gsd}")
        if self.input_gsd_m is not None and not float(self.input_gsd_m) > 0:
            raise UserError(f"--input-gsd must be > 0 m, got {self.input_gsd_m}")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready parameters (``predict_fn`` and callables are described, not serialised)."""
        d: Dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "vectorize":
                v = dataclasses.asdict(v)
            elif f.name == "predict_fn":
                v = None if v is None else getattr(v, "__qualname__", type(v).__name__)
            elif f.name == "normalization" and v is not None and not isinstance(v, (str, Mapping)):
                v = getattr(v, "__qualname__", type(v).__name__)
            elif isinstance(v, tuple):
                v = list(v)
            d[f.name] = v
        return d


@dataclass(frozen=True)
class ExtractionResult:
    """Outcome of :func:`run_extraction`.

    Attributes:
        status: ``"success"``, ``"failed"`` or ``"cancelled"``.
        outputs: file name without the ``<stem>_`` prefix -> path, for every file written
            (``prob.tif``, ``mask.tif``, ``roads.gpkg``, ``roads_edges.gpkg.qml``,
            ``roads_edges.shp``..., ``summary.json``); empty unless ``status == "success"``.
        summary: what :file:`<stem>_summary.json` holds (road km, nodes, edges, components, area,
            timings per stage, model and parameters); partial for failed runs.
        error: one-line message for failed/cancelled runs.
        internal_error: True when the failure was not an input problem (a bug; logged with its
            traceback).
        elapsed_s: wall time of the run.
    """

    status: str
    outputs: Dict[str, str] = field(default_factory=dict)
    summary: Dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None
    internal_error: bool = False
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def _get(self, key: str) -> Optional[str]:
        return self.outputs.get(key)

    @property
    def prob_path(self) -> Optional[str]:
        return self._get("prob.tif")

    @property
    def mask_path(self) -> Optional[str]:
        return self._get("mask.tif")

    @property
    def roads_path(self) -> Optional[str]:
        """The first vector output (the GeoPackage when written)."""
        for fmt in FORMATS:
            if f"roads.{fmt}" in self.outputs:
                return self.outputs[f"roads.{fmt}"]
        return next((v for k, v in self.outputs.items() if k.startswith("roads_")
                     and not k.endswith(".qml") and k.endswith((".shp", ".geojson"))), None)

    @property
    def summary_path(self) -> Optional[str]:
        return self._get("summary.json")


@dataclass(frozen=True)
class VectorizeResult:
    """Outcome of :func:`vectorize_mask` / :func:`export_network`: files written (keyed by name
    without the output stem: ``gpkg``, ``edges.gpkg.qml``, ``edges.shp``...) and a summary
    (``road_km``, ``edges``, ``nodes``, ``components``)."""

    outputs: Dict[str, str]
    summary: Dict[str, Any]


def stage_progress(on_progress: Optional[ProgressFn]) -> ProgressFn:
    if on_progress is None:
        return lambda done, total, stage: None

    def report(done: int, total: int, stage: str) -> None:
        try:
            on_progress(int(done), int(total), stage)
        except Exception:  # a broken progress display must not kill the run
            log.exception("progress callback failed")

    return report


def cancel_checker(should_cancel: Optional[CancelFn]) -> Callable[[str], None]:
    def check(where: str) -> None:
        if should_cancel is not None and should_cancel():
            raise CancelledError(f"cancelled {where}")

    return check


def output_paths(req: ExtractionRequest) -> Dict[str, Path]:
    """The main output files of ``req``: ``prob``, ``mask``, ``roads_<fmt>`` per format and
    ``summary`` (vector writers may add companion files such as ``.shx``/``.dbf``/``.qml``)."""
    out = Path(req.out_dir)
    stem = req.stem or Path(req.image).stem
    paths = {
        "prob": out / f"{stem}_prob.tif",
        "mask": out / f"{stem}_mask.tif",
    }
    for fmt in req.formats:
        paths[f"roads_{fmt}"] = out / f"{stem}_roads.{fmt}"
    paths["summary"] = out / f"{stem}_summary.json"
    return paths
