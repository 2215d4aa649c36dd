"""What :mod:`segcore.train` builds from a :class:`~segcore.config.TrainConfig` before its loop
runs: the datasets (with their normalisation and augmentation keywords), the per-epoch sample
order and batches, the loss and the optimizer, and the checkpoint's ``normalization`` entry.

* :func:`resolve_gsd`: the model's ``gsd_m`` (inherited from ``init_checkpoint`` when the
  config sets none), refused when a chips manifest records another resolution.
* :func:`build_datasets`: ``(train, val or None)`` from :func:`segcore.data.build_dataset`
  (``val_fraction`` holds out a seeded share of the training samples).
* :func:`epoch_indices` / :func:`batches`: ``steps_per_epoch * batch_size`` indices of one epoch
  from seeded permutations (sharded by rank), read through a ``GeneratorDataset``; an index's
  augmentation draw depends on its position in the epoch, so a resumed run sees the same items.
* :func:`build_loss` / :func:`build_optimizer`: the ``loss`` and ``optimizer`` config keys.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .config import TrainConfig
from .errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)


def dataset_kwargs(cfg: TrainConfig, train: bool) -> Dict[str, Any]:
    norm = dict(cfg.normalization)
    method = str(norm.pop("method", "meanstd")).lower()
    kw: Dict[str, Any] = {}
    if method in ("dlinknet", "imagenet"):
        kw["norm"] = method
    elif method == "meanstd":
        kw.update(mean=norm.get("mean"), std=norm.get("std"))
        if "scale" in norm:  # sidecar convention: scale 255 means raw / 255
            s = float(norm["scale"])
            kw["scale"] = 1.0 / s if s > 1 else s
    elif method == "percentile":
        # 'prestretched': the chips already hold the scene stretch's 8-bit levels (written by
        # `roadseg dataset assemble` with segcore.preprocess), so only (q / 255 - mean) / std
        # remains, exactly the tail of what inference computes. Otherwise each training image
        # is stretched between its own percentiles first.
        if not norm.get("prestretched"):
            kw["stretch"] = (float(norm.get("low", 2.0)), float(norm.get("high", 98.0)))
        kw.update(mean=norm.get("mean", [0.5]), std=norm.get("std", [0.3125]))
    else:
        raise ConfigError(f"normalization method {method!r} is not supported for training "
                          "(use meanstd, dlinknet, imagenet or percentile)")
    kw["bands"] = list(cfg.bands) if cfg.dataset != "imagenet" else None
    if cfg.dataset == "imagenet":
        kw.pop("bands")
    aug = cfg.augment if train else "none"
    kw["augment"] = None if aug == "default" else aug
    kw["crop_size"] = list(cfg.crop_hw)
    if cfg.dataset != "imagenet":
        kw["ignore_index"] = cfg.ignore_index
        if cfg.num_classes > 1:
            kw["num_classes"] = cfg.num_classes
    kw.update(cfg.dataset_kwargs)
    if cfg.dataset == "imagenet":
        kw.pop("augment", None)
    return kw


def inference_normalization(cfg: TrainConfig) -> Dict[str, Any]:
    """The checkpoint's ``normalization`` entry: ``cfg.normalization`` with the defaults that
    training filled in written out (inference must apply exactly what training did)."""
    from .preprocess import normalization_entry

    norm = dict(cfg.normalization)
    norm.pop("prestretched", None)  # how the training data were stored, not a model property
    return normalization_entry(norm)


#: a dataset whose recorded ground resolution differs from the model's by more than this
#: (relative) is refused; the same tolerance as inference's resampling (app.service.grid)
GSD_TOLERANCE = 0.05


def resolve_gsd(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the ground resolution the model will record, checked against the data.

    * no ``gsd_m`` in the config and an ``init_checkpoint`` that records one: the new model
      inherits it (fine-tuning keeps the resolution the weights were trained at);
    * a chips dataset whose manifest records a ``gsd_m`` more than 5 % away from the config's:
      :class:`ConfigError` (one line, both values and the fix), before anything is trained.
    """
    from .meta import read_metadata

    origin = "from the config"
    if cfg.gsd_m is None and cfg.init_checkpoint:
        inherited = read_metadata(cfg.init_checkpoint).gsd_m
        if inherited:
            logger.info("gsd_m %.3g m inherited from %s", inherited, cfg.init_checkpoint)
            cfg = dataclasses.replace(cfg, gsd_m=float(inherited))
            origin = f"inherited from {Path(cfg.init_checkpoint).name}"
    if not cfg.gsd_m or cfg.dataset != "chips" or not cfg.data_root:
        return cfg
    from .data.layouts import manifest_gsd

    manifest = cfg.dataset_kwargs.get("manifest")
    mpath, found = manifest_gsd(Path(cfg.data_root), Path(manifest) if manifest else None)
    for g in found:
        if abs(g / float(cfg.gsd_m) - 1.0) > GSD_TOLERANCE:
            raise ConfigError(
                f"{mpath}: the chips are at {g:g} m per pixel but the model's gsd_m is "
                f"{float(cfg.gsd_m):g} m ({origin}): rebuild them with `roadseg dataset build "
                f"--gsd {float(cfg.gsd_m):g} ...` (or set gsd_m to the chips' resolution to "
                "train a model for it)")
    return cfg


