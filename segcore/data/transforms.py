"""Augmentations and normalisation (numpy/OpenCV, seeded ``numpy.random.Generator``).

Images are ``(H, W, C)`` arrays in their native dtype while augmenting; masks ``(H, W)`` int.
Geometric operations use bilinear interpolation for the image and nearest for the mask, so a
mask never gets invented labels. Padding fills the image with the per-band mean (0 after
normalisation) and the mask with ``mask_fill`` (255 = ignore for the cross-entropy recipes, 0 for
D-LinkNet whose reference pads with background).

Recipes (:func:`recipe`):

* ``dlinknet``: random HSV shift (hue +-30, sat +-5, val +-15, uint8 3-band only),
  shift-scale-rotate (shift +-10 %, scale +-10 %, aspect +-10 %, rotation 0), horizontal flip,
  vertical flip, rot90 (square images), each with probability 0.5 (D-LinkNet ``data.py``).
* ``deeplabv3``: random scale 0.5-2.0, pad (image mean / mask 255) + random crop, horizontal flip
  (MindSpore ModelZoo DeepLabV3).
* ``ddrnet`` / ``dgcnet``: random scale 0.5-2.0, pad + random crop (mask 255), horizontal flip
  (DDRNet/HRNet ``multi_scale_aug`` and DGCNet/CCNet ``generate_scale_label``).
* ``roads``: the ``dlinknet`` recipe made stronger for small road datasets from mixed sensors:
  shift-scale-rotate with scale +-30 % and any rotation (roads run in every direction), plus
  photometric jitter (contrast x0.6-1.4, brightness +-25, gamma 0.6-2.2, each p=0.5) so the
  network does not learn one sensor's radiometry (gamma up to 2.2 darkens a mid-grey to the
  level of dark 8-bit products whose scene stretch is held open by saturated roofs), grey
  images (p 0.1) and Gaussian blur (p 0.2).
* ``none``: no randomness; with ``crop_size`` a centre crop (padded if smaller).

Normalisation: ``x = (raw * scale - mean) / std`` per band. Defaults are ImageNet
``mean=(0.485, 0.456, 0.406)``, ``std=(0.229, 0.224, 0.225)`` with ``scale=1/255`` for RGB;
the D-LinkNet seed's ``img / 255 * 3.2 - 1.6`` is ``mean=0.5``, ``std=1/3.2`` (preset
``"dlinknet"``). Other band counts need an explicit per-band mean/std. With ``stretch=(low,
high)`` percentiles each image is first stretched per band to 0..255 (``(raw - p_low) / (p_high -
p_low)``, clipped; :meth:`Normalization.stretch_image`, before augmentation): the training side
of the ``percentile`` normalisation that inference applies with whole-scene percentiles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError
from ..preprocess import Preprocessor, stretch_limits, stretch_to_uint8

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DLINKNET_MEAN", "DLINKNET_STD", "Normalization",
           "AugmentConfig", "recipe", "RECIPES", "augment_pair", "classification_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DLINKNET_MEAN = (0.5, 0.5, 0.5)
DLINKNET_STD = (1 / 3.2, 1 / 3.2, 1 / 3.2)
_NORM_PRESETS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD),
                 "dlinknet": (DLINKNET_MEAN, DLINKNET_STD)}

SizeLike = Union[int, Tuple[int, int], Sequence[int]]


def _pair(size: Optional[SizeLike]) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


@dataclass(frozen=True)
class Normalization:
    """Per-band ``(raw * scale - mean) / std``; a single mean/std value applies to every band."""

    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    stretch: Optional[Tuple[float, float]] = None  # per-image percentiles (low, high)

    @classmethod
    def resolve(cls, preset: Optional[str] = None, mean: Optional[Sequence[float]] = None,
                std: Optional[Sequence[float]] = None,
                scale: Optional[float] = None,
                stretch: Optional[Sequence[float]] = None) -> "Normalization":
        """Build from a preset name (``imagenet``, ``dlinknet``) and/or explicit values."""
        base_mean, base_std = IMAGENET_MEAN, IMAGENET_STD
        if preset is not None:
            if preset not in _NORM_PRESETS:
                raise ConfigError(f"unknown normalisation preset '{preset}'; valid: "
                                  f"{', '.join(sorted(_NORM_PRESETS))}")
            base_mean, base_std = _NORM_PRESETS[preset]
        m = tuple(float(v) for v in (mean if mean is not None else base_mean))
        s = tuple(float(v) for v in (std if std is not None else base_std))
        if len(m) != len(s):
            raise ConfigError(f"normalisation: {len(m)} mean values but {len(s)} std values")
        if any(v <= 0 for v in s):
            raise ConfigError(f"normalisation: std must be > 0, got {s}")
        st = None
        if stretch is not None:
            lo, hi = (float(v) for v in stretch)
            if not 0.0 <= lo < hi <= 100.0:
                raise ConfigError(f"normalisation: stretch percentiles must satisfy 0 <= low < "
                                  f"high <= 100, got {lo}, {hi}")
            st = (lo, hi)
            scale = 1.0 / 255.0  # the stretch produces 0..255
        return cls(m, s, float(scale) if scale is not None else 1.0 / 255.0, st)

    def stretch_image(self, img: np.ndarray) -> np.ndarray:
        """``(H, W, C)`` -> uint8 8-bit levels stretched per band between the image's own
        ``stretch`` percentiles (unchanged when ``stretch`` is None): the ``percentile`` stretch
        of :mod:`segcore.preprocess` with per-image limits."""
        if self.stretch is None:
            return img
        chw = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
        lo, hi = stretch_limits(chw, None, self.stretch[0], self.stretch[1])
        return np.ascontiguousarray(stretch_to_uint8(chw, lo, hi).transpose(1, 2, 0))

    def _per_band(self, channels: int, where: str) -> Tuple[np.ndarray, np.ndarray]:
        if len(self.mean) == 1:
            return (np.full(channels, self.mean[0], np.float32),
                    np.full(channels, self.std[0], np.float32))
        if len(self.mean) != channels:
            raise ConfigError(f"{where}: image has {channels} band(s) but mean/std have "
                              f"{len(self.mean)} values; set a per-band mean/std or select bands")
        return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)

    def fill_value(self, channels: int, where: str = "image") -> np.ndarray:
        """Raw pixel value per band that normalises to 0 (``mean / scale``), ``(C,)`` float."""
        mean, _ = self._per_band(channels, where)
        return mean / self.scale

    def apply(self, img: np.ndarray, where: str = "image") -> np.ndarray:
        """``(H, W, C)`` any dtype -> normalised ``(C, H, W)`` float32, computed by
        :class:`segcore.preprocess.Preprocessor` (the same float32 operations as inference)."""
        mean, std = self._per_band(img.shape[2], where)
        p = Preprocessor("meanstd", tuple(float(v) for v in mean), tuple(float(v) for v in std),
                         float(self.scale))
        return p(np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1)))


@dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment_pair` does; every random step has probability 0.5 unless noted."""

    crop_size: Optional[Tuple[int, int]] = None  # (H, W)
    random_crop: bool = False  # False: centre crop
    scale_range: Optional[Tuple[float, float]] = None  # uniform factor, always applied
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False  # square images only
    hsv: bool = False  # uint8 3-band only
    hue_shift: Tuple[int, int] = (-30, 30)  # OpenCV hue units (0..179)
    sat_shift: Tuple[float, float] = (-5.0, 5.0)
    val_shift: Tuple[float, float] = (-15.0, 15.0)
    shift_scale_rotate: bool = False
    shift_limit: float = 0.1  # fraction of the size
    scale_limit: float = 0.1
    aspect_limit: float = 0.1
    rotate_limit_deg: float = 0.0
    photometric: bool = False  # contrast / brightness / gamma jitter (uint8 images)
    contrast_range: Tuple[float, float] = (0.6, 1.4)
    brightness_shift: Tuple[float, float] = (-25.0, 25.0)
    gamma_range: Tuple[float, float] = (0.6, 1.6)
    grayscale_p: float = 0.0  # probability of a grey image (all bands = luminance), uint8 3-band
    blur_p: float = 0.0  # probability of a Gaussian blur (resampled or hazy imagery)
    blur_sigma: Tuple[float, float] = (0.4, 1.4)  # in pixels
    mask_fill: int = 255  # mask value for padded / warped-in pixels


