"""Test-time augmentation as a wrapper around a ``predict_fn``.

A ``predict_fn`` maps a float32 batch ``(N, C, H, W)`` to probabilities ``(N, K, H, W)``.
:func:`with_tta` returns another ``predict_fn`` that averages the predictions of the
flipped/rotated batch, each mapped back to the input's pixel grid. The tiled GeoTIFF pipeline
(:mod:`gis.inference`) and the evaluation (:mod:`segcore.evaluate`) both call the wrapped function
and never see the TTA mode.

Modes (:data:`TTA_MODES`):

* ``none``: the batch as it is;
* ``flips``: identity, horizontal flip, vertical flip (3 passes);
* ``d4``: the 8 elements of the dihedral group - rotations by 0/90/180/270 degrees, each with and
  without a horizontal flip (the 8-way TTA of the D-LinkNet reference); square inputs only.

``flip=True`` adds the horizontal mirror to ``none`` (DeepLabV3's multi-scale + flip recipe).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from .errors import ConfigError

__all__ = ["TTA_MODES", "tta_pairs", "with_tta"]

PredictFn = Callable[[np.ndarray], np.ndarray]
Transform = Callable[[np.ndarray], np.ndarray]

TTA_MODES: Tuple[str, ...] = ("none", "flips", "d4")


def _ident(x: np.ndarray) -> np.ndarray:
    return x


def _hflip(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1]


def _vflip(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1, :]


def _rot(k: int) -> Transform:
    return lambda x: np.rot90(x, k, axes=(-2, -1))


def tta_pairs(mode: str, flip: bool = False) -> List[Tuple[Transform, Transform]]:
    """``(forward, inverse)`` pairs acting on the last two axes of ``(..., H, W)`` arrays.

    Unknown modes raise :class:`segcore.errors.ConfigError` (a ``ValueError``).
    """
    if mode == "none":
        return [(_ident, _ident), (_hflip, _hflip)] if flip else [(_ident, _ident)]
    if mode == "flips":
        return [(_ident, _ident), (_hflip, _hflip), (_vflip, _vflip)]
    if mode == "d4":
        out = []
        for k in range(4):
            fwd_r, inv_r = _rot(k), _rot(-k)
            out.append((fwd_r, inv_r))
            out.append((lambda x, f=fwd_r: f(_hflip(x)), lambda y, i=inv_r: _hflip(i(y))))
        return out
    raise ConfigError(f"unknown TTA mode {mode!r} (choose from {', '.join(TTA_MODES)})")


def _checked(probs: np.ndarray, batch: np.ndarray) -> np.ndarray:
    n, _, h, w = batch.shape
    if probs.ndim != 4 or probs.shape[0] != n or probs.shape[2:] != (h, w):
        raise ConfigError(
            f"predict_fn returned shape {probs.shape} for a batch of shape {batch.shape}; "
            f"expected (N, K, H, W) = ({n}, K, {h}, {w})"
        )
    return probs


def with_tta(predict_fn: PredictFn, mode: str = "none", *, flip: bool = False,
             chunk: Optional[int] = None) -> PredictFn:
    """``predict_fn`` averaged over the TTA transforms of ``mode`` (see the module docstring).

    ``chunk=None``: every transformed batch is predicted by its own call, so memory stays one
    batch (the tiled GeoTIFF pipeline); a single transform (``none`` without ``flip``) returns
    ``predict_fn`` itself. ``chunk=k``: the transformed copies of all images are concatenated and
    predicted in calls of at most ``k`` images (evaluation, where batches hold one image).

    The wrapped function takes float32 ``(N, C, H, W)`` and returns contiguous float32
    ``(N, K, H, W)``: the sum of the back-transformed predictions in transform order divided by
    their number. ``predict_fn`` receives C-contiguous float32 arrays.
    """
    pairs = tta_pairs(mode, flip)
    n_pairs = len(pairs)
    if chunk is None and n_pairs == 1:
        return predict_fn
    rotates = mode == "d4"

    def call(batch: np.ndarray) -> np.ndarray:
        probs = predict_fn(np.ascontiguousarray(batch, dtype=np.float32))
        return _checked(np.asarray(probs), batch).astype(np.float32, copy=False)

    def predict_each(batch: np.ndarray) -> np.ndarray:
        acc: Optional[np.ndarray] = None
        for fwd, inv in pairs:
            p = inv(call(fwd(batch)))
            acc = p.astype(np.float32, copy=True) if acc is None else acc + p
        assert acc is not None
        if n_pairs > 1:
            acc /= np.float32(n_pairs)
        return np.ascontiguousarray(acc)

    def predict_chunked(batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        variants = np.concatenate([np.ascontiguousarray(fwd(batch)) for fwd, _ in pairs], 0)
        step = max(1, int(chunk or 1))
        preds = np.concatenate([call(variants[i:i + step])
                                for i in range(0, variants.shape[0], step)], 0)
        acc: Optional[np.ndarray] = None
        for j, (_, inv) in enumerate(pairs):
            p = inv(preds[j * n:(j + 1) * n])
            acc = np.array(p, np.float32) if acc is None else acc + p
        assert acc is not None
        if n_pairs > 1:
            acc /= np.float32(n_pairs)
        return np.ascontiguousarray(acc)

    run = predict_each if chunk is None else predict_chunked

    def tta_predict(batch: np.ndarray) -> np.ndarray:
        h, w = batch.shape[-2:]
        if rotates and h != w:
            raise ConfigError(f"d4 TTA needs square inputs, got {h}x{w} (use flips TTA or "
                              "sliding-window tiles)")
        return run(batch)

    tta_predict.tta_mode = mode  # type: ignore[attr-defined]
    return tta_predict
