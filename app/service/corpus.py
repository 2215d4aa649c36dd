"""A training corpus assembled from several labelled sources at one ground resolution.

``roadseg dataset assemble SOURCES.yaml --gsd 1.0 --out DIR`` (and :func:`assemble_corpus`)
reads every source listed in a YAML file, resamples each image and mask to the target ground
sample distance, stretches each source image to 8-bit levels with the ``percentile``
normalisation of :mod:`segcore.preprocess` (its own 2-98 % limits over its valid pixels, as
inference does for a whole scene), splits it by area into training and validation chips and
writes a chips dataset: ``images/*.png`` (uint8 RGB), ``masks/*.png`` (0 background, 1 road,
255 nodata / ignore) and ``manifest.json`` recording each chip's source, file, window (in the
resampled grid), split, licence and road fraction. Train with ``mask_mode: index`` so nodata
pixels are ignored.

Split by area, never by chip: in every image the validation band is a central band of the longer
axis (``val_fraction`` of it) with ``gap_px`` unused pixels on both sides, so no training chip
touches a validation chip, not even in a neighbouring tile of the same source (bands never reach
an image's edge). A source can instead take the split from the file name (``split_by_name``,
e.g. a publisher's ``training_`` / ``validation_`` prefixes).

Sources YAML::

    root: ../../../shared/data        # relative to the YAML file (or --data)
    sources:
      - name: massachusetts_full
        images: roads/massachusetts/full/images/*.png
        masks: roads/massachusetts/full/masks/{stem}.png
        gsd_m: 1.0                    # required for files without georeference
        nodata_rgb: [255, 255, 255]   # pixels of exactly this colour are nodata
        mask_threshold: 127           # mask values above it are road
        val_fraction: 0.2
        repeat: 1                     # training chips listed this many times (oversampling)
        licence: research use only
Each image must have a mask (``{stem}`` is the image file's stem; ``{id}`` the stem up to the
first ``_``). GeoTIFF sources take their ground resolution from the georeference.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import UserError
from .staging import replace_folder

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]

__all__ = ["CorpusSource", "load_sources_yaml", "assemble_corpus", "resample_pair",
           "central_band_split", "DEFAULT_CHIP_PX"]

DEFAULT_CHIP_PX = 384


class CorpusError(UserError, ValueError):
    """A sources file or a source that cannot be assembled (message names the file)."""


@dataclass(frozen=True)
class CorpusSource:
    """One labelled source: matching image/mask files, their ground resolution and handling."""

    name: str
    pairs: Tuple[Tuple[Path, Path], ...]
    gsd_m: Optional[float] = None
    nodata_rgb: Optional[Tuple[int, ...]] = None
    mask_threshold: float = 127.0
    val_fraction: float = 0.2
    split_by_name: Dict[str, str] = field(default_factory=dict)
    repeat: int = 1
    min_road_fraction: float = 0.0
    licence: str = ""


def _match_mask(image: Path, pattern: str, base: Path) -> Path:
    stem = image.stem
    ident = stem.split("_")[0]
    return base / pattern.format(stem=stem, id=ident, name=image.name)


def load_sources_yaml(path: os.PathLike, data_root: Optional[os.PathLike] = None
                      ) -> List[CorpusSource]:
    """Parse a sources YAML (see the module docstring). ``data_root`` overrides its ``root``."""
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read sources file ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise CorpusError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list):
        raise CorpusError(f"{path}: expected a mapping with a 'sources' list")
    if data_root is not None:
        base = Path(data_root)
    else:
        base = (path.parent / str(doc.get("root", "."))).resolve()
    out: List[CorpusSource] = []
    for i, s in enumerate(doc["sources"]):
        if not isinstance(s, dict) or "images" not in s or "masks" not in s:
            raise CorpusError(f"{path}: source {i + 1} needs 'images' and 'masks'")
        name = str(s.get("name") or f"source{i + 1}")
        pats = s["images"] if isinstance(s["images"], list) else [s["images"]]
        images: List[Path] = []
        for p in pats:
            images += sorted(Path(f) for f in glob.glob(str(base / str(p))))
        if not images:
            raise CorpusError(f"{path}: source '{name}': no image matches {pats} under {base}")
        pairs = []
        for img in images:
            m = _match_mask(img, str(s["masks"]), base)
            if not m.is_file():
                raise CorpusError(f"{m}: mask of {img.name} (source '{name}') not found")
            pairs.append((img, m))
        nd = s.get("nodata_rgb")
        out.append(CorpusSource(
            name=name, pairs=tuple(pairs),
            gsd_m=float(s["gsd_m"]) if s.get("gsd_m") is not None else None,
            nodata_rgb=tuple(int(v) for v in nd) if nd is not None else None,
            mask_threshold=float(s.get("mask_threshold", 127)),
            val_fraction=float(s.get("val_fraction", 0.2)),
            split_by_name={str(k): str(v) for k, v in (s.get("split_by_name") or {}).items()},
            repeat=max(1, int(s.get("repeat", 1))),
            min_road_fraction=float(s.get("min_road_fraction", 0.0)),
            licence=str(s.get("licence", ""))))
    return out


# --------------------------------------------------------------------------- reading
def _read_source_image(path: Path, gsd_m: Optional[float]) -> Tuple[np.ndarray, np.ndarray,
                                                                        float]:
    """``(image (C, H, W) native dtype, valid (H, W) bool, gsd_m)``; three bands (one band
    repeated); GeoTIFFs take the GSD from their georeference and validity from the GDAL mask."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        from gis.io import open_raster

        info = open_raster(str(path))
        res = info.resolution_m
        g = gsd_m if gsd_m is not None else (float(np.sqrt(res[0] * res[1])) if res else None)
        if g is None:
            raise CorpusError(f"{path}: no georeference: give gsd_m for this source")
        with rasterio.open(path) as ds:
            bands = list(range(1, min(ds.count, 3) + 1))
            img = ds.read(bands)
            valid = ds.dataset_mask() > 0
        if img.shape[0] < 3:
            img = np.concatenate([img] + [img[-1:]] * (3 - img.shape[0]), axis=0)
        return img, valid, g
    import cv2

    if gsd_m is None:
        raise CorpusError(f"{path}: no georeference: give gsd_m for this source")
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise CorpusError(f"{path}: missing or unreadable image")
    im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)
    return np.ascontiguousarray(im), np.ones(im.shape[1:], bool), float(gsd_m)


