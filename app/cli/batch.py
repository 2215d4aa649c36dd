"""``roadseg batch``: many scenes on Dask; options map onto :mod:`app.service.batch`.

The command takes every option of ``roadseg extract`` (copied from its click parameters, so the
two stay in step) plus the batch and cluster options.
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from typing import Any, Dict, Optional, Tuple

import click

from app.cli import cli
from app.cli.extract import _vectorize_params, extract, parse_bands
from app.service.batch import BatchEvent, BatchRequest, run_batch
from app.service.errors import UserError
from app.service.extraction import ExtractionRequest

_NOT_COPIED = {"image", "out_dir", "progress", "as_json"}


class _Bar:
    """One ``\\r``-updated line on stderr: items done/failed of all, tiles of running items."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()
        self.last = 0.0
        self.tiles: Dict[str, Tuple[int, int]] = {}
        self.state = (0, 0, 0)
        self.shown = False

    def line(self, text: str) -> None:
        """A message on its own line (the bar is redrawn below it)."""
        if self.shown:
            sys.stderr.write("\r\033[K")
        click.echo(text, err=True)
        self.shown = False
        self.draw(force=True)

    def __call__(self, ev: BatchEvent) -> None:
        self.state = (ev.items_done, ev.items_failed, ev.items_total)
        if ev.kind == "item_progress" and ev.stage == "infer" and ev.item:
            self.tiles[ev.item] = (ev.done, ev.total)
        if ev.kind == "cluster":
            self.line(f"dask dashboard: {ev.message}")
        elif ev.kind == "plan":
            self.line(f"batch: {ev.message}")
        elif ev.kind == "item_failed":
            self.line(f"failed: {ev.item}: {ev.message}")
        elif ev.kind == "cancelled" and ev.message.startswith("stopping"):
            self.line(f"interrupted: {ev.message} (Ctrl+C again to quit at once)")
        elif ev.kind == "merge" and ev.message == "started":
            self.line("joining the scenes' networks...")
        self.draw(force=ev.kind != "item_progress")

    def draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        done, failed, total = self.state
        width = 30
        frac = (done + failed) / total if total else 1.0
        bar = "#" * int(round(frac * width))
        td = sum(d for d, _ in self.tiles.values())
        tt = sum(t for _, t in self.tiles.values())
        tiles = f"  tiles {td}/{tt}" if tt else ""
        fail = f", {failed} failed" if failed else ""
        sys.stderr.write(f"\rscenes [{bar:<{width}}] {done + failed}/{total}{fail}{tiles}  "
                         f"{now - self.t0:6.1f}s")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.enabled and self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _quiet_dask() -> None:
    """Dask configures its own loggers (INFO, not propagated): errors only, unless -v."""
    try:
        import distributed  # noqa: F401  (creates its loggers)
    except ImportError:
        return
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("distributed", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _extraction_request(out_dir: str, kw: Dict[str, Any]) -> ExtractionRequest:
    band_list = parse_bands(kw.pop("bands", None))
    bbox = kw.pop("bbox", None)
    gsd, input_gsd = kw.pop("gsd", None), kw.pop("input_gsd", None)
    return ExtractionRequest(
        gsd=gsd, input_gsd_m=input_gsd, image="", out_dir=out_dir, model=kw.pop("model"),
        checkpoint=kw.pop("checkpoint"),
        backend=kw.pop("backend"), bands=band_list, device=kw.pop("device"), aoi=kw.pop("aoi"),
        bbox=tuple(bbox) if bbox else None, bbox_crs=kw.pop("bbox_crs"),
        tile_size_px=kw.pop("tile_size"), overlap_px=kw.pop("overlap"),
        batch_size=kw.pop("batch_size"), tta=kw.pop("tta"), threshold=kw.pop("threshold"),
        vectorize=_vectorize_params(kw), formats=kw.pop("formats") or ("gpkg",),
        polygons=kw.pop("polygons"), target_crs=kw.pop("target_crs"),
        overwrite=kw.pop("overwrite"), allow_pixel_coords=kw.pop("pixel_coords"),
    )


def _batch(inputs: Tuple[str, ...], out_dir: str, scheduler: Optional[str],
           workers: Optional[int], block_size: int, block_overlap: int, retries: int,
           merge: bool, snap: Optional[float], progress: Optional[bool], **kw: Any) -> None:
    """Extract the road networks of many scenes into OUT_DIR on a Dask cluster.

    INPUTS are GeoTIFFs, folders of rasters, text files listing one path per line, or VRTs.
    Writes each scene's outputs as `roadseg extract` does, batch_roads.gpkg (all networks joined
    across scene seams), batch_summary.json and batch_manifest.json. Running the same command
    again skips the scenes already finished.
    """
    if not inputs:
        raise UserError("no inputs given (GeoTIFFs, folders, list files or VRTs)")
    if logging.getLogger().getEffectiveLevel() >= logging.WARNING:  # no -v: no Dask chatter
        _quiet_dask()
    ereq = _extraction_request(out_dir, kw)
    req = BatchRequest(inputs=tuple(inputs), out_dir=out_dir, extraction=ereq,
                       scheduler=scheduler, workers=workers, block_size_px=block_size,
                       block_overlap_px=block_overlap, retries=retries, merge=merge,
                       snap_m=snap)
    bar = _Bar(sys.stderr.isatty() if progress is None else progress)
    stop = {"asked": False}

    def on_sigint(signum: int, frame: Any) -> None:
        if stop["asked"]:  # second Ctrl+C: quit at once
            raise KeyboardInterrupt
        stop["asked"] = True

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = run_batch(req, on_event=bar, should_cancel=lambda: stop["asked"])
    finally:
        signal.signal(signal.SIGINT, old)
        bar.close()
    t = result.summary["totals"]
    click.echo(f"scenes:     {t['done']} done, {t['skipped']} already done, {t['failed']} failed"
               + (f", {t['pending']} not finished" if t["pending"] else "")
               + f" (of {t['scenes']})")
    click.echo(f"roads:      {t['road_km']:.3f} km in the finished scenes")
    m = result.summary.get("merged")
    if m and "error" not in m:
        click.echo(f"joined:     {m['road_km']:.3f} km in {m['edges']} edges, "
                   f"{m['components']} connected networks -> {m['path']}")
    elif m:
        click.echo(f"joined:     {m['error']}", err=True)
    if t.get("scenes_per_hour"):
        click.echo(f"throughput: {t['scenes_per_hour']:.1f} scenes/h, "
                   f"{(t['km2_per_hour'] or 0):.2f} km²/h ({t['elapsed_s']:.1f} s)")
    for s in result.failed:
        click.echo(f"failed:     {s['scene']}: {s['error']}", err=True)
    click.echo(f"summary:    {result.summary_path}")
    if result.status == "cancelled":
        raise click.exceptions.Abort()
    unfinished = [s["scene"] for s in result.summary.get("scenes", [])
                  if s["state"] not in ("done", "skipped", "failed")]
    if unfinished:  # never a quiet success with a scene left over
        raise click.ClickException(f"{len(unfinished)} of {t['scenes']} scene(s) not finished: "
                                   f"{', '.join(unfinished)} (see {result.summary_path})")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} of {t['scenes']} scene(s) failed "
                                   f"(see {result.summary_path})")


