"""Segmentation and classification metrics in pure numpy (importable without MindSpore).

Conventions
-----------
* The confusion matrix is indexed ``matrix[true_class, predicted_class]`` and counts pixels.
* Pixels whose target equals ``ignore_index`` (255 by default, the Cityscapes/VOC convention)
  are not counted at all.
* Per-class IoU is ``TP / (TP + FP + FN)``. A class that is absent from both the prediction
  and the ground truth (union 0) has IoU ``nan`` and is left out of the mean: mIoU is the
  ``nanmean`` over classes with a non-empty union (the Cityscapes/VOC evaluation convention).
* For one-output road models (sigmoid logits) use :meth:`ConfusionMatrix.update_binary`,
  which thresholds the probability (or logit) into a two-class {0 background, 1 road} matrix.

Note on the D-LinkNet reference: the "IoU 98 %" often quoted for the D-LinkNet seed code is the
IoU of the *background* class (roads are ~2-5 % of DeepGlobe pixels, so background IoU is
trivially high). We report the IoU of the road class (``positive_class=1``) as the headline
number and the background IoU only alongside it.
"""
from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["ConfusionMatrix", "topk_accuracy"]


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _json_float(x: float) -> Optional[float]:
    """``nan`` is not valid JSON: map it to ``None``."""
    x = float(x)
    return None if math.isnan(x) else x


