"""The main job, GeoTIFF -> road network, as one Qt-free service call (CLI and GUI share it).

:func:`run_extraction` wires the two libraries together the way DESIGN.md draws it::

    gis.io.open_raster (validate) -> segcore.predict.load_predictor (weights + metadata)
      -> gis.inference.run_tiled_inference(predict_fn)  -> <stem>_prob.tif, <stem>_mask.tif (COGs)
      -> gis.vectorize (centre lines, nodes, optional polygons)
      -> gis.vector_io.write_vectors                    -> <stem>_roads.gpkg (.shp/.geojson) + .qml
      -> <stem>_summary.json

``segcore`` and ``gis`` never see each other: the service hands the predictor's
``predict_batch`` to the tiled inference as a plain ``predict_fn(batch) -> probs`` callable and
turns the checkpoint metadata (bands, normalisation, tile size) into the inference arguments.

All-or-nothing outputs: everything is written into a hidden staging directory inside ``out_dir``
and moved into place only when the whole set is complete. A failed or cancelled run removes the
staging directory and leaves files from earlier runs untouched; existing outputs are refused
unless ``overwrite=True`` (checked before any work starts, and again just before the commit).

Progress is reported through ``on_progress(done, total, stage)`` with the stages
:data:`STAGES` (``read``, ``infer``, ``mosaic``, ``vectorize``, ``write``); ``should_cancel()`` is
polled between batches and stages.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import os
import sys
import time
import uuid
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import escape

import numpy as np

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error, disk_full_error
from app.service.staging import Staging
from app.service.staging import recover as recover_outputs
from gis.errors import CancelledError, OutputDirError, OutputExistsError
from gis.tiff_quiet import quiet_libtiff_errors
from gis.vectorize_params import VectorizeParams  # not gis.vectorize: ~1.4 s of imports
from segcore.tta import TTA_MODES

__all__ = [
    "STAGES",
    "FORMATS",
    "TTA_MODES",
    "BACKENDS",
    "DEVICES",
    "ExtractionRequest",
    "VectorizeParams",
    "ExtractionResult",
    "VectorizeResult",
    "CheckpointEntry",
    "run_extraction",
    "output_paths",
    "raster_info",
    "vectorize_mask",
    "export_network",
    "list_checkpoints",
    "make_preview",
    "read_network",
    "raster_overview",
    "default_checkpoint_dirs",
    "resolve_checkpoint",
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
#: checkpoint file suffixes :func:`list_checkpoints` looks for
CHECKPOINT_SUFFIXES: Tuple[str, ...] = (".ckpt", ".onnx", ".mindir")
#: CRS used internally to vectorize rasters without CRS (1 pixel = 1 unit); never written out
_PIXEL_FRAME_CRS = "EPSG:3857"
#: engineering CRS (pixel units, rows down) given to vectors of rasters without CRS
PIXEL_CRS_WKT = (
    'ENGCRS["raster pixel grid",EDATUM["raster pixels"],CS[Cartesian,2],'
    'AXIS["column (x)",east,ORDER[1],LENGTHUNIT["pixel",1]],'
    'AXIS["row (y)",south,ORDER[2],LENGTHUNIT["pixel",1]]]'
)

_REPO_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# requests and results
# --------------------------------------------------------------------------------------------
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


@dataclass(frozen=True)
class CheckpointEntry:
    """A checkpoint found by :func:`list_checkpoints`.

    ``meta`` is the ``segcore.checkpoint.CheckpointMeta``; ``label`` a short text for pickers.
    """

    path: str
    meta: Any
    size_bytes: int
    modified: str

    @property
    def label(self) -> str:
        m = self.meta
        bands = ",".join(str(b) for b in m.bands)
        return f"{Path(self.path).name} ({m.model}, {m.num_classes} class(es), bands {bands})"

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "size_bytes": self.size_bytes, "modified": self.modified,
                "meta": self.meta.to_dict()}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    return str(as_user_error(exc))


def _stage_progress(on_progress: Optional[ProgressFn]) -> ProgressFn:
    if on_progress is None:
        return lambda done, total, stage: None

    def report(done: int, total: int, stage: str) -> None:
        try:
            on_progress(int(done), int(total), stage)
        except Exception:  # a broken progress display must not kill the run
            log.exception("progress callback failed")

    return report


def _checker(should_cancel: Optional[CancelFn]) -> Callable[[str], None]:
    def check(where: str) -> None:
        if should_cancel is not None and should_cancel():
            raise CancelledError(f"cancelled {where}")

    return check


def _crs_string(crs: Any) -> Optional[str]:
    if crs is None:
        return None
    try:
        epsg = crs.to_epsg()
    except Exception:  # noqa: BLE001
        epsg = None
    if epsg:
        return f"EPSG:{epsg}"
    try:
        return crs.to_string()
    except Exception:  # noqa: BLE001
        return str(crs)


def _check_crs(value: Optional[str], what: str) -> Optional[str]:
    if value is None:
        return None
    from pyproj import CRS as ProjCRS
    from pyproj.exceptions import CRSError as ProjCRSError

    try:
        ProjCRS.from_user_input(value)
    except ProjCRSError as exc:
        raise UserError(f"{what} {value!r} is not a CRS pyproj understands") from exc
    return value


def _role_for(name: str, stem: str) -> str:
    """Key of an output file: its name without the ``<stem>_`` / ``<stem>.`` prefix
    (``img_prob.tif`` -> ``prob.tif``, ``roads.gpkg`` -> ``gpkg``)."""
    if name.startswith(stem) and len(name) > len(stem) and name[len(stem)] in "._":
        return name[len(stem) + 1:]
    return name


# --------------------------------------------------------------------------------------------
# output naming, staging and commit
# --------------------------------------------------------------------------------------------
def _missing_dir(out: Path) -> str:
    """Why ``out``'s folder cannot hold it: the nearest existing ancestor is a file, or the
    folder does not exist."""
    for anc in out.parents:
        if anc.exists():
            if not anc.is_dir():
                return f"{out}: {anc} is a file, not a directory"
            break
    return f"{out}: output directory {out.parent} does not exist"


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


def _vector_targets(main: Path, formats: Sequence[str], polygons: bool) -> List[Path]:
    """Files ``gis.vector_io.write_vectors`` produces for ``main``'s stem in each format
    (GeoPackage: one file; Shapefile/GeoJSON: one file per layer)."""
    from gis.vector_io import layer_paths

    layers = ["edges", "nodes"] + (["polygons"] if polygons else [])
    out: List[Path] = []
    for fmt in formats:
        out.extend(dict.fromkeys(layer_paths(main.with_suffix(f".{fmt}"), layers).values()))
    return out


def _refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    if overwrite:
        return
    for p in paths:
        if p.exists():
            raise OutputExistsError(f"{p}: output exists (use overwrite to replace it)")


# crash-safe staging, commit journal and recovery of interrupted commits: app.service.staging
_Staging = Staging


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def default_checkpoint_dirs() -> List[Path]:
    """Where checkpoints are looked for: ``$ROADSEG_MODELS`` (``os.pathsep``-separated), then
    the project's ``resources/models``."""
    dirs = [Path(p) for p in os.environ.get("ROADSEG_MODELS", "").split(os.pathsep) if p]
    dirs.append(_REPO_ROOT / "resources" / "models")
    return dirs


