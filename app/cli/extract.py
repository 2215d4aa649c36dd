"""``roadseg extract``, ``roadseg vectorize`` and ``roadseg info``: options map onto
:mod:`app.service.extraction` calls; no ML or GIS logic here."""
from __future__ import annotations

import json
import math
import sys
import time
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

import click
from rasterio.errors import NotGeoreferencedWarning

from app.cli import cli
from app.cli.options import device_option, json_option, overwrite_option
from app.service.errors import UserError
from app.service.extraction import (
    BACKENDS,
    FORMATS,
    PRECISIONS,
    TTA_MODES,
    ExtractionRequest,
    VectorizeParams,
    raster_info,
    run_extraction,
    vectorize_mask,
)



# --------------------------------------------------------------------------------------------
# shared options
# --------------------------------------------------------------------------------------------
_VEC_OPTIONS = (
    ("--min-object-area", "min_object_area_m2", "Remove road blobs smaller than this (m²)."),
    ("--max-hole-area", "max_hole_area_m2", "Fill holes in roads up to this area (m²)."),
    ("--spur-length", "spur_length_m", "Prune dead-end spurs shorter than this (m)."),
    ("--gap", "gap_m", "Join dangling ends closer than this (m)."),
    ("--collinear-gap", "collinear_gap_m", "Join aligned dangling ends closer than this (m)."),
    ("--min-component-length", "min_component_length_m",
     "Drop networks shorter than this in total (m)."),
    ("--simplify", "simplify_tolerance_m", "Douglas-Peucker tolerance (m); default one pixel."),
)


def _vectorize_options(fn: Callable) -> Callable:
    defaults = VectorizeParams()
    for opt, name, text in reversed(_VEC_OPTIONS):
        default = getattr(defaults, name)
        shown = "one pixel" if default is None else f"{default:g}"
        fn = click.option(opt, name, type=float, default=None,
                          help=f"{text} [default: {shown}]")(fn)
    return fn


def _vectorize_params(kw: Dict[str, Any], threshold: Optional[float] = None) -> VectorizeParams:
    values = {name: kw.pop(name) for _, name, _ in _VEC_OPTIONS}
    values = {k: v for k, v in values.items() if v is not None}
    if threshold is not None:
        values["threshold"] = threshold
    try:
        return VectorizeParams(**values)
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def _echo_degenerate(s: Dict[str, Any]) -> None:
    """One line when part of the mask was noise or solid road and was not traced."""
    d = s.get("degenerate_mask")
    if d:
        click.echo(f"warning:    {100 * d['fraction_of_rows']:.0f} % of the mask is "
                   f"{d['reason']}", err=True)


