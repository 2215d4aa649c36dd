"""Row strips of a road mask: the sources :mod:`gis.vectorize` reads, and its strip-wise steps.

Vectorizing a mask needs whole-raster answers (is this blob smaller than 20 m²? is this hole
enclosed?) but must not hold a whole 20000 x 20000 mask and its label arrays in memory. Everything
here works on horizontal strips of ``strip_rows`` rows (by default about 16 M pixels; see
:func:`strip_rows_for`) and keeps at most a strip and its margins in memory:

* :class:`MaskSource` gives rows ``[r0, r1)`` of a mask and of its probability:
  :class:`ArrayMaskSource` for arrays in memory, :class:`RasterMaskSource` for GeoTIFFs (read
  window by window with a bounded GDAL block cache).
* :func:`clean_mask_strips` removes small objects and fills small holes exactly as a whole-mask
  connected-component labelling would: each strip is labelled on its own and the labels that touch
  across strip seams are joined with a union-find, so component sizes (and, for holes, whether a
  background component touches the raster border) are those of the whole raster. Three passes
  over the source: object sizes, hole sizes, then the cleaned strips.
* :class:`PackedRows` keeps the cleaned mask at one bit per pixel, in a temporary file when it
  spans more than one strip, for the later windowed passes (skeleton, distance transform).

Thinning and the distance transform are local: a strip read with ``margin`` rows above and below
gives the same skeleton and distances in its own rows as the whole mask would, for any structure
narrower than about the margin (128 px by default, roads up to ~38 m wide at 0.3 m).
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
from affine import Affine
from scipy import ndimage

from gis.errors import VectorizeError

PathLike = Union[str, Path]

__all__ = [
    "MaskSource",
    "ArrayMaskSource",
    "RasterMaskSource",
    "PackedRows",
    "clean_mask_strips",
    "iter_windows",
    "pixel_thresholds",
    "strip_rows_for",
    "strip_bounds",
    "as_mask",
    "as_probability",
    "STRIP_PIXELS",
    "MARGIN_PX",
]

#: pixels per strip (rows = this / width, at least :data:`MIN_STRIP_ROWS`)
STRIP_PIXELS = 1 << 24
MIN_STRIP_ROWS = 256
#: rows read above and below a strip for thinning and distances (twice the border padding of
#: :mod:`gis.vectorize`, i.e. structures up to ~128 px wide are treated exactly)
MARGIN_PX = 128
#: GDAL block cache while strips are read (MB). GDAL's default (5 % of RAM) would fill with blocks
#: that are never read again; the cache fills up to its bound whatever the need, so it is kept
#: small: it only has to hold the block row that two strips share (10 MB for a 20000 px wide
#: uint8 raster with 512-row blocks; the mask and the probability are read in different passes)
GDAL_CACHE_MB = 16

_EIGHT = np.ones((3, 3), dtype=bool)
_FOUR = ndimage.generate_binary_structure(2, 1)


def strip_rows_for(width: int, strip_pixels: int = STRIP_PIXELS) -> int:
    """Rows per strip for a raster ``width`` pixels wide."""
    return max(MIN_STRIP_ROWS, int(strip_pixels) // max(int(width), 1))


def strip_bounds(height: int, rows: int) -> List[Tuple[int, int]]:
    """``[(r0, r1), ...]`` covering ``0..height`` in strips of ``rows`` rows."""
    rows = max(int(rows), 1)
    return [(r0, min(r0 + rows, height)) for r0 in range(0, max(height, 0), rows)]


def as_mask(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool of a mask array (``(1, H, W)`` accepted; non-zero = road)."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise VectorizeError(f"mask must be (H, W), got shape {m.shape}")
    return m != 0 if m.dtype != bool else m


def as_probability(prob: Optional[np.ndarray], shape: Tuple[int, int]) -> Optional[np.ndarray]:
    """Probability array checked against ``shape`` (``(1, H, W)`` accepted), not converted: float
    0..1 (NaN = no data) or uint8 0..254 with 255 = no data (the :mod:`gis.mosaic` encoding)."""
    if prob is None:
        return None
    p = np.asarray(prob)
    if p.ndim == 3 and p.shape[0] == 1:
        p = p[0]
    if p.shape != tuple(shape):
        raise VectorizeError(f"probability shape {p.shape} does not match mask shape {shape}")
    return p


def _decode_probability(raw: np.ndarray, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 probabilities (NaN = no data) of a uint8 (``/ PROB_SCALE``, 255 = no data) or float
    block."""
    from gis.mosaic import PROB_NODATA, PROB_SCALE

    if raw.dtype == np.uint8:
        q = raw.astype(np.float32) / PROB_SCALE
        q[raw == PROB_NODATA] = np.nan
    else:
        q = raw.astype(np.float32)
    if valid is not None:
        q[~valid] = np.nan
    return q


