"""Import published PyTorch weights into a RoadSeg checkpoint (``roadseg convert``).

The weights are read by :mod:`segcore.convert` without PyTorch and without running pickled
code; expected problems come out as :class:`app.service.errors.UserError` naming the file.
"""
from __future__ import annotations

from typing import Any, Optional

from app.service.errors import EXPECTED_ERRORS, as_user_error
from segcore.convert import LAYOUTS

__all__ = ["LAYOUTS", "convert_checkpoint"]


def convert_checkpoint(src: str, model: str, out: str, *, num_classes: Optional[int] = None,
                       in_channels: int = 3, strict: bool = True, source: Optional[str] = None,
                       overwrite: bool = False) -> Any:
    """:func:`segcore.convert.convert_checkpoint` of ``src`` into ``out`` (``.ckpt`` + ``.json``);
    returns its report."""
    from segcore.convert import convert_checkpoint as _convert

    try:
        return _convert(src, model, out, num_classes=num_classes, in_channels=in_channels,
                        strict=strict, source=source, overwrite=overwrite)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
