"""Errors the user caused (bad file, bad option): shown as one line, no traceback."""
from __future__ import annotations

import errno
import os  # noqa: F401 - used in annotations
import shutil
from pathlib import Path
from typing import Tuple, Type

from gis.errors import GisError
from segcore.errors import SegcoreError


class UserError(Exception):
    """A problem with the user's input, already phrased for the user (names file and problem)."""


#: Library errors that are the user's input problem and map onto :class:`UserError`.
EXPECTED_ERRORS: Tuple[Type[BaseException], ...] = (GisError, SegcoreError, FileNotFoundError,
                                                    FileExistsError, PermissionError)


def as_user_error(exc: BaseException) -> UserError:
    """Wrap an expected library error into a :class:`UserError` with a one-line message."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return UserError(msg)


#: Free space (bytes) under which a failed write is taken for a full disk.
DISK_FULL_BYTES = 1 << 20


def disk_full_error(exc: BaseException, where: "os.PathLike[str] | str") -> "UserError | None":
    """``UserError("no space left on device writing WHERE")`` when ``exc`` came from a full
    disk, else None.

    GDAL reports a full disk as a generic TIFF I/O error (``CPLE_AppDefinedError: ...IO error
    writing tag data``), so besides ``ENOSPC`` the file system of ``where`` is asked: less than
    :data:`DISK_FULL_BYTES` free right after a failed write means the disk is full.
    """
    full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    full = full or "no space left on device" in str(exc).lower()
    if not full:
        p = Path(where)
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            full = shutil.disk_usage(p).free < DISK_FULL_BYTES
        except OSError:
            full = False
    return UserError(f"no space left on device writing {where}") if full else None
