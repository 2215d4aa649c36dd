"""Dataset builder: a GeoTIFF plus road labels -> a training chips dataset for ``roadseg train``.

Labels are either road centre lines (any vector format geopandas reads, any CRS: reprojected
and buffered to a width in metres, per feature from an attribute where present) or a mask
raster (values > 0 are road, nodata is background; resampled onto the image grid with nearest
neighbour when the grids differ), e.g. the mask GeoTIFF of a previous ``roadseg extract``.

Output (the ``chips`` layout of :mod:`segcore.data.layouts`)::

    OUT/images/<stem>_r<row>_c<col>.tif   chip GeoTIFF: the image's bands, dtype and nodata,
                                          with the chip's CRS and transform
    OUT/masks/<stem>_r<row>_c<col>.tif    uint8 GeoTIFF, 0 background / 255 road, same grid
    OUT/manifest.json                     {"samples": [{"image", "mask", "split", "status",
                                           "window", "transform", ...}], "source": ..., ...}

Ground resolution: with ``gsd_m`` (``--gsd METRES``, or ``--gsd-from MODEL.ckpt`` for the
``gsd_m`` a model was trained at) the image is read through a VRT resampled to that many metres
per pixel (:func:`app.service.grid.grid_at_gsd`, as ``roadseg extract`` does: area average when
shrinking, bilinear when enlarging; not resampled within 5 %); line labels are rasterised on
that grid (widths stay in metres) and mask labels are resampled onto it with nearest neighbour.
A raster without CRS needs ``input_gsd_m`` (``--input-gsd``). The manifest records the chips'
``gsd_m`` (the native resolution without ``gsd_m``, where the image has a CRS or
``input_gsd_m`` is given) and ``source_gsd_m``; ``roadseg train`` compares it with the
model's ``gsd_m``.

Splitting is by area (:func:`gis.chips.split_windows_by_area`): validation is a band of chip
columns (rows for tall images) at the far end of the image; training chips keep ``gap_px``
(default one chip) away from it. Every sample gets the review status ``unreviewed`` unless the
request says otherwise: ``segcore``'s chips reader uses only ``accepted`` samples by default,
so either review the chips (set their status to ``accepted``), build with
``status="accepted"`` (``--status accepted``) for labels that need no review, or train with
``--set "dataset_kwargs={statuses: [unreviewed, accepted]}"``.

The dataset is built in a temporary folder beside ``out_dir`` and renamed when complete.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.staging import recover_folder, replace_folder

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

#: File suffixes read as label mask rasters; anything else is read as vector lines.
RASTER_LABEL_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".img", ".jp2"})
#: Review statuses a chip can be written with.
STATUSES = ("unreviewed", "accepted", "rejected")
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class DatasetBuildRequest:
    """What ``roadseg dataset build`` asks for.

    Attributes:
        image: source GeoTIFF (any band count/dtype; must have a CRS for line labels).
        labels: centre lines (GeoJSON/GPKG/SHP...) or a mask raster (``.tif``...).
        out_dir: the dataset folder to create.
        width_m: full road width in metres for lines without a width attribute.
        width_attr: attribute holding the width per line; its value times
            ``width_attr_scale_m`` is the width in metres (e.g. lanes x 3.5).
        chip_size_px, overlap_px: chip side and overlap between neighbouring chips.
        val_fraction: share of chip columns (rows) in the validation band, ``[0, 1)``.
        gap_px: pixels between the training area and the validation band; None = one chip.
        skip_empty: leave out chips without any road pixel.
        min_valid_fraction: leave out chips whose share of valid (not nodata) image pixels is
            below this (chips with no valid pixel are always left out).
        status: review status written into the manifest (``unreviewed`` or ``accepted``).
        bands: 1-based bands to copy; None = every band.
        overwrite: replace an existing ``out_dir``.
        gsd_m: ground resolution of the chips in metres per pixel (the image is resampled to
            it); None = the image's own.
        input_gsd_m: ground resolution of an image without CRS (mask labels only).
    """

    image: str
    labels: str
    out_dir: str
    width_m: float = 6.0
    width_attr: Optional[str] = None
    width_attr_scale_m: float = 1.0
    chip_size_px: int = 512
    overlap_px: int = 0
    val_fraction: float = 0.2
    gap_px: Optional[int] = None
    skip_empty: bool = False
    min_valid_fraction: float = 0.5
    status: str = "unreviewed"
    bands: Optional[Tuple[int, ...]] = None
    overwrite: bool = False
    gsd_m: Optional[float] = None
    input_gsd_m: Optional[float] = None


@dataclass(frozen=True)
class DatasetBuildResult:
    """What was written: ``counts`` per split, chips left out and why, the manifest path, the
    chips' ground resolution."""

    out_dir: Path
    manifest: Path
    counts: Dict[str, int]
    skipped_empty: int
    skipped_nodata: int
    skipped_gap: int
    label_kind: str
    samples: List[Dict[str, Any]] = field(default_factory=list)
    #: metres per pixel of the chips (None: unknown, an image without CRS and --input-gsd)
    gsd_m: Optional[float] = None