RECIPES = ("dlinknet", "roads", "deeplabv3", "ddrnet", "dgcnet", "none")


def recipe(name: str, crop_size: Optional[SizeLike] = None,
           ignore_index: int = 255) -> AugmentConfig:
    """The :class:`AugmentConfig` of a reference project (see the module docstring)."""
    crop = _pair(crop_size)
    key = name.lower()
    if key == "dlinknet":
        return AugmentConfig(crop_size=crop, random_crop=True, hflip=True, vflip=True, rot90=True,
                             hsv=True, shift_scale_rotate=True, mask_fill=0)
    if key == "roads":
        return AugmentConfig(crop_size=crop, random_crop=True, hflip=True, vflip=True, rot90=True,
                             hsv=True, shift_scale_rotate=True, scale_limit=0.3,
                             rotate_limit_deg=180.0, photometric=True, gamma_range=(0.6, 2.2),
                             grayscale_p=0.1, blur_p=0.2, mask_fill=0)
    if key in ("deeplabv3", "ddrnet", "dgcnet"):
        if crop is None:
            raise ConfigError(f"augmentation recipe '{name}' needs a crop_size")
        return AugmentConfig(crop_size=crop, random_crop=True, scale_range=(0.5, 2.0),
                             hflip=True, mask_fill=ignore_index)
    if key in ("none", "eval", ""):
        return AugmentConfig(crop_size=crop, random_crop=False, mask_fill=ignore_index)
    raise ConfigError(f"unknown augmentation recipe '{name}'; valid: {', '.join(RECIPES)}")