def _read_source_mask(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as ds:
            return ds.read(1)
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise CorpusError(f"{path}: missing or unreadable mask")
    return m.max(axis=2) if m.ndim == 3 else m


def resample_pair(image: np.ndarray, road: np.ndarray, valid: np.ndarray, factor: float
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample ``image`` ``(C, H, W)``, ``road`` and ``valid`` (bool ``(H, W)``) by ``factor``
    (source GSD / target GSD; < 1 shrinks). Images: area average when shrinking, bilinear when
    enlarging; road: area fraction >= 0.5; valid: only pixels made entirely of valid source
    pixels. Returns float32 image, bool road, bool valid."""
    import cv2

    c, h, w = image.shape
    if abs(factor - 1.0) < 1e-6:
        return image.astype(np.float32), road.astype(bool), valid.astype(bool)
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    img = np.stack([cv2.resize(image[k].astype(np.float32), (nw, nh), interpolation=interp)
                    for k in range(c)])
    rf = cv2.resize(road.astype(np.float32), (nw, nh), interpolation=interp)
    vf = cv2.resize(valid.astype(np.float32), (nw, nh), interpolation=interp)
    return img, rf >= 0.5, vf >= 0.999


def central_band_split(length: int, val_fraction: float, gap_px: int
                       ) -> Tuple[List[Tuple[int, int]], Optional[Tuple[int, int]]]:
    """Training intervals and the validation band along an axis of ``length`` pixels: the band
    is centred and ``val_fraction`` long (at least 32 px), with ``gap_px`` unused on each side.
    ``val_fraction`` 0: one training interval, no band."""
    if val_fraction <= 0:
        return [(0, length)], None
    band = max(32, int(round(length * val_fraction)))
    a = (length - band) // 2
    b = a + band
    train = [(s, e) for s, e in ((0, a - gap_px), (b + gap_px, length)) if e - s >= 32]
    return train, (a, b)


def _chip_starts(lo: int, hi: int, size: int) -> List[Tuple[int, int]]:
    """Chip intervals covering ``[lo, hi)``: ``size`` long, the last one aligned to ``hi``; one
    interval when the span is at most 1.25 ``size`` (no chip pair that mostly overlaps)."""
    span = hi - lo
    if span <= size * 1.25:
        return [(lo, hi)]
    starts = list(range(lo, hi - size + 1, size))
    if starts[-1] + size < hi:
        starts.append(hi - size)
    return [(s, s + size) for s in starts]


def assemble_corpus(sources: Sequence[CorpusSource], out: os.PathLike, gsd_m: float, *,
                    chip_px: int = DEFAULT_CHIP_PX, gap_px: int = 32, overwrite: bool = False,
                    low_pct: float = 2.0, high_pct: float = 98.0,
                    on_progress: Optional[ProgressFn] = None) -> Dict[str, object]:
    """Write the corpus (see the module docstring) to ``out`` (built beside it and renamed).

    Returns a summary: chips per split and per source, and the target GSD.
    """
    import cv2

    from segcore.preprocess import stretch_limits, stretch_to_uint8

    if gsd_m <= 0:
        raise CorpusError(f"target GSD must be > 0 m, got {gsd_m}")
    out = Path(out)
    from app.service.staging import recover_folder

    recover_folder(out)  # a replacement of ``out`` a killed run left half done
    if out.exists() and not overwrite:
        raise CorpusError(f"{out}: already exists (pass --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    samples: List[Dict[str, object]] = []
    per_source: Dict[str, Dict[str, int]] = {}
    total = sum(len(s.pairs) for s in sources)
    done = 0
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        for src in sources:
            counts = per_source.setdefault(src.name, {"train": 0, "val": 0})
            for img_path, mask_path in src.pairs:
                image, valid, g = _read_source_image(img_path, src.gsd_m)
                raw_mask = _read_source_mask(mask_path)
                if raw_mask.shape != image.shape[1:]:
                    raise CorpusError(f"{mask_path}: mask is {raw_mask.shape[0]}x"
                                      f"{raw_mask.shape[1]} but image {img_path.name} is "
                                      f"{image.shape[1]}x{image.shape[2]}")
                if src.nodata_rgb is not None:
                    nd = np.ones(valid.shape, bool)
                    for k, v in enumerate(src.nodata_rgb[:image.shape[0]]):
                        nd &= image[k] == v
                    valid &= ~nd
                road = raw_mask > src.mask_threshold
                img_r, road_r, valid_r = resample_pair(image, road, valid, g / gsd_m)
                lo, hi = stretch_limits(img_r, valid_r, low_pct, high_pct)
                q = stretch_to_uint8(img_r, lo, hi)
                q[:, ~valid_r] = 0
                mask = np.where(valid_r, road_r.astype(np.uint8), np.uint8(255))
                h, w = mask.shape
                regions: List[Tuple[str, int, int, int, int]] = []  # split, r0, r1, c0, c1
                named = [v for k, v in src.split_by_name.items() if img_path.name.startswith(k)]
                if named:
                    regions.append((named[0], 0, h, 0, w))
                else:
                    horizontal = w >= h
                    train_iv, band = central_band_split(w if horizontal else h,
                                                        src.val_fraction, gap_px)
                    full = (0, h) if horizontal else (0, w)
                    for s, e in train_iv:
                        regions.append(("train",) + ((full + (s, e)) if horizontal
                                                     else ((s, e) + full)))
                    if band is not None:
                        regions.append(("val",) + ((full + band) if horizontal
                                                   else (band + full)))
                for split, r0, r1, c0, c1 in regions:
                    for ra, rb in _chip_starts(r0, r1, chip_px):
                        for ca, cb in _chip_starts(c0, c1, chip_px):
                            m = mask[ra:rb, ca:cb]
                            ok = m != 255
                            if ok.mean() < 0.5:
                                continue
                            frac = float((m == 1).sum()) / max(1, int(ok.sum()))
                            if split == "train" and frac < src.min_road_fraction:
                                continue
                            stem = f"{src.name}_{img_path.stem}_r{ra}_c{ca}"
                            chip = np.ascontiguousarray(q[:, ra:rb, ca:cb].transpose(1, 2, 0))
                            cv2.imwrite(str(tmp / "images" / f"{stem}.png"),
                                        cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
                            cv2.imwrite(str(tmp / "masks" / f"{stem}.png"), m)
                            entry = {"image": f"images/{stem}.png", "mask": f"masks/{stem}.png",
                                     "split": split, "status": "accepted", "source": src.name,
                                     "file": img_path.name,
                                     "window": [ca, ra, cb - ca, rb - ra],
                                     "gsd_m": gsd_m, "source_gsd_m": round(g, 4),
                                     "licence": src.licence,
                                     "road_fraction": round(frac, 5)}
                            reps = src.repeat if split == "train" else 1
                            samples.extend([entry] * reps)
                            counts[split] += 1
                done += 1
                if on_progress:
                    on_progress(done, total, src.name)
        summary = {"gsd_m": gsd_m, "chip_px": chip_px, "gap_px": gap_px,
                   "normalization": {"method": "percentile", "low": low_pct, "high": high_pct},
                   "sources": per_source,
                   "chips": {k: sum(v[k] for v in per_source.values())
                             for k in ("train", "val")}}
        (tmp / "manifest.json").write_text(json.dumps({"corpus": summary, "samples": samples},
                                                      indent=1), encoding="utf-8")
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