class MaskSource:
    """Rows of a road mask and its probability on one grid (``height`` x ``width``, ``transform``,
    ``crs`` which may be None). Subclasses implement :meth:`read_mask` and
    :meth:`read_probability`."""

    height: int
    width: int
    transform: Affine
    crs: object
    has_probability: bool = False
    name: str = "mask"

    def read_mask(self, r0: int, r1: int) -> np.ndarray:
        """bool ``(r1 - r0, width)``, True = road."""
        raise NotImplementedError

    def read_probability(self, r0: int, r1: int) -> Optional[np.ndarray]:
        """float32 ``(r1 - r0, width)`` 0..1 with NaN for no data, or None without one."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (no-op for arrays)."""

    def __enter__(self) -> "MaskSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArrayMaskSource(MaskSource):
    """A mask (and optional probability) held in memory; see :func:`as_mask` and
    :func:`as_probability` for the accepted arrays."""

    def __init__(self, mask: np.ndarray, transform: Affine, crs: object,
                 probability: Optional[np.ndarray] = None) -> None:
        self._mask = as_mask(mask)
        self.height, self.width = self._mask.shape
        self._prob = as_probability(probability, self._mask.shape)
        self.transform = Affine(*tuple(transform)[:6])
        self.crs = crs
        self.has_probability = self._prob is not None

    def read_mask(self, r0: int, r1: int) -> np.ndarray:
        return self._mask[r0:r1]

    def read_probability(self, r0: int, r1: int) -> Optional[np.ndarray]:
        if self._prob is None:
            return None
        return _decode_probability(self._prob[r0:r1])


class RasterMaskSource(MaskSource):
    """A mask GeoTIFF (road where band value > 0 and not no data) or a probability GeoTIFF
    thresholded at ``threshold`` (``mask_is_probability=True``), with an optional probability
    raster ``prob_path`` on the same grid (float 0..1, or uint8 0..254 with 255 = no data).

    Files stay open until :meth:`close`; reads go through rasterio windows.
    """

    def __init__(self, path: PathLike, *, band: int = 1, mask_is_probability: bool = False,
                 threshold: float = 0.5, prob_path: Optional[PathLike] = None,
                 prob_band: int = 1) -> None:
        import rasterio

        # rasterio hands an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
        self._env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB << 20)
        self._env.__enter__()
        self._files: List[object] = []
        try:
            self._ds = self._open(path)
            self.path = Path(path)
            self.name = str(path)
            self._band = self._check_band(self._ds, band)
            self.height, self.width = int(self._ds.height), int(self._ds.width)
            self.transform = self._ds.transform
            crs = self._ds.crs
            # a CRS without a geodetic datum (LOCAL_CS) works in pixel units like no CRS;
            # gis.io.open_raster refuses it unless pixel coordinates are allowed
            self.crs = crs if crs and (crs.is_projected or crs.is_geographic) else None
            self._threshold = float(threshold)
            self._is_prob = bool(mask_is_probability)
            self._pds = None
            self._pband = 1
            if prob_path is not None:
                self._pds = self._open(prob_path)
                self._pband = self._check_band(self._pds, prob_band)
                if (self._pds.height, self._pds.width) != (self.height, self.width) or \
                        not self._pds.transform.almost_equals(self.transform):
                    raise VectorizeError(
                        f"{prob_path}: probability grid does not match the mask grid of {path}")
            elif self._is_prob:
                self._pds, self._pband = self._ds, self._band
            self.has_probability = self._pds is not None
        except BaseException:
            self.close()
            raise

    def _open(self, path: PathLike):
        from gis.io import _open

        ds = _open(path)  # one-line RasterReadError naming the file
        self._files.append(ds)
        return ds

    @staticmethod
    def _check_band(ds: object, band: int) -> int:
        if not 1 <= int(band) <= ds.count:  # type: ignore[attr-defined]
            raise VectorizeError(f"{ds.name}: band {band} requested but the raster has "  # type: ignore[attr-defined]
                                 f"{ds.count} band(s)")  # type: ignore[attr-defined]
        return int(band)

    def _read(self, ds: object, band: int, r0: int, r1: int) -> Tuple[np.ndarray, np.ndarray]:
        """Rows ``r0..r1`` of one band in its own dtype and their valid-data mask."""
        from gis.io import read_window_raw
        from rasterio.windows import Window

        raw, valid = read_window_raw(ds, Window(0, r0, self.width, r1 - r0), (band,))
        return raw[0], valid

    def read_mask(self, r0: int, r1: int) -> np.ndarray:
        if self._is_prob:
            p = self.read_probability(r0, r1)
            with np.errstate(invalid="ignore"):
                return np.nan_to_num(p, nan=0.0) >= self._threshold
        raw, valid = self._read(self._ds, self._band, r0, r1)
        with np.errstate(invalid="ignore"):
            return (raw > 0) & valid

    def read_probability(self, r0: int, r1: int) -> Optional[np.ndarray]:
        if self._pds is None:
            return None
        raw, valid = self._read(self._pds, self._pband, r0, r1)
        return _decode_probability(raw, valid)

    def close(self) -> None:
        for ds in self._files:
            try:
                ds.close()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - closing must not mask the original error
                pass
        self._files = []
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None


