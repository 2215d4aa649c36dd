"""Training configuration: flat YAML files loaded into the :class:`TrainConfig` dataclass.

One YAML per recipe lives in ``resources/configs/``. Keys map one to one onto the fields below;
unknown keys are rejected with a one-line :class:`ConfigError`. ``key=value`` overrides (the
CLI's ``--set``) are parsed as YAML scalars and coerced to the field's type.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import yaml

from .errors import ConfigError

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("poly", "cosine", "step", "constant")
LOSSES = ("bce_dice", "ohem", "ce_ignore", "weighted_ce", "ce")
AMP_LEVELS = ("auto", "O0", "O1", "O2", "O3")
DEVICES = ("cpu", "gpu", "ascend")
MODES = ("pynative", "graph")
MONITORS = ("auto", "loss", "train_loss", "val_loss", "iou", "f1", "miou", "top1")


@dataclass
class TrainConfig:
    """Everything one training run needs (flat; every key is a YAML key).

    Sizes are pixels (``crop_size`` is the square training crop side or ``[h, w]``);
    ``batch_size`` is per device (data parallel multiplies it by ``--nproc``); ``epochs`` and
    ``max_steps`` bound the run (``max_steps`` 0 = no bound); ``steps_per_epoch`` /
    ``val_steps`` 0 = the whole split; ``max_train_samples`` > 0 keeps only that many training
    samples (overfitting smoke tests).
    """

    # model
    model: str = "dlinknet34"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    num_classes: int = 1
    in_channels: int = 3
    class_names: List[str] = field(default_factory=list)
    init_checkpoint: Optional[str] = None
    # data
    dataset: str = "deepglobe"
    data_root: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = None
    val_fraction: float = 0.0
    max_train_samples: int = 0
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)
    bands: List[int] = field(default_factory=lambda: [1, 2, 3])
    normalization: Dict[str, Any] = field(default_factory=lambda: {"method": "dlinknet"})
    gsd_m: Optional[float] = None  # ground resolution of the training data (recorded in the model)
    augment: str = "none"
    crop_size: Union[int, List[int]] = 1024
    batch_size: int = 4
    num_workers: int = 1
    # schedule
    epochs: int = 1
    max_steps: int = 0
    steps_per_epoch: int = 0
    val_steps: int = 0
    val_every: int = 1
    # optimizer
    optimizer: str = "adam"
    lr: float = 2e-4
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_power: float = 0.9
    lr_step_epochs: int = 0
    lr_milestones: List[int] = field(default_factory=list)
    lr_gamma: float = 0.1
    min_lr: float = 0.0
    warmup_epochs: float = 0.0
    warmup_start_factor: float = 0.1
    # loss
    loss: str = "bce_dice"
    aux_weight: float = 0.0
    ohem_thresh: float = 0.7
    ohem_min_kept: int = 100000
    class_weights: Union[str, List[float], None] = None
    ignore_index: int = 255
    # precision / runtime
    amp_level: str = "auto"
    loss_scale: float = 65536.0
    device: str = "cpu"
    mode: str = "pynative"
    jit: bool = False
    launch_blocking: bool = False  # CPU PyNative: synchronous operators (segcore.device)
    seed: int = 42
    # stopping / checkpoints
    monitor: str = "auto"
    early_stopping_patience: int = 0
    plateau: bool = False
    plateau_patience: int = 3
    plateau_factor: float = 5.0
    plateau_min_lr: float = 5e-7
    plateau_stop_patience: int = 6
    output_dir: str = "runs/train"
    keep_epoch_checkpoints: int = 0
    tile_size_px: int = 0
    debug_save_rank_weights: bool = False

    # ------------------------------------------------------------------ derived values
    @property
    def crop_hw(self) -> typing.Tuple[int, int]:
        """``(height, width)`` of the training crop in pixels."""
        if isinstance(self.crop_size, int):
            return (self.crop_size, self.crop_size)
        return (int(self.crop_size[0]), int(self.crop_size[1]))

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of all keys (JSON/YAML ready)."""
        return dataclasses.asdict(self)

    def validate(self) -> "TrainConfig":
        """Check value ranges and choices; raises :class:`ConfigError`; returns ``self``."""
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"config key {key}={getattr(self, key)!r}: {why}")

        for key, choices in (("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES),
                             ("loss", LOSSES), ("amp_level", AMP_LEVELS), ("device", DEVICES),
                             ("mode", MODES), ("monitor", MONITORS)):
            if getattr(self, key) not in choices:
                raise bad(key, f"must be one of {', '.join(choices)}")
        for key in ("num_classes", "in_channels", "batch_size", "epochs", "val_every"):
            if getattr(self, key) < 1:
                raise bad(key, "must be >= 1")
        for key in ("max_steps", "max_train_samples", "steps_per_epoch", "val_steps",
                    "num_workers",
                    "early_stopping_patience", "keep_epoch_checkpoints", "lr_step_epochs",
                    "ohem_min_kept", "tile_size_px"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.lr <= 0:
            raise bad("lr", "must be > 0")
        if not 0.0 <= self.val_fraction < 1.0:
            raise bad("val_fraction", "must be in [0, 1)")
        if self.weight_decay < 0 or self.aux_weight < 0 or self.min_lr < 0:
            raise ConfigError("config: weight_decay, aux_weight and min_lr must be >= 0")
        if self.plateau_factor <= 1.0:
            raise bad("plateau_factor", "must be > 1 (the lr is divided by it)")
        h, w = self.crop_hw
        if h < 1 or w < 1:
            raise bad("crop_size", "must be positive")
        if not isinstance(self.crop_size, int) and len(self.crop_size) != 2:
            raise bad("crop_size", "must be an int or [height, width]")
        if len(self.bands) != self.in_channels:
            raise bad("bands", f"lists {len(self.bands)} bands but in_channels="
                               f"{self.in_channels}")
        if any(b < 1 for b in self.bands):
            raise bad("bands", "band indices are 1-based")
        if self.loss == "bce_dice" and self.num_classes != 1:
            raise bad("loss", "bce_dice needs num_classes=1 (one sigmoid road output)")
        if self.loss == "weighted_ce" and self.class_weights is None:
            raise bad("class_weights", "weighted_ce needs class_weights (a list or 'enet')")
        if isinstance(self.class_weights, str) and self.class_weights != "enet":
            raise bad("class_weights", "must be a list of floats or 'enet'")
        if isinstance(self.class_weights, list) and len(self.class_weights) != self.num_classes:
            raise bad("class_weights", f"needs {self.num_classes} values")
        if self.class_names and len(self.class_names) != max(self.num_classes, 2 if
                                                             self.num_classes == 1 else 0):
            raise bad("class_names", "needs one name per class (2 for a 1-output road model)")
        if "method" not in self.normalization:
            raise bad("normalization", "needs a 'method' key (meanstd, dlinknet, percentile, "
                                       "scale)")
        if self.lr_schedule == "step" and not (self.lr_step_epochs or self.lr_milestones):
            raise bad("lr_schedule", "step needs lr_step_epochs or lr_milestones")
        return self


_HINTS: Optional[Dict[str, Any]] = None


def _hints() -> Dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(TrainConfig)
    return _HINTS


def field_names() -> List[str]:
    """All valid config keys, in declaration order."""
    return [f.name for f in fields(TrainConfig)]


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Coerce ``value`` to the annotated type ``tp``; raises ``ValueError``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        # try the exact-type member first (so 3 stays an int in Union[int, List[int]])
        for a in sorted((a for a in args if a is not type(None)),
                        key=lambda a: 0 if (isinstance(a, type) and isinstance(value, a))
                        else 1):
            try:
                return _coerce(key, value, a)
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
        raise ValueError(errors[0] if errors else f"cannot convert {value!r}")
    if tp is Any:
        return value
    if origin in (list, List):
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            if isinstance(value, str) and "," in value:
                value = [v.strip() for v in value.split(",") if v.strip()]
                value = [yaml.safe_load(v) for v in value]
            else:
                value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        (inner,) = args or (Any,)
        return [_coerce(key, v, inner) for v in value]
    if origin in (dict, Dict):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no",
                                                         "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            return int(value)
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    return value


def _apply(raw: Dict[str, Any], base: Optional[TrainConfig], source: str) -> TrainConfig:
    hints = _hints()
    valid = field_names()
    values: Dict[str, Any] = base.to_dict() if base is not None else {}
    for key, value in raw.items():
        if key not in hints:
            import difflib

            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ConfigError(f"{source}: unknown config key {key!r}{hint}")
        try:
            values[key] = _coerce(key, value, hints[key])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{source}: config key {key}: {exc}") from None
    return TrainConfig(**values)


def from_dict(raw: Dict[str, Any], source: str = "config") -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a flat dict."""
    return _apply(raw, None, source).validate()


def load_config(path: PathLike, overrides: Iterable[str] = ()) -> TrainConfig:
    """Load a flat YAML training config and apply ``key=value`` overrides.

    Raises :class:`ConfigError` (one line, naming the file) for a missing or unparsable file,
    a non-mapping document, unknown keys, wrong types or invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML ({first})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a flat mapping of keys to values")
    cfg = _apply(raw, None, str(path))
    cfg = apply_overrides(cfg, overrides, validate=False)
    try:
        return cfg.validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_override(item: str) -> typing.Tuple[str, Any]:
    """Split ``"key=value"``; the value is parsed as a YAML scalar/list (``lr=1e-3``,
    ``bands=[1,2,3]``, ``val_split=null``)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, _, text = item.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    # YAML reads 1e-3 as a string (no dot): let float coercion handle it
    return key, value


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str], validate: bool = True
                    ) -> TrainConfig:
    """A copy of ``cfg`` with ``key=value`` overrides applied (types coerced)."""
    raw: Dict[str, Any] = {}
    for item in overrides:
        k, v = parse_override(item)
        raw[k] = v
    if not raw:
        return cfg
    out = _apply(raw, cfg, "override")
    return out.validate() if validate else out


def replace(cfg: TrainConfig, **changes: Any) -> TrainConfig:
    """A validated copy of ``cfg`` with typed ``changes`` (same coercion as overrides)."""
    return _apply(changes, cfg, "config").validate()


def save_resolved(cfg: TrainConfig, directory: PathLike, name: str = "config.yaml") -> Path:
    """Write the fully resolved config to ``directory/name`` (atomic); returns the path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = d / name
    tmp = d / f".{name}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# resolved training config written by roadseg train\n")
        yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), f, sort_keys=False)
    os.replace(tmp, out)
    return out


__all__ = ["TrainConfig", "load_config", "from_dict", "apply_overrides", "parse_override",
           "save_resolved", "replace", "field_names"]