def _build() -> click.Command:
    params = [p for p in extract.params if p.name not in _NOT_COPIED]
    params = [
        click.Argument(["inputs"], nargs=-1, type=click.Path()),
        click.Option(["-o", "--out-dir"], required=True, type=click.Path(file_okay=False),
                     help="Output folder (created if missing; every worker must reach it)."),
        click.Option(["--scheduler"], default=None, metavar="tcp://HOST:8786",
                     help="Address of a running Dask scheduler [default: a local cluster]."),
        click.Option(["--workers"], type=int, default=None,
                     help="Local cluster size [default: one process per core]."),
        click.Option(["--block-size"], type=int, default=10000, show_default=True,
                     help="Rasters larger than this (pixels) are split into blocks."),
        click.Option(["--block-overlap"], type=int, default=512, show_default=True,
                     help="Overlap between blocks (pixels)."),
        click.Option(["--retries"], type=int, default=1, show_default=True,
                     help="Extra attempts of a scene whose task raised."),
        click.Option(["--merge/--no-merge"], default=True, show_default=True,
                     help="Join all networks into batch_roads.gpkg."),
        click.Option(["--snap"], type=float, default=None,
                     help="Largest gap joined across a seam (m) [default: --gap]."),
        click.Option(["--progress/--no-progress"], default=None,
                     help="Progress bar on stderr [default: when stderr is a terminal]."),
    ] + params
    return click.Command("batch", callback=_batch, params=params, help=_batch.__doc__,
                         short_help="Extract many scenes on a Dask cluster, one joined network.")


cli.add_command(_build())