class PackedRows:
    """A bool ``(height, width)`` raster written and read by rows at one bit per pixel: in memory
    for a single strip, else in a temporary file (removed by :meth:`close`)."""

    def __init__(self, height: int, width: int, in_memory: bool) -> None:
        self.height, self.width = int(height), int(width)
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        nbytes = (self.width + 7) // 8
        if in_memory:
            self._bits = np.zeros((self.height, nbytes), dtype=np.uint8)
        else:
            self._dir = tempfile.TemporaryDirectory(prefix="roadseg_vectorize_")
            self._bits = np.memmap(os.path.join(self._dir.name, "mask.bits"), dtype=np.uint8,
                                   mode="w+", shape=(max(self.height, 1), nbytes))

    def write(self, r0: int, rows: np.ndarray) -> None:
        self._bits[r0:r0 + len(rows)] = np.packbits(rows, axis=1)

    def read(self, r0: int, r1: int) -> np.ndarray:
        return np.unpackbits(self._bits[r0:r1], axis=1, count=self.width).view(bool)

    def close(self) -> None:
        if self._dir is not None:
            del self._bits
            self._dir.cleanup()
            self._dir = None

    def __enter__(self) -> "PackedRows":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# connected components across strips
# --------------------------------------------------------------------------------------------
class _Components:
    """Sizes (and border contact) of the connected components of a binary raster given strip by
    strip: each strip is labelled alone (``scipy.ndimage.label``) and labels touching across a
    seam are joined. Strip ``k``'s label ``i`` has the global id ``offsets[k] + i - 1``."""

    def __init__(self, structure: np.ndarray) -> None:
        self.structure = structure
        self.offsets: List[int] = []
        self._sizes: List[np.ndarray] = []
        self._border: List[np.ndarray] = []
        self._parent: Dict[int, int] = {}
        self._prev_last: Optional[np.ndarray] = None
        self.total = 0

    def _find(self, a: int) -> int:
        parent = self._parent
        root = a
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(a, a) != root:
            parent[a], a = root, parent[a]
        return root

    def _union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)

    def label(self, binary: np.ndarray) -> Tuple[np.ndarray, int]:
        return ndimage.label(binary, structure=self.structure)

    def add(self, binary: np.ndarray, first: bool, last: bool) -> None:
        lab, n = self.label(binary)
        off = self.total
        self.offsets.append(off)
        self.total += n
        if n == 0:
            self._prev_last = None
            return
        self._sizes.append(np.bincount(lab.ravel(), minlength=n + 1)[1:])
        edge = [lab[:, 0], lab[:, -1]] + ([lab[0]] if first else []) + ([lab[-1]] if last else [])
        touching = np.unique(np.concatenate(edge))
        self._border.append(touching[touching > 0] - 1 + off)
        g_first = np.where(lab[0] > 0, lab[0].astype(np.int64) - 1 + off, -1)
        if self._prev_last is not None:
            a_row, b_row = self._prev_last, g_first
            w = len(a_row)
            shifts = (-1, 0, 1) if self.structure.sum() == 9 else (0,)
            pairs = []
            for dc in shifts:
                a = a_row[max(0, -dc): w - max(0, dc)]
                b = b_row[max(0, dc): w - max(0, -dc)]
                both = (a >= 0) & (b >= 0)
                if both.any():
                    pairs.append(np.column_stack([a[both], b[both]]))
            if pairs:
                for x, y in np.unique(np.concatenate(pairs), axis=0).tolist():
                    self._union(x, y)
        self._prev_last = np.where(lab[-1] > 0, lab[-1].astype(np.int64) - 1 + off, -1)

    def skip(self) -> None:
        """A strip with no component at all (not labelled)."""
        self.offsets.append(self.total)
        self._prev_last = None

    def finish(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(root, size, border)``: root id per global id, and per root id its component's pixel
        count and whether it touches the raster border."""
        root = np.arange(self.total, dtype=np.int64)
        for a in list(self._parent):
            root[a] = self._find(a)
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        size = np.bincount(root, weights=sizes, minlength=self.total).astype(np.int64)
        border = np.zeros(self.total, dtype=bool)
        if self._border:
            border[root[np.concatenate(self._border)]] = True
        return root, size, border


def _flags_for_strip(comp: _Components, k: int, n: int, root: np.ndarray,
                     flag: np.ndarray) -> np.ndarray:
    """Per local label ``0..n`` of strip ``k`` (0 = background, False) the root's ``flag``."""
    out = np.zeros(n + 1, dtype=bool)
    if n:
        out[1:] = flag[root[comp.offsets[k] + np.arange(n)]]
    return out


def clean_mask_strips(
    read: Callable[[int, int], np.ndarray],
    strips: List[Tuple[int, int]],
    small_object_px: int,
    max_hole_px: int,
    emit: Callable[[int, np.ndarray], None],
    check: Callable[[], None] = lambda: None,
) -> None:
    """Remove 8-connected objects of at most ``small_object_px`` pixels, then fill 4-connected
    background components of at most ``max_hole_px`` pixels that do not touch the raster border;
    component sizes are those of the whole raster (see the module docstring).

    Args:
        read: ``read(r0, r1)`` -> bool rows of the mask.
        strips: row ranges covering the raster, in order.
        small_object_px, max_hole_px: thresholds in pixels (``<= 0`` skips the step).
        emit: ``emit(r0, cleaned_rows)`` for each strip, in order.
        check: called between strips (raises to cancel).
    """
    last = len(strips) - 1
    objects = holes = None
    remove = fill = None
    if small_object_px > 0:
        objects = _Components(_EIGHT)
        for k, (r0, r1) in enumerate(strips):
            m = read(r0, r1)
            objects.add(m, k == 0, k == last) if m.any() else objects.skip()
            check()
        root_o, size_o, _ = objects.finish()
        remove = size_o <= small_object_px

    def without_small(k: int, m: np.ndarray) -> np.ndarray:
        if objects is None or not m.any():
            return m
        lab, n = objects.label(m)
        return m & ~_flags_for_strip(objects, k, n, root_o, remove)[lab]

    if max_hole_px > 0:
        holes = _Components(_FOUR)
        for k, (r0, r1) in enumerate(strips):
            bg = ~without_small(k, read(r0, r1))
            holes.add(bg, k == 0, k == last) if bg.any() else holes.skip()
            check()
        root_h, size_h, border_h = holes.finish()
        fill = (size_h <= max_hole_px) & ~border_h
    for k, (r0, r1) in enumerate(strips):
        m = without_small(k, read(r0, r1))
        if holes is not None:
            bg = ~m
            if bg.any():
                lab, n = holes.label(bg)
                m = m | _flags_for_strip(holes, k, n, root_h, fill)[lab]
        emit(r0, m)
        check()


def iter_windows(strips: List[Tuple[int, int]], height: int,
                 margin: int) -> Iterator[Tuple[int, int, int, int]]:
    """``(r0, r1, a, b)`` per strip: the strip rows and the rows ``[a, b)`` read around them."""
    for r0, r1 in strips:
        yield r0, r1, max(0, r0 - margin), min(height, r1 + margin)


def pixel_thresholds(min_object_area_m2: float, max_hole_area_m2: float,
                     pixel_area_m2: float) -> Tuple[int, int]:
    """Object (remove if at most this many pixels) and hole (fill if at most) sizes in pixels."""
    small_obj = int(math.ceil(min_object_area_m2 / pixel_area_m2)) - 1
    max_hole = int(math.floor(max_hole_area_m2 / pixel_area_m2))
    return small_obj, max_hole
