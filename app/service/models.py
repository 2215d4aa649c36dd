"""Qt-free model services: list the registered networks, export and evaluate checkpoints.

The CLI (``roadseg models``, ``roadseg export``, ``roadseg eval``) and the GUI call these; every
expected problem (missing/unreadable checkpoint, bad option, unsupported operator) comes out as
:class:`app.service.errors.UserError` with a one-line message naming the file.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from app.service.checkpoints import check_checkpoint
from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error

if TYPE_CHECKING:  # segcore.evaluate (numpy, the predictors) is imported when evaluating
    from segcore.evaluate import EvalConfig

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

EXPORT_FORMATS = ("onnx", "mindir")
EVAL_DATASETS = ("deepglobe", "chips", "cityscapes", "voc", "imagenet")
EVAL_BACKENDS = ("mindspore", "onnx", "auto")


# ---------------------------------------------------------------------------------------------
# roadseg models
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRow:
    """One registered network: ``params`` is the trainable parameter count with the default
    class count (``None`` when not counted)."""

    name: str
    family: str
    task: str
    stride: int
    default_classes: int
    params: Optional[int]
    description: str


@functools.lru_cache(maxsize=None)
def count_parameters(name: str) -> int:
    """Trainable parameters of ``name`` built with its default class count (builds the network
    once per process)."""
    import segcore
    from segcore.models.layers import count_trainable_params

    net = segcore.create_model(name)
    return count_trainable_params(net)


def list_model_rows(count_params: bool = True) -> List[ModelRow]:
    """All registered networks, sorted by name."""
    import segcore

    rows = []
    for name in segcore.list_models():
        info = segcore.model_info(name)
        rows.append(ModelRow(name=name, family=info.family, task=info.task,
                             stride=int(info.stride), default_classes=int(info.default_classes),
                             params=count_parameters(name) if count_params else None,
                             description=info.description))
    return rows


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise UserError(f"{path}: already exists (use --overwrite)")


# ---------------------------------------------------------------------------------------------
# roadseg export
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportRequest:
    """Export a checkpoint. ``input_hw`` defaults to the checkpoint's tile size (rounded up to
    the stride); ``batch`` is the batch size of the example input (the batch axis is made
    dynamic where the format and network allow it, unless ``dynamic_batch=False``)."""

    checkpoint: str
    out: str
    format: str = "onnx"
    input_hw: Optional[Tuple[int, int]] = None
    batch: int = 1
    dynamic_batch: bool = True
    overwrite: bool = False
    #: ``fp32``, or ``int8`` (ONNX only): ONNX Runtime static QDQ quantisation calibrated on
    #: real tiles of ``calibration`` (default: the bundled sample scene)
    precision: str = "fp32"
    calibration: Tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportResult:
    path: str
    metadata_path: str
    format: str
    input_shape: Tuple[int, ...]
    dynamic_batch: bool
    model: Optional[str]
    seconds: float
    precision: str = "fp32"


def _export_int8(ckpt: Path, meta: Any, out: Path, size: Optional[Tuple[int, ...]],
                 req: ExportRequest) -> Path:
    """fp32 ONNX export into a staging folder beside ``out``, then int8 quantisation into
    ``out`` (the fp32 file is removed)."""
    import shutil
    import tempfile

    from app.service.calibration import calibration_provider
    from segcore.export import export_model
    from segcore.quantize import quantize_onnx

    calibration = calibration_provider(req.calibration or None)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.stem}.int8-", dir=str(out.parent)))
    try:
        fp32 = export_model(str(ckpt), stage / "fp32.onnx", format="ONNX", input_size=size,
                            dynamic_batch=req.dynamic_batch)
        shape = read_export_shape(fp32)
        return quantize_onnx(fp32, out, calibration(meta, shape),
                             calibration_note=calibration.note)  # type: ignore[attr-defined]
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def read_export_shape(exported: Path) -> Tuple[int, int]:
    """``(H, W)`` of an exported network's input."""
    from segcore.export import read_export_metadata

    shape = read_export_metadata(exported)["export"]["input_shape"]
    return int(shape[2]), int(shape[3])


