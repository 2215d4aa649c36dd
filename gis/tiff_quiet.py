"""Keep libtiff from printing its own error lines on stderr while we write GeoTIFFs.

GDAL (3.x with libtiff >= 4.5) gives every TIFF it opens its own error handler, which turns
libtiff errors into GDAL errors (rasterio raises them). But the low-level I/O callbacks of
GDAL's TIFF driver (``_tiffWriteProc``, ``_tiffSeekProc`` in ``tif_vsi.cpp``) report a failed
``write``/``seek`` through libtiff's *global* error handler, whose default prints
``_tiffWriteProc: No space left on device.`` straight to file descriptor 2. Neither
``CPLPushErrorHandler``/``rasterio.Env`` nor Python's logging can catch those lines: a full disk
printed about ten of them before our own one-line error.

:func:`quiet_libtiff_errors` sets the global handler of every libtiff loaded in the process to
none while at least one caller is inside it (the failure still reaches us as a rasterio error,
and :func:`app.service.errors.disk_full_error` names it), and restores the previous handlers
when the last one leaves. Where no libtiff can be found (another platform, a GDAL without
libtiff) it does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import threading
from typing import Iterator, List, Optional, Tuple

log = logging.getLogger(__name__)

_lock = threading.Lock()
_depth = 0
_saved: List[Tuple[ctypes.CDLL, Optional[int]]] = []
_libs: Optional[List[ctypes.CDLL]] = None


def _loaded_libtiffs() -> List[str]:
    """Paths of the libtiff copies mapped into this process (rasterio's bundled one first)."""
    paths: List[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                p = line.split(None, 5)[-1].strip()
                if "/libtiff" in p and ".so" in p and p not in paths and os.path.exists(p):
                    paths.append(p)
    except OSError:
        pass
    if not paths:
        try:
            import rasterio

            libs = os.path.dirname(rasterio.__file__) + ".libs"
            paths = sorted(glob.glob(os.path.join(libs, "libtiff*.so*")))
        except ImportError:  # pragma: no cover - rasterio is a dependency
            pass
    return paths


def _handles() -> List[ctypes.CDLL]:
    global _libs
    if _libs is None:
        import rasterio  # noqa: F401 - loads GDAL and its libtiff

        found = []
        for p in _loaded_libtiffs():
            try:
                lib = ctypes.CDLL(p)  # already loaded: the same library, not a second copy
                fn = lib.TIFFSetErrorHandler
            except (OSError, AttributeError):
                continue
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_void_p]
            found.append(lib)
        _libs = found
    return _libs


@contextlib.contextmanager
def quiet_libtiff_errors() -> Iterator[None]:
    """No libtiff error lines on stderr inside the block (thread-safe, nestable)."""
    global _depth
    with _lock:
        if _depth == 0:
            try:
                _saved[:] = [(lib, lib.TIFFSetErrorHandler(None)) for lib in _handles()]
            except Exception:  # noqa: BLE001 - quieting must never break a write
                log.debug("could not quiet libtiff", exc_info=True)
                _saved.clear()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, old in _saved:
                    lib.TIFFSetErrorHandler(old)
                _saved.clear()


__all__ = ["quiet_libtiff_errors"]
