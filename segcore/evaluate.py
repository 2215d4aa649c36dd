"""Evaluation of a checkpoint on a labelled dataset, with the reference inference recipes.

* Road models (one sigmoid output): road-class IoU, F1, precision, recall at a probability
  threshold (default 0.5) from a two-class confusion matrix. The headline is the IoU of the ROAD
  class. The "IoU 98 %" of the D-LinkNet seed is the IoU of the *background* class; it is in the
  report as ``background_iou`` for comparison, not as the result.
* Multi-class segmentation (Cityscapes, VOC): mIoU (nanmean over classes with a non-empty
  union), pixel accuracy, per-class IoU; ``ignore_index`` 255 pixels are not counted.
* Classifier (DDRNet ImageNet): top-1 / top-5 accuracy.

Inference per image (float32 ``(C, H, W)`` normalised with the checkpoint's own normalisation):

* ``tta``: ``none``, ``flips`` (identity + horizontal + vertical flip) or ``d4`` (the 8 flips and
  rotations by 90 degrees of the D-LinkNet seed; square images only); probabilities are averaged
  after mapping each prediction back.
* ``scales`` + ``flip``: DeepLabV3 multi-scale evaluation - the image is resized (bilinear) to
  each scale, predicted (plus its horizontal mirror with ``flip``), the probabilities resized back
  and averaged.
* ``mode``: ``whole`` (the full image, padded to the network stride and cropped back) or
  ``sliding`` (tiles of ``tile_size`` with ``overlap``, probabilities averaged where tiles
  overlap; the image is padded up to one tile when smaller).

The report is a JSON-ready dict; :func:`write_report` writes it atomically.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ConfigError, SegcoreError
from .metrics import ConfusionMatrix, topk_accuracy
from .meta import meta_get
from .predict import normalization_from_meta
from .tta import TTA_MODES, tta_pairs, with_tta

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
ProgressFn = Callable[[int, int, str], None]
CancelFn = Callable[[], bool]

DATASETS = ("deepglobe", "chips", "cityscapes", "voc", "imagenet")
EVAL_MODES = ("whole", "sliding")
DEEPLAB_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)

D_LINKNET_NOTE = ("headline is the IoU of the road class; the 98% IoU often quoted for the "
                  "D-LinkNet seed code is the background-class IoU (background_iou here)")


class EvaluationCancelled(SegcoreError, RuntimeError):
    """``should_cancel()`` returned True during :func:`evaluate`."""


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    Attributes:
        dataset: one of :data:`DATASETS`.
        root: dataset root (see :mod:`segcore.data.layouts`); for ``deepglobe`` the folder with
            the ``*_sat.jpg`` / ``*_mask.png`` pairs when ``split`` is ``None``.
        split: split folder/list name, ``None`` for a flat folder.
        tta: ``none``, ``flips`` or ``d4``.
        scales: inference scales (DeepLabV3 uses :data:`DEEPLAB_SCALES`).
        flip: add the horizontal mirror at every scale.
        mode: ``whole`` or ``sliding``.
        tile_size: sliding-window tile side in pixels (default: the checkpoint's tile size).
        overlap: sliding-window overlap as a fraction of the tile (0 <= overlap < 1).
        threshold: road probability above which a pixel is road (one-output models).
        crop_size: centre crop of every sample (small smoke evaluations), ``None`` = full image.
        limit: evaluate only the first ``limit`` samples.
        ignore_index: label value that is not counted.
    """

    dataset: str
    root: str
    split: Optional[str] = None
    tta: str = "none"
    scales: Tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: str = "whole"
    tile_size: Optional[int] = None
    overlap: float = 0.25
    threshold: float = 0.5
    crop_size: Optional[int] = None
    limit: Optional[int] = None
    ignore_index: int = 255

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", self.dataset.lower())
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.tta not in TTA_MODES:
            raise ConfigError(f"unknown TTA {self.tta!r}; valid: {', '.join(TTA_MODES)}")
        if self.mode not in EVAL_MODES:
            raise ConfigError(f"unknown eval mode {self.mode!r}; valid: {', '.join(EVAL_MODES)}")
        if not self.scales or any(not (0 < s <= 8) for s in self.scales):
            raise ConfigError(f"scales must be in (0, 8], got {self.scales}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")