def export_checkpoint(req: ExportRequest) -> ExportResult:
    """Run :func:`segcore.export.export_model` for ``req``; :class:`UserError` on bad input."""
    fmt = req.format.lower()
    if fmt not in EXPORT_FORMATS:
        raise UserError(f"unknown export format {req.format!r}; valid: {', '.join(EXPORT_FORMATS)}")
    ckpt = check_checkpoint(req.checkpoint)
    if ckpt.suffix.lower() in (".onnx", ".mindir"):
        raise UserError(f"{ckpt}: already an exported model; export from the .ckpt")
    if req.batch < 1:
        raise UserError(f"--batch must be >= 1, got {req.batch}")
    from segcore.checkpoint import read_metadata
    from segcore.export import export_model, export_suffix, metadata_path, read_export_metadata

    meta = read_metadata(ckpt)
    out = Path(req.out)
    if out.suffix.lower() != export_suffix(fmt):
        out = out.with_name(out.name + export_suffix(fmt))
    _refuse_existing(out, req.overwrite)
    if req.input_hw is not None:
        h, w = (int(v) for v in req.input_hw)
        stride = int(meta.stride or 1)
        if h < 1 or w < 1 or h % stride or w % stride:
            raise UserError(f"--input-size {h} {w}: must be positive multiples of {meta.model}'s "
                            f"stride {stride}")
        size: Optional[Tuple[int, ...]] = (int(req.batch), int(meta.in_channels), h, w)
    else:
        size = None
        if req.batch != 1:
            stride = int(meta.stride or 1)
            side = -(-int(meta.tile_size_px) // stride) * stride
            size = (int(req.batch), int(meta.in_channels), side, side)
    precision = str(req.precision or "fp32").lower()
    if precision not in ("fp32", "int8"):
        raise UserError(f"unknown precision {req.precision!r}; valid: fp32, int8")
    if precision == "int8" and fmt != "onnx":
        raise UserError("--precision int8 needs --format onnx")
    if req.calibration and precision != "int8":
        raise UserError("--calibration only applies to --precision int8")
    t0 = time.perf_counter()
    if precision == "int8":
        path = _export_int8(ckpt, meta, out, size, req)
    else:
        try:
            path = export_model(str(ckpt), out, format=fmt.upper(), input_size=size,
                                dynamic_batch=req.dynamic_batch, overwrite=req.overwrite)
        except EXPECTED_ERRORS as exc:
            raise as_user_error(exc) from exc
    info = read_export_metadata(path)["export"]
    return ExportResult(path=str(path), metadata_path=str(metadata_path(path)), format=fmt,
                        input_shape=tuple(info["input_shape"]),
                        dynamic_batch=bool(info["dynamic_batch"]), model=meta.model,
                        precision=str(info.get("precision", "fp32")),
                        seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------
# roadseg eval
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRequest:
    """Evaluate ``checkpoint`` on a labelled dataset: ``config`` is segcore's
    :class:`~segcore.evaluate.EvalConfig` (dataset kind, root folder, split, TTA, scales, mode,
    tiles, threshold, crop, limit; build it with :func:`eval_config`); the rest says how to run
    it and where the JSON report goes."""

    checkpoint: str
    config: "EvalConfig"
    out: Optional[str] = None
    backend: str = "mindspore"
    device: str = "cpu"
    batch_size: int = 4
    overwrite: bool = False


def eval_config(dataset: str, data: PathLike, **options: Any) -> "EvalConfig":
    """:class:`segcore.evaluate.EvalConfig` for ``dataset`` under the folder ``data`` with the
    keyword ``options`` (split, tta, scales, flip, mode, tile_size, overlap, threshold,
    crop_size, limit); :class:`UserError` (one line) for a bad value."""
    if str(dataset).lower() not in EVAL_DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; valid: {', '.join(EVAL_DATASETS)}")
    from segcore.evaluate import EvalConfig

    try:
        return EvalConfig(dataset=str(dataset).lower(), root=str(data), **options)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc


def parse_scales(text: str) -> Tuple[float, ...]:
    """``"0.5,0.75,1.0"`` -> ``(0.5, 0.75, 1.0)``; :class:`UserError` on bad input."""
    try:
        values = tuple(float(v) for v in str(text).replace(" ", "").split(",") if v)
    except ValueError:
        raise UserError(f"--scales {text!r}: expected comma-separated numbers such as "
                        "0.5,0.75,1.0") from None
    if not values or any(v <= 0 for v in values):
        raise UserError(f"--scales {text!r}: expected positive numbers")
    return values


def run_evaluation(req: EvalRequest, on_progress: Optional[ProgressFn] = None,
                   should_cancel: Optional[CancelFn] = None) -> Dict[str, Any]:
    """Evaluate ``req.checkpoint``; writes the JSON report to ``req.out`` (atomically) when
    given and returns it. :class:`UserError` for every expected problem."""
    if req.backend.lower() not in EVAL_BACKENDS:
        raise UserError(f"unknown backend {req.backend!r}; valid: {', '.join(EVAL_BACKENDS)}")
    ckpt = check_checkpoint(req.checkpoint)
    if not Path(req.config.root).is_dir():
        raise UserError(f"{req.config.root}: dataset folder not found")
    out = Path(req.out) if req.out else None
    if out is not None:
        _refuse_existing(out, req.overwrite)
    from segcore.evaluate import evaluate, write_report
    from segcore.predict import load_predictor

    try:
        predictor = load_predictor(str(ckpt), backend=req.backend, device=req.device)
        report = evaluate(predictor, req.config, batch_size=req.batch_size,
                          on_progress=on_progress, should_cancel=should_cancel)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    report["checkpoint"] = str(ckpt)
    if out is not None:
        write_report(report, out)
    return report


def average_checkpoint_files(checkpoints: Sequence[str], out: str,
                             overwrite: bool = False) -> Path:
    """Average the weights of ``checkpoints`` (one run's low-learning-rate tail) into ``out``
    (:func:`segcore.checkpoint.average_checkpoints`); :class:`UserError` on bad input."""
    if len(checkpoints) < 2:
        raise UserError("give at least two checkpoints to average")
    files = [check_checkpoint(c) for c in checkpoints]
    dest = Path(out)
    if dest.suffix.lower() != ".ckpt":
        dest = dest.with_name(dest.name + ".ckpt")
    if dest.resolve() in {f.resolve() for f in files}:
        raise UserError(f"{dest}: is one of the inputs; write the average elsewhere")
    _refuse_existing(dest, overwrite)
    from segcore.checkpoint import average_checkpoints

    try:
        return average_checkpoints(files, dest)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc


__all__ = ["ModelRow", "list_model_rows", "average_checkpoint_files", "count_parameters",
           "check_checkpoint",
           "ExportRequest", "ExportResult", "export_checkpoint", "EvalRequest", "eval_config",
           "run_evaluation", "parse_scales", "EXPORT_FORMATS", "EVAL_DATASETS", "EVAL_BACKENDS"]
