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

__all__ = ["IMAGE_EXTS", "TIFF_EXTS", "read_image", "read_label_mask", "raster_size",
           "check_readable"]

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


def read_label_mask(path: Path) -> np.ndarray:
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


def check_readable(path: Path) -> None:
    """Cheap start-up check that ``path`` is a whole, readable image, without decoding it all.

    GeoTIFF: the header and the last block of the last band (a file cut short fails there);
    PNG and others: Pillow's ``verify`` (every PNG chunk and its CRC); JPEG: also the end-of-image
    marker. Raises :class:`~segcore.errors.DatasetError` naming the file.
    """
    path = Path(path)
    _check_exists(path, "image")
    try:
        if _is_tiff(path):
            import rasterio
            from rasterio.windows import Window

            size = path.stat().st_size
            with rasterio.open(path) as src:
                bh, bw = src.block_shapes[-1]
                r0, c0 = max(0, src.height - bh), max(0, src.width - bw)
                # GDAL reads blocks of a cut file as zeros (with a warning): the last block of
                # every band must lie inside the file (offset 0 with a size: the offsets table
                # itself was cut off; offset and size 0: a sparse block, which is fine)
                by, bx = (src.height - 1) // bh, (src.width - 1) // bw
                for b in range(1, src.count + 1):
                    off = src.get_tag_item(f"BLOCK_OFFSET_{bx}_{by}", "TIFF", bidx=b)
                    n = src.get_tag_item(f"BLOCK_SIZE_{bx}_{by}", "TIFF", bidx=b)
                    if off is None or n is None or (int(n) > 0 and (
                            int(off) < 8 or int(off) + int(n) > size)):
                        raise ValueError(f"band {b} ends beyond the end of the file "
                                         "(truncated)")
                src.read(src.count, window=Window(c0, r0, min(bw, src.width),
                                                  min(bh, src.height)))
            return
        from PIL import Image

        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt == "JPEG":
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 64))
                if b"\xff\xd9" not in f.read():
                    raise ValueError("no end-of-image marker (truncated JPEG)")
    except Exception as exc:  # noqa: BLE001 - whatever the decoder says, it is unreadable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: unreadable image ({first})") from None