def _resize_chw(x: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear (half-pixel) resize of ``(C, H, W)`` float32 to ``hw``."""
    import cv2

    if x.shape[1:] == tuple(hw):
        return x
    hwc = np.ascontiguousarray(x.transpose(1, 2, 0))
    out = cv2.resize(hwc, (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[:, :, None]
    return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)


def _windows(size: int, tile: int, step: int) -> List[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    starts.append(size - tile)
    return sorted(set(starts))


def predict_image(predict_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                  tta: str = "none", scales: Sequence[float] = (1.0,), flip: bool = False,
                  mode: str = "whole", tile_size: Optional[int] = None, overlap: float = 0.25,
                  batch_size: int = 8) -> np.ndarray:
    """Probabilities ``(K, H, W)`` float32 for one normalised image ``(C, H, W)``.

    ``predict_fn`` maps float32 ``(N, C, h, w)`` to probabilities ``(N, K, h, w)`` (a
    :class:`segcore.predict.Predictor`). See the module docstring for the options.
    """
    c, h, w = image.shape
    # the TTA variants of all images in a call are predicted together, batch_size at a time
    tta_fn = with_tta(predict_fn, tta, flip=flip, chunk=batch_size)
    acc: Optional[np.ndarray] = None
    for s in scales:
        sh, sw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        img = _resize_chw(image, (sh, sw)) if (sh, sw) != (h, w) else image
        if mode == "sliding":
            per = max(1, batch_size // len(tta_pairs(tta, flip)))
            probs = _predict_sliding(tta_fn, img, tile_size, overlap, per)
        else:
            probs = tta_fn(img[None])[0]
        if probs.shape[1:] != (h, w):
            probs = _resize_chw(probs, (h, w))
        acc = probs.astype(np.float32, copy=True) if acc is None else acc + probs
    assert acc is not None
    if len(scales) > 1:
        acc /= np.float32(len(scales))
    return acc


def _predict_sliding(predict_fn, image: np.ndarray, tile_size: Optional[int],
                     overlap: float, per: int) -> np.ndarray:
    """Tiles of ``tile_size`` averaged where they overlap; ``per`` tiles per ``predict_fn``
    call."""
    if not tile_size:
        raise ConfigError("sliding-window evaluation needs a tile size")
    c, h, w = image.shape
    t = int(tile_size)
    ph, pw = max(h, t), max(w, t)
    if (ph, pw) != (h, w):
        image = np.pad(image, ((0, 0), (0, ph - h), (0, pw - w)))
    step = max(1, int(round(t * (1.0 - overlap))))
    ys, xs = _windows(ph, t, step), _windows(pw, t, step)
    coords = [(y, x) for y in ys for x in xs]
    acc = None
    count = np.zeros((ph, pw), np.float32)
    for i in range(0, len(coords), per):
        chunk = coords[i:i + per]
        tiles = np.stack([image[:, y:y + t, x:x + t] for y, x in chunk])
        probs = predict_fn(tiles)
        if acc is None:
            acc = np.zeros((probs.shape[1], ph, pw), np.float32)
        for (y, x), p in zip(chunk, probs):
            acc[:, y:y + t, x:x + t] += p
            count[y:y + t, x:x + t] += 1.0
    assert acc is not None
    return np.ascontiguousarray(acc[:, :h, :w] / count[None, :h, :w])


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def build_eval_dataset(cfg: EvalConfig, meta: Any):
    """The dataset of ``cfg`` returning RAW float32 images (the checkpoint's normalisation is
    applied by :func:`evaluate`), without augmentation."""
    from .data import build_dataset

    kw: Dict[str, Any] = dict(augment="none" if cfg.dataset != "imagenet" else None,
                              mean=(0.0,), std=(1.0,), scale=1.0,
                              ignore_index=cfg.ignore_index)
    bands = meta_get(meta, "bands", None)
    if bands and cfg.dataset in ("chips",):
        kw["bands"] = list(bands)
    if cfg.crop_size:
        kw["crop_size"] = int(cfg.crop_size)
    if cfg.dataset in ("cityscapes", "voc"):
        kw["num_classes"] = int(meta_get(meta, "num_classes", 0) or 0) or None
    if cfg.dataset == "imagenet":
        kw.pop("augment")
        kw.pop("ignore_index")
        split = cfg.split or "val"
    else:
        split = cfg.split
    return build_dataset(cfg.dataset, cfg.root, split, **kw)


def evaluate(predictor: Any, cfg: EvalConfig, meta: Any = None, batch_size: int = 8,
             on_progress: Optional[ProgressFn] = None,
             should_cancel: Optional[CancelFn] = None) -> Dict[str, Any]:
    """Evaluate ``predictor`` (see :mod:`segcore.predict`) on ``cfg``'s dataset.

    ``meta`` defaults to ``predictor.meta`` (normalisation, class names, tile size, task).
    ``on_progress(done, total, "evaluate")`` is called after every sample; ``should_cancel()``
    is checked before every sample and raises :class:`EvaluationCancelled`.

    Returns the report dict (see :func:`write_report`).
    """
    meta = meta if meta is not None else getattr(predictor, "meta", None)
    task = str(meta_get(meta, "task", "segmentation"))
    if cfg.dataset == "imagenet" and task != "classification":
        raise ConfigError(f"dataset imagenet needs a classifier, {meta_get(meta, 'model')} is a "
                          f"{task} model")
    if cfg.dataset != "imagenet" and task == "classification":
        raise ConfigError(f"{meta_get(meta, 'model')} is a classifier: evaluate it with "
                          "--dataset imagenet")
    normalize = normalization_from_meta(meta)
    ds = build_eval_dataset(cfg, meta)
    total = len(ds) if cfg.limit is None else min(len(ds), int(cfg.limit))
    if total == 0:
        raise ConfigError(f"{cfg.root}: no samples to evaluate")
    num_classes = int(meta_get(meta, "num_classes", 0) or getattr(predictor, "num_classes", 0))
    tile = cfg.tile_size or int(meta_get(meta, "tile_size_px", 0) or 0) or None
    t0 = time.perf_counter()
    if task == "classification":
        return _evaluate_classifier(predictor, ds, total, normalize, cfg, meta, batch_size,
                                    on_progress, should_cancel, t0)
    binary = num_classes == 1
    cm = ConfusionMatrix(2 if binary else num_classes, ignore_index=cfg.ignore_index)
    for i in range(total):
        if should_cancel is not None and should_cancel():
            raise EvaluationCancelled(f"evaluation cancelled after {i} of {total} samples")
        image, mask = ds[i]
        x = normalize(image)
        probs = predict_image(predictor, x, cfg.tta, cfg.scales, cfg.flip, cfg.mode, tile,
                              cfg.overlap, batch_size)
        if binary:
            cm.update_binary(probs[0], mask, threshold=cfg.threshold)
        else:
            cm.update(np.argmax(probs, axis=0), mask)
        if on_progress is not None:
            on_progress(i + 1, total, "evaluate")
    seconds = time.perf_counter() - t0
    names = list(meta_get(meta, "class_names", ()) or ())
    if binary:
        cls_names = ["background", "road"]
        summary = cm.summary(positive_class=1, class_names=cls_names)
        iou = cm.iou()
        prf = cm.precision_recall_f1(1)
        metrics: Dict[str, Any] = {
            "road_iou": _jf(iou[1]), "road_f1": _jf(prf["f1"]),
            "road_precision": _jf(prf["precision"]), "road_recall": _jf(prf["recall"]),
            "background_iou": _jf(iou[0]), "miou": _jf(cm.miou()),
            "pixel_accuracy": _jf(cm.pixel_accuracy()), "threshold": cfg.threshold,
            "note": D_LINKNET_NOTE,
        }
    else:
        cls_names = names if len(names) == num_classes else [str(k) for k in range(num_classes)]
        summary = cm.summary(class_names=cls_names)
        metrics = {"miou": summary["miou"], "pixel_accuracy": summary["pixel_accuracy"],
                   "mean_class_accuracy": summary["mean_class_accuracy"]}
    metrics["confusion"] = summary
    metrics["confusion_matrix"] = cm.matrix.tolist()
    return _report(cfg, meta, predictor, total, seconds, metrics, tile)


def _jf(x: float) -> Optional[float]:
    x = float(x)
    return None if math.isnan(x) else x


def _evaluate_classifier(predictor, ds, total, normalize, cfg, meta, batch_size, on_progress,
                         should_cancel, t0) -> Dict[str, Any]:
    scores: List[np.ndarray] = []
    labels: List[int] = []
    for start in range(0, total, max(1, batch_size)):
        if should_cancel is not None and should_cancel():
            raise EvaluationCancelled(f"evaluation cancelled after {start} of {total} samples")
        items = [ds[i] for i in range(start, min(total, start + batch_size))]
        batch = np.stack([normalize(img) for img, _ in items])
        out = np.asarray(predictor.predict_batch(batch), np.float32)
        if cfg.flip:
            out = 0.5 * (out + np.asarray(predictor.predict_batch(
                np.ascontiguousarray(batch[..., ::-1])), np.float32))
        scores.append(out.reshape(out.shape[0], -1))
        labels.extend(int(lbl) for _, lbl in items)
        if on_progress is not None:
            on_progress(start + len(items), total, "evaluate")
    logits = np.concatenate(scores, 0)
    ks = [k for k in (1, 5) if k <= logits.shape[1]]
    acc = topk_accuracy(logits, np.asarray(labels), ks)
    metrics = {f"top{k}": _jf(v) for k, v in acc.items()}
    return _report(cfg, meta, predictor, total, time.perf_counter() - t0, metrics, None)


def _report(cfg: EvalConfig, meta: Any, predictor: Any, samples: int, seconds: float,
            metrics: Dict[str, Any], tile: Optional[int]) -> Dict[str, Any]:
    return {
        "model": meta_get(meta, "model"),
        "task": meta_get(meta, "task", "segmentation"),
        "num_classes": meta_get(meta, "num_classes"),
        "checkpoint": getattr(predictor, "source", None),
        "backend": type(predictor).__name__,
        "dataset": {"kind": cfg.dataset, "root": str(cfg.root), "split": cfg.split,
                    "samples": samples, "crop_size": cfg.crop_size},
        "inference": {"tta": cfg.tta, "scales": list(cfg.scales), "flip": cfg.flip,
                      "mode": cfg.mode, "tile_size": tile if cfg.mode == "sliding" else None,
                      "overlap": cfg.overlap if cfg.mode == "sliding" else None,
                      "normalization": meta_get(meta, "normalization")},
        "metrics": metrics,
        "seconds": round(float(seconds), 3),
        "seconds_per_sample": round(float(seconds) / max(samples, 1), 4),
    }


def write_report(report: Dict[str, Any], path: PathLike) -> Path:
    """Write ``report`` as indented JSON to ``path`` atomically (temporary name + rename)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2, allow_nan=False)
            f.write("\n")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


__all__ = ["EvalConfig", "evaluate", "predict_image", "build_eval_dataset",
           "write_report", "EvaluationCancelled", "DATASETS", "TTA_MODES", "EVAL_MODES",
           "DEEPLAB_SCALES", "D_LINKNET_NOTE"]