def _read_any_metadata(path: Path) -> Any:
    """``CheckpointMeta`` of a ``.ckpt`` (``<stem>.json`` sidecar) or an exported ``.onnx``
    or ``.mindir`` (``<name>.json`` written by ``segcore.export``)."""
    from segcore.checkpoint import CheckpointMeta, read_metadata

    if path.suffix.lower() in (".onnx", ".mindir"):
        from segcore.export import read_export_metadata

        return CheckpointMeta.from_dict(read_export_metadata(path))
    return read_metadata(path)


def list_checkpoints(dirs: Optional[Sequence[PathLike]] = None) -> List[CheckpointEntry]:
    """Checkpoints (``.ckpt``/``.onnx``/``.mindir`` with a metadata sidecar) in ``dirs`` (not recursive).

    Files without readable metadata are skipped with a warning in the log. Sorted by directory
    order, then file name. ``dirs`` default: :func:`default_checkpoint_dirs`.
    """
    from segcore.errors import SegcoreError

    found: List[CheckpointEntry] = []
    seen = set()
    for d in (default_checkpoint_dirs() if dirs is None else [Path(x) for x in dirs]):
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            if p.suffix.lower() not in CHECKPOINT_SUFFIXES or not p.is_file():
                continue
            key = p.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                meta = _read_any_metadata(p)
            except (SegcoreError, TypeError, KeyError, ValueError) as exc:
                log.warning("skipping %s: %s", p, exc)
                continue
            st = p.stat()
            found.append(CheckpointEntry(
                path=str(p), meta=meta, size_bytes=int(st.st_size),
                modified=_dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)
                .isoformat(timespec="seconds"),
            ))
    return found


