"""Qt-free scoring of extracted road lines against reference lines (``roadseg eval --lines``).

Reads two vector files (GeoPackage, GeoJSON, Shapefile; a GeoPackage's ``edges`` layer by
default), computes APLS (:func:`gis.evaluate.apls`) and the buffered centre-line
precision/recall (:func:`gis.evaluate.buffered_precision_recall`), and optionally writes both
as a JSON report (temporary name + rename).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.staging import atomic_file

__all__ = ["LineEvalRequest", "read_lines", "run_line_evaluation"]

_LINE_TYPES = {"LineString", "MultiLineString", "LinearRing"}


@dataclass(frozen=True)
class LineEvalRequest:
    """Score the road lines in ``lines`` against the reference lines in ``reference``.
    ``layer`` / ``reference_layer``: layer names in multi-layer files (default: ``edges`` where
    present, else the only layer)."""

    lines: str
    reference: str
    layer: Optional[str] = None
    reference_layer: Optional[str] = None
    buffer_m: float = 4.0
    control_spacing_m: float = 50.0
    snap_m: float = 4.0
    out: Optional[str] = None
    overwrite: bool = False


def _pick_layer(path: Path, layer: Optional[str]) -> Optional[str]:
    import pyogrio

    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    except (RuntimeError, OSError, ValueError) as exc:  # pyogrio's errors are RuntimeErrors
        detail = str(exc).splitlines()[0].split(";")[0].replace(f"'{path}' ", "")
        raise UserError(f"{path}: not a readable vector file ({detail})") from None
    if layer is not None:
        if layer not in layers:
            raise UserError(f"{path}: no layer {layer!r} (layers: {', '.join(layers)})")
        return layer
    if len(layers) <= 1:
        return layers[0] if layers else None
    if "edges" in layers:
        return "edges"
    raise UserError(f"{path}: several layers ({', '.join(layers)}); choose one with --layer "
                    "/ --reference-layer")


def read_lines(path: str, layer: Optional[str] = None):
    """The line features of ``path`` (a GeoDataFrame with a CRS); :class:`UserError` naming
    the file when it is missing, unreadable, has no CRS or holds no lines."""
    import geopandas as gpd

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    name = _pick_layer(p, layer)
    try:
        gdf = gpd.read_file(p, layer=name) if name is not None else gpd.read_file(p)
    except (RuntimeError, OSError, ValueError) as exc:
        raise UserError(f"{p}: cannot read ({str(exc).splitlines()[0]})") from None
    if gdf.crs is None:
        raise UserError(f"{p}: has no coordinate reference system")
    gdf = gdf[~(gdf.geometry.isna() | gdf.geometry.is_empty)]
    other = set(gdf.geom_type) - _LINE_TYPES
    if other:
        raise UserError(f"{p}: expected line geometries, found {', '.join(sorted(other))}")
    return gdf


def _write_json(report: Dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, allow_nan=False)
        f.write("\n")


def run_line_evaluation(req: LineEvalRequest) -> Dict[str, Any]:
    """APLS and buffered precision/recall of ``req.lines`` against ``req.reference``; the
    report dict (also written to ``req.out`` when given). :class:`UserError` for bad input."""
    from gis.evaluate import apls, buffered_precision_recall

    if req.buffer_m <= 0:
        raise UserError(f"--buffer-m must be > 0, got {req.buffer_m}")
    if req.control_spacing_m <= 0 or req.snap_m < 0:
        raise UserError("--control-spacing-m must be > 0 and --snap-m >= 0")
    out = Path(req.out) if req.out else None
    if out is not None and out.exists() and not req.overwrite:
        raise UserError(f"{out}: already exists (use --overwrite)")
    pred = read_lines(req.lines, req.layer)
    ref = read_lines(req.reference, req.reference_layer)
    t0 = time.perf_counter()
    try:
        a = apls(pred, ref, control_spacing_m=req.control_spacing_m, snap_m=req.snap_m)
        b = buffered_precision_recall(pred, ref, req.buffer_m)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    report = {"lines": str(req.lines), "reference": str(req.reference),
              "apls": a.as_dict(), "buffered": b.as_dict(),
              "seconds": round(time.perf_counter() - t0, 3)}
    if out is not None:
        _write_json(report, out)
    return report
