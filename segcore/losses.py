"""Segmentation losses as MindSpore cells: ``loss(logits, target) -> scalar``.

Every loss takes raw logits (networks never apply softmax/sigmoid in ``construct``) and uses only
MindSpore ops inside ``construct``, so it runs in PyNative and GRAPH mode and is differentiable.

Shapes: multi-class ``logits`` are ``(N, C, H, W)`` float, ``target`` ``(N, H, W)`` integer class
indices with ``ignore_index`` (255) for unlabeled pixels. Binary (road) losses take
``logits (N, 1, H, W)`` and ``target (N, H, W)`` or ``(N, 1, H, W)`` with values {0, 1}.

Recipes of the reference projects:

* D-LinkNet: :class:`BCEDiceLoss` (BCE + 1 - batch soft Dice).
* DeepLabV3 (MindSpore ModelZoo): :class:`CrossEntropyIgnore` (CE averaged over valid pixels).
* DGCNet / DDRNet: :class:`OhemCrossEntropy` on the main output (DDRNet: thresh 0.9,
  min_kept 131072) and 0.4 x plain CE on the auxiliary output, wired by :class:`AuxLoss`.
* ENet: :class:`WeightedCrossEntropy` with :func:`enet_class_weights` (``1 / ln(c + p)``).
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import mindspore as ms
from mindspore import nn, ops

__all__ = ["BCEDiceLoss", "CrossEntropyIgnore", "WeightedCrossEntropy", "OhemCrossEntropy",
           "AuxLoss", "enet_class_weights", "create_loss"]

logger = logging.getLogger(__name__)


def _pixel_nll(logits, target, ignore_index):
    """Per-pixel CE and validity.

    Returns ``(ce, log_p_true, valid, safe_target)``, each ``(N, H, W)``; ``ce`` is 0 at ignored
    pixels, ``safe_target`` has ignored pixels replaced by class 0.
    """
    target = target.astype(ms.int32)
    valid = target != ignore_index
    safe_t = ops.where(valid, target, ops.zeros_like(target))
    logp = ops.log_softmax(logits, axis=1)
    logp_t = ops.gather_elements(logp, 1, ops.expand_dims(safe_t, 1)).squeeze(1)
    validf = valid.astype(logits.dtype)
    return -logp_t * validf, logp_t, valid, safe_t


class CrossEntropyIgnore(nn.Cell):
    """Softmax cross entropy averaged over the pixels whose target is not ``ignore_index``.

    ``loss = sum_valid(-log softmax(logits)[target]) / max(#valid, 1)`` (0 if every pixel is
    ignored), as the DeepLabV3 ModelZoo ``SoftmaxCrossEntropyLoss``.
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def construct(self, logits, target):
        ce, _, valid, _ = _pixel_nll(logits, target, self.ignore_index)
        count = valid.astype(logits.dtype).sum()
        return ce.sum() / ops.maximum(count, ops.ones_like(count))


class WeightedCrossEntropy(nn.Cell):
    """Class-weighted cross entropy (ENet), normalised like PyTorch's weighted mean.

    ``loss = sum_valid(w[t] * ce) / sum_valid(w[t])``.

    Args:
        class_weights: ``(C,)`` weights, e.g. from :func:`enet_class_weights`.
        ignore_index: target value that contributes nothing.
    """

    def __init__(self, class_weights: Sequence[float], ignore_index: int = 255) -> None:
        super().__init__()
        w = np.asarray(class_weights, dtype=np.float32).reshape(-1)
        if w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"WeightedCrossEntropy: class weights must be finite and >= 0, "
                             f"got {w}")
        self.class_weights = ms.Tensor(w)
        self.num_classes = int(w.size)
        self.ignore_index = int(ignore_index)

    def construct(self, logits, target):
        ce, _, valid, safe_t = _pixel_nll(logits, target, self.ignore_index)
        w = ops.gather(self.class_weights.astype(logits.dtype), safe_t, 0)
        w = w * valid.astype(logits.dtype)
        den = w.sum()
        return (ce * w).sum() / ops.maximum(den, ops.full_like(den, 1e-12))


