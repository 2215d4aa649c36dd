"""``roadseg models``, ``roadseg export`` and ``roadseg eval``: options map onto
:mod:`app.service.models` and :mod:`app.service.line_eval` calls; no ML logic here."""
from __future__ import annotations

import json
import sys
import time
from typing import Optional, Tuple

import click

from app.cli import cli
from app.cli.options import device_option, json_option, overwrite_option
from app.service.line_eval import LineEvalRequest, run_line_evaluation
from app.service.models import (
    EVAL_BACKENDS,
    EVAL_DATASETS,
    EXPORT_FORMATS,
    EvalRequest,
    average_checkpoint_files,
    ExportRequest,
    eval_config,
    export_checkpoint,
    list_model_rows,
    parse_scales,
    run_evaluation,
)


def _fmt_params(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


@cli.command("models")
@click.option("--no-params", is_flag=True, help="Skip parameter counting (builds every network).")
@json_option("Print the table as JSON.")
def models_cmd(no_params: bool, as_json: bool) -> None:
    """List the registered networks: task, stride, default classes, parameters."""
    rows = list_model_rows(count_params=not no_params)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    header = f"{'name':<26}{'task':<16}{'stride':>7}{'classes':>9}{'params':>10}  description"
    click.echo(header)
    click.echo("-" * len(header))
    for r in rows:
        click.echo(f"{r.name:<26}{r.task:<16}{r.stride:>7}{r.default_classes:>9}"
                   f"{_fmt_params(r.params):>10}  {r.description}")


@cli.command("average")
@click.argument("checkpoints", nargs=-1, required=True)
@click.option("--out", "-o", required=True, help="Averaged checkpoint (.ckpt; .json beside it).")
@overwrite_option("Replace an existing output checkpoint.")
def average_cmd(checkpoints: Tuple[str, ...], out: str, overwrite: bool) -> None:
    """Average the weights of CHECKPOINTS of one run (e.g. its last epochs) into one.

    Weight averaging over the low-learning-rate tail of a run usually generalises a little
    better than any single epoch; score the result with `roadseg eval` before using it.
    """
    path = average_checkpoint_files(list(checkpoints), out, overwrite=overwrite)
    click.echo(f"{path}: mean of {len(checkpoints)} checkpoints")


@cli.command("export")
@click.option("--checkpoint", "-c", required=True, help="Checkpoint (.ckpt with its .json).")
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS, case_sensitive=False),
              default="onnx", show_default=True)
@click.option("--out", "-o", required=True, help="Output file (.onnx / .mindir added).")
@click.option("--input-size", nargs=2, type=int, default=None, metavar="H W",
              help="Input height and width (default: the checkpoint's tile size).")
@click.option("--batch", type=int, default=1, show_default=True,
              help="Batch size of the example input.")
@click.option("--static-batch", is_flag=True, help="Keep the batch axis fixed.")
@overwrite_option("Replace an existing output file.")
@click.option("--precision", type=click.Choice(("fp32", "int8")), default="fp32",
              show_default=True, help="int8: ONNX Runtime static (QDQ) quantisation, "
              "calibrated on real tiles (ONNX only).")
@click.option("--calibration", multiple=True, metavar="SCENE",
              help="Raster(s) whose tiles calibrate int8 (default: the bundled sample scene).")
def export_cmd(checkpoint: str, fmt: str, out: str, input_size: Optional[Tuple[int, int]],
               batch: int, static_batch: bool, overwrite: bool, precision: str,
               calibration: Tuple[str, ...]) -> None:
    """Export a checkpoint to ONNX or MindIR (metadata JSON written beside it)."""
    res = export_checkpoint(ExportRequest(
        checkpoint=checkpoint, out=out, format=fmt, input_hw=tuple(input_size) if input_size
        else None, batch=batch, dynamic_batch=not static_batch, overwrite=overwrite,
        precision=precision, calibration=tuple(calibration)))
    click.echo(f"{res.path}: {res.model} as {res.format.upper()} {res.precision}, input "
               f"{'x'.join(str(v) for v in res.input_shape)}, "
               f"{'dynamic' if res.dynamic_batch else 'fixed'} batch ({res.seconds:.1f} s); "
               f"metadata {res.metadata_path}")


@cli.command("eval")
@click.option("--checkpoint", "-c", default=None,
              help="Checkpoint (.ckpt) or exported .onnx / .mindir.")
@click.option("--data", default=None, help="Dataset root folder.")
@click.option("--dataset", type=click.Choice(EVAL_DATASETS, case_sensitive=False),
              default=None)
@click.option("--split", default=None, help="Split folder/list (default: none for a flat "
              "folder; val for imagenet).")
@click.option("--tta", type=click.Choice(("none", "flips", "d4")), default="none",
              show_default=True, help="Test-time augmentation (d4: 8 flips/rotations).")
@click.option("--scales", default="1.0", show_default=True,
              help="Inference scales, e.g. 0.5,0.75,1.0,1.25,1.5,1.75 (DeepLabV3).")
@click.option("--flip", is_flag=True, help="Add the horizontal mirror at every scale.")
@click.option("--mode", type=click.Choice(("whole", "sliding")), default="whole",
              show_default=True, help="Whole image or sliding window.")
