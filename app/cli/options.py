"""Click options that several ``roadseg`` commands share, declared once.

Each factory returns a decorator; ``help`` is the command's own wording of what the option
replaces or prints, the name, flags and defaults are the same everywhere.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import click

from app.service.requests import DEVICES

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

__all__ = ["overwrite_option", "json_option", "quiet_option", "device_option"]


def overwrite_option(help: str = "Replace existing outputs.") -> Decorator:
    """``--overwrite``: replace what the command would otherwise refuse to write over."""
    return click.option("--overwrite", is_flag=True, help=help)


def json_option(help: str) -> Decorator:
    """``--json`` (parameter ``as_json``): print the command's result as JSON."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def quiet_option(help: str = "No progress output.") -> Decorator:
    """``-q``/``--quiet``: no progress output."""
    return click.option("-q", "--quiet", is_flag=True, help=help)


def device_option(default: Optional[str] = "cpu", help: Optional[str] = None,
                  choices: Sequence[str] = DEVICES) -> Decorator:
    """``--device``: ``cpu``, ``gpu`` or ``ascend`` (``default=None``: the command decides)."""
    kw: dict = {"help": help} if help else {}
    return click.option("--device", type=click.Choice(list(choices)), default=default,
                        show_default=default is not None, **kw)
