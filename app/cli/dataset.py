"""``roadseg dataset build``: options map onto :func:`app.service.dataset.build_chip_dataset`."""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import click

from app.cli import cli
from app.cli.options import overwrite_option, quiet_option
from app.service.dataset import (STATUSES, DatasetBuildRequest, build_chip_dataset,
                                 gsd_from_checkpoint)
from app.service.errors import UserError


@cli.group("dataset")
def dataset_group() -> None:
    """Build training datasets from your own imagery and road labels."""


@dataset_group.command("build")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--labels", required=True, type=click.Path(dir_okay=False),
              help="Road centre lines (GeoJSON/GPKG/SHP, any CRS) or a mask raster (.tif: "
                   "values > 0 are road), e.g. the mask of a previous extraction.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Dataset folder to create (images/, masks/, manifest.json).")
@click.option("--width-m", type=click.FloatRange(min=0, min_open=True), default=6.0,
              show_default=True, help="Road width in metres for lines.")
@click.option("--width-attr", default=None,
              help="Line attribute holding the width (times --width-attr-scale, in metres); "
                   "lines without a value use --width-m.")
@click.option("--width-attr-scale", "width_attr_scale_m",
              type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Metres per attribute unit, e.g. 3.5 for a lane count.")
@click.option("--chip-size", "chip_size_px", type=click.IntRange(min=8), default=512,
              show_default=True, help="Chip side in pixels.")
@click.option("--overlap", "overlap_px", type=click.IntRange(min=0), default=0,
              show_default=True, help="Overlap between neighbouring chips in pixels.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="Share of chip columns (rows for tall images) in the "
                                      "validation band at the far end of the image.")
@click.option("--gap", "gap_px", type=click.IntRange(min=0), default=None,
              help="Pixels left out between the training area and the validation band "
                   "[default: one chip].")
@click.option("--skip-empty", is_flag=True, help="Leave out chips without road pixels.")
@click.option("--min-valid", "min_valid_fraction", type=click.FloatRange(0, 1), default=0.5,
              show_default=True, help="Leave out chips with a smaller share of valid "
                                      "(not nodata) pixels.")
@click.option("--status", type=click.Choice(STATUSES[:2]), default="unreviewed",
              show_default=True,
              help="Review status in manifest.json. Training reads only 'accepted' chips by "
                   "default: use 'accepted' for labels that need no review.")
@click.option("--bands", default=None, help="Comma-separated 1-based bands to copy "
                                            "[default: all].")
@click.option("--gsd", "gsd_m", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="METRES",
              help="Cut the chips at this ground resolution (metres per pixel): the image is "
                   "resampled to it (area average when shrinking, bilinear when enlarging), "
                   "line labels are drawn on that grid and mask labels resampled nearest. Use "
                   "the gsd_m of the model you fine-tune, e.g. 0.5 for the bundled road model "
                   "[default: the image's own resolution].")
@click.option("--gsd-from", "gsd_from", type=click.Path(dir_okay=False), default=None,
              metavar="MODEL",
              help="Take --gsd from the gsd_m recorded by this model (.ckpt/.onnx/.mindir), "
                   "e.g. resources/models/road_demo.ckpt.")
@click.option("--input-gsd", "input_gsd_m", type=click.FloatRange(min=0, min_open=True),
              default=None, metavar="METRES",
              help="Ground resolution of an IMAGE without CRS (mask labels), needed with --gsd.")
@overwrite_option("Replace an existing --out folder.")
@quiet_option()
def build_command(image: str, labels: str, out_dir: str, width_m: float,
                  width_attr: Optional[str], width_attr_scale_m: float, chip_size_px: int,
                  overlap_px: int, val_fraction: float, gap_px: Optional[int],
                  skip_empty: bool, min_valid_fraction: float, status: str,
                  bands: Optional[str], gsd_m: Optional[float], gsd_from: Optional[str],
                  input_gsd_m: Optional[float], overwrite: bool, quiet: bool) -> None:
    """Cut IMAGE and its road labels into georeferenced training chips (at the image's own
    resolution, or at --gsd / the --gsd-from model's; manifest.json records the chips' gsd_m)."""
    band_t: Optional[Tuple[int, ...]] = None
    if bands:
        try:
            band_t = tuple(int(b) for b in bands.split(",") if b.strip())
        except ValueError as exc:
            raise click.BadParameter(f"not a comma-separated list of integers: {bands!r}",
                                     param_hint="--bands") from exc
    if gsd_from is not None:
        if gsd_m is not None:
            raise UserError("give either --gsd or --gsd-from, not both")
        gsd_m = gsd_from_checkpoint(gsd_from)
    req = DatasetBuildRequest(image=image, labels=labels, out_dir=out_dir, width_m=width_m,
                              width_attr=width_attr, width_attr_scale_m=width_attr_scale_m,
                              chip_size_px=chip_size_px, overlap_px=overlap_px,
                              val_fraction=val_fraction, gap_px=gap_px, skip_empty=skip_empty,
                              min_valid_fraction=min_valid_fraction, status=status,
                              bands=band_t, overwrite=overwrite, gsd_m=gsd_m,
                              input_gsd_m=input_gsd_m)

    def progress(done: int, total: int, stage: str) -> None:
        if not quiet and sys.stderr.isatty():
            click.echo(f"\r{stage} {done}/{total}", err=True, nl=(done == total))

    res = build_chip_dataset(req, on_progress=progress)
    click.echo(f"{res.out_dir}: {res.counts['train']} train / {res.counts['val']} val chips "
               f"({res.skipped_empty} empty, {res.skipped_nodata} nodata, {res.skipped_gap} in "
               f"the gap left out); status '{status}'"
               + (f"; {res.gsd_m:g} m per pixel" if res.gsd_m else ""))


@dataset_group.command("assemble")
@click.argument("sources", type=click.Path(dir_okay=False))
@click.option("--gsd", "gsd_m", required=True, type=click.FloatRange(min=0, min_open=True),
              help="Target ground resolution in metres per pixel (the model's gsd_m).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output chips folder (keep it outside the project: source licences).")
@click.option("--data", "data_root", default=None, type=click.Path(file_okay=False),
              help="Root the source paths are relative to [default: the YAML's 'root'].")
@click.option("--chip-size", "chip_px", type=click.IntRange(min=16), default=384,
              show_default=True, help="Chip size in pixels at the target resolution.")
@click.option("--gap", "gap_px", type=click.IntRange(min=0), default=32, show_default=True,
              help="Unused pixels between the training area and the validation band.")
@overwrite_option("Replace an existing --out folder.")
@quiet_option()
def assemble_command(sources: str, gsd_m: float, out_dir: str, data_root: Optional[str],
                     chip_px: int, gap_px: int, overwrite: bool, quiet: bool) -> None:
    """Build one training corpus at one ground resolution from the sources listed in SOURCES
    (YAML): each source is resampled to --gsd, stretched 2-98 % to 8 bit as inference does,
    split by area into training and validation chips; nodata is ignored in training."""
    from app.service.corpus import assemble_corpus, load_sources_yaml

    def progress(done: int, total: int, stage: str) -> None:
        if not quiet and sys.stderr.isatty():
            click.echo(f"\r{stage} {done}/{total}", err=True, nl=(done == total))

    srcs = load_sources_yaml(sources, data_root)
    s = assemble_corpus(srcs, out_dir, gsd_m, chip_px=chip_px, gap_px=gap_px,
                        overwrite=overwrite, on_progress=progress)
    per = ", ".join(f"{k} {v['train']}/{v['val']}" for k, v in s["sources"].items())
    click.echo(f"{out_dir}: {s['chips']['train']} train / {s['chips']['val']} val chips at "
               f"{gsd_m:g} m ({per})")
