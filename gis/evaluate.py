"""Geometric quality measures of extracted road lines against reference lines."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Dict, Union

import geopandas as gpd
from shapely import union_all

from gis.errors import CRSError

log = logging.getLogger(__name__)

Lines = Union[gpd.GeoDataFrame, gpd.GeoSeries]

__all__ = ["BufferedScore", "buffered_precision_recall", "metric_crs_for"]


@dataclass(frozen=True)
class BufferedScore:
    """Result of :func:`buffered_precision_recall`; lengths in metres."""

    precision: float
    recall: float
    f1: float
    pred_length_m: float
    ref_length_m: float
    buffer_m: float
    metric_crs: str

    def as_dict(self) -> Dict[str, object]:
        return asdict(self)


def _geoseries(lines: Lines, name: str) -> gpd.GeoSeries:
    s = lines.geometry if isinstance(lines, gpd.GeoDataFrame) else lines
    if not isinstance(s, gpd.GeoSeries):
        raise TypeError(f"{name} must be a GeoDataFrame or GeoSeries, got {type(lines).__name__}")
    if s.crs is None:
        raise CRSError(f"{name} has no CRS")
    return s[~(s.is_empty | s.isna())]


def metric_crs_for(lines: Lines):
    """The CRS in which lengths of ``lines`` are measured: a projected metre CRS stays, anything
    else (geographic, feet) becomes the local UTM zone (``estimate_utm_crs``)."""
    s = _geoseries(lines, "lines")
    crs = s.crs
    if crs.is_projected and crs.axis_info and crs.axis_info[0].unit_conversion_factor == 1.0:
        return crs
    return s.estimate_utm_crs()


def buffered_precision_recall(
    pred_lines: Lines, ref_lines: Lines, buffer_m: float
) -> BufferedScore:
    """Length-based precision and recall of predicted lines within ``buffer_m`` of reference lines.

    precision = length of ``pred_lines`` within ``buffer_m`` of ``ref_lines`` / total predicted
    length; recall = length of ``ref_lines`` within ``buffer_m`` of ``pred_lines`` / total reference
    length. Both inputs need a CRS; they are measured in the reference's metric CRS (its local UTM
    zone when geographic). Empty predictions give precision 0 (and recall 0); an empty reference
    gives recall 0.
    """
    if buffer_m <= 0:
        raise ValueError(f"buffer_m must be > 0, got {buffer_m}")
    ref = _geoseries(ref_lines, "ref_lines")
    pred = _geoseries(pred_lines, "pred_lines")
    mcrs = metric_crs_for(ref) if len(ref) else metric_crs_for(pred) if len(pred) else ref.crs
    ref_m = ref.to_crs(mcrs)
    pred_m = pred.to_crs(mcrs)
    pred_len = float(pred_m.length.sum())
    ref_len = float(ref_m.length.sum())

    def within(a: gpd.GeoSeries, b: gpd.GeoSeries) -> float:
        if not len(a) or not len(b):
            return 0.0
        zone = union_all(list(b.geometry.buffer(buffer_m)))
        return float(a.intersection(zone).length.sum())

    p = within(pred_m, ref_m) / pred_len if pred_len > 0 else 0.0
    r = within(ref_m, pred_m) / ref_len if ref_len > 0 else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return BufferedScore(p, r, f1, pred_len, ref_len, float(buffer_m), mcrs.to_string())