class ConfusionMatrix:
    """Pixel confusion-matrix accumulator.

    Args:
        num_classes: number of classes ``K`` (2 for a binary road model).
        ignore_index: target value that is skipped (``None`` to count every pixel).

    ``matrix`` is an ``(K, K)`` int64 array, rows = ground truth, columns = prediction.
    """

    def __init__(self, num_classes: int, ignore_index: Optional[int] = 255) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"ConfusionMatrix: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    # ------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        """Zero the counts."""
        self.matrix[...] = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add a batch of predicted and true class indices.

        Args:
            pred: integer class indices, any shape (e.g. ``(N, H, W)``), values in ``[0, K)``.
            target: integer labels of the same shape, values in ``[0, K)`` or ``ignore_index``.

        Raises:
            ValueError: shapes differ, or a (non-ignored) value is outside ``[0, K)``.
        """
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"ConfusionMatrix.update: pred shape {pred.shape} != target shape "
                             f"{target.shape}")
        pred = pred.reshape(-1).astype(np.int64, copy=False)
        target = target.reshape(-1).astype(np.int64, copy=False)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            pred, target = pred[keep], target[keep]
        k = self.num_classes
        if target.size:
            if target.min() < 0 or target.max() >= k:
                bad = target[(target < 0) | (target >= k)][0]
                raise ValueError(f"ConfusionMatrix.update: target value {bad} outside [0, {k}) "
                                 f"and not ignore_index={self.ignore_index}")
            if pred.min() < 0 or pred.max() >= k:
                bad = pred[(pred < 0) | (pred >= k)][0]
                raise ValueError(f"ConfusionMatrix.update: predicted class {bad} outside [0, {k})")
        self.matrix += np.bincount(target * k + pred, minlength=k * k).reshape(k, k)

    def update_binary(self, scores: np.ndarray, target: np.ndarray, threshold: float = 0.5,
                      from_logits: bool = False) -> None:
        """Add a batch from a one-output (sigmoid) road model.

        Args:
            scores: probabilities in [0, 1] (or raw logits with ``from_logits=True``), shape
                ``(N, 1, H, W)``, ``(N, H, W)`` or ``(H, W)``; float.
            target: {0, 1} labels (``ignore_index`` pixels skipped), same number of pixels.
            threshold: probability above which a pixel is road (``p > threshold``). With
                ``from_logits`` the logit is compared with ``log(t / (1 - t))``.

        Requires ``num_classes == 2`` (0 background, 1 road).
        """
        if self.num_classes != 2:
            raise ValueError("ConfusionMatrix.update_binary needs num_classes == 2, got "
                             f"{self.num_classes}")
        scores = np.asarray(scores, dtype=np.float64)
        target = np.asarray(target)
        if scores.ndim == target.ndim + 1 and scores.shape[1] == 1:
            scores = scores[:, 0]
        if from_logits:
            if not 0.0 < threshold < 1.0:
                raise ValueError(f"update_binary: threshold {threshold} must be in (0, 1)")
            cut = math.log(threshold / (1.0 - threshold))
        else:
            cut = threshold
        self.update((scores > cut).astype(np.int64), target)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (e.g. from another device shard); returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class matrix into "
                             f"{self.num_classes}-class matrix")
        self.matrix += other.matrix
        return self

    # ------------------------------------------------------------------ metrics
    @property
    def total(self) -> int:
        """Number of counted (non-ignored) pixels."""
        return int(self.matrix.sum())

    def _tp_fp_fn(self):
        tp = np.diag(self.matrix).astype(np.float64)
        fp = self.matrix.sum(axis=0) - tp  # predicted as c, truly other
        fn = self.matrix.sum(axis=1) - tp  # truly c, predicted other
        return tp, fp, fn

    def iou(self) -> np.ndarray:
        """Per-class IoU, ``(K,)`` float64, ``nan`` where the class is in neither pred nor gt."""
        tp, fp, fn = self._tp_fp_fn()
        return _safe_div(tp, tp + fp + fn)

    def miou(self) -> float:
        """Mean IoU over classes with a non-empty union (nanmean); ``nan`` if nothing counted."""
        return _nanmean(self.iou())

    def pixel_accuracy(self) -> float:
        """Correct pixels / counted pixels (``nan`` if nothing counted)."""
        return float(_safe_div(np.trace(self.matrix), self.matrix.sum()))

    def class_accuracy(self) -> np.ndarray:
        """Per-class recall ``TP / (TP + FN)``, ``(K,)``; ``nan`` for classes absent from gt."""
        tp, _, fn = self._tp_fp_fn()
        return _safe_div(tp, tp + fn)

    def mean_class_accuracy(self) -> float:
        """Mean of :meth:`class_accuracy` over classes present in the ground truth."""
        return _nanmean(self.class_accuracy())

    def precision_recall_f1(self, positive_class: int = 1) -> Dict[str, float]:
        """Precision, recall and F1 (= Dice) of one class, e.g. road = 1.

        Each value is ``nan`` when its denominator is 0 (nothing predicted / nothing in gt).
        """
        if not 0 <= positive_class < self.num_classes:
            raise ValueError(f"positive_class {positive_class} outside [0, {self.num_classes})")
        tp, fp, fn = (float(v[positive_class]) for v in self._tp_fp_fn())
        precision = float(_safe_div(tp, tp + fp))
        recall = float(_safe_div(tp, tp + fn))
        f1 = float(_safe_div(2 * tp, 2 * tp + fp + fn))
        return {"precision": precision, "recall": recall, "f1": f1}

    def summary(self, positive_class: Optional[int] = None,
                class_names: Optional[Sequence[str]] = None) -> Dict:
        """All metrics as a JSON-serialisable dict (``nan`` becomes ``None``).

        Args:
            positive_class: class whose IoU/precision/recall/F1 are reported as the headline
                (default: 1 for a 2-class matrix, else none).
            class_names: optional names for the ``per_class_iou`` mapping.
        """
        if positive_class is None and self.num_classes == 2:
            positive_class = 1
        names: List[str] = list(class_names) if class_names is not None else [
            str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")
        iou = self.iou()
        acc = self.class_accuracy()
        out: Dict = {
            "num_classes": self.num_classes,
            "pixels": self.total,
            "miou": _json_float(self.miou()),
            "pixel_accuracy": _json_float(self.pixel_accuracy()),
            "mean_class_accuracy": _json_float(self.mean_class_accuracy()),
            "per_class_iou": {n: _json_float(v) for n, v in zip(names, iou)},
            "per_class_accuracy": {n: _json_float(v) for n, v in zip(names, acc)},
        }
        if positive_class is not None:
            prf = self.precision_recall_f1(positive_class)
            out["positive_class"] = names[positive_class]
            out["positive_iou"] = _json_float(iou[positive_class])
            out.update({k: _json_float(v) for k, v in prf.items()})
        return out


def topk_accuracy(logits: np.ndarray, labels: np.ndarray,
                  ks: Iterable[int] = (1, 5)) -> Dict[int, float]:
    """Top-k classification accuracy.

    Args:
        logits: ``(N, K)`` scores (logits or probabilities), float.
        labels: ``(N,)`` integer class indices.
        ks: the k values; each must be ``<= K``.

    Returns:
        ``{k: fraction of samples whose label is among the k highest scores}``. Ties are broken
        by the lower class index (a stable sort), so a constant row counts as predicting class 0.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"topk_accuracy: logits {logits.shape} do not match labels {labels.shape}")
    n, k_total = logits.shape
    ks = [int(k) for k in ks]
    for k in ks:
        if not 1 <= k <= k_total:
            raise ValueError(f"topk_accuracy: k={k} outside [1, {k_total}]")
    if n == 0:
        return {k: float("nan") for k in ks}
    if labels.min() < 0 or labels.max() >= k_total:
        raise ValueError(f"topk_accuracy: a label is outside [0, {k_total})")
    order = np.argsort(-logits, axis=1, kind="stable")
    # rank of the true label in each row (0 = best)
    rank = np.argmax(order == labels[:, None], axis=1)
    return {k: float(np.mean(rank < k)) for k in ks}
