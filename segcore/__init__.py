"""RoadSeg Studio segmentation core (MindSpore).

Public entry points: :func:`create_model`, :func:`list_models`, :func:`model_info`.
"""
from .errors import SegcoreError, UnknownModelError, InputSizeError  # noqa: F401
from .registry import create_model, list_models, model_info, register_model  # noqa: F401

__all__ = ["create_model", "list_models", "model_info", "register_model", "SegcoreError",
           "UnknownModelError", "InputSizeError"]