def _check_request(req: DatasetBuildRequest) -> None:
    if req.chip_size_px < 8:
        raise UserError(f"--chip-size must be >= 8 pixels, got {req.chip_size_px}")
    if not 0 <= req.overlap_px < req.chip_size_px:
        raise UserError(f"--overlap must be in [0, chip size {req.chip_size_px}), got "
                        f"{req.overlap_px}")
    if not 0.0 <= req.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {req.val_fraction}")
    if req.gap_px is not None and req.gap_px < 0:
        raise UserError(f"--gap must be >= 0 pixels, got {req.gap_px}")
    if req.width_m <= 0 or req.width_attr_scale_m <= 0:
        raise UserError(f"road width must be > 0 m, got {req.width_m} "
                        f"(attribute scale {req.width_attr_scale_m})")
    if not 0.0 <= req.min_valid_fraction <= 1.0:
        raise UserError(f"--min-valid must be in [0, 1], got {req.min_valid_fraction}")
    for name, value in (("--gsd", req.gsd_m), ("--input-gsd", req.input_gsd_m)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise UserError(f"{name} must be > 0 metres per pixel, got {value}")
    if req.status not in STATUSES:
        raise UserError(f"--status must be one of {', '.join(STATUSES)}, got {req.status!r}")
    if not Path(req.labels).exists():
        raise UserError(f"{req.labels}: label file not found")
    out = Path(req.out_dir)
    if out.exists() and not req.overwrite:
        raise UserError(f"{out}: already exists (use --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")


def label_kind(labels: str) -> str:
    """``"mask"`` for raster label files (by suffix), ``"lines"`` otherwise."""
    return "mask" if Path(labels).suffix.lower() in RASTER_LABEL_SUFFIXES else "lines"


def gsd_from_checkpoint(path: str) -> float:
    """The ``gsd_m`` recorded in the metadata of model ``path`` (``.ckpt``, ``.onnx``,
    ``.mindir``); :class:`UserError` naming the file when it is unreadable or records none."""
    from segcore.meta import read_checkpoint_meta

    try:
        meta = read_checkpoint_meta(path)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    if not meta.gsd_m:
        raise UserError(f"{path}: the model records no ground resolution (gsd_m): pass "
                        "--gsd METRES instead")
    return float(meta.gsd_m)


def _read_lines(path: str):
    import geopandas as gpd

    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio/fiona errors: unreadable, unknown format
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: cannot read label lines ({msg})") from exc
    return gdf


def rasterize_labels(req: DatasetBuildRequest, info) -> np.ndarray:
    """The full-image road mask ``(H, W)`` uint8 0/255 on the grid of ``info``
    (a :class:`gis.io.RasterInfo`)."""
    from gis.chips import align_mask, rasterize_lines

    if label_kind(req.labels) == "mask":
        return align_mask(req.labels, crs=info.crs, transform=info.transform,
                          width=info.width, height=info.height)
    gdf = _read_lines(req.labels)
    if req.width_attr is not None and req.width_attr not in gdf.columns:
        cols = ", ".join(c for c in gdf.columns if c != "geometry") or "none"
        raise UserError(f"{req.labels}: no attribute {req.width_attr!r} (attributes: {cols})")
    return rasterize_lines(gdf, crs=info.crs, transform=info.transform, width=info.width,
                           height=info.height, width_m=req.width_m, width_attr=req.width_attr,
                           attr_scale_m=req.width_attr_scale_m, source=req.labels)


def _write_chip(path: Path, arr: np.ndarray, *, crs, transform, nodata, dtype: str) -> None:
    import rasterio

    profile = {"driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1],
               "count": arr.shape[0], "dtype": dtype, "crs": crs, "transform": transform,
               "compress": "deflate"}
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr.astype(dtype, copy=False))