@click.option("--tile-size", type=int, default=None, help="Sliding-window tile (px).")
@click.option("--overlap", type=float, default=0.25, show_default=True)
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Road probability threshold (one-output models).")
@click.option("--crop", "crop_size", type=int, default=None, help="Centre-crop every sample.")
@click.option("--limit", type=int, default=None, help="Only the first N samples.")
@click.option("--backend", type=click.Choice(EVAL_BACKENDS), default="mindspore",
              show_default=True)
@device_option()
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--out", "-o", default=None,
              help="JSON report path (required with --checkpoint).")
@overwrite_option("Replace an existing report.")
@click.option("--lines", "lines", default=None,
              help="Score road lines instead: a vector file (GeoPackage edges layer, GeoJSON, "
              "Shapefile), e.g. roads.gpkg written by 'roadseg extract'.")
@click.option("--reference", default=None, help="Reference road centre lines for --lines.")
@click.option("--layer", default=None, help="Layer of --lines (default: edges, or the only one).")
@click.option("--reference-layer", default=None, help="Layer of --reference.")
@click.option("--buffer-m", type=float, default=4.0, show_default=True,
              help="--lines: buffer of the centre-line precision/recall (m).")
@click.option("--control-spacing-m", type=float, default=50.0, show_default=True,
              help="--lines: APLS control point spacing along edges (m).")
@click.option("--snap-m", type=float, default=4.0, show_default=True,
              help="--lines: APLS snapping distance of control points (m).")
def eval_cmd(checkpoint: Optional[str], data: Optional[str], dataset: Optional[str],
             split: Optional[str], tta: str,
             scales: str, flip: bool, mode: str, tile_size: Optional[int], overlap: float,
             threshold: float, crop_size: Optional[int], limit: Optional[int], backend: str,
             device: str, batch_size: int, out: Optional[str], overwrite: bool,
             lines: Optional[str], reference: Optional[str], layer: Optional[str],
             reference_layer: Optional[str], buffer_m: float, control_spacing_m: float,
             snap_m: float) -> None:
    """Evaluate a checkpoint on a labelled dataset and write a JSON report, or (with --lines
    and --reference) score extracted road lines: APLS and buffered centre-line
    precision/recall."""
    if lines is not None or reference is not None:
        if lines is None or reference is None:
            raise click.UsageError("--lines and --reference go together")
        if checkpoint is not None or data is not None or dataset is not None:
            raise click.UsageError("--lines scores vector files; it takes no --checkpoint, "
                                   "--data or --dataset")
        _eval_lines(LineEvalRequest(
            lines=lines, reference=reference, layer=layer, reference_layer=reference_layer,
            buffer_m=buffer_m, control_spacing_m=control_spacing_m, snap_m=snap_m, out=out,
            overwrite=overwrite))
        return
    missing = [name for name, v in (("--checkpoint", checkpoint), ("--data", data),
                                    ("--dataset", dataset), ("--out", out)) if v is None]
    if missing:
        raise click.UsageError(f"missing {', '.join(missing)} (or score vector files with "
                               "--lines and --reference)")
    interactive = sys.stderr.isatty()
    t0 = time.monotonic()

    def progress(done: int, total: int, stage: str) -> None:
        if interactive:
            click.echo(f"\r{stage}: {done}/{total} ({time.monotonic() - t0:.0f} s)", err=True,
                       nl=done >= total)

    config = eval_config(dataset, data, split=split, tta=tta, scales=parse_scales(scales),
                         flip=flip, mode=mode, tile_size=tile_size, overlap=overlap,
                         threshold=threshold, crop_size=crop_size, limit=limit)
    report = run_evaluation(EvalRequest(
        checkpoint=checkpoint, config=config, out=out, backend=backend, device=device,
        batch_size=batch_size, overwrite=overwrite), on_progress=progress)
    m = report["metrics"]
    if "road_iou" in m:
        line = ", ".join(f"{k} {m[k]:.4f}" if m[k] is not None else f"{k} n/a"
                         for k in ("road_iou", "road_f1", "road_precision", "road_recall"))
    elif "top1" in m:
        line = ", ".join(f"{k} {v:.4f}" for k, v in m.items() if v is not None)
    else:
        line = f"mIoU {m['miou']:.4f}" if m.get("miou") is not None else "mIoU n/a"
    click.echo(f"{out}: {report['model']} on {report['dataset']['samples']} "
               f"{report['dataset']['kind']} samples: {line}")


def _eval_lines(req: LineEvalRequest) -> None:
    r = run_line_evaluation(req)
    a, b = r["apls"], r["buffered"]
    click.echo(f"{req.lines} against {req.reference}:")
    click.echo(f"  APLS {a['apls']:.4f} (ground truth onto proposal {a['apls_gt_onto_prop']:.4f}, "
               f"proposal onto ground truth {a['apls_prop_onto_gt']:.4f}; control points "
               f"{a['gt_control_points']} / {a['prop_control_points']}, every "
               f"{a['control_spacing_m']:g} m, snapped within {a['snap_m']:g} m)")
    click.echo(f"  centre lines within {b['buffer_m']:g} m: precision {b['precision']:.4f}, "
               f"recall {b['recall']:.4f}, F1 {b['f1']:.4f} (length {b['pred_length_m']:.0f} m "
               f"/ reference {b['ref_length_m']:.0f} m)")
    if req.out:
        click.echo(f"  report: {req.out}")
