"""The ``roadseg`` command line. Commands only map options onto ``app.service`` calls.

Subcommand modules (``extract``, ``train``, ...) register themselves on :data:`cli` when
imported; :func:`main` turns every expected error into a one-line message and exit code 2.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from app.service.errors import UserError

_SUBCOMMAND_MODULES = ("extract", "training", "models", "dataset", "convert_cmd", "batch")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """RoadSeg Studio: road networks from satellite and aerial GeoTIFFs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _load_subcommands() -> None:
    for name in _SUBCOMMAND_MODULES:
        try:
            importlib.import_module(f"app.cli.{name}")
        except ModuleNotFoundError as exc:  # a module still being written
            if exc.name != f"app.cli.{name}":
                raise


def main(argv=None) -> int:
    """Entry point of ``roadseg``: no traceback for expected errors, non-zero exit."""
    _load_subcommands()
    try:
        cli.main(args=argv, standalone_mode=False, prog_name="roadseg")
    except click.exceptions.Abort:
        click.echo("roadseg: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except UserError as exc:
        click.echo(f"roadseg: error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("roadseg: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
