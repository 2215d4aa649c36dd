"""Network definitions and the model-zoo API.

Importing this package registers every builder with :mod:`segcore.registry` (a leaf module) and
provides the functions that need all of them: :func:`list_models`, :func:`model_info`,
:func:`create_model` and :func:`load_model` (network named in a checkpoint's metadata, weights
loaded). Dependencies run one way: ``segcore.models`` -> networks -> ``segcore.registry``, and
``segcore.models`` -> ``segcore.checkpoint`` (weights and metadata files).
"""
from __future__ import annotations

import logging
import os
from typing import List, Optional, Union

from ..checkpoint import load_weights
from ..errors import CheckpointError
from ..meta import _ckpt_path, read_metadata
from ..registry import ModelInfo, register_model, registered_info, registered_names
from . import ddrnet, deeplabv3, dgcnet, dlinknet, enet  # noqa: F401  (registers the builders)

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["ModelInfo", "register_model", "list_models", "model_info", "create_model",
           "load_model"]


def list_models() -> List[str]:
    """Sorted names of all registered models."""
    return registered_names()


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; unknown names raise :class:`UnknownModelError`."""
    return registered_info(name)


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
        load_weights(net, checkpoint)
    return net


def load_model(path: PathLike, aux: bool = False):
    """Build the network named in the metadata of ``path`` and load its weights (every network
    parameter must be in the file; auxiliary-head weights of a training-time network are
    ignored). Returns ``(net, meta)``; ``net`` is in inference mode (``set_train(False)``)."""
    meta = read_metadata(path)
    net = create_model(meta.model, num_classes=meta.num_classes, in_channels=meta.in_channels,
                       aux=aux, **dict(meta.model_kwargs))
    report = load_weights(net, path, strict=False)
    if report.missing:
        raise CheckpointError(f"{_ckpt_path(path)}: does not fit {meta.model}: "
                              f"{len(report.missing)} network parameters missing "
                              f"(e.g. {report.missing[0]})")
    if report.unexpected:  # e.g. auxiliary heads of a training-time network
        logger.info("%s: ignored %d weights unused at inference (aux heads)", path,
                    len(report.unexpected))
    net.set_train(False)
    return net, meta