def build_datasets(cfg: TrainConfig, seed: int):
    """``(train_dataset, val_dataset or None)`` from ``segcore.data.build_dataset``.

    With ``val_fraction`` a deterministic (seeded) share of the training samples is held out
    for validation instead of reading ``val_split``.
    """
    from .data import build_dataset

    if not cfg.data_root:
        raise ConfigError("config key data_root is not set (pass --data ROOT)")
    root = Path(cfg.data_root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset root not found")
    train_ds = build_dataset(cfg.dataset, root, cfg.train_split, seed=seed,
                             **dataset_kwargs(cfg, True))
    val_ds = None
    if cfg.val_fraction > 0:
        val_ds = build_dataset(cfg.dataset, root, cfg.train_split, seed=seed,
                               **dataset_kwargs(cfg, False))
        n = len(train_ds.samples)
        n_val = max(1, int(round(n * cfg.val_fraction)))
        if n_val >= n:
            raise ConfigError(f"val_fraction {cfg.val_fraction} leaves no training samples "
                              f"out of {n}")
        order = np.random.default_rng(cfg.seed).permutation(n)
        val_idx, tr_idx = sorted(order[:n_val]), sorted(order[n_val:])
        all_samples = list(train_ds.samples)
        train_ds.samples = [all_samples[i] for i in tr_idx]
        val_ds.samples = [all_samples[i] for i in val_idx]
    elif cfg.val_split:
        val_ds = build_dataset(cfg.dataset, root, cfg.val_split, seed=seed,
                               **dataset_kwargs(cfg, False))
    if cfg.max_train_samples:
        train_ds.samples = list(train_ds.samples)[:cfg.max_train_samples]
    return train_ds, val_ds


def epoch_indices(n: int, steps: int, batch: int, seed: int, epoch: int, rank: int,
                   world: int) -> np.ndarray:
    """Sample indices of one epoch for ``rank``: ``steps * batch`` of them, from seeded
    permutations of all ``n`` samples (repeated when an epoch asks for more than ``n``)."""
    need = steps * batch * world
    rng = np.random.default_rng((seed, epoch))
    chunks, have = [], 0
    while have < need:
        p = rng.permutation(n)
        chunks.append(p)
        have += n
    allidx = np.concatenate(chunks)[:need]
    return allidx[rank::world]


class IndexView:
    """Random-access view ``view[i] = dataset[indices[start + i]]`` (indices may repeat).

    An index that occurs several times in the epoch gets its augmentation from its position
    (the ``k``-th occurrence uses draw ``k``), not from the order in which loader threads ask,
    and a view that starts inside the epoch (``start``, a resumed run) counts the occurrences
    before ``start`` too: the items are the same as in an uninterrupted epoch.
    """

    def __init__(self, dataset, indices: np.ndarray, start: int = 0) -> None:
        self.dataset = dataset
        seen: Dict[int, int] = {}
        items = []
        for i in indices:
            i = int(i)
            items.append((i, seen.get(i, 0)))
            seen[i] = seen.get(i, 0) + 1
        self.items = items[start:]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        index, draw = self.items[i]
        get = getattr(self.dataset, "get", None)
        if get is None:
            return self.dataset[index]
        return get(index, draw)


def batches(dataset, indices: np.ndarray, batch: int, workers: int,
             start: int = 0) -> Iterator[Tuple[Any, Any]]:
    """Batches ``(x (B,C,H,W) float32, y)`` of ``dataset`` in the order of ``indices[start:]``
    through a ``mindspore.dataset.GeneratorDataset`` (``workers`` loader threads)."""
    if len(indices) <= start:
        return iter(())
    import mindspore.dataset as msds

    gen = msds.GeneratorDataset(source=IndexView(dataset, indices, start),
                                column_names=list(dataset.column_names), shuffle=False,
                                num_parallel_workers=max(1, int(workers)),
                                python_multiprocessing=False)
    gen = gen.batch(batch, drop_remainder=False)
    return gen.create_tuple_iterator(num_epochs=1, output_numpy=True)


def set_epoch(dataset, seed: int, epoch: int) -> None:
    """Make the augmentation draws of ``epoch`` independent of earlier epochs (so a resumed
    run sees the same augmentations as an uninterrupted one)."""
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
        return
    dataset.seed = int(seed) * 100003 + int(epoch)
    draws = getattr(dataset, "_draws", None)
    if draws is not None:  # restart the per-index draw counters of segcore.data datasets
        dataset._draws = type(draws)()


def enet_weights(cfg: TrainConfig, train_ds) -> List[float]:
    from .losses import enet_class_weights

    labels = (train_ds.load_pair(i)[1] for i in range(len(train_ds)))
    w = enet_class_weights(labels, num_classes=max(cfg.num_classes, 2),
                           ignore_index=cfg.ignore_index)
    return [float(v) for v in w[:cfg.num_classes]]


def build_loss(cfg: TrainConfig, task: str, class_weights: Optional[List[float]]):
    from mindspore import nn

    from .losses import AuxLoss, BCEDiceLoss, create_loss

    if task == "classification":
        return nn.CrossEntropyLoss()
    if cfg.loss == "bce_dice":
        main = BCEDiceLoss(ignore_index=cfg.ignore_index)
        return AuxLoss(main, None, cfg.aux_weight) if cfg.aux_weight > 0 else main
    name = {"ce_ignore": "ce"}.get(cfg.loss, cfg.loss)
    return create_loss(name, ignore_index=cfg.ignore_index, aux_weight=cfg.aux_weight,
                       class_weights=class_weights, ohem_thresh=cfg.ohem_thresh,
                       ohem_min_kept=cfg.ohem_min_kept)


def build_optimizer(cfg: TrainConfig, params, lr0: float):
    import mindspore as ms
    from mindspore import nn

    lr = ms.Tensor(np.float32(lr0))
    if cfg.optimizer == "sgd":
        return nn.Momentum(params, learning_rate=lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay, use_nesterov=cfg.nesterov)
    if cfg.optimizer == "adam":
        return nn.Adam(params, learning_rate=lr, weight_decay=cfg.weight_decay)
    return nn.AdamWeightDecay(params, learning_rate=lr, weight_decay=cfg.weight_decay)


__all__ = ["build_datasets", "dataset_kwargs", "inference_normalization", "epoch_indices",
           "IndexView", "batches", "set_epoch", "enet_weights", "build_loss", "build_optimizer"]
