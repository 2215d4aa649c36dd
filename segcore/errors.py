"""Error types of the segmentation core.

Every error inherits :class:`SegcoreError` and a builtin so callers can catch either.
"""


class SegcoreError(Exception):
    """Root of all segcore errors."""


class UnknownModelError(SegcoreError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown model"


class InputSizeError(SegcoreError, ValueError):
    """An input whose spatial size is not a multiple of the network's stride."""


class CheckpointError(SegcoreError, OSError):
    """A checkpoint that cannot be read or does not fit the network."""


class DatasetError(SegcoreError, OSError):
    """A broken dataset sample (missing mask, size mismatch, unreadable file)."""


class ConfigError(SegcoreError, ValueError):
    """An invalid training/evaluation configuration."""


class DeviceError(SegcoreError, RuntimeError):
    """A requested device (gpu/ascend) that is not available."""