def _transform_list(t) -> List[float]:
    return [float(v) for v in (t.a, t.b, t.c, t.d, t.e, t.f)]


def build_chip_dataset(req: DatasetBuildRequest, on_progress: Optional[ProgressFn] = None,
                       should_cancel: Optional[CancelFn] = None) -> DatasetBuildResult:
    """Cut ``req.image`` and its labels into chips (see the module docstring).

    ``on_progress(done, total, "chips")`` after each chip; ``should_cancel()`` is polled
    between chips and stops the build (nothing is left behind). Bad input raises
    :class:`UserError` with one line naming the file and the problem.
    """
    try:
        # a replacement of this folder that a killed run left half done: finish it first
        recover_folder(Path(req.out_dir).expanduser())
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    _check_request(req)
    try:
        return _build(req, on_progress, should_cancel)
    except UserError:
        raise
    except EXPECTED_ERRORS + (ValueError,) as exc:
        raise as_user_error(exc) from exc


def _build(req: DatasetBuildRequest, on_progress: Optional[ProgressFn],
           should_cancel: Optional[CancelFn]) -> DatasetBuildResult:
    from app.service.grid import grid_at_gsd
    from gis.io import open_raster

    kind = label_kind(req.labels)
    info = open_raster(req.image, allow_pixel_coords=(kind == "mask"))
    bands = tuple(req.bands) if req.bands else tuple(range(1, info.count + 1))
    bad = [b for b in bands if not 1 <= b <= info.count]
    if bad:
        raise UserError(f"{req.image}: band(s) {bad} requested but the image has {info.count}")
    grid = grid_at_gsd(req.image, info, req.gsd_m, req.input_gsd_m, "--gsd asks for",
                       "pass --input-gsd METRES (its pixel size)")
    try:
        return _build_on_grid(req, grid, kind, bands, on_progress, should_cancel)
    finally:
        grid.close()