class OhemCrossEntropy(nn.Cell):
    """Cross entropy over the hard pixels only (online hard example mining).

    A valid pixel is kept when the softmax probability of its true class is ``< thresh``; when
    fewer than ``min_kept`` pixels qualify, the ``min_kept`` valid pixels with the lowest
    true-class probability are kept instead (ties at the cut included). If the batch has fewer
    than ``min_kept`` valid pixels all of them are kept. The loss is the mean CE of the kept
    pixels (0 when nothing is kept).

    This is the DGCNet / HRNet / DDRNet rule ``threshold = max(kth_smallest_prob, thresh)``
    with one deliberate difference: the reference keeps ``prob < threshold`` and so drops the
    ``min_kept``-th pixel itself whenever the cut is above ``thresh``; we keep it.

    Args:
        thresh: probability threshold (DGCNet 0.7, DDRNet 0.9).
        min_kept: minimum number of pixels per batch (DDRNet 131072).
        ignore_index: target value excluded from the loss and the selection.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 100000,
                 ignore_index: int = 255) -> None:
        super().__init__()
        if not 0.0 < thresh <= 1.0:
            raise ValueError(f"OhemCrossEntropy: thresh must be in (0, 1], got {thresh}")
        if min_kept < 0:
            raise ValueError(f"OhemCrossEntropy: min_kept must be >= 0, got {min_kept}")
        self.thresh = float(thresh)
        self.min_kept = int(min_kept)
        self.ignore_index = int(ignore_index)

    def construct(self, logits, target):
        ce, logp_t, valid, _ = _pixel_nll(logits, target, self.ignore_index)
        prob = ops.stop_gradient(ops.exp(logp_t))
        # ignored pixels get probability 2 so they are never among the hardest
        prob = ops.where(valid, prob, ops.full_like(prob, 2.0))
        keep = prob < self.thresh
        numel = prob.size
        k = self.min_kept if self.min_kept < numel else numel
        if k > 0:
            neg_sorted, _ = ops.topk(-prob.reshape(-1), k)
            kth = -neg_sorted[k - 1]
            keep = ops.logical_or(keep, prob <= kth)
        keep = ops.logical_and(keep, valid).astype(logits.dtype)
        count = keep.sum()
        return (ce * keep).sum() / ops.maximum(count, ops.ones_like(count))


class BCEDiceLoss(nn.Cell):
    """D-LinkNet's ``dice_bce_loss`` on logits: ``BCE + (1 - soft Dice)``.

    ``BCE`` is the mean binary cross entropy with logits over all (valid) pixels; the soft Dice is
    computed over the whole batch at once (D-LinkNet ``batch=True``):
    ``dice = (2 * sum(p * y) + smooth) / (sum(p) + sum(y) + smooth + eps)`` with ``p = sigmoid``.

    Args:
        smooth: Dice smoothing term (D-LinkNet uses 0).
        bce_weight, dice_weight: weights of the two terms.
        ignore_index: optional target value excluded from both terms (e.g. 255 from crop padding).
        eps: keeps the Dice finite for an all-empty batch.
    """

    def __init__(self, smooth: float = 0.0, bce_weight: float = 1.0, dice_weight: float = 1.0,
                 ignore_index: Optional[int] = None, eps: float = 1e-7) -> None:
        super().__init__()
        self.smooth = float(smooth)
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.use_ignore = ignore_index is not None
        self.ignore_index = int(ignore_index) if ignore_index is not None else -1
        self.eps = float(eps)

    def construct(self, logits, target):
        if target.ndim == logits.ndim - 1:
            target = ops.expand_dims(target, 1)
        if self.use_ignore:
            validf = (target != self.ignore_index).astype(logits.dtype)
        else:
            validf = ops.ones_like(logits)
        y = target.astype(logits.dtype) * validf
        x = logits
        # stable BCE with logits: max(x, 0) - x*y + log(1 + exp(-|x|))
        bce_map = ops.relu(x) - x * y + ops.log1p(ops.exp(-ops.abs(x)))
        n_valid = validf.sum()
        bce = (bce_map * validf).sum() / ops.maximum(n_valid, ops.ones_like(n_valid))
        p = ops.sigmoid(x) * validf
        inter = (p * y).sum()
        dice = (2.0 * inter + self.smooth) / (p.sum() + y.sum() + self.smooth + self.eps)
        return self.bce_weight * bce + self.dice_weight * (1.0 - dice)


class AuxLoss(nn.Cell):
    """Main loss plus weighted auxiliary losses for networks that return ``(main, aux...)``.

    ``loss = main_loss(out[0], t) + aux_weight * sum_i aux_loss(out[i], t)``; a single tensor
    output is passed to ``main_loss`` alone (evaluation mode). Any output whose spatial size
    differs from the target's is first resized bilinearly (``align_corners=False``) to it.

    Args:
        main_loss: loss for the main head (e.g. :class:`OhemCrossEntropy`).
        aux_loss: loss for auxiliary heads (default: the main loss); DGCNet/DDRNet use plain CE.
        aux_weight: DGCNet/DDRNet/PSPNet use 0.4.
    """

    def __init__(self, main_loss: nn.Cell, aux_loss: Optional[nn.Cell] = None,
                 aux_weight: float = 0.4) -> None:
        super().__init__()
        self.main_loss = main_loss
        self.aux_loss = aux_loss if aux_loss is not None else main_loss
        self.aux_weight = float(aux_weight)

    def _fit(self, logits, target):
        size = target.shape[-2:]
        if logits.shape[-2:] != size:
            logits = ops.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def construct(self, outputs, target):
        if isinstance(outputs, (tuple, list)):
            loss = self.main_loss(self._fit(outputs[0], target), target)
            for i in range(1, len(outputs)):
                loss = loss + self.aux_weight * self.aux_loss(self._fit(outputs[i], target),
                                                              target)
            return loss
        return self.main_loss(self._fit(outputs, target), target)


def enet_class_weights(source: Union[Sequence[float], np.ndarray, Iterable[np.ndarray]],
                       num_classes: Optional[int] = None, c: float = 1.02,
                       ignore_index: Optional[int] = 255) -> np.ndarray:
    """ENet class weights ``w_k = 1 / ln(c + p_k)``.

    Args:
        source: without ``num_classes``: a ``(C,)`` sequence of class frequencies or pixel
            counts (normalised to sum 1). With ``num_classes``: an iterable of integer label
            arrays (any shape) whose pixels are counted; ``ignore_index`` pixels are not counted
            and values outside ``[0, num_classes)`` raise ``ValueError``.
        num_classes: number of classes when ``source`` holds label arrays.
        c: ENet's constant (1.02 bounds the weights to ``[1/ln(c+1), 1/ln(c)] ~ [1.43, 50.5]``).

    Returns:
        ``(C,)`` float32 weights. A class with frequency 0 gets the maximal weight ``1/ln(c)``.
    """
    if c <= 1.0:
        raise ValueError(f"enet_class_weights: c must be > 1 (ln(c + p) > 0), got {c}")
    if num_classes is None:
        counts = np.asarray(source, dtype=np.float64).reshape(-1)
        if counts.size == 0 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
            raise ValueError("enet_class_weights: frequencies must be finite and >= 0")
    else:
        counts = np.zeros(int(num_classes), dtype=np.float64)
        for labels in source:
            lab = np.asarray(labels).reshape(-1).astype(np.int64)
            if ignore_index is not None:
                lab = lab[lab != ignore_index]
            if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
                raise ValueError(f"enet_class_weights: label value outside [0, {num_classes}) "
                                 f"and not ignore_index={ignore_index}")
            counts += np.bincount(lab, minlength=num_classes)[:num_classes]
    total = counts.sum()
    if total <= 0:
        raise ValueError("enet_class_weights: no labelled pixels / all frequencies are 0")
    p = counts / total
    return (1.0 / np.log(c + p)).astype(np.float32)


def create_loss(name: str, *, ignore_index: int = 255, aux_weight: float = 0.0,
                class_weights: Optional[Sequence[float]] = None, ohem_thresh: float = 0.7,
                ohem_min_kept: int = 100000) -> nn.Cell:
    """Build a loss by name: ``bce_dice``, ``ce``, ``weighted_ce``, ``ohem``.

    With ``aux_weight > 0`` the loss is wrapped in :class:`AuxLoss` whose auxiliary loss is
    plain :class:`CrossEntropyIgnore` for ``ohem`` (DGCNet/DDRNet) and the main loss otherwise.
    """
    key = name.lower().replace("-", "_")
    aux = None
    if key in ("bce_dice", "dice_bce"):
        main = BCEDiceLoss()
    elif key in ("ce", "cross_entropy"):
        main = CrossEntropyIgnore(ignore_index)
    elif key in ("weighted_ce", "enet"):
        if class_weights is None:
            raise ValueError("create_loss('weighted_ce') needs class_weights")
        main = WeightedCrossEntropy(class_weights, ignore_index)
    elif key == "ohem":
        main = OhemCrossEntropy(ohem_thresh, ohem_min_kept, ignore_index)
        aux = CrossEntropyIgnore(ignore_index)
    else:
        raise ValueError(f"unknown loss '{name}'; valid: bce_dice, ce, weighted_ce, ohem")
    if aux_weight > 0:
        return AuxLoss(main, aux, aux_weight)
    return main
