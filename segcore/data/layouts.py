"""Indexing dataset folders into lists of :class:`Sample` (paths only, nothing decoded).

Index time checks that every listed file exists; a missing mask or image raises
:class:`~segcore.errors.DatasetError` naming it, or with ``skip_broken=True`` is left out with a
logged warning. Sizes and readability are checked when a sample is loaded.

Layouts
-------
* DeepGlobe roads: ``<root>/<split>/<id>_sat.jpg`` + ``<id>_mask.png`` (RGB mask, 0/255).
* Chips: ``<root>[/<split>]/images/<name>.<ext>`` + ``masks/<name>.<ext>`` (GeoTIFF or
  PNG/JPEG, any band count), or a ``manifest.json`` at ``<root>``::

      {"samples": [{"image": "images/a.tif", "mask": "masks/a.tif",
                    "split": "train", "status": "accepted"}, ...]}

  (a bare list of such objects is accepted too; paths are relative to ``<root>``). Only entries
  whose ``status`` is in ``statuses`` (default ``("accepted",)``) and whose ``split`` equals the
  requested split are used; an entry without ``status`` counts as not reviewed and is left out
  (``statuses=None`` disables the filter).
* Cityscapes: ``leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png`` +
  ``gtFine/<split>/<city>/<stem>_gtFine_labelIds.png``.
* VOC-style list files: one ``image_path mask_path`` pair per line relative to ``<root>``
  (DeepLabV3 ModelZoo lists), or one id per line (``JPEGImages/<id>.jpg`` +
  ``SegmentationClass/<id>.png``, the VOC ``ImageSets/Segmentation`` lists).
* ImageNet-style classes: ``<root>/<split>/<class>/*.JPEG``; label = index in sorted class names.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError
from .io import IMAGE_EXTS, check_readable

__all__ = ["Sample", "index_deepglobe", "index_chips", "index_cityscapes", "index_voc_list",
           "index_image_folder", "manifest_gsd", "CITYSCAPES_CLASSES",
           "cityscapes_label_to_train_id", "CITYSCAPES_LUT"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One dataset item: ``image`` path plus a ``mask`` path (segmentation) or ``label``."""

    image: Path
    mask: Optional[Path] = None
    label: Optional[int] = None

    @property
    def name(self) -> str:
        return self.image.name


def _problem(msg: str, skip_broken: bool) -> None:
    if skip_broken:
        logger.warning("skipping broken sample: %s", msg)
    else:
        raise DatasetError(msg)