def _build_on_grid(req: DatasetBuildRequest, grid, kind: str, bands: Tuple[int, ...],
                   on_progress: Optional[ProgressFn], should_cancel: Optional[CancelFn]
                   ) -> DatasetBuildResult:
    import rasterio
    from rasterio.windows import Window

    from gis.chips import chip_windows, split_windows_by_area
    from gis.errors import CancelledError
    from gis.io import read_window

    info = grid.info  # the image itself, or its VRT resampled to req.gsd_m
    road = rasterize_labels(req, info)
    size = int(req.chip_size_px)
    wins = chip_windows(info.width, info.height, size, int(req.overlap_px))
    gap_px = size if req.gap_px is None else int(req.gap_px)
    split = split_windows_by_area(wins, info.width, info.height, req.val_fraction, gap_px)
    jobs = [(w, "train") for w in split.train] + [(w, "val") for w in split.val]
    jobs.sort(key=lambda j: (int(j[0].row_off), int(j[0].col_off)))
    dtype = info.dtypes[bands[0] - 1]
    fill = info.nodata if info.nodata is not None and np.isfinite(info.nodata) else 0
    stem = Path(req.image).stem
    crs_name = info.crs.to_string() if info.crs is not None else None

    out = Path(req.out_dir).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    samples: List[Dict[str, Any]] = []
    skipped_empty = skipped_nodata = 0
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        with rasterio.open(grid.path) as src:
            for k, (win, part) in enumerate(jobs):
                if should_cancel is not None and should_cancel():
                    raise CancelledError(f"{out}: dataset build cancelled")
                data, valid = read_window(src, win, bands, boundless=True, fill_value=fill)
                valid_frac = float(valid.mean())
                r0, c0 = int(win.row_off), int(win.col_off)
                inside = Window(c0, r0, size, size).intersection(
                    Window(0, 0, info.width, info.height))
                m = np.zeros((size, size), np.uint8)
                ri, ci = int(inside.row_off) - r0, int(inside.col_off) - c0
                m[ri:ri + int(inside.height), ci:ci + int(inside.width)] = road[
                    int(inside.row_off):int(inside.row_off + inside.height),
                    int(inside.col_off):int(inside.col_off + inside.width)]
                m[~valid] = 0
                road_frac = float((m > 0).mean())
                if valid_frac <= 0.0 or valid_frac < req.min_valid_fraction:
                    skipped_nodata += 1
                elif req.skip_empty and road_frac == 0.0:
                    skipped_empty += 1
                else:
                    name = f"{stem}_r{r0}_c{c0}.tif"
                    t = info.window_transform(win)
                    img = np.where(valid[None], data, fill)
                    _write_chip(tmp / "images" / name, img, crs=info.crs, transform=t,
                                nodata=info.nodata, dtype=dtype)
                    _write_chip(tmp / "masks" / name, m[None], crs=info.crs, transform=t,
                                nodata=None, dtype="uint8")
                    samples.append({
                        "image": f"images/{name}", "mask": f"masks/{name}", "split": part,
                        "status": req.status, "source": Path(req.image).name,
                        "window": [c0, r0, size, size], "crs": crs_name,
                        "transform": _transform_list(t),
                        "road_fraction": round(road_frac, 6),
                        "valid_fraction": round(valid_frac, 6)})
                if on_progress is not None:
                    on_progress(k + 1, len(jobs), "chips")
        counts = {"train": sum(s["split"] == "train" for s in samples),
                  "val": sum(s["split"] == "val" for s in samples)}
        manifest = {
            "version": MANIFEST_VERSION,
            "source": {"image": str(Path(req.image).resolve()),
                       "labels": str(Path(req.labels).resolve()), "label_kind": kind,
                       "width_m": req.width_m if kind == "lines" else None,
                       "width_attr": req.width_attr if kind == "lines" else None,
                       "width_attr_scale_m": (req.width_attr_scale_m if kind == "lines"
                                              else None)},
            "crs": info.crs.to_wkt() if info.crs is not None else None,
            "crs_name": info.crs.to_string() if info.crs is not None else None,
            "transform": _transform_list(info.transform),
            "width": info.width, "height": info.height, "bands": list(bands), "dtype": dtype,
            "gsd_m": _round_gsd(grid.gsd_m), "source_gsd_m": _round_gsd(grid.input_gsd_m),
            "resampling": (None if not grid.resampled else
                           "average" if grid.gsd_m > grid.input_gsd_m else "bilinear"),
            "chip_size_px": size, "overlap_px": int(req.overlap_px),
            "split": {"method": "area", "axis": split.axis, "val_fraction": req.val_fraction,
                      "gap_px": gap_px, "val_start_px": split.val_start_px,
                      "train_end_px": split.train_end_px},
            "skipped": {"empty": skipped_empty, "nodata": skipped_nodata,
                        "gap": len(split.gap)},
            "counts": counts,
            "samples": samples,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("%s: %d train / %d val chips (%d empty, %d nodata, %d gap left out)", out,
                counts["train"], counts["val"], skipped_empty, skipped_nodata, len(split.gap))
    return DatasetBuildResult(out.resolve(), out.resolve() / "manifest.json", counts,
                              skipped_empty, skipped_nodata, len(split.gap), kind, samples,
                              _round_gsd(grid.gsd_m))


def _round_gsd(g: Optional[float]) -> Optional[float]:
    return None if g is None else round(float(g), 6)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` folder to ``out``: an existing ``out`` is moved aside first
    and removed only once the new one is in place, under a journal that the next build into
    ``out`` (or ``roadseg recover``) uses to finish a swap a killed run left half done
    (:func:`app.service.staging.replace_folder`)."""
    replace_folder(tmp, out)


__all__ = ["DatasetBuildRequest", "DatasetBuildResult", "build_chip_dataset",
           "rasterize_labels", "label_kind", "gsd_from_checkpoint", "STATUSES"]
