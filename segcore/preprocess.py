"""Input preprocessing: the one place where raw band values become network input (numpy only).

Training, evaluation, extraction, the training-chip builders and the Ascend 310 host path all
build their normaliser here, from a checkpoint's ``normalization`` metadata plus, for the
``percentile`` method, whole-scene statistics (per-band limits that :mod:`gis` reads once on a
decimated copy of the raster). Nothing else converts raw pixels to network input, so a model
trained with one path and run with another sees the same numbers.

Methods (``normalization["method"]``):

* ``meanstd`` (also ``imagenet``, ``uint8``): ``(raw * s - mean) / std`` per band with
  ``s = 1 / scale`` for ``scale > 1`` (``scale: 255``, the default) or ``s = scale``; default
  ImageNet mean/std.
* ``dlinknet``: ``raw / 255 * 3.2 - 1.6`` (the D-LinkNet seed).
* ``percentile``: each band is stretched linearly between the scene's ``low`` and ``high``
  percentiles (default 2 and 98) and **quantised to 8-bit levels**
  ``q = rint(clip((raw - lo) / (hi - lo) * 255, 0, 255))``; then ``(q / 255 - mean) / std``
  (training records mean 0.5, std 0.3125 by default; an entry without them gives ``q / 255``).
  Training chips store ``q`` as uint8 (:func:`stretch_to_uint8`), so a chip and an inference
  tile of the same pixels give identical arrays. Without scene limits each image's own
  percentiles are used.
* ``none``: cast to float32 only.

All float32 arithmetic runs as per-channel fused affine maps ``x * a + b`` (one output array,
in-place passes), so the same input gives the same bits whichever path calls it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError

__all__ = ["Preprocessor", "preprocessor_from_meta", "stretch_limits", "stretch_to_uint8",
           "normalization_entry", "METHODS", "DEFAULT_PERCENTILES", "PERCENTILE_MEAN",
           "PERCENTILE_STD"]

METHODS = ("meanstd", "imagenet", "uint8", "dlinknet", "percentile", "none")
DEFAULT_PERCENTILES = (2.0, 98.0)
PERCENTILE_MEAN = (0.5,)
PERCENTILE_STD = (0.3125,)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _tuple(v: Any) -> Optional[Tuple[float, ...]]:
    if v is None:
        return None
    return tuple(float(a) for a in np.ravel(np.asarray(v, dtype=np.float64)))


def _per_channel(v: Tuple[float, ...], c: int, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.size == 1:
        return np.repeat(a, c)
    if a.size != c:
        raise ConfigError(f"normalisation: {name} has {a.size} values for {c} bands; give one "
                          "value or one per band")
    return a


def normalization_entry(norm: Optional[Mapping[str, Any]]) -> dict:
    """The ``normalization`` metadata entry with every default written out (what a checkpoint
    records, so inference applies exactly what training did)."""
    out = dict(norm or {"method": "meanstd"})
    method = str(out.get("method", "meanstd")).lower()
    if method not in METHODS:
        raise ConfigError(f"unknown normalisation method {method!r} ({', '.join(METHODS)})")
    out["method"] = method
    if method == "percentile":
        out.setdefault("low", DEFAULT_PERCENTILES[0])
        out.setdefault("high", DEFAULT_PERCENTILES[1])
        out.setdefault("mean", list(PERCENTILE_MEAN))
        out.setdefault("std", list(PERCENTILE_STD))
    return out


@dataclass(frozen=True)
class Preprocessor:
    """A picklable normaliser ``(C, H, W) | (N, C, H, W)`` raw values -> float32 network input.

    Build it with :func:`preprocessor_from_meta`. ``lo``/``hi`` (raw units, per band) are the
    scene limits of a ``percentile`` normaliser; without them each image is stretched between
    its own percentiles (per sample of a batch).
    """

    method: str = "meanstd"
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    scale: float = 1.0 / 255.0
    low_pct: float = DEFAULT_PERCENTILES[0]
    high_pct: float = DEFAULT_PERCENTILES[1]
    lo: Optional[Tuple[float, ...]] = None
    hi: Optional[Tuple[float, ...]] = None

    # -- coefficients -----------------------------------------------------------------------
    def output_affine(self, c: int) -> Tuple[np.ndarray, np.ndarray]:
        """float32 ``(a, b)`` of the final per-band map ``y = v * a + b`` where ``v`` is the raw
        value (``meanstd``/``dlinknet``/``none``) or the 8-bit level (``percentile``)."""
        return _output_affine(self, c)

    def stretch_affine(self, c: int, lo=None, hi=None) -> Tuple[np.ndarray, np.ndarray]:
        """float32 ``(a, b)`` of ``(raw - lo) / (hi - lo) * 255`` per band."""
        lo = _per_channel(_tuple(lo if lo is not None else self.lo), c, "lo")
        hi = _per_channel(_tuple(hi if hi is not None else self.hi), c, "hi")
        span = np.maximum(hi - lo, 1e-12)
        a = 255.0 / span
        return a.astype(np.float32), (-lo * a).astype(np.float32)

    def fusable(self, channels: int) -> bool:
        """True when :meth:`normalize_into` applies (scene limits known for ``percentile``)."""
        if self.method == "percentile" and (self.lo is None or self.hi is None):
            return False
        try:
            self.output_affine(channels)
            if self.method == "percentile":
                self.stretch_affine(channels)
        except ConfigError:
            return False
        return True

    # -- application ------------------------------------------------------------------------
    def normalize_into(self, raw: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Normalise one raw tile ``(C, H, W)`` of any numeric dtype into ``out`` (float32
        ``(C, H, W)``, e.g. a slot of a batch) without temporaries; ``out`` then equals
        ``self(raw)`` bit for bit."""
        if raw.ndim != 3 or out.shape != raw.shape or out.dtype != np.float32:
            raise ValueError(f"normalize_into: raw {raw.shape} into float32 of the same shape, "
                             f"got {out.dtype} {out.shape}")
        c = raw.shape[0]
        a, b = self.output_affine(c)
        if self.method == "percentile":
            if self.lo is None or self.hi is None:
                raise ValueError("normalize_into: a percentile normaliser needs scene limits")
            sa, sb = self.stretch_affine(c)
            for k in range(c):
                o = out[k]
                np.multiply(raw[k], sa[k], out=o, dtype=np.float32, casting="unsafe")
                np.add(o, sb[k], out=o)
                np.maximum(o, np.float32(0.0), out=o)
                np.minimum(o, np.float32(255.0), out=o)
                np.rint(o, out=o)
                np.multiply(o, a[k], out=o)
                np.add(o, b[k], out=o)
            return out
        for k in range(c):
            o = out[k]
            np.multiply(raw[k], a[k], out=o, dtype=np.float32, casting="unsafe")
            np.add(o, b[k], out=o)
        return out

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x = np.asarray(raw)
        if x.ndim not in (3, 4):
            raise ValueError(f"normalisation expects (C,H,W) or (N,C,H,W), got shape {x.shape}")
        if x.ndim == 4:
            out = np.empty(x.shape, np.float32)
            for i in range(x.shape[0]):
                self._one(x[i], out[i])
            return out
        out = np.empty(x.shape, np.float32)
        return self._one(x, out)

    def _one(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        if self.method == "percentile" and (self.lo is None or self.hi is None):
            lo, hi = stretch_limits(x, None, self.low_pct, self.high_pct)
            return Preprocessor(self.method, self.mean, self.std, self.scale, self.low_pct,
                                self.high_pct, _tuple(lo), _tuple(hi)).normalize_into(x, out)
        return self.normalize_into(x, out)

    # -- training chips ---------------------------------------------------------------------
    def to_uint8(self, raw: np.ndarray, lo=None, hi=None) -> np.ndarray:
        """The 8-bit levels ``q`` of ``raw`` ``(C, H, W)`` (``percentile`` only): what training
        chips store. ``lo``/``hi`` default to this normaliser's scene limits."""
        if self.method != "percentile":
            raise ConfigError(f"to_uint8: only the percentile method has 8-bit levels, not "
                              f"{self.method!r}")
        return stretch_to_uint8(raw, lo if lo is not None else self.lo,
                                hi if hi is not None else self.hi)

    def with_limits(self, lo, hi) -> "Preprocessor":
        """This normaliser with scene limits ``lo``/``hi`` (raw units, per band)."""
        return Preprocessor(self.method, self.mean, self.std, self.scale, self.low_pct,
                            self.high_pct, _tuple(lo), _tuple(hi))

    def on_uint8_levels(self) -> "Preprocessor":
        """For ``percentile``: the normaliser of data already stretched to 8-bit levels (chips
        written by :func:`stretch_to_uint8`): limits 0 and 255, i.e. only ``(q/255-mean)/std``,
        the same float32 operations as the tail of the full path."""
        if self.method != "percentile":
            return self
        return self.with_limits((0.0,), (255.0,))


@functools.lru_cache(maxsize=64)
def _output_affine(p: Preprocessor, c: int) -> Tuple[np.ndarray, np.ndarray]:
    method = p.method
    one = np.ones(c, dtype=np.float64)
    if method == "none":
        a, b = one, 0.0 * one
    elif method == "dlinknet":
        a, b = one * (3.2 / 255.0), one * -1.6
    elif method == "percentile":
        mean = _per_channel(p.mean or PERCENTILE_MEAN, c, "mean")
        std = _per_channel(p.std or PERCENTILE_STD, c, "std")
        if np.any(std <= 0):
            raise ConfigError(f"normalisation: std must be > 0, got {p.std}")
        a, b = one / (255.0 * std), -mean / std
    elif method in ("meanstd", "imagenet", "uint8"):
        mean = _per_channel(p.mean if p.mean is not None else _IMAGENET_MEAN, c, "mean")
        std = _per_channel(p.std if p.std is not None else _IMAGENET_STD, c, "std")
        if np.any(std <= 0):
            raise ConfigError(f"normalisation: std must be > 0, got {p.std}")
        a, b = float(p.scale) / std, -mean / std
    else:
        raise ConfigError(f"unknown normalisation method {method!r} ({', '.join(METHODS)})")
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    a32.setflags(write=False)
    b32.setflags(write=False)
    return a32, b32


def _scale_factor(scale: Any) -> float:
    s = float(scale if scale is not None else 255)
    if s <= 0:
        raise ConfigError(f"normalisation: scale must be > 0, got {scale}")
    return 1.0 / s if s > 1 else s


def preprocessor_from_meta(meta: Any, stretch: Optional[Tuple[Sequence[float], Sequence[float]]]
                           = None) -> Preprocessor:
    """The normaliser of a checkpoint.

    Args:
        meta: a :class:`segcore.checkpoint.CheckpointMeta`, its sidecar dict, or the
            ``normalization`` dict itself (a mapping with a ``method`` key).
        stretch: ``(lo, hi)`` per-band scene limits in raw units for ``percentile`` (computed
            once over the whole raster); without them each image's own percentiles are used.
    """
    if isinstance(meta, Mapping) and "method" in meta:
        norm = meta
    elif isinstance(meta, Mapping):
        norm = meta.get("normalization")
    else:
        norm = getattr(meta, "normalization", None)
    norm = dict(norm or {"method": "meanstd"})
    method = str(norm.get("method", "meanstd")).lower()
    if method not in METHODS:
        raise ConfigError(f"unknown normalisation method {method!r} ({', '.join(METHODS)})")
    mean, std = _tuple(norm.get("mean")), _tuple(norm.get("std"))
    if method == "percentile":
        lo_p = float(norm.get("low", DEFAULT_PERCENTILES[0]))
        hi_p = float(norm.get("high", DEFAULT_PERCENTILES[1]))
        if not 0.0 <= lo_p < hi_p <= 100.0:
            raise ConfigError(f"normalisation: percentiles must satisfy 0 <= low < high <= 100, "
                              f"got {lo_p}, {hi_p}")
        lo = hi = None
        if stretch is not None:
            lo, hi = _tuple(stretch[0]), _tuple(stretch[1])
        # without mean/std the stretch alone (0..1); checkpoints trained here record the
        # training defaults explicitly (normalization_entry)
        return Preprocessor("percentile", mean or (0.0,), std or (1.0,), 1.0 / 255.0, lo_p, hi_p,
                            lo, hi)
    if method == "dlinknet":
        return Preprocessor("dlinknet")
    if method == "none":
        return Preprocessor("none")
    return Preprocessor(method, mean, std, _scale_factor(norm.get("scale", 255)))


def stretch_limits(image: np.ndarray, valid: Optional[np.ndarray] = None,
                   low_pct: float = DEFAULT_PERCENTILES[0],
                   high_pct: float = DEFAULT_PERCENTILES[1]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-band percentile limits ``(lo, hi)`` (float32 ``(C,)``, raw units) of ``image``
    ``(C, H, W)`` over its ``valid`` pixels (bool ``(H, W)``; default all; non-finite values
    skipped). ``hi > lo`` always (a constant band gets ``hi = lo + 1``), as
    ``gis.io.compute_stretch`` does for whole rasters."""
    x = np.asarray(image)
    if x.ndim != 3:
        raise ValueError(f"stretch_limits expects (C, H, W), got shape {x.shape}")
    c = x.shape[0]
    lo = np.zeros(c, np.float32)
    hi = np.ones(c, np.float32)
    for k in range(c):
        vals = x[k][valid] if valid is not None else x[k].ravel()
        vals = vals.astype(np.float64)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            continue
        a, z = np.percentile(vals, (low_pct, high_pct))
        if not z > a:
            z = a + 1.0
        lo[k], hi[k] = a, z
    return lo, hi


def stretch_to_uint8(raw: np.ndarray, lo, hi) -> np.ndarray:
    """8-bit levels ``rint(clip((raw - lo) / (hi - lo) * 255, 0, 255))`` of ``raw`` ``(C, H, W)``
    (any numeric dtype) with per-band limits: the ``percentile`` method's stretch, computed
    with the same float32 operations as :meth:`Preprocessor.normalize_into`."""
    x = np.asarray(raw)
    if x.ndim != 3:
        raise ValueError(f"stretch_to_uint8 expects (C, H, W), got shape {x.shape}")
    p = Preprocessor("percentile", lo=_tuple(lo), hi=_tuple(hi))
    sa, sb = p.stretch_affine(x.shape[0])
    out = np.empty(x.shape, np.uint8)
    tmp = np.empty(x.shape[1:], np.float32)
    for k in range(x.shape[0]):
        np.multiply(x[k], sa[k], out=tmp, dtype=np.float32, casting="unsafe")
        np.add(tmp, sb[k], out=tmp)
        np.maximum(tmp, np.float32(0.0), out=tmp)
        np.minimum(tmp, np.float32(255.0), out=tmp)
        np.rint(tmp, out=tmp)
        np.copyto(out[k], tmp, casting="unsafe")
    return out