def _split_dir(root: Path, split: Optional[str], kind: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: {kind} dataset root is not a directory")
    if not split:
        return root
    d = root / split
    if not d.is_dir():
        raise DatasetError(f"{d}: {kind} split '{split}' does not exist")
    return d


def _images_in(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


# ------------------------------------------------------------------------------- DeepGlobe
def index_deepglobe(root: Path, split: Optional[str] = "train",
                    skip_broken: bool = False) -> List[Sample]:
    """DeepGlobe road pairs ``<id>_sat.jpg`` / ``<id>_mask.png`` in ``root/split``."""
    d = _split_dir(Path(root), split, "DeepGlobe")
    out: List[Sample] = []
    for img in sorted(d.glob("*_sat.jpg")):
        mask = img.with_name(img.name[:-len("_sat.jpg")] + "_mask.png")
        if not mask.is_file():
            _problem(f"{img}: mask {mask.name} is missing", skip_broken)
            continue
        out.append(Sample(img, mask))
    return out


# ----------------------------------------------------------------------------------- chips
def _find_mask(masks_dir: Path, img: Path) -> Optional[Path]:
    same = masks_dir / img.name
    if same.is_file():
        return same
    for ext in sorted(IMAGE_EXTS):
        cand = masks_dir / (img.stem + ext)
        if cand.is_file():
            return cand
    return None


def index_chips(root: Path, split: Optional[str] = None, skip_broken: bool = False,
                manifest: Optional[Path] = None,
                statuses: Optional[Sequence[str]] = ("accepted",)) -> List[Sample]:
    """Image/mask chip pairs (see the module docstring for the folder and manifest layouts).

    ``manifest``: explicit manifest path; by default ``<root>/manifest.json`` is used when it
    exists. Without a manifest, ``split`` selects ``<root>/<split>/images``; ``split=None`` uses
    ``<root>/images``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: chips dataset root is not a directory")
    mpath = Path(manifest) if manifest is not None else root / "manifest.json"
    if manifest is not None or mpath.is_file():
        return _index_manifest(root, mpath, split, skip_broken, statuses)
    base = root / split if split else root
    images_dir, masks_dir = base / "images", base / "masks"
    if not images_dir.is_dir():
        hint = " (no manifest.json either; pass split=None to use <root>/images)" if split else ""
        raise DatasetError(f"{images_dir}: chips images folder does not exist{hint}")
    if not masks_dir.is_dir():
        raise DatasetError(f"{masks_dir}: chips masks folder does not exist")
    out: List[Sample] = []
    for img in _images_in(images_dir):
        mask = _find_mask(masks_dir, img)
        if mask is None:
            _problem(f"{img}: no mask named {img.stem}.* in {masks_dir}", skip_broken)
            continue
        if _chip_readable(img, mask, skip_broken):
            out.append(Sample(img, mask))
    return out


def _chip_readable(img: Path, mask: Path, skip_broken: bool) -> bool:
    """Both files of a chip pass :func:`~segcore.data.io.check_readable` (checked when the
    dataset is indexed, not epochs later when the chip is first drawn)."""
    for p in (img, mask):
        try:
            check_readable(p)
        except DatasetError as exc:
            _problem(str(exc), skip_broken)
            return False
    return True


def _inside(root: Path, rel: object, mpath: Path, i: int) -> Path:
    """``root / rel`` for a manifest path that stays inside ``root`` (no absolute path, no
    ``..`` climbing out); anything else is refused."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{mpath}: entry {i}: path {rel!r} is not a relative file name")
    base = os.path.normpath(os.path.abspath(root))
    full = os.path.normpath(os.path.join(base, rel))
    if os.path.isabs(rel) or os.path.commonpath([base, full]) != base:
        raise DatasetError(f"{mpath}: entry {i}: path {rel!r} points outside the dataset folder "
                           f"{root}")
    return Path(full)


def _index_manifest(root: Path, mpath: Path, split: Optional[str], skip_broken: bool,
                    statuses: Optional[Sequence[str]]) -> List[Sample]:
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{mpath}: unreadable manifest ({exc})") from exc
    entries = data.get("samples", data.get("chips")) if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DatasetError(f"{mpath}: manifest has no 'samples' list")
    wanted = set(statuses) if statuses is not None else None
    out: List[Sample] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "image" not in e or "mask" not in e:
            raise DatasetError(f"{mpath}: entry {i} lacks 'image'/'mask'")
        if split and e.get("split") != split:
            continue
        if wanted is not None and e.get("status") not in wanted:
            continue
        img, mask = _inside(root, e["image"], mpath, i), _inside(root, e["mask"], mpath, i)
        if not img.is_file():
            _problem(f"{img}: image listed in {mpath.name} does not exist", skip_broken)
            continue
        if not mask.is_file():
            _problem(f"{mask}: mask listed in {mpath.name} for {img.name} does not exist",
                     skip_broken)
            continue
        if _chip_readable(img, mask, skip_broken):
            out.append(Sample(img, mask))
    return out


def manifest_gsd(root: Path, manifest: Optional[Path] = None
                 ) -> Tuple[Optional[Path], List[float]]:
    """``(manifest path, ground resolutions)`` a chips dataset records: the manifest's top-level
    ``gsd_m`` (``roadseg dataset build``), its ``corpus.gsd_m`` (``roadseg dataset assemble``)
    and the distinct per-sample ``gsd_m`` values, in metres per pixel. ``(None, [])`` without a
    manifest; ``(path, [])`` when it records none. An unreadable manifest raises
    :class:`DatasetError` (as indexing would)."""
    mpath = Path(manifest) if manifest is not None else Path(root) / "manifest.json"
    if not mpath.is_file():
        return None, []
    try:
        data = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{mpath}: unreadable manifest ({exc})") from exc
    found: List[float] = []
    if isinstance(data, dict):
        corpus = data.get("corpus")
        heads = [data.get("gsd_m"), corpus.get("gsd_m") if isinstance(corpus, dict) else None]
        entries = data.get("samples", data.get("chips"))
    else:
        heads, entries = [], data
    values = list(heads) + [e.get("gsd_m") for e in (entries if isinstance(entries, list)
                                                        else []) if isinstance(e, dict)]
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 \
                and float(v) not in found:
            found.append(float(v))
    return mpath, found


# ------------------------------------------------------------------------------ Cityscapes
# (labelId, trainId, name) of the 19 evaluated classes; every other labelId maps to 255.
_CITYSCAPES = [
    (7, 0, "road"), (8, 1, "sidewalk"), (11, 2, "building"), (12, 3, "wall"), (13, 4, "fence"),
    (17, 5, "pole"), (19, 6, "traffic light"), (20, 7, "traffic sign"), (21, 8, "vegetation"),
    (22, 9, "terrain"), (23, 10, "sky"), (24, 11, "person"), (25, 12, "rider"), (26, 13, "car"),
    (27, 14, "truck"), (28, 15, "bus"), (31, 16, "train"), (32, 17, "motorcycle"),
    (33, 18, "bicycle"),
]
CITYSCAPES_CLASSES: Tuple[str, ...] = tuple(n for _, _, n in _CITYSCAPES)
CITYSCAPES_LUT = np.full(256, 255, dtype=np.uint8)
for _lid, _tid, _ in _CITYSCAPES:
    CITYSCAPES_LUT[_lid] = _tid
CITYSCAPES_LUT.setflags(write=False)


def cityscapes_label_to_train_id(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes labelIds ``(H, W)`` (0..33, uint8) to the 19 trainIds, others -> 255."""
    return CITYSCAPES_LUT[np.asarray(label_ids).astype(np.uint8)]


def index_cityscapes(root: Path, split: str = "train", skip_broken: bool = False) -> List[Sample]:
    """Cityscapes fine annotations of ``split`` (train/val/test), sorted by city then name."""
    root = Path(root)
    img_root = root / "leftImg8bit" / split
    gt_root = root / "gtFine" / split
    if not img_root.is_dir():
        raise DatasetError(f"{img_root}: Cityscapes images for split '{split}' do not exist")
    out: List[Sample] = []
    for img in sorted(img_root.glob("*/*_leftImg8bit.png")):
        stem = img.name[:-len("_leftImg8bit.png")]
        mask = gt_root / img.parent.name / f"{stem}_gtFine_labelIds.png"
        if not mask.is_file():
            _problem(f"{img}: label file {mask} is missing", skip_broken)
            continue
        out.append(Sample(img, mask))
    return out


# ------------------------------------------------------------------------------ VOC lists
def _voc_list_path(root: Path, split: str, list_file: Optional[Path]) -> Path:
    if list_file is not None:
        p = Path(list_file)
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DatasetError(f"{p}: list file does not exist")
        return p
    cands = [root / f"{split}.txt", root / f"{split}_lst.txt", root / f"{split}_list.txt",
             root / "ImageSets" / "Segmentation" / f"{split}.txt"]
    for c in cands:
        if c.is_file():
            return c
    raise DatasetError(f"{root}: no list file for split '{split}' (looked for "
                       f"{', '.join(str(c.relative_to(root)) for c in cands)})")


def index_voc_list(root: Path, split: str = "train", list_file: Optional[Path] = None,
                   skip_broken: bool = False) -> List[Sample]:
    """Pairs from a list file (``image mask`` per line, or VOC ids); paths relative to root."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: VOC dataset root is not a directory")
    lst = _voc_list_path(root, split, list_file)
    out: List[Sample] = []
    for lineno, raw in enumerate(lst.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) == 2:
            img, mask = root / parts[0].lstrip("/"), root / parts[1].lstrip("/")
        elif len(parts) == 1:
            img = root / "JPEGImages" / f"{parts[0]}.jpg"
            mask = root / "SegmentationClass" / f"{parts[0]}.png"
        else:
            raise DatasetError(f"{lst}:{lineno}: expected 'image mask' or an id, got {line!r}")
        if not img.is_file():
            _problem(f"{img}: image listed at {lst.name}:{lineno} does not exist", skip_broken)
            continue
        if not mask.is_file():
            _problem(f"{mask}: mask listed at {lst.name}:{lineno} does not exist", skip_broken)
            continue
        out.append(Sample(img, mask))
    return out


# ---------------------------------------------------------------------------- class folders
def index_image_folder(root: Path, split: Optional[str] = "train",
                       skip_broken: bool = False) -> Tuple[List[Sample], List[str]]:
    """ImageNet-style ``root/split/<class>/*`` -> (samples, sorted class names)."""
    d = _split_dir(Path(root), split, "image-folder")
    classes = sorted(p.name for p in d.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{d}: no class folders")
    out: List[Sample] = []
    for label, cls in enumerate(classes):
        files = _images_in(d / cls)
        if not files:
            logger.warning("%s: class folder '%s' has no images", d / cls, cls)
        out.extend(Sample(f, None, label) for f in files)
    return out, classes