def resolve_checkpoint(model: Optional[str], checkpoint: Optional[str],
                       dirs: Optional[Sequence[PathLike]] = None) -> Path:
    """The checkpoint file a request means.

    ``checkpoint`` given: that file (must exist). Only ``model``: the first checkpoint of that
    model in ``dirs`` (default :func:`default_checkpoint_dirs`). Neither: the bundled demo
    checkpoint ``resources/models/road_demo.ckpt``.

    Raises:
        UserError: nothing suitable found (the message says where it looked).
    """
    if checkpoint is not None:
        p = Path(checkpoint)
        if not p.exists():
            raise UserError(f"{p}: checkpoint file not found")
        if p.is_dir():
            raise UserError(f"{p}: is a directory, not a checkpoint file")
        return p
    search = default_checkpoint_dirs() if dirs is None else [Path(d) for d in dirs]
    if model is not None:
        for entry in list_checkpoints(search):
            if entry.meta.model == model:
                return Path(entry.path)
        raise UserError(f"no checkpoint for model {model!r} in "
                        f"{', '.join(str(d) for d in search)} (pass a checkpoint file)")
    demo = _REPO_ROOT / "resources" / "models" / "road_demo.ckpt"
    if demo.exists():
        return demo
    raise UserError(f"no checkpoint given and the bundled {demo} is not there "
                    "(pass a checkpoint file)")


@dataclass
class _Model:
    predict_fn: PredictFn
    normalize: Any
    bands: Optional[Tuple[int, ...]]
    tile_size_px: Optional[int]
    info: Dict[str, Any]
    workers: int = 1  # concurrent predict_fn calls (thread-safe ONNX Runtime sessions)
    gsd_m: Optional[float] = None  # ground resolution the network was trained at


