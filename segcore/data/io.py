"""Reading training images and masks.

GeoTIFFs (``.tif``/``.tiff``) are read with rasterio (any band count and dtype, georeference
ignored: training chips only need pixels). Other formats: images with OpenCV (converted to RGB
order), masks with Pillow so palette PNGs (VOC) give their palette indices, not colours.

Every failure raises :class:`segcore.errors.DatasetError` naming the file and the problem.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import DatasetError

__all__ = ["IMAGE_EXTS", "TIFF_EXTS", "read_image", "read_mask", "raster_size"]

TIFF_EXTS = frozenset({".tif", ".tiff"})
IMAGE_EXTS = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"})


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_EXTS


def _check_exists(path: Path, what: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{path}: {what} file does not exist")


def read_image(path: Path, bands: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read an image as ``(H, W, C)`` in its native dtype (uint8, uint16, float32...).

    Args:
        path: GeoTIFF or PNG/JPEG/BMP file. 3/4-channel OpenCV images are returned in RGB(A)
            order.
        bands: optional 1-based band indices to keep (rasterio convention), e.g. ``[1, 2, 3]``.
    """
    path = Path(path)
    _check_exists(path, "image")
    if _is_tiff(path):
        import rasterio
        try:
            with rasterio.open(path) as src:
                idx = list(bands) if bands is not None else list(range(1, src.count + 1))
                bad = [b for b in idx if not 1 <= b <= src.count]
                if bad:
                    raise DatasetError(f"{path}: band(s) {bad} requested but the file has "
                                       f"{src.count} band(s)")
                arr = src.read(indexes=idx)
        except DatasetError:
            raise
        except Exception as exc:  # rasterio raises RasterioIOError and friends
            raise DatasetError(f"{path}: unreadable image ({exc})") from exc
        return np.ascontiguousarray(arr.transpose(1, 2, 0))
    import cv2
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DatasetError(f"{path}: unreadable image (OpenCV could not decode it)")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    if bands is not None:
        idx = [b - 1 for b in bands]
        if any(not 0 <= b < arr.shape[2] for b in idx):
            raise DatasetError(f"{path}: band(s) {list(bands)} requested but the file has "
                               f"{arr.shape[2]} band(s)")
        arr = arr[:, :, idx]
    return np.ascontiguousarray(arr)


def read_mask(path: Path) -> np.ndarray:
    """Read a mask as ``(H, W)`` (one band / palette indices) or ``(H, W, C)`` (RGB masks).

    GeoTIFF masks return band 1 only. PNG palette images return their indices.
    """
    path = Path(path)
    _check_exists(path, "mask")
    if _is_tiff(path):
        import rasterio
        try:
            with rasterio.open(path) as src:
                return src.read(1)
        except Exception as exc:
            raise DatasetError(f"{path}: unreadable mask ({exc})") from exc
    from PIL import Image
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16", "1", "RGB", "RGBA", "LA"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except Exception as exc:  # PIL.UnidentifiedImageError, OSError on truncated files
        raise DatasetError(f"{path}: unreadable mask ({exc})") from exc
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def raster_size(path: Path) -> Tuple[int, int]:
    """``(height, width)`` from the file header without decoding the pixels."""
    path = Path(path)
    _check_exists(path, "raster")
    try:
        if _is_tiff(path):
            import rasterio
            with rasterio.open(path) as src:
                return int(src.height), int(src.width)
        from PIL import Image
        with Image.open(path) as im:
            w, h = im.size
            return int(h), int(w)
    except Exception as exc:
        raise DatasetError(f"{path}: unreadable header ({exc})") from exc