class _Progress:
    """One ``\\r``-updated status line on stderr per stage (only when stderr is a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: Optional[str] = None
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int, stage: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if stage == self.stage and done < total and now - self.last < 0.1:
            return
        self.last = now
        if stage != self.stage:
            if self.stage is not None:
                sys.stderr.write("\n")
            self.stage = stage
        width = 30
        frac = (done / total) if total else 1.0
        bar = "#" * int(round(frac * width))
        sys.stderr.write(f"\r{stage:<10}[{bar:<{width}}] {done}/{total}  "
                         f"{now - self.t0:6.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.stage is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()


def parse_bands(bands: Optional[str]) -> Optional[Tuple[int, ...]]:
    """``--bands "1,2,3"`` as a tuple of 1-based band numbers (None when not given)."""
    if not bands:
        return None
    try:
        return tuple(int(b) for b in bands.replace(" ", "").split(",") if b)
    except ValueError:
        raise UserError(f"--bands {bands!r}: give 1-based band numbers like 1,2,3") from None


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# --------------------------------------------------------------------------------------------
# extract
# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False),
              help="Output directory (created if missing).")
@click.option("--model", default=None, help="Model name (picks its checkpoint from the model "
              "folders when --checkpoint is not given).")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="Checkpoint (.ckpt with its .json metadata, or exported .onnx/.mindir).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True)
@device_option()
@click.option("--precision", type=click.Choice(PRECISIONS),
              default=ExtractionRequest.__dataclass_fields__["precision"].default,
              show_default=True, help="ONNX on the CPU: int8 is made at first use (calibrated on "
              "the bundled sample scene); auto takes int8 where one exists and the CPU has VNNI.")
@click.option("--aoi", default=None, type=click.Path(dir_okay=False),
              help="Polygon file (GeoJSON/GPKG/SHP, any CRS) limiting the processed area.")
@click.option("--bbox", nargs=4, type=float, default=None,
              metavar="MINX MINY MAXX MAXY", help="Box limiting the processed area.")
@click.option("--bbox-crs", default="EPSG:4326", show_default=True, help="CRS of --bbox.")
@click.option("--bands", default=None, metavar="B1,B2,...",
              help="1-based bands fed to the network, e.g. 1,1,1 for a panchromatic image "
                   "[default: the checkpoint's].")
@click.option("--tile-size", type=int, default=None,
              help="Tile size in pixels [default: the checkpoint's].")
@click.option("--overlap", type=int, default=None,
              help="Tile overlap in pixels [default: tile size / 8].")
@click.option("--batch-size", type=int, default=2, show_default=True)
@click.option("--tta", type=click.Choice(TTA_MODES), default="none", show_default=True,
              help="Test-time augmentation.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Road probability threshold.")
@click.option("--format", "formats", type=click.Choice(FORMATS), multiple=True,
              help="Vector format (repeatable) [default: gpkg].")
@click.option("--polygons", is_flag=True, help="Also write road-surface polygons.")
@click.option("--target-crs", default=None, help="CRS of the vector outputs, e.g. EPSG:32611.")
@click.option("--pixel-coords", is_flag=True,
              help="Accept a raster without CRS (outputs in pixel coordinates).")
@click.option("--gsd", default=None, metavar="METRES|native",
              help="Processing ground resolution: the input is resampled to it on the fly "
                   "[default: the model's, e.g. 1.0 m]; 'native' uses the input as it is.")
@click.option("--input-gsd", type=float, default=None, metavar="METRES",
              help="Ground resolution of a raster without CRS (with --pixel-coords).")
@overwrite_option()
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: when stderr is a terminal].")
@json_option("Print the summary as JSON.")
@_vectorize_options
def extract(image: str, out_dir: str, model: Optional[str], checkpoint: Optional[str],
            backend: str, device: str, precision: str, aoi: Optional[str],
            bbox: Optional[Tuple[float, float, float, float]], bbox_crs: str,
            bands: Optional[str], tile_size: Optional[int], overlap: Optional[int],
            batch_size: int, tta: str, threshold: float, formats: Tuple[str, ...],
            polygons: bool, target_crs: Optional[str],
            pixel_coords: bool, overwrite: bool, progress: Optional[bool], as_json: bool,
            gsd: Optional[str] = None, input_gsd: Optional[float] = None,
            **vec: Any) -> None:
    """Extract the road network of IMAGE (GeoTIFF) into OUT_DIR.

    Writes IMAGE_prob.tif and IMAGE_mask.tif (COGs), IMAGE_roads.gpkg (centre lines and
    junctions, QGIS styles) and IMAGE_summary.json.
    """
    band_list = parse_bands(bands)
    req = ExtractionRequest(
        image=image, out_dir=out_dir, model=model, checkpoint=checkpoint, backend=backend,
        bands=band_list, device=device, precision=precision, aoi=aoi,
        bbox=tuple(bbox) if bbox else None, bbox_crs=bbox_crs,
        tile_size_px=tile_size, overlap_px=overlap, batch_size=batch_size, tta=tta,
        threshold=threshold, vectorize=_vectorize_params(vec), formats=formats or ("gpkg",),
        polygons=polygons, target_crs=target_crs, overwrite=overwrite,
        allow_pixel_coords=pixel_coords, gsd=gsd, input_gsd_m=input_gsd,
    )
    bar = _Progress(sys.stderr.isatty() if progress is None else progress)
    try:
        with warnings.catch_warnings():
            if pixel_coords:  # asked for: no need to warn about the missing georeference
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
            result = run_extraction(req, on_progress=bar)
    finally:
        bar.close()
    if result.status == "cancelled":
        raise click.exceptions.Abort()
    if not result.ok:
        if result.internal_error:
            raise click.ClickException(f"{result.error} (run with -v for details)")
        raise UserError(result.error or "extraction failed")
    s = result.summary
    if as_json:
        click.echo(json.dumps(s, indent=2, default=str))
        return
    units = s.get("units", "m")
    length = f"{_fmt(s['road_km'])} km" if units == "m" else f"{s['road_km'] * 1000:.0f} px"
    click.echo(f"roads:      {length} in {s['edges']} edges, {s['nodes']} nodes, "
               f"{s['components']} connected networks")
    _echo_degenerate(s)
    if s.get("area_km2") is not None:
        click.echo(f"area:       {_fmt(s['area_km2'], 4)} km²  "
                   f"(density {_fmt(s.get('road_density_km_per_km2'), 1)} km/km²)")
    prec = s["model"].get("precision")
    click.echo(f"model:      {s['model'].get('name')} ({s['model'].get('backend')}"
               f"{' ' + prec if prec and prec != 'fp32' else ''}), "
               f"{s['tiles']} tiles of {s['tile_size_px']} px, tta {s['tta']}")
    t = s.get("timings_s", {})
    click.echo("time:       " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    click.echo("files:")
    for path in sorted(result.outputs.values()):
        click.echo(f"  {path}")


# --------------------------------------------------------------------------------------------
# vectorize
# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("mask", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output vector file (.gpkg, .shp or .geojson).")
@click.option("--threshold", type=float, default=None,
              help="MASK is a probability raster: road where probability >= THRESHOLD.")
@click.option("--prob", "prob_path", default=None, type=click.Path(dir_okay=False),
              help="Probability raster on the mask's grid (edge confidence).")
@click.option("--format", "formats", type=click.Choice(FORMATS), multiple=True,
              help="Extra formats written beside OUTPUT (repeatable).")
@click.option("--polygons", is_flag=True, help="Also write road-surface polygons.")
@click.option("--target-crs", default=None, help="CRS of the outputs.")
@click.option("--pixel-coords", is_flag=True, help="Accept a raster without CRS.")
@overwrite_option()
@_vectorize_options
def vectorize(mask: str, output: str, threshold: Optional[float], prob_path: Optional[str],
              formats: Tuple[str, ...], polygons: bool, target_crs: Optional[str],
              pixel_coords: bool, overwrite: bool, **vec: Any) -> None:
    """Turn a road MASK GeoTIFF (non-zero = road) into centre lines and junctions.

    Thresholds are in metres (square metres for areas).
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be between 0 and 1, got {threshold}")
    params = _vectorize_params(vec, threshold)
    res = vectorize_mask(mask, output, params, formats, overwrite,
                         probability=threshold is not None, prob_path=prob_path,
                         polygons=polygons, target_crs=target_crs,
                         allow_pixel_coords=pixel_coords)
    s = res.summary
    click.echo(f"roads: {_fmt(s['road_km'])} km in {s['edges']} edges, {s['nodes']} nodes, "
               f"{s['components']} connected networks")
    _echo_degenerate(s)
    click.echo("files:")
    for path in sorted(res.outputs.values()):
        click.echo(f"  {path}")


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@json_option("Print the facts as JSON.")
def info(image: str, as_json: bool) -> None:
    """Size, bands, dtype, CRS, resolution, nodata and bounds of a raster."""
    d = raster_info(image)
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    dtypes = sorted(set(d["dtypes"]))
    bands = f"{d['count']} ({', '.join(d['colorinterp'])})" if d["colorinterp"] else str(d["count"])
    lines = [
        ("file", d["path"]),
        ("size", f"{d['width']} x {d['height']} px"),
        ("bands", bands + (f", alpha band {d['alpha_band']}" if d["has_alpha"] else "")),
        ("dtype", ", ".join(dtypes)),
        ("crs", f"{d['crs']} ({d['crs_name']})" if d["crs"] else "none (pixel coordinates)"),
    ]
    if d["resolution_m"]:
        rx, ry = d["resolution_m"]
        lines.append(("resolution", f"{rx:.3f} x {ry:.3f} m"))
    lines.append(("nodata", "none" if d["nodata"] is None else f"{d['nodata']:g}"))
    b = d["bounds"]
    lines.append(("bounds", ", ".join(f"{v:.6f}" if abs(v) < 1000 else f"{v:.2f}" for v in b)))
    if d["bounds_lonlat"]:
        lines.append(("lon/lat", ", ".join(f"{v:.6f}" for v in d["bounds_lonlat"])))
    if d["area_km2"] is not None and math.isfinite(d["area_km2"]):
        lines.append(("area", f"{d['area_km2']:.4f} km²"))
    if d["overview_levels"]:
        lines.append(("overviews", ", ".join(str(v) for v in d["overview_levels"])))
    for k, v in lines:
        click.echo(f"{k + ':':<12}{v}")
