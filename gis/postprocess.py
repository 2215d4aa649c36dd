"""Mask post-processing on in-memory arrays (numpy / scipy / scikit-image, no I/O).

Areas are given in square metres and converted with the pixel area (from
:attr:`gis.io.RasterInfo.pixel_area_m2`, or :func:`pixel_area_m2` of a transform in a projected CRS).
All functions take and return 2-D arrays ``(H, W)``; masks are bool.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np
from affine import Affine
from scipy import ndimage

__all__ = [
    "threshold",
    "pixel_area_m2",
    "area_to_pixels",
    "remove_small_objects_m2",
    "remove_small_holes_m2",
    "morphological_cleanup",
    "clean_mask",
]

log = logging.getLogger(__name__)


def threshold(probs: np.ndarray, value: float = 0.5, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Binary mask ``probs >= value`` as bool ``(H, W)``; False where ``valid`` is False.

    ``probs`` may be float 0..1 or uint8 0..254 (see :data:`gis.mosaic.PROB_SCALE`); for uint8 the
    threshold is scaled accordingly and the nodata value 255 is never foreground.
    """
    p = np.asarray(probs)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"threshold must be in 0..1, got {value}")
    if p.dtype == np.uint8:
        from gis.mosaic import PROB_NODATA, PROB_SCALE

        m = (p >= int(math.ceil(value * PROB_SCALE - 1e-9))) & (p != PROB_NODATA)
    else:
        m = p >= value
    if valid is not None:
        m &= np.asarray(valid, bool)
    return m


def pixel_area_m2(transform: Affine, linear_unit_m: float = 1.0) -> float:
    """Area of one pixel in m² for a projected CRS (``|det(transform)| * unit²``).

    For geographic rasters use :attr:`gis.io.RasterInfo.pixel_area_m2` instead.
    """
    return abs(transform.a * transform.e - transform.b * transform.d) * linear_unit_m ** 2


def area_to_pixels(area_m2: float, pixel_area: float) -> int:
    """Number of whole pixels in ``area_m2`` (rounded up; at least 0)."""
    if pixel_area <= 0:
        raise ValueError(f"pixel area must be positive, got {pixel_area}")
    return max(0, int(math.ceil(area_m2 / pixel_area - 1e-9)))


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-neighbours) or 2 (8-neighbours), got {connectivity}")
    return ndimage.generate_binary_structure(2, connectivity)


def remove_small_objects_m2(
    mask: np.ndarray, min_area_m2: float, pixel_area: float, connectivity: int = 2
) -> np.ndarray:
    """Drop connected foreground components smaller than ``min_area_m2``; bool ``(H, W)``."""
    m = np.asarray(mask, bool)
    n_min = area_to_pixels(min_area_m2, pixel_area)
    if n_min <= 1 or not m.any():
        return m.copy()
    labels, n = ndimage.label(m, structure=_structure(connectivity))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= n_min
    keep[0] = False
    return keep[labels]


def remove_small_holes_m2(
    mask: np.ndarray, max_hole_m2: float, pixel_area: float, connectivity: int = 1
) -> np.ndarray:
    """Fill background components smaller than ``max_hole_m2`` that do not touch the border."""
    m = np.asarray(mask, bool)
    n_max = area_to_pixels(max_hole_m2, pixel_area)
    if n_max <= 1:
        return m.copy()
    bg = ~m
    labels, n = ndimage.label(bg, structure=_structure(connectivity))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = sizes < n_max
    fill[0] = False
    fill[border] = False
    return m | fill[labels]


def morphological_cleanup(
    mask: np.ndarray, opening_px: int = 0, closing_px: int = 0
) -> np.ndarray:
    """Binary closing (bridges gaps) then opening (removes spurs) with discs of the given radii."""
    from skimage.morphology import binary_closing, binary_opening, disk

    m = np.asarray(mask, bool)
    if closing_px > 0:
        m = binary_closing(m, disk(int(closing_px)))
    if opening_px > 0:
        m = binary_opening(m, disk(int(opening_px)))
    return m


def clean_mask(
    mask: np.ndarray,
    pixel_area: float,
    *,
    min_object_m2: float = 0.0,
    max_hole_m2: float = 0.0,
    closing_px: int = 0,
    opening_px: int = 0,
    valid: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Morphological cleanup, then hole filling and small object removal; bool ``(H, W)``.

    Args:
        mask: bool ``(H, W)`` foreground.
        pixel_area: m² per pixel.
        valid: optional valid-data mask; the result is False outside it.
    """
    m = morphological_cleanup(mask, opening_px=opening_px, closing_px=closing_px)
    if max_hole_m2 > 0:
        m = remove_small_holes_m2(m, max_hole_m2, pixel_area)
    if min_object_m2 > 0:
        m = remove_small_objects_m2(m, min_object_m2, pixel_area)
    if valid is not None:
        m &= np.asarray(valid, bool)
    return m