# ----------------------------------------------------------------------------- primitives
def _cv_per_chunk(fn, img: np.ndarray) -> np.ndarray:
    """Apply an OpenCV call to <= 4 channels at a time and keep the ``(H, W, C)`` layout."""
    chans = img.shape[2]
    parts = []
    for start in range(0, chans, 4):
        part = np.ascontiguousarray(img[:, :, start:start + 4])
        out = fn(part)
        if out.ndim == 2:
            out = out[:, :, None]
        parts.append(out)
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)


def _work_dtype(img: np.ndarray) -> np.ndarray:
    # OpenCV handles uint8/uint16/int16/float32; anything else goes to float32
    if img.dtype in (np.uint8, np.uint16, np.int16, np.float32):
        return img
    return img.astype(np.float32)


def _hsv_shift(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    import cv2
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    h, s, v = cv2.split(hsv)
    dh = int(rng.integers(cfg.hue_shift[0], cfg.hue_shift[1] + 1))
    h = ((h.astype(np.int16) + dh) % 180).astype(np.uint8)
    s = np.clip(s.astype(np.float32) + rng.uniform(*cfg.sat_shift), 0, 255).astype(np.uint8)
    v = np.clip(v.astype(np.float32) + rng.uniform(*cfg.val_shift), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB)


def _photometric(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Contrast around the image mean, brightness shift and gamma, each with probability 0.5."""
    x = img.astype(np.float32)
    if rng.random() < 0.5:
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * np.float32(rng.uniform(*cfg.contrast_range)) + mean
    if rng.random() < 0.5:
        x = x + np.float32(rng.uniform(*cfg.brightness_shift))
    x = np.clip(x, 0.0, 255.0)
    if rng.random() < 0.5:
        x = np.float32(255.0) * (x / np.float32(255.0)) ** np.float32(rng.uniform(*cfg.gamma_range))
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _grayscale(img: np.ndarray) -> np.ndarray:
    import cv2
    grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _blur(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    import cv2
    sigma = float(rng.uniform(*cfg.blur_sigma))
    return _cv_per_chunk(lambda p: cv2.GaussianBlur(p, (0, 0), sigmaX=sigma), img)


def _warp(img: np.ndarray, mask: Optional[np.ndarray], mat: np.ndarray, out_hw: Tuple[int, int],
          image_fill: np.ndarray, mask_fill: int):
    import cv2
    h, w = out_hw

    def warp_img(part, fill):
        return cv2.warpAffine(part, mat, (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=fill)

    chans = img.shape[2]
    parts = []
    for start in range(0, chans, 4):
        part = np.ascontiguousarray(img[:, :, start:start + 4])
        fill = [float(v) for v in image_fill[start:start + 4]] + [0.0] * 4
        out = warp_img(part, tuple(fill[:4]))
        parts.append(out[:, :, None] if out.ndim == 2 else out)
    img = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)
    if mask is not None:
        mask = cv2.warpAffine(mask, mat, (w, h), flags=cv2.INTER_NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=int(mask_fill))
    return img, mask


def _shift_scale_rotate(img, mask, cfg: AugmentConfig, rng: np.random.Generator, image_fill):
    h, w = img.shape[:2]
    angle = math.radians(rng.uniform(-cfg.rotate_limit_deg, cfg.rotate_limit_deg))
    scale = rng.uniform(1 - cfg.scale_limit, 1 + cfg.scale_limit)
    aspect = rng.uniform(1 - cfg.aspect_limit, 1 + cfg.aspect_limit)
    sx = scale * math.sqrt(aspect)
    sy = scale / math.sqrt(aspect)
    dx = round(rng.uniform(-cfg.shift_limit, cfg.shift_limit) * w)
    dy = round(rng.uniform(-cfg.shift_limit, cfg.shift_limit) * h)
    cc, ss = math.cos(angle), math.sin(angle)
    lin = np.array([[cc * sx, -ss * sy], [ss * sx, cc * sy]])
    centre = np.array([w / 2.0, h / 2.0])
    offset = centre + np.array([dx, dy]) - lin @ centre
    mat = np.hstack([lin, offset[:, None]]).astype(np.float64)
    return _warp(img, mask, mat, (h, w), image_fill, cfg.mask_fill)


def _resize(img, mask, new_hw: Tuple[int, int]):
    import cv2
    nh, nw = new_hw
    img = _cv_per_chunk(lambda p: cv2.resize(p, (nw, nh), interpolation=cv2.INTER_LINEAR), img)
    if mask is not None:
        mask = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    return img, mask


def _pad_to(img, mask, crop_hw, image_fill, mask_fill):
    h, w = img.shape[:2]
    ph, pw = max(crop_hw[0] - h, 0), max(crop_hw[1] - w, 0)
    if ph == 0 and pw == 0:
        return img, mask
    out = np.empty((h + ph, w + pw, img.shape[2]), dtype=img.dtype)
    out[...] = np.asarray(image_fill, dtype=np.float64).astype(img.dtype)
    out[:h, :w] = img
    if mask is not None:
        m = np.full((h + ph, w + pw), mask_fill, dtype=mask.dtype)
        m[:h, :w] = mask
        mask = m
    return out, mask


def _crop(img, mask, crop_hw, rng: Optional[np.random.Generator]):
    h, w = img.shape[:2]
    ch, cw = crop_hw
    if rng is not None:
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
    else:
        y0, x0 = (h - ch) // 2, (w - cw) // 2
    img = img[y0:y0 + ch, x0:x0 + cw]
    if mask is not None:
        mask = mask[y0:y0 + ch, x0:x0 + cw]
    return img, mask


def augment_pair(img: np.ndarray, mask: Optional[np.ndarray], cfg: AugmentConfig,
                 rng: Optional[np.random.Generator], image_fill: Sequence[float]):
    """Apply ``cfg`` to an image and its mask with the same random draws.

    Args:
        img: ``(H, W, C)`` image, native dtype.
        mask: ``(H, W)`` integer mask (uint8/int32) or ``None``.
        cfg: what to do.
        rng: random generator (``None`` only for configs without random steps).
        image_fill: raw per-band value used for padding and warped-in borders.

    Returns:
        ``(img, mask)``: the image keeps its dtype; ``mask`` keeps its dtype.
    """
    img = _work_dtype(img)
    fill = np.asarray(image_fill, dtype=np.float64)
    mask_dtype = None
    if mask is not None:
        mask_dtype = mask.dtype
        # OpenCV does not take int64/int32 masks for nearest warps everywhere: use uint8/uint16
        work = np.uint8 if mask.max(initial=0) <= 255 else np.uint16
        mask = mask.astype(work)
    needs_rng = (cfg.hsv or cfg.photometric or cfg.grayscale_p > 0 or cfg.blur_p > 0
                 or cfg.shift_scale_rotate or cfg.scale_range
                 or cfg.hflip or cfg.vflip
                 or cfg.rot90 or (cfg.crop_size is not None and cfg.random_crop))
    if needs_rng and rng is None:
        raise ValueError("augment_pair: this configuration needs a random generator")
    if cfg.hsv and img.dtype == np.uint8 and img.shape[2] == 3 and rng.random() < 0.5:
        img = _hsv_shift(img, cfg, rng)
    if cfg.photometric and img.dtype == np.uint8:
        img = _photometric(img, cfg, rng)
    if (cfg.grayscale_p > 0 and img.dtype == np.uint8 and img.shape[2] == 3
            and rng.random() < cfg.grayscale_p):
        img = _grayscale(img)
    if cfg.blur_p > 0 and rng.random() < cfg.blur_p:
        img = _blur(img, cfg, rng)
    if cfg.shift_scale_rotate and rng.random() < 0.5:
        img, mask = _shift_scale_rotate(img, mask, cfg, rng, fill)
    if cfg.scale_range is not None:
        s = rng.uniform(*cfg.scale_range)
        h, w = img.shape[:2]
        img, mask = _resize(img, mask, (max(1, int(round(h * s))), max(1, int(round(w * s)))))
    if cfg.crop_size is not None:
        img, mask = _pad_to(img, mask, cfg.crop_size, fill, cfg.mask_fill)
        img, mask = _crop(img, mask, cfg.crop_size, rng if cfg.random_crop else None)
    if cfg.hflip and rng.random() < 0.5:
        img = img[:, ::-1]
        mask = mask[:, ::-1] if mask is not None else None
    if cfg.vflip and rng.random() < 0.5:
        img = img[::-1]
        mask = mask[::-1] if mask is not None else None
    if cfg.rot90 and img.shape[0] == img.shape[1] and rng.random() < 0.5:
        img = np.rot90(img)
        mask = np.rot90(mask) if mask is not None else None
    img = np.ascontiguousarray(img)
    if mask is not None:
        mask = np.ascontiguousarray(mask).astype(mask_dtype)
    return img, mask


def classification_transform(img: np.ndarray, crop_size: SizeLike, train: bool,
                             rng: Optional[np.random.Generator],
                             resize_ratio: float = 0.875) -> np.ndarray:
    """ImageNet-style geometry for the classifier, ``(H, W, C)`` -> ``(crop_h, crop_w, C)``.

    ``train``: random-resized crop (area 8-100 %, aspect 3/4-4/3) and horizontal flip.
    Otherwise: resize the short side to ``crop / resize_ratio`` and take the centre crop.
    """
    ch, cw = _pair(crop_size)
    img = _work_dtype(img)
    h, w = img.shape[:2]
    if train:
        if rng is None:
            raise ValueError("classification_transform: training needs a random generator")
        area = h * w
        box = None
        for _ in range(10):
            target = area * rng.uniform(0.08, 1.0)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            bw = int(round(math.sqrt(target * ratio)))
            bh = int(round(math.sqrt(target / ratio)))
            if 0 < bw <= w and 0 < bh <= h:
                box = (int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw)
                break
        if box is None:  # fall back to the central square-ish crop
            side = min(h, w)
            box = ((h - side) // 2, (w - side) // 2, side, side)
        y0, x0, bh, bw = box
        img, _ = _resize(img[y0:y0 + bh, x0:x0 + bw], None, (ch, cw))
        if rng.random() < 0.5:
            img = img[:, ::-1]
    else:
        short = min(h, w)
        target_short = int(round(min(ch, cw) / resize_ratio))
        f = target_short / short
        img, _ = _resize(img, None, (max(ch, int(round(h * f))), max(cw, int(round(w * f)))))
        img, _ = _crop(img, None, (ch, cw), None)
    return np.ascontiguousarray(img)

