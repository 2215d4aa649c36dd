"""RoadSeg Studio segmentation core (MindSpore).

Public entry points: :func:`create_model`, :func:`list_models`, :func:`model_info` (from
:mod:`segcore.models`, imported on first use: ``import segcore`` stays cheap and free of
MindSpore, which the ONNX inference path relies on) and :func:`register_model`.
"""
from typing import Any

from .errors import SegcoreError, UnknownModelError, InputSizeError  # noqa: F401
from .registry import register_model  # noqa: F401

__all__ = ["create_model", "list_models", "model_info", "register_model", "SegcoreError",
           "UnknownModelError", "InputSizeError"]

_FROM_MODELS = ("create_model", "list_models", "model_info")


def __getattr__(name: str) -> Any:
    if name in _FROM_MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'segcore' has no attribute {name!r}")
