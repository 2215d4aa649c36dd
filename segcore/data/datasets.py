"""Random-access datasets and their MindSpore ``GeneratorDataset`` wrapper.

A :class:`SegmentationDataset` item is ``(image, mask)``: ``image`` ``(C, H, W)`` float32
normalised, ``mask`` ``(H, W)`` int32 class indices (255 = ignore). A
:class:`ClassificationDataset` item is ``(image, label)`` with ``label`` a scalar int32.

Randomness: sample ``i`` drawn for the ``k``-th time in epoch ``e`` uses
``numpy.random.default_rng((seed, e, i, k))``, so a run is reproducible whatever order or thread
loads the samples, repeated draws see new augmentations, and :meth:`set_epoch` (which restarts
the draw counts) makes an epoch's augmentations independent of the epochs before it, so a
resumed run matches an uninterrupted one.

Broken samples: a file that cannot be read, or a mask whose size differs from its image, raises
:class:`~segcore.errors.DatasetError` naming the file. With ``skip_broken=True`` the sample is
logged as a warning, remembered, and replaced by the next sample that loads, so a batch never
holds a wrong pair.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError, DatasetError
from .io import read_image, read_label_mask
from .layouts import (CITYSCAPES_CLASSES, Sample, cityscapes_label_to_train_id, index_chips,
                      index_cityscapes, index_deepglobe, index_image_folder, index_voc_list)
from .transforms import (AugmentConfig, Normalization, SizeLike, augment_pair,
                         classification_transform, recipe)

__all__ = ["SegmentationDataset", "ClassificationDataset", "build_dataset", "to_generator_dataset",
           "build_loader", "DATASET_KINDS", "MASK_MODES"]

logger = logging.getLogger(__name__)

MASK_MODES = ("binary", "index", "cityscapes")


class _DrawCounter:
    """Thread-safe count of how often each index was drawn (seeds the per-draw RNG)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Dict[int, int] = defaultdict(int)

    def next(self, index: int) -> int:
        with self._lock:
            k = self._counts[index]
            self._counts[index] = k + 1
            return k

    def __getstate__(self):  # picklable for python_multiprocessing workers
        return {"counts": dict(self._counts)}

    def __setstate__(self, state):
        self._lock = threading.Lock()
        self._counts = defaultdict(int, state["counts"])


