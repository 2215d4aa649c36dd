"""The thresholds of :func:`gis.vectorize.vectorize_mask` (:class:`VectorizeParams`), apart from
the vectorizer itself so that the extraction service and the CLI get them without importing
geopandas, networkx, scikit-image and pyproj (about 1.4 s before the first tile)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

__all__ = ["VectorizeParams"]


@dataclass(frozen=True)
class VectorizeParams:
    """Thresholds of :func:`vectorize_mask`, all in metres / square metres.

    Defaults suit 0.3-1 m imagery. ``simplify_tolerance_m=None`` means one pixel (the larger of the
    two pixel dimensions in metres); 0 disables simplification. ``threshold`` is used only where a
    probability raster is thresholded into a mask (:func:`vectorize_mask_file` without a mask).
    """

    min_object_area_m2: float = 20.0
    max_hole_area_m2: float = 20.0
    spur_length_m: float = 10.0
    junction_merge_m: float = 3.0
    gap_m: float = 6.0
    collinear_gap_m: float = 30.0
    collinear_angle_deg: float = 25.0
    direction_probe_m: float = 10.0
    min_component_length_m: float = 20.0
    simplify_tolerance_m: Optional[float] = None
    threshold: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_object_area_m2", "max_hole_area_m2", "spur_length_m",
                     "junction_merge_m", "gap_m",
                     "collinear_gap_m", "direction_probe_m", "min_component_length_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"VectorizeParams.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.collinear_angle_deg <= 90:
            raise ValueError(
                f"collinear_angle_deg must be in 0..90, got {self.collinear_angle_deg}"
            )
        if self.simplify_tolerance_m is not None and self.simplify_tolerance_m < 0:
            raise ValueError(f"simplify_tolerance_m must be >= 0, got {self.simplify_tolerance_m}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in 0..1, got {self.threshold}")
