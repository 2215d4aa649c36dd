"""Model registry: ``register_model``, ``create_model`` and ``list_models``.

Every builder follows one contract: ``builder(num_classes, in_channels=3, aux=False, **kw) -> nn.Cell``
whose ``construct`` returns logits at the input resolution (auxiliary outputs only with
``aux=True`` and only in training mode).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

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
_LOADED = False


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


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import models  # noqa: F401  (importing registers the builders)


def list_models() -> List[str]:
    """Sorted names of all registered models."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; unknown names raise :class:`UnknownModelError`."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None


def create_model(name: str, num_classes: Optional[int] = None, in_channels: int = 3,
                 aux: bool = False, checkpoint: Optional[str] = None, **kw):
    """Build the network ``name``.

    ``num_classes`` defaults to the reference recipe's class count. With ``checkpoint`` the
    weights are loaded after construction (never inside the constructor).
    """
    info = model_info(name)
    if num_classes is None:
        num_classes = info.default_classes
    net = info.builder(num_classes=num_classes, in_channels=in_channels, aux=aux, **kw)
    if checkpoint is not None:
        from .checkpoint import load_weights
        load_weights(net, checkpoint)
    return net