class _BaseDataset:
    column_names: Tuple[str, str] = ("image", "label")

    def __init__(self, samples: Sequence[Sample], *, skip_broken: bool, seed: int,
                 name: str) -> None:
        self.samples: List[Sample] = list(samples)
        if not self.samples:
            raise DatasetError(f"{name}: no samples found")
        self.skip_broken = bool(skip_broken)
        self.seed = int(seed)
        self.name = name
        self.epoch = 0
        self._draws = _DrawCounter()
        self._broken: set = set()

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` and restart the per-sample draw counts."""
        self.epoch = int(epoch)
        self._draws = _DrawCounter()

    def rng_for(self, index: int, draw: Optional[int] = None) -> np.random.Generator:
        """The generator for draw ``draw`` of ``index`` in the current epoch (default: the
        next draw, counted per index)."""
        if draw is None:
            draw = self._draws.next(int(index))
        return np.random.default_rng((self.seed, self.epoch, int(index), int(draw)))

    def _load(self, index: int, draw: Optional[int] = None):
        raise NotImplementedError

    def __getitem__(self, index: int):
        return self.get(index)

    def get(self, index: int, draw: Optional[int] = None):
        """Item ``index`` with the augmentation of its ``draw``-th draw in the current epoch
        (``None``: the next one). Training passes ``draw`` explicitly, from the item's position
        in the epoch, so that the result does not depend on which loader thread asks first or
        on where a resumed run starts inside the epoch."""
        n = len(self.samples)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if i in self._broken:
                continue
            try:
                return self._load(i, draw)
            except DatasetError as exc:
                if not self.skip_broken:
                    raise
                self._broken.add(i)
                logger.warning("skipping broken sample %d of %s: %s", i, self.name, exc)
        raise DatasetError(f"{self.name}: every one of the {n} samples is broken")


class SegmentationDataset(_BaseDataset):
    """Image/mask pairs with augmentation and normalisation.

    Args:
        samples: from one of the ``segcore.data.layouts`` indexers.
        augment: an :class:`AugmentConfig` (see :func:`~segcore.data.transforms.recipe`).
        normalization: per-band normalisation.
        mask_mode: ``binary`` (``value > binary_threshold`` -> 1, channels max-reduced: road
            masks 0/255 or 0/1), ``index`` (class indices as stored; 255 = ignore) or
            ``cityscapes`` (labelIds -> 19 trainIds).
        num_classes: when given, ``index`` masks with other values than ``[0, K)`` or
            ``ignore_index`` are reported as broken.
        bands: optional 1-based band selection for the image.
        skip_broken: skip (with a warning) instead of raising on broken samples.
        seed: augmentation seed.
    """

    column_names = ("image", "mask")

    def __init__(self, samples: Sequence[Sample], *, augment: Optional[AugmentConfig] = None,
                 normalization: Optional[Normalization] = None, mask_mode: str = "index",
                 binary_threshold: float = 0, num_classes: Optional[int] = None,
                 ignore_index: int = 255, bands: Optional[Sequence[int]] = None,
                 skip_broken: bool = False, seed: int = 0, name: str = "dataset") -> None:
        super().__init__(samples, skip_broken=skip_broken, seed=seed, name=name)
        if mask_mode not in MASK_MODES:
            raise ConfigError(f"unknown mask_mode '{mask_mode}'; valid: {', '.join(MASK_MODES)}")
        self.augment = augment if augment is not None else AugmentConfig(mask_fill=ignore_index)
        self.normalization = normalization if normalization is not None else Normalization()
        self.mask_mode = mask_mode
        self.binary_threshold = float(binary_threshold)
        self.num_classes = num_classes
        self.ignore_index = int(ignore_index)
        self.bands = list(bands) if bands else None  # None or [] = every band

    def _convert_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.mask_mode == "binary":
            m = raw.max(axis=2) if raw.ndim == 3 else raw
            return (m > self.binary_threshold).astype(np.uint8)
        if raw.ndim == 3:
            raise DatasetError(f"{path}: expected a single-band class mask, got {raw.shape[2]} "
                               f"channels")
        if self.mask_mode == "cityscapes":
            if raw.max(initial=0) > 255:
                raise DatasetError(f"{path}: Cityscapes labelId {int(raw.max())} > 255")
            return cityscapes_label_to_train_id(raw)
        m = raw.astype(np.int64)
        if self.num_classes is not None:
            bad = (m != self.ignore_index) & ((m < 0) | (m >= self.num_classes))
            if bad.any():
                raise DatasetError(f"{path}: mask value {int(m[bad][0])} is not a class in "
                                   f"[0, {self.num_classes}) nor ignore {self.ignore_index}")
        return m.astype(np.uint8 if m.max(initial=0) <= 255 and m.min(initial=0) >= 0
                        else np.int32)

    def load_pair(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Read and check sample ``index`` without augmenting.

        Returns:
            ``image (H, W, C)`` native dtype and ``mask (H, W)`` integer (converted classes).
        """
        s = self.samples[index]
        img = read_image(s.image, self.bands)
        raw = read_label_mask(s.mask)
        if raw.shape[:2] != img.shape[:2]:
            raise DatasetError(f"{s.mask}: mask is {raw.shape[0]}x{raw.shape[1]} but image "
                               f"{s.image.name} is {img.shape[0]}x{img.shape[1]}")
        return img, self._convert_mask(raw, s.mask)

    def _load(self, index: int, draw: Optional[int] = None):
        img, mask = self.load_pair(index)
        where = str(self.samples[index].image)
        img = self.normalization.stretch_image(img)
        fill = self.normalization.fill_value(img.shape[2], where)
        img, mask = augment_pair(img, mask, self.augment, self.rng_for(index, draw), fill)
        return self.normalization.apply(img, where), mask.astype(np.int32)


class ClassificationDataset(_BaseDataset):
    """Images with a class label (ImageNet layout) for the DDRNet classifier pre-training."""

    column_names = ("image", "label")

    def __init__(self, samples: Sequence[Sample], classes: Sequence[str], *,
                 crop_size: SizeLike = 224, train: bool = True,
                 normalization: Optional[Normalization] = None, skip_broken: bool = False,
                 seed: int = 0, name: str = "dataset") -> None:
        super().__init__(samples, skip_broken=skip_broken, seed=seed, name=name)
        self.classes = list(classes)
        self.crop_size = crop_size
        self.train = bool(train)
        self.normalization = normalization if normalization is not None else Normalization()

    def _load(self, index: int, draw: Optional[int] = None):
        s = self.samples[index]
        img = read_image(s.image)
        if img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        elif img.shape[2] == 4:
            img = img[:, :, :3]
        img = classification_transform(img, self.crop_size, self.train,
                                       self.rng_for(index, draw))
        return self.normalization.apply(img, str(s.image)), np.int32(s.label)


DATASET_KINDS = ("deepglobe", "chips", "cityscapes", "voc", "imagenet")
_DEFAULT_RECIPE = {"deepglobe": "dlinknet", "chips": "dlinknet", "cityscapes": "ddrnet",
                   "voc": "deeplabv3"}


def build_dataset(kind: str, root: Union[str, Path], split: Optional[str] = "train", *,
                  augment: Union[str, AugmentConfig, None] = None,
                  crop_size: Optional[SizeLike] = None,
                  norm: Optional[str] = None, mean: Optional[Sequence[float]] = None,
                  std: Optional[Sequence[float]] = None, scale: Optional[float] = None,
                  stretch: Optional[Sequence[float]] = None,
                  bands: Optional[Sequence[int]] = None, num_classes: Optional[int] = None,
                  ignore_index: int = 255, mask_mode: Optional[str] = None,
                  binary_threshold: Optional[float] = None, skip_broken: bool = False,
                  seed: int = 0, list_file: Optional[Union[str, Path]] = None,
                  manifest: Optional[Union[str, Path]] = None,
                  statuses: Optional[Sequence[str]] = ("accepted",),
                  ) -> Union[SegmentationDataset, ClassificationDataset]:
    """Build a random-access dataset of one of :data:`DATASET_KINDS`.

    Args:
        kind: ``deepglobe``, ``chips``, ``cityscapes``, ``voc`` or ``imagenet``.
        root: dataset root (layouts in :mod:`segcore.data.layouts`).
        split: ``train``/``val``/...; ``None`` for a chips or DeepGlobe folder without splits.
        augment: recipe name (``dlinknet``, ``deeplabv3``, ``ddrnet``, ``dgcnet``, ``none``) or
            an :class:`AugmentConfig`. Default: the kind's reference recipe for ``split ==
            "train"`` (deepglobe/chips ``dlinknet``, cityscapes ``ddrnet``, voc ``deeplabv3``)
            and ``none`` otherwise. For ``imagenet`` only training (random-resized crop + flip)
            versus ``none`` (resize + centre crop) matters; the default follows the split.
        crop_size: crop ``(H, W)`` or side (required by the scale+crop recipes; for
            ``imagenet`` default 224).
        norm, mean, std, scale: normalisation ``(raw * scale - mean) / std``; ``norm`` is a
            preset (``imagenet`` default, ``dlinknet``).
        stretch: ``(low, high)`` percentiles: each image is stretched per band to 0..255 between
            its own percentiles first (then ``scale`` is 1/255).
        bands: 1-based image bands to keep (GeoTIFF chips with extra bands).
        num_classes: validates ``index`` masks.
        mask_mode: override of the kind's mask conversion (deepglobe/chips ``binary``,
            cityscapes ``cityscapes``, voc ``index``).
        binary_threshold: ``binary`` masks: values above it are road (deepglobe 127 as the
            D-LinkNet ``mask / 255 >= 0.5``; chips 0, i.e. any non-zero value).
        skip_broken: skip broken samples with a warning instead of raising DatasetError.
        seed: augmentation seed.
        list_file: voc list file (default: ``<root>/<split>.txt`` and variants).
        manifest, statuses: chips manifest and accepted statuses.
    """
    kind = kind.lower()
    root = Path(root)
    normalization = Normalization.resolve(norm, mean, std, scale, stretch)
    name = f"{kind}:{root}" + (f"[{split}]" if split else "")
    train = split == "train"
    if kind == "imagenet":
        samples, classes = index_image_folder(root, split, skip_broken)
        if isinstance(augment, AugmentConfig):
            raise ConfigError("imagenet takes augment=None, 'none' or a recipe name, not an "
                              "AugmentConfig")
        if augment is not None:  # 'none'/'eval': centre crop; any recipe: random-resized crop
            train = augment.lower() not in ("none", "eval", "")
        return ClassificationDataset(samples, classes, crop_size=crop_size or 224, train=train,
                                     normalization=normalization, skip_broken=skip_broken,
                                     seed=seed, name=name)
    if kind == "deepglobe":
        samples = index_deepglobe(root, split, skip_broken)
        default_mode, default_thr = "binary", 127.0
    elif kind == "chips":
        samples = index_chips(root, split, skip_broken, manifest, statuses)
        default_mode, default_thr = "binary", 0.0
    elif kind == "cityscapes":
        samples = index_cityscapes(root, split or "train", skip_broken)
        default_mode, default_thr = "cityscapes", 0.0
        if num_classes is None:
            num_classes = len(CITYSCAPES_CLASSES)
    elif kind == "voc":
        samples = index_voc_list(root, split or "train", list_file, skip_broken)
        default_mode, default_thr = "index", 0.0
    else:
        raise ConfigError(f"unknown dataset kind '{kind}'; valid: {', '.join(DATASET_KINDS)}")
    if not samples:
        extra = f" with status in {list(statuses)}" if kind == "chips" and statuses else ""
        raise DatasetError(f"{root}: no {kind} samples for split '{split}'{extra}")
    if augment is None:
        augment = _DEFAULT_RECIPE[kind] if train else "none"
    if isinstance(augment, str):
        augment = recipe(augment, crop_size, ignore_index)
    elif crop_size is not None:
        raise ConfigError("pass crop_size inside the AugmentConfig when giving one")
    return SegmentationDataset(samples, augment=augment, normalization=normalization,
                               mask_mode=mask_mode or default_mode,
                               binary_threshold=(default_thr if binary_threshold is None
                                                 else binary_threshold),
                               num_classes=num_classes, ignore_index=ignore_index, bands=bands,
                               skip_broken=skip_broken, seed=seed, name=name)


def to_generator_dataset(dataset: Union[SegmentationDataset, ClassificationDataset],
                         batch_size: int, *, shuffle: bool = False, drop_remainder: bool = False,
                         num_parallel_workers: int = 1, python_multiprocessing: bool = False,
                         num_shards: Optional[int] = None, shard_id: Optional[int] = None):
    """Wrap a random-access dataset in a batched ``mindspore.dataset.GeneratorDataset``.

    Columns are ``dataset.column_names`` (``image``/``mask`` or ``image``/``label``); batches
    are ``(B, C, H, W)`` float32 and ``(B, H, W)`` int32 (``(B,)`` labels). ``num_shards`` /
    ``shard_id`` split the samples between data-parallel devices (each shard gets
    ``ceil(len / num_shards)`` samples). Worker threads by default: Python multiprocessing only
    pays off with many cores. The shuffle order follows MindSpore's global seed
    (``mindspore.dataset.config.set_seed``).
    """
    import mindspore.dataset as msds

    if (num_shards is None) != (shard_id is None):
        raise ConfigError("num_shards and shard_id must be given together")
    if num_shards is not None and not 0 <= shard_id < num_shards:
        raise ConfigError(f"shard_id {shard_id} outside [0, {num_shards})")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    gen = msds.GeneratorDataset(source=dataset, column_names=list(dataset.column_names),
                                shuffle=shuffle, num_parallel_workers=int(num_parallel_workers),
                                python_multiprocessing=python_multiprocessing,
                                num_shards=num_shards, shard_id=shard_id)
    return gen.batch(int(batch_size), drop_remainder=drop_remainder)


def build_loader(kind: str, root: Union[str, Path], split: Optional[str], batch_size: int, *,
                 shuffle: Optional[bool] = None, drop_remainder: Optional[bool] = None,
                 num_parallel_workers: int = 1, python_multiprocessing: bool = False,
                 num_shards: Optional[int] = None, shard_id: Optional[int] = None, **kw):
    """:func:`build_dataset` + :func:`to_generator_dataset`; ``shuffle`` and
    ``drop_remainder`` default to True for the train split and False otherwise.

    Returns ``(generator_dataset, dataset)``.
    """
    ds = build_dataset(kind, root, split, **kw)
    train = split == "train"
    gen = to_generator_dataset(ds, batch_size,
                               shuffle=train if shuffle is None else shuffle,
                               drop_remainder=train if drop_remainder is None else drop_remainder,
                               num_parallel_workers=num_parallel_workers,
                               python_multiprocessing=python_multiprocessing,
                               num_shards=num_shards, shard_id=shard_id)
    return gen, ds
