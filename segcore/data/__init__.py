"""Training/evaluation datasets of the segmentation core.

``build_dataset(kind, root, split, ...)`` returns a random-access dataset whose items are
``(image (C, H, W) float32 normalised, mask (H, W) int32)`` (or ``(image, label)`` for the
ImageNet-style classifier data); ``to_generator_dataset`` wraps it in a batched
``mindspore.dataset.GeneratorDataset`` (workers, shuffle, sharding). MindSpore is imported only
by that wrapper, so indexing, loading and augmenting work without it.
"""
from .datasets import (DATASET_KINDS, MASK_MODES, ClassificationDataset,  # noqa: F401
                       SegmentationDataset, build_dataset, build_loader, to_generator_dataset)
from .io import read_image, read_label_mask, raster_size  # noqa: F401
from .layouts import (CITYSCAPES_CLASSES, CITYSCAPES_LUT, Sample,  # noqa: F401
                      cityscapes_label_to_train_id, index_chips, index_cityscapes,
                      index_deepglobe, index_image_folder, index_voc_list, manifest_gsd)
from .transforms import (DLINKNET_MEAN, DLINKNET_STD, IMAGENET_MEAN, IMAGENET_STD,  # noqa: F401
                         AugmentConfig, Normalization, augment_pair, recipe)

__all__ = ["build_dataset", "build_loader", "to_generator_dataset", "SegmentationDataset",
           "ClassificationDataset", "DATASET_KINDS", "MASK_MODES", "Sample", "AugmentConfig",
           "Normalization", "recipe", "augment_pair", "read_image", "read_label_mask",
           "raster_size",
           "index_deepglobe", "index_chips", "index_cityscapes", "index_voc_list",
           "index_image_folder", "CITYSCAPES_CLASSES", "CITYSCAPES_LUT",
           "cityscapes_label_to_train_id", "IMAGENET_MEAN", "IMAGENET_STD", "DLINKNET_MEAN",
           "DLINKNET_STD"]