def _mget(meta: Any, key: str, default: Any = None) -> Any:
    if isinstance(meta, Mapping):
        return meta.get(key, default)
    return getattr(meta, key, default)


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
    task = str(_mget(meta, "task", "segmentation"))
    if task != "segmentation":
        raise UserError(f"{ckpt}: a {task} model, not a segmentation model")
    name = _mget(meta, "model", None)
    if req.model is not None and name is not None and name != req.model:
        raise UserError(f"{ckpt}: checkpoint holds model {name!r}, not {req.model!r}")
    fixed = getattr(predictor, "fixed_hw", None)
    if tile is None:
        tile = int(fixed[0]) if fixed else int(_mget(meta, "tile_size_px", 512) or 512)
    if fixed and (tile > fixed[0] or tile > fixed[1]):
        raise UserError(f"{ckpt}: exported for {fixed[0]}x{fixed[1]} inputs, tile size {tile} "
                        "px is larger")
    bands = tuple(req.bands or _mget(meta, "bands", None) or info.default_bands)
    in_ch = (_mget(meta, "in_channels", None) or getattr(predictor, "in_channels", None)
             or len(bands))
    _check_bands(bands, int(in_ch), info, ckpt)
    normalize = (req.normalization if req.normalization is not None
                 else _normalizer_for(meta, info, bands))
    norm = dict(_mget(meta, "normalization", None) or {"method": "meanstd"})
    return _Model(
        predict_fn=predictor.predict_batch, normalize=normalize, bands=bands, tile_size_px=tile,
        workers=int(getattr(predictor, "parallel_calls", 1) or 1),
        info={"name": name, "checkpoint": str(ckpt),
              "backend": type(predictor).__name__.replace("Predictor", "").lower() or req.backend,
              "device": req.device, "num_classes": int(_mget(meta, "num_classes", 0) or 0),
              "precision": str(getattr(predictor, "precision", "fp32")),
              "bands": list(bands), "normalization": norm,
              "epoch": int(_mget(meta, "epoch", 0) or 0),
              "gsd_m": _mget(meta, "gsd_m", None),
              "metrics": dict(_mget(meta, "metrics", None) or {})},
        gsd_m=float(_mget(meta, "gsd_m", None)) if _mget(meta, "gsd_m", None) else None,
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
# raster facts
# --------------------------------------------------------------------------------------------
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
        "crs": _crs_string(info.crs),
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


# --------------------------------------------------------------------------------------------
# vector writing (shared by run_extraction, vectorize_mask and export_network)
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


def _inference_mask_source(inf: Any):
    """The mask (band 1 non-zero = road) and road probability of the inference outputs, read strip
    by strip (:class:`gis.maskstrips.RasterMaskSource`)."""
    from gis.maskstrips import RasterMaskSource

    prob_path = inf.prob_path if inf.num_classes in (1, 2) else None
    return RasterMaskSource(inf.mask_path, prob_path=prob_path,
                            prob_band=1 if inf.num_classes == 1 else 2)


def _vectorize_source(source: Any, params: VectorizeParams, polygons: bool,
                      on_progress: Optional[ProgressFn], should_cancel: Optional[CancelFn]):
    """:func:`gis.vectorize.vectorize_source` (+ polygons) of a mask source, closed afterwards;
    rasters without CRS are vectorized in a stand-in metric frame (1 px = 1 m) and returned in
    :data:`PIXEL_CRS_WKT`."""
    from gis.vectorize import vectorize_source

    with source:
        crs = source.crs
        frame_crs = crs if crs is not None else _PIXEL_FRAME_CRS
        net = vectorize_source(source, params, on_progress, should_cancel, crs=frame_crs,
                               polygons=polygons)
    if crs is None:
        net.edges = net.edges.set_crs(PIXEL_CRS_WKT, allow_override=True)
        net.nodes = net.nodes.set_crs(PIXEL_CRS_WKT, allow_override=True)
        if net.polygons is not None:
            net.polygons = net.polygons.set_crs(PIXEL_CRS_WKT, allow_override=True)
        net.crs = net.edges.crs
    return net


def _is_pixel_crs(crs: Any) -> bool:
    if crs is None:
        return True
    from pyproj import CRS as ProjCRS

    pc = ProjCRS.from_user_input(crs)
    return not (pc.is_projected or pc.is_geographic)


def _check_pixel_formats(pixel: bool, formats: Sequence[str], target_crs: Optional[str],
                         what: str) -> None:
    if not pixel:
        return
    if target_crs is not None:
        raise UserError(f"{what}: no CRS (pixel coordinates), cannot reproject to {target_crs}")
    if "geojson" in formats:
        raise UserError(f"{what}: no CRS (pixel coordinates); GeoJSON needs lon/lat, "
                        "use gpkg or shp")


def _write_network(net: Any, staging: _Staging, stem: str, formats: Sequence[str],
                   target_crs: Optional[str], progress: ProgressFn, done0: int, total: int) -> int:
    from gis.vector_io import write_vectors

    done = done0
    for fmt in formats:
        path = staging.path(f"{stem}_roads.{fmt}")
        # GeoJSON is always lon/lat (RFC 7946): the target CRS applies to the other formats
        write_vectors(net, path, target_crs=None if fmt == "geojson" else target_crs,
                      overwrite=False, style=True)
        done += 1
        progress(done, total, "write")
    return done


def _network_summary(net: Any) -> Dict[str, Any]:
    s = net.summary()
    return {"road_km": float(s.get("total_km", 0.0)), "edges": int(s.get("edges", 0)),
            "nodes": int(s.get("nodes", 0)), "components": int(s.get("components", 0)),
            "polygons": None if net.polygons is None else int(len(net.polygons)),
            # parts of the mask that are noise or solid road, not traced (gis.vectorize)
            "degenerate_mask": getattr(net, "degenerate", None)}


def _outputs_by_role(paths: Iterable[Path], stem: str) -> Dict[str, str]:
    return {_role_for(p.name, stem): str(p) for p in paths}




# --------------------------------------------------------------------------------------------
# the main job
# --------------------------------------------------------------------------------------------
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


@dataclass
class _Grid:
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


def _processing_grid(req: ExtractionRequest, info: Any, model_gsd: Optional[float]) -> _Grid:
    """Decide the processing ground resolution and, when it differs from the input's, write a
    VRT that resamples the input to it on the fly (area average when shrinking, bilinear when
    enlarging; GDAL reads overviews where present, windows only, so memory stays bounded)."""
    from gis.io import open_raster

    native = req.gsd is not None and str(req.gsd).lower() == "native"
    target = None if native else (float(req.gsd) if req.gsd is not None else model_gsd)
    if info.resolution_m is not None:
        in_gsd = float(np.sqrt(info.resolution_m[0] * info.resolution_m[1]))
    else:
        in_gsd = float(req.input_gsd_m) if req.input_gsd_m else None
    if target is None or (in_gsd is not None and abs(in_gsd / target - 1.0) <= GSD_TOLERANCE):
        return _Grid(info.path, info, target if in_gsd is None else in_gsd, in_gsd, False)
    if in_gsd is None:
        raise UserError(f"{req.image}: raster has no CRS, so its ground resolution is unknown "
                        f"and the model expects {target:g} m: pass --input-gsd METRES (or "
                        "--gsd native to use it as it is)")
    factor = target / in_gsd  # source pixels per processing pixel
    tmpdir = tempfile.mkdtemp(prefix="roadseg-grid-")
    vrt = os.path.join(tmpdir, f"{Path(req.image).stem}_{target:g}m.vrt")
    try:
        _write_resampling_vrt(os.path.abspath(info.path), vrt, factor, info.crs is not None)
        ginfo = open_raster(vrt, allow_pixel_coords=True)
    except BaseException:
        shutil.rmtree(tmpdir, ignore_errors=True)
        raise
    log.info("%s: resampled from %.3g m to the model's %.3g m (%dx%d -> %dx%d px)", req.image,
             in_gsd, target, info.width, info.height, ginfo.width, ginfo.height)
    return _Grid(vrt, ginfo, target, in_gsd, True, tmpdir)


def _write_resampling_vrt(src_path: str, vrt_path: str, factor: float, has_crs: bool) -> None:
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
    progress = _stage_progress(on_progress)
    check = _checker(should_cancel)
    timings: Dict[str, float] = {}
    summary: Dict[str, Any] = {"image": req.image, "parameters": req.to_dict()}
    staging: Optional[_Staging] = None
    status = "failed"
    grid: Optional[_Grid] = None
    # a full disk: our one line, not libtiff's own lines on stderr (gis.tiff_quiet)
    quiet = quiet_libtiff_errors()
    quiet.__enter__()
    try:
        req.validate()
        target_crs = _check_crs(req.target_crs, "target CRS")
        _check_crs(req.bbox_crs if req.bbox is not None else None, "bbox CRS")
        from gis.inference import run_tiled_inference
        from gis.io import open_raster
        from segcore.tta import with_tta

        # ---- read: validate inputs and outputs, load the model -----------------------------
        t0 = time.perf_counter()
        progress(0, 3, "read")
        info = open_raster(req.image, allow_pixel_coords=req.allow_pixel_coords)
        _check_pixel_formats(info.crs is None, req.formats, target_crs, req.image)
        aoi = _resolve_aoi(req, info)
        paths = output_paths(req)
        stem = req.stem or Path(req.image).stem
        recover_outputs(Path(req.out_dir))  # finish a commit a killed run left behind
        _refuse_existing([paths["prob"], paths["mask"], paths["summary"]]
                         + _vector_targets(paths[f"roads_{req.formats[0]}"], req.formats,
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
        grid = _processing_grid(req, info, model.gsd_m)
        progress(2, 3, "read")
        check("after loading the model")
        staging = _Staging(Path(req.out_dir))
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
        net = _vectorize_source(_inference_mask_source(inf), req.vectorize, req.polygons,
                                lambda d, t, s: progress(d, t, "vectorize"), should_cancel)
        timings["vectorize"] = time.perf_counter() - t0
        check("after vectorizing")

        # ---- write -----------------------------------------------------------------------------
        t0 = time.perf_counter()
        total_w = len(req.formats) + 2
        progress(0, total_w, "write")
        done = _write_network(net, staging, stem, req.formats, target_crs, progress, 0, total_w)
        # ground area of the valid pixels (geodesic for geographic rasters, gis.io)
        win_area = grid.info.area_m2(inf.window) if info.crs is not None else None
        area_km2 = (win_area * inf.valid_pixels / max(1, inf.width * inf.height) / 1e6
                    if win_area is not None else None)
        netsum = _network_summary(net)
        summary.update({
            "status": "success",
            "crs": _crs_string(inf.crs),
            "vector_crs": target_crs or _crs_string(inf.crs),
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
        summary["outputs"] = _outputs_by_role(final, stem)
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
        outputs = _outputs_by_role(committed, stem)
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


# --------------------------------------------------------------------------------------------
# mask -> vectors, edited network -> vectors
# --------------------------------------------------------------------------------------------
def _formats_for(out_path: Path, formats: Optional[Sequence[str]]) -> Tuple[str, ...]:
    main = out_path.suffix.lower().lstrip(".")
    if main not in FORMATS:
        raise UserError(f"{out_path}: unknown vector format {out_path.suffix or '(no suffix)'!r} "
                        f"(use {', '.join('.' + f for f in FORMATS)})")
    extra = [str(f).lower().lstrip(".") for f in (formats or ())]
    bad = [f for f in extra if f not in FORMATS]
    if bad:
        raise UserError(f"unknown output format {bad[0]!r} (choose from {', '.join(FORMATS)})")
    return tuple(dict.fromkeys([main] + extra))


def _write_vectors_atomically(net: Any, out_path: Path, formats: Sequence[str],
                              target_crs: Optional[str], overwrite: bool,
                              on_progress: Optional[ProgressFn] = None) -> List[Path]:
    target_crs = _check_crs(target_crs, "target CRS")
    _check_pixel_formats(_is_pixel_crs(net.crs), formats, target_crs, str(out_path))
    stem = out_path.stem
    recover_outputs(out_path.parent)
    _refuse_existing(_vector_targets(out_path, formats, net.polygons is not None), overwrite)
    staging = _Staging(out_path.parent)
    ok = False
    progress = _stage_progress(on_progress)
    try:
        from gis.vector_io import write_vectors

        for i, fmt in enumerate(formats):
            write_vectors(net, staging.path(f"{stem}.{fmt}"),
                          target_crs=None if fmt == "geojson" else target_crs,
                          overwrite=False, style=True)
            progress(i + 1, len(formats), "write")
        committed = staging.commit(overwrite)
        ok = True
        return committed
    finally:
        staging.discard(failed=not ok)


def vectorize_mask(
    mask_path: PathLike,
    out_path: PathLike,
    params: VectorizeParams = VectorizeParams(),
    formats: Optional[Sequence[str]] = None,
    overwrite: bool = False,
    *,
    probability: bool = False,
    prob_path: Optional[PathLike] = None,
    polygons: bool = False,
    target_crs: Optional[str] = None,
    allow_pixel_coords: bool = False,
    on_progress: Optional[ProgressFn] = None,
    should_cancel: Optional[CancelFn] = None,
) -> VectorizeResult:
    """Vectorize an existing road mask (or probability) GeoTIFF into vector files.

    Args:
        mask_path: band 1 is the mask (non-zero and not nodata = road), or with
            ``probability=True`` a probability raster (float 0..1, or uint8 0..254 with 255
            nodata as written by the extraction) thresholded at ``params.threshold``.
        out_path: main output; its suffix (``.gpkg``/``.shp``/``.geojson``) picks the format.
        params: thresholds in metres.
        formats: extra formats written beside ``out_path`` with the same stem.
        overwrite: replace existing outputs.
        prob_path: optional probability raster on the mask's grid (edge ``confidence``).
        polygons: also write road-surface polygons.
        target_crs: CRS of the outputs (default the raster's).
        allow_pixel_coords: accept a raster without CRS (outputs in pixel coordinates).
        on_progress: stages ``vectorize`` and ``write``.

    Returns:
        :class:`VectorizeResult` (files by role and a summary).

    Raises:
        UserError: unreadable input, no CRS, existing output, bad format; nothing is left behind.
    """
    from gis.io import open_raster
    from gis.maskstrips import RasterMaskSource

    progress = _stage_progress(on_progress)
    out = Path(out_path)
    try:
        fmts = _formats_for(out, formats)
        _refuse_existing(_vector_targets(out, fmts, polygons), overwrite)
        if not out.parent.is_dir():
            raise OutputDirError(_missing_dir(out))
        open_raster(mask_path, allow_pixel_coords=allow_pixel_coords)  # readable, CRS or allowed
        if probability:
            source = RasterMaskSource(mask_path, mask_is_probability=True,
                                      threshold=params.threshold)
        else:
            source = RasterMaskSource(mask_path, prob_path=prob_path)
        net = _vectorize_source(source, params, polygons,
                                lambda d, t, s: progress(d, t, "vectorize"), should_cancel)
        written = _write_vectors_atomically(net, out, fmts, target_crs, overwrite, progress)
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise (disk_full_error(exc, out) or as_user_error(exc)) from exc
    except Exception as exc:
        full = disk_full_error(exc, out)
        if full is None:
            raise
        raise full from exc
    summary = _network_summary(net)
    summary.update({"source": str(mask_path), "crs": _crs_string(net.crs),
                    "parameters": dataclasses.asdict(params)})
    return VectorizeResult(_outputs_by_role(written, out.stem), summary)


def _graph_from_tables(edges: Any, nodes: Any):
    import networkx as nx

    g = nx.MultiGraph()
    if "node_id" in nodes.columns:
        for nid, geom in zip(nodes["node_id"], nodes.geometry):
            g.add_node(int(nid), geometry=geom)
    if {"u", "v"} <= set(edges.columns):
        for _, row in edges.iterrows():
            g.add_edge(int(row["u"]), int(row["v"]), **row.to_dict())
    return g


def export_network(
    edges: Any,
    nodes: Any,
    path: PathLike,
    target_crs: Optional[str] = None,
    overwrite: bool = False,
    *,
    formats: Optional[Sequence[str]] = None,
    polygons: Any = None,
) -> VectorizeResult:
    """Write an (edited) network held as GeoDataFrames, e.g. from the GUI's editor.

    Args:
        edges: GeoDataFrame of LineStrings (columns as :class:`gis.vectorize.RoadNetwork`;
            ``length_m`` is recomputed for edited geometry when a CRS is set).
        nodes: GeoDataFrame of Points (``node_id``, ``degree``); may be empty.
        path: main output (``.gpkg``/``.shp``/``.geojson``); ``formats`` adds more beside it.
        target_crs: CRS of the files (default the edges' CRS).
        overwrite: replace existing files.
        polygons: optional road-surface polygon GeoDataFrame.

    Raises:
        UserError: bad format, existing output, unwritable file.
    """
    import geopandas as gpd

    from gis.vectorize import RoadNetwork, VectorizeParams as _VP

    out = Path(path)
    try:
        fmts = _formats_for(out, formats)
        if not isinstance(edges, gpd.GeoDataFrame) or not isinstance(nodes, gpd.GeoDataFrame):
            raise UserError("export_network needs GeoDataFrames of edges and nodes")
        if edges.crs is not None and nodes.crs is not None and edges.crs != nodes.crs \
                and len(nodes):
            nodes = nodes.to_crs(edges.crs)
        edges = edges.copy()
        if edges.crs is None:
            edges = edges.set_crs(PIXEL_CRS_WKT)
            nodes = nodes.set_crs(PIXEL_CRS_WKT, allow_override=True)
        if len(edges):
            from pyproj import CRS as ProjCRS

            pc = ProjCRS.from_user_input(edges.crs)
            if not (pc.is_projected or pc.is_geographic):
                edges["length_m"] = edges.geometry.length  # pixel units
            elif pc.is_projected:
                factor = pc.axis_info[0].unit_conversion_factor if pc.axis_info else 1.0
                edges["length_m"] = edges.geometry.length * float(factor or 1.0)
            else:
                edges["length_m"] = edges.to_crs(edges.estimate_utm_crs()).geometry.length
        if "component" not in edges.columns:
            edges["component"] = 0
        net = RoadNetwork(edges=edges, nodes=nodes, graph=_graph_from_tables(edges, nodes),
                          crs=edges.crs, polygons=polygons, params=_VP())
        if not out.parent.is_dir():
            raise OutputDirError(_missing_dir(out))
        written = _write_vectors_atomically(net, out, fmts, target_crs, overwrite)
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise as_user_error(exc) from exc
    import networkx as nx

    summary = _network_summary(net)
    summary["components"] = int(nx.number_connected_components(net.graph))
    summary["crs"] = _crs_string(net.crs)
    return VectorizeResult(_outputs_by_role(written, out.stem), summary)


# --------------------------------------------------------------------------------------------
# preview picture
# --------------------------------------------------------------------------------------------
#: BGR colours of the preview: centre lines, dead ends, junctions
_PREVIEW_LINE = (0, 215, 255)
_PREVIEW_END = (60, 60, 230)
_PREVIEW_JUNCTION = (230, 120, 40)


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
        _refuse_existing([png], overwrite)
        if not png.parent.is_dir():
            raise OutputDirError(_missing_dir(png))
        ov = read_overview(image_path, max_size=max_size)
        layers = {}
        for name in ("edges", "nodes"):
            try:
                g = gpd.read_file(roads_path, layer=name)
            except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
                raise UserError(f"{roads_path}: cannot read layer {name!r} "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                                ) from exc
            if ov.crs is not None and g.crs is not None and not _is_pixel_crs(g.crs):
                g = g.to_crs(ov.crs.to_wkt())
            layers[name] = g
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError, OSError) as exc:
        raise as_user_error(exc) from exc

    inv = ~ov.transform
    bgr = np.ascontiguousarray(ov.rgb[:, :, ::-1])
    h, w = bgr.shape[:2]
    thick = max(2, int(round(max(h, w) / 350)))
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px

    def to_px(coords: np.ndarray) -> np.ndarray:
        c = np.asarray(coords, dtype=float)[:, :2]
        cols = inv.a * c[:, 0] + inv.b * c[:, 1] + inv.c
        rows = inv.d * c[:, 0] + inv.e * c[:, 1] + inv.f
        return np.round(np.column_stack([cols, rows]) * (1 << shift)).astype(np.int32)

    for geom in layers["edges"].geometry:
        if geom is None or geom.is_empty:
            continue
        parts = getattr(geom, "geoms", [geom])
        for part in parts:
            cv2.polylines(bgr, [to_px(np.asarray(part.coords))], False, _PREVIEW_LINE,
                          thickness=thick, lineType=cv2.LINE_AA, shift=shift)
    nodes = layers["nodes"]
    for geom, deg in zip(nodes.geometry, nodes.get("degree", [0] * len(nodes))):
        if geom is None or geom.is_empty or int(deg) == 2:
            continue
        colour = _PREVIEW_END if int(deg) == 1 else _PREVIEW_JUNCTION
        p = to_px(np.array([[geom.x, geom.y]]))[0]
        cv2.circle(bgr, (int(p[0]), int(p[1])), (thick + 2) << shift, colour, -1, cv2.LINE_AA,
                   shift)
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise UserError(f"{png}: PNG encoding failed")
    tmp = png.with_name(f".{png.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(buf.tobytes())
        if png.exists() and not overwrite:
            raise UserError(f"{png}: output exists (use overwrite to replace it)")
        os.replace(tmp, png)
    finally:
        if tmp.exists():
            tmp.unlink()
    return png


# --------------------------------------------------------------------------------------------
# reading back for viewers/editors
# --------------------------------------------------------------------------------------------
def read_network(path: PathLike) -> Tuple[Any, Any]:
    """``(edges, nodes)`` GeoDataFrames of a written network, for display and editing.

    ``path``: a ``.gpkg`` with layers ``edges``/``nodes``, or the main name of a Shapefile/GeoJSON
    set (``roads.shp`` -> ``roads_edges.shp``, ``roads_nodes.shp``; an ``*_edges.*`` file is
    accepted too). A missing nodes layer gives an empty table.

    Raises:
        UserError: missing or unreadable file.
    """
    import geopandas as gpd

    p = Path(path)
    if p.suffix.lower() == ".gpkg":
        sources = {"edges": (p, "edges"), "nodes": (p, "nodes")}
    else:
        stem = p.stem[:-len("_edges")] if p.stem.endswith("_edges") else p.stem
        sources = {n: (p.with_name(f"{stem}_{n}{p.suffix}"), None) for n in ("edges", "nodes")}
    out = {}
    for name, (f, layer) in sources.items():
        if not f.exists():
            if name == "nodes" and out:
                out[name] = gpd.GeoDataFrame({"node_id": [], "degree": []}, geometry=[],
                                             crs=out["edges"].crs)
                continue
            raise UserError(f"{f}: file not found")
        try:
            out[name] = gpd.read_file(f, layer=layer) if layer else gpd.read_file(f)
        except Exception as exc:  # noqa: BLE001 - pyogrio raises several types
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{f}: cannot read {name} ({msg})") from exc
    return out["edges"], out["nodes"]


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
