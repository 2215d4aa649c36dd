"""Qt-free labelling review of a chips dataset (the layout ``roadseg dataset build`` writes).

``<root>/manifest.json`` holds ``{"samples": [{"image", "mask", "split", "status", ...}]}`` with
paths relative to ``root``. The review adds to each entry:

* ``status``: ``unreviewed`` / ``accepted`` / ``rejected`` / ``edited`` (``edited`` = the mask was
  changed and not yet accepted or rejected; ``segcore``'s chips reader trains on ``accepted`` only
  by default),
* ``edited``: true once the mask was changed by hand, ``flagged`` + ``comment``, ``reviewed_at``
  (UTC ISO time),

and a top-level ``"review": {"last_index": i}`` so a reopened review continues where it stopped.
Every manifest write and every mask write goes to a temporary file in the same folder that is
then renamed over the target (``os.replace``), so a crash never leaves half a file.

Masks are ``(H, W)`` uint8 with hard values 0 (background) / 255 (road); edits never produce
other values. :class:`MaskEditor` keeps undo/redo as plain numpy patches.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.staging import atomic_file, atomic_write_text

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Review statuses, in display order.
STATUSES = ("unreviewed", "accepted", "rejected", "edited")
#: Codes of :func:`diff_codes`.
DIFF_TN, DIFF_TP, DIFF_FP, DIFF_FN = 0, 1, 2, 3


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ dataset
class ReviewDataset:
    """The manifest of a chips dataset plus the review state of every sample.

    Indices are positions in the manifest's ``samples`` list. Nothing is decoded until
    :meth:`read_image` / :meth:`read_mask` is called for one sample (lazy loading).
    """

    def __init__(self, root: PathLike) -> None:
        self.root = Path(root).expanduser()
        self.manifest_path = self.root / "manifest.json"
        if not self.manifest_path.is_file():
            raise UserError(f"{self.manifest_path}: no manifest.json (build the dataset with "
                            "'roadseg dataset build' first)")
        try:
            doc = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.manifest_path}: unreadable manifest ({exc})") from exc
        if isinstance(doc, list):
            doc = {"samples": doc}
        samples = doc.get("samples") if isinstance(doc, dict) else None
        if not isinstance(samples, list):
            raise UserError(f"{self.manifest_path}: manifest has no 'samples' list")
        for i, e in enumerate(samples):
            if not isinstance(e, dict) or "image" not in e or "mask" not in e:
                raise UserError(f"{self.manifest_path}: entry {i} lacks 'image'/'mask'")
            if e.get("status") not in STATUSES:
                e["status"] = "unreviewed"
        self.doc: Dict[str, Any] = doc
        self.samples: List[Dict[str, Any]] = samples

    # -- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def name(self, i: int) -> str:
        """File name of the chip image of sample ``i``."""
        return Path(self.samples[i]["image"]).name

    def status(self, i: int) -> str:
        return str(self.samples[i].get("status", "unreviewed"))

    def comment(self, i: int) -> str:
        return str(self.samples[i].get("comment", "") or "")

    def flagged(self, i: int) -> bool:
        return bool(self.samples[i].get("flagged", False))

    def image_path(self, i: int) -> Path:
        return self.root / self.samples[i]["image"]

    def mask_path(self, i: int) -> Path:
        return self.root / self.samples[i]["mask"]

    def counts(self) -> Dict[str, int]:
        """Samples per status plus ``flagged`` and ``total``."""
        out = {s: 0 for s in STATUSES}
        for e in self.samples:
            out[e.get("status", "unreviewed")] = out.get(e.get("status", "unreviewed"), 0) + 1
        out["flagged"] = sum(1 for e in self.samples if e.get("flagged"))
        out["total"] = len(self.samples)
        return out

    def indices(self, status: Union[None, str, Sequence[str]] = None,
                flagged_only: bool = False) -> List[int]:
        """Sample indices whose status is ``status`` (one or several; None = all)."""
        wanted = None if status is None else ({status} if isinstance(status, str)
                                              else set(status))
        return [i for i, e in enumerate(self.samples)
                if (wanted is None or e.get("status") in wanted)
                and (not flagged_only or e.get("flagged"))]

    @property
    def last_index(self) -> int:
        """The sample the review was at when it was last saved (0 for a new review)."""
        try:
            i = int(self.doc.get("review", {}).get("last_index", 0))
        except (TypeError, ValueError, AttributeError):
            return 0
        return i if 0 <= i < len(self.samples) else 0

    def first_unreviewed(self) -> Optional[int]:
        """Index of the first ``unreviewed`` sample, None when every sample was reviewed."""
        for i, e in enumerate(self.samples):
            if e.get("status") == "unreviewed":
                return i
        return None

    # -- changes -------------------------------------------------------------------------
    def _check(self, i: int) -> None:
        if not 0 <= i < len(self.samples):
            raise UserError(f"{self.manifest_path}: sample {i} out of range "
                            f"(0..{len(self.samples) - 1})")

    def set_status(self, i: int, status: str, save: bool = True) -> None:
        """Set the review status of sample ``i`` (and save the manifest atomically)."""
        self._check(i)
        if status not in STATUSES:
            raise UserError(f"unknown review status {status!r}; valid: {', '.join(STATUSES)}")
        e = self.samples[i]
        e["status"] = status
        e["reviewed_at"] = _now()
        self.set_last_index(i, save=False)
        if save:
            self.save()

    def set_flag(self, i: int, flagged: bool, comment: Optional[str] = None,
                 save: bool = True) -> None:
        """Flag (or unflag) sample ``i`` with an optional comment."""
        self._check(i)
        e = self.samples[i]
        e["flagged"] = bool(flagged)
        if comment is not None:
            e["comment"] = str(comment)
        self.set_last_index(i, save=False)
        if save:
            self.save()

    def set_last_index(self, i: int, save: bool = False) -> None:
        self.doc.setdefault("review", {})["last_index"] = int(i)
        if save:
            self.save()

    def save(self) -> None:
        """Write ``manifest.json`` (temporary file + rename); updates ``review.updated_at``."""
        review = self.doc.setdefault("review", {})
        review["updated_at"] = _now()
        review["counts"] = {k: v for k, v in self.counts().items() if k != "total"}
        try:
            atomic_write_text(self.manifest_path, json.dumps(self.doc, indent=1))
        except OSError as exc:
            raise UserError(f"{self.manifest_path}: cannot save the review ({exc})") from exc

    # -- pixels --------------------------------------------------------------------------
    def read_image(self, i: int, max_size: Optional[int] = None) -> np.ndarray:
        """Display image of sample ``i``: ``(H, W, 3)`` uint8 RGB (first three bands; one band
        is repeated). uint8 data is shown as is, other dtypes get a 2-98 % stretch.
        ``max_size`` decimates the read (thumbnails)."""
        import rasterio
        from rasterio.enums import Resampling

        p = self.image_path(i)
        try:
            with rasterio.open(p) as src:
                bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
                shape = None
                if max_size and max(src.width, src.height) > max_size:
                    f = max_size / max(src.width, src.height)
                    shape = (3, max(1, round(src.height * f)), max(1, round(src.width * f)))
                arr = src.read(bands, out_shape=shape, resampling=Resampling.average) \
                    if shape else src.read(bands)
                dtype = src.dtypes[0]
        except Exception as exc:  # rasterio errors name the file
            raise UserError(f"{p}: cannot read the chip image ({exc})") from exc
        if dtype != "uint8":
            a = arr.astype(np.float32)
            out = np.empty_like(a)
            for b in range(3):
                lo, hi = np.percentile(a[b], (2, 98))
                out[b] = (a[b] - lo) / max(hi - lo, 1e-6) * 255.0
            arr = np.clip(out, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(arr.transpose(1, 2, 0))

    def read_mask(self, i: int) -> np.ndarray:
        """Label mask of sample ``i``: ``(H, W)`` uint8, 0 background / 255 road (any value
        > 0 in the file counts as road)."""
        import rasterio

        p = self.mask_path(i)
        try:
            with rasterio.open(p) as src:
                m = src.read(1)
        except Exception as exc:
            raise UserError(f"{p}: cannot read the chip mask ({exc})") from exc
        return np.where(m > 0, 255, 0).astype(np.uint8)

    def write_mask(self, i: int, mask: np.ndarray, save: bool = True) -> Path:
        """Replace the mask file of sample ``i`` with ``mask`` ``(H, W)`` (> 0 = road, written
        as uint8 0/255 with the chip's CRS and transform) through a temporary file and a
        rename; the status becomes ``edited``."""
        import rasterio

        self._check(i)
        p = self.mask_path(i)
        m = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
        try:
            with rasterio.open(p) as src:
                profile = src.profile.copy()
                if (src.height, src.width) != m.shape:
                    raise UserError(f"{p}: edited mask is {m.shape[1]}x{m.shape[0]} px but the "
                                    f"file is {src.width}x{src.height}")
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - no readable mask file: write one from scratch
            profile = {"driver": "GTiff", "height": m.shape[0], "width": m.shape[1]}
        profile.update(driver="GTiff", count=1, dtype="uint8", nodata=None, compress="deflate")
        try:
            with atomic_file(p) as tmp, rasterio.open(tmp, "w", **profile) as dst:
                dst.write(m[None])
        except Exception as exc:
            if isinstance(exc, EXPECTED_ERRORS):
                raise as_user_error(exc) from exc
            raise UserError(f"{p}: cannot write the edited mask ({exc})") from exc
        e = self.samples[i]
        e["edited"] = True
        e["road_fraction"] = round(float((m > 0).mean()), 6)
        e["edited_at"] = _now()
        self.set_status(i, "edited", save=save)
        return p


# ------------------------------------------------------------------------------ editing
@dataclass(frozen=True)
class MaskPatch:
    """One undoable edit: the rectangle ``[y0:y0+h, x0:x0+w]`` before and after it."""

    y0: int
    x0: int
    before: np.ndarray
    after: np.ndarray


class MaskEditor:
    """Brush/eraser edits of a hard 0/255 mask with undo/redo stacks of :class:`MaskPatch`.

    A stroke is ``begin_stroke(value, radius_px)``, ``add_point(x, y)`` per mouse position
    (pixel coordinates of the mask, painted at once), ``end_stroke()`` (one undo step). The
    brush is a disc of ``radius_px``; consecutive points are joined by a thick line.
    """

    def __init__(self, mask: np.ndarray, max_undo: int = 200) -> None:
        m = np.asarray(mask)
        if m.ndim != 2:
            raise ValueError(f"mask must be (H, W), got shape {m.shape}")
        self.mask = np.where(m > 0, 255, 0).astype(np.uint8)
        self.undo_stack: List[MaskPatch] = []
        self.redo_stack: List[MaskPatch] = []
        self.max_undo = int(max_undo)
        self._before: Optional[np.ndarray] = None
        self._last: Optional[Tuple[float, float]] = None
        self._value = 255
        self._radius = 4
        self._saved_depth = 0
        self._changes = 0

    @property
    def dirty(self) -> bool:
        """True when the mask differs (by edit count) from the last :meth:`mark_saved`."""
        return self._changes != self._saved_depth

    def mark_saved(self) -> None:
        self._saved_depth = self._changes

    @property
    def in_stroke(self) -> bool:
        return self._before is not None

    def begin_stroke(self, value: int, radius_px: float) -> None:
        """Start a stroke painting ``value`` (> 0 -> 255 brush, 0 -> eraser)."""
        self._before = self.mask.copy()
        self._value = 255 if value > 0 else 0
        self._radius = max(0, int(round(radius_px)))
        self._last = None

    def add_point(self, x: float, y: float) -> None:
        """Paint the brush at mask pixel ``(x, y)`` (column, row) and join it to the last."""
        import cv2

        if self._before is None:
            raise RuntimeError("add_point outside a stroke (call begin_stroke first)")
        p = (int(round(x)), int(round(y)))
        if self._last is not None:
            cv2.line(self.mask, self._last, p, self._value, thickness=2 * self._radius + 1,
                     lineType=cv2.LINE_8)
        cv2.circle(self.mask, p, self._radius, self._value, thickness=-1, lineType=cv2.LINE_8)
        self._last = p

    def end_stroke(self) -> bool:
        """Finish the stroke; returns True when it changed pixels (one undo step)."""
        before, self._before = self._before, None
        self._last = None
        if before is None:
            return False
        changed = before != self.mask
        if not changed.any():
            return False
        rows, cols = np.nonzero(changed)
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        self._push(MaskPatch(int(y0), int(x0), before[y0:y1, x0:x1].copy(),
                             self.mask[y0:y1, x0:x1].copy()))
        return True

    def stroke(self, points: Sequence[Tuple[float, float]], radius_px: float,
               value: int = 255) -> bool:
        """A whole stroke through ``points`` ``[(x, y), ...]``; see :meth:`begin_stroke`."""
        self.begin_stroke(value, radius_px)
        for x, y in points:
            self.add_point(x, y)
        return self.end_stroke()

    def set_mask(self, mask: np.ndarray) -> None:
        """Replace the whole mask as one undoable step (e.g. 'clear')."""
        new = np.where(np.asarray(mask) > 0, 255, 0).astype(np.uint8)
        if new.shape != self.mask.shape:
            raise ValueError(f"mask shape {new.shape} != {self.mask.shape}")
        if np.array_equal(new, self.mask):
            return
        self._push(MaskPatch(0, 0, self.mask.copy(), new.copy()))
        self.mask = new

    def _push(self, patch: MaskPatch) -> None:
        self.undo_stack.append(patch)
        if len(self.undo_stack) > self.max_undo:
            self.undo_stack.pop(0)
        self.redo_stack.clear()
        self._changes += 1

    def _apply(self, patch: MaskPatch, after: bool) -> None:
        data = patch.after if after else patch.before
        h, w = data.shape
        self.mask[patch.y0:patch.y0 + h, patch.x0:patch.x0 + w] = data

    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    def undo(self) -> bool:
        if not self.undo_stack:
            return False
        p = self.undo_stack.pop()
        self._apply(p, after=False)
        self.redo_stack.append(p)
        self._changes -= 1
        return True

    def redo(self) -> bool:
        if not self.redo_stack:
            return False
        p = self.redo_stack.pop()
        self._apply(p, after=True)
        self.undo_stack.append(p)
        self._changes += 1
        return True


# ------------------------------------------------------------------------------ diff
def diff_codes(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Per-pixel comparison of a prediction with a label (both ``(H, W)``, > 0 = road).

    Returns ``(H, W)`` uint8: :data:`DIFF_TN` 0, :data:`DIFF_TP` 1, :data:`DIFF_FP` 2 (road
    predicted, not labelled), :data:`DIFF_FN` 3 (labelled road missed).
    """
    p = np.asarray(pred) > 0
    t = np.asarray(label) > 0
    if p.shape != t.shape:
        raise ValueError(f"prediction {p.shape} and label {t.shape} differ in shape")
    out = np.zeros(p.shape, np.uint8)
    out[p & t] = DIFF_TP
    out[p & ~t] = DIFF_FP
    out[~p & t] = DIFF_FN
    return out


def diff_stats(codes: np.ndarray) -> Dict[str, float]:
    """Counts ``tp``/``fp``/``fn`` and road ``iou`` of :func:`diff_codes` output (iou is
    None-free: 1.0 when neither has road)."""
    c = np.asarray(codes)
    tp, fp, fn = (int((c == k).sum()) for k in (DIFF_TP, DIFF_FP, DIFF_FN))
    union = tp + fp + fn
    return {"tp": tp, "fp": fp, "fn": fn, "iou": (tp / union) if union else 1.0}


class ChipPredictor:
    """A checkpoint applied to whole chips for the prediction-vs-label diff.

    ``predict(image_path) -> (H, W) uint8`` 0/255 road mask (probability of the road class
    >= ``threshold``; argmax for multi-class networks with class 1 = road). The network runs
    on the CPU through :func:`segcore.predict.load_predictor` (MindSpore backend); the input
    normalisation is the checkpoint's (:func:`app.service.extraction.input_normalizer`).
    """

    def __init__(self, checkpoint: PathLike, device: str = "cpu",
                 threshold: float = 0.5) -> None:
        from segcore.predict import load_predictor

        self.checkpoint = Path(checkpoint)
        self.threshold = float(threshold)
        try:
            self.predictor = load_predictor(str(self.checkpoint), backend="mindspore",
                                            device=device)
        except EXPECTED_ERRORS as exc:
            raise as_user_error(exc) from exc
        meta = self.predictor.meta
        self.bands = tuple(int(b) for b in (getattr(meta, "bands", None) or (1, 2, 3)))
        self.meta = meta

    def predict(self, image_path: PathLike) -> np.ndarray:
        import rasterio

        from app.service.extraction import input_normalizer
        from segcore.predict import pad_to_multiple

        try:
            with rasterio.open(image_path) as src:
                if max(self.bands) > src.count:
                    raise UserError(f"{image_path}: the network reads band {max(self.bands)} "
                                    f"but the chip has {src.count}")
                raw = src.read(list(self.bands)).astype(np.float32)
            norm = input_normalizer(self.meta, image_path, self.bands)
            x = norm(raw[None])
            x, (h, w) = pad_to_multiple(np.asarray(x, np.float32),
                                        int(self.predictor.stride or 1))
            probs = self.predictor.predict_batch(x)[0][:, :h, :w]
        except UserError:
            raise
        except EXPECTED_ERRORS as exc:
            raise as_user_error(exc) from exc
        if probs.shape[0] == 1:
            road = probs[0] >= self.threshold
        elif probs.shape[0] == 2:
            road = probs[1] >= self.threshold
        else:
            road = probs.argmax(0) == 1
        return np.where(road, 255, 0).astype(np.uint8)


__all__ = ["STATUSES", "ReviewDataset", "MaskEditor", "MaskPatch", "diff_codes", "diff_stats",
           "ChipPredictor", "DIFF_TN", "DIFF_TP", "DIFF_FP", "DIFF_FN"]
