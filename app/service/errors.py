"""Errors the user caused (bad file, bad option): shown as one line, no traceback."""
from __future__ import annotations

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
