"""Model registry: the table of network builders, filled by ``@register_model``.

This module is a leaf (it imports nothing of segcore but :mod:`segcore.errors`; an
import-linter contract in setup.cfg keeps it so): the networks in :mod:`segcore.models` import it
to register themselves, and :mod:`segcore.models` (the package) offers ``create_model``,
``list_models``, ``model_info`` and ``load_model`` once every builder is registered.

Every builder follows one contract:
``builder(num_classes, in_channels=3, aux=False, **kw) -> nn.Cell`` whose ``construct`` returns
logits at the input resolution (auxiliary outputs only with ``aux=True`` and only in training
mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List

from .errors import UnknownModelError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a builder.

    ``stride`` is the factor every input side must be a multiple of; ``task`` is
    ``"segmentation"`` or ``"classification"``; ``default_classes`` the class count of the
    reference recipe.
    """

    name: str
    builder: Callable
    stride: int
    default_classes: int
    task: str = "segmentation"
    family: str = ""
    description: str = ""
    extra: Dict = field(default_factory=dict)


_REGISTRY: Dict[str, ModelInfo] = {}


def register_model(name: str, *, stride: int, default_classes: int, task: str = "segmentation",
                   family: str = "", description: str = "", **extra) -> Callable:
    """Decorator that registers a model builder under ``name``."""

    def deco(fn: Callable) -> Callable:
        if name in _REGISTRY and _REGISTRY[name].builder is not fn:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelInfo(name, fn, stride, default_classes, task, family, description,
                                    dict(extra))
        return fn

    return deco


def registered_names() -> List[str]:
    """Sorted names registered so far (all of them once :mod:`segcore.models` is imported)."""
    return sorted(_REGISTRY)


def registered_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` registered under ``name``; :class:`UnknownModelError` (listing the
    registered names) otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None
