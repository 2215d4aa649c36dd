"""The ``roadseg`` command line. Commands only map options onto ``app.service`` calls.

Subcommand modules (``extract``, ``train``, ...) register themselves on :data:`cli` when
imported; :func:`main` turns every expected error, usage errors included, into one
``roadseg: error: ...`` line and exit code 2. SIGTERM (``timeout``, systemd) is handled like
Ctrl+C: the running job cleans up its staging folder and ``roadseg`` exits with 143 (130 for
SIGINT).
"""
from __future__ import annotations

import importlib
import logging
import signal
import sys
import threading

import click

from app.service.errors import UserError

_SUBCOMMAND_MODULES = ("extract", "training", "models", "dataset", "convert_cmd", "recover", "batch")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl+C's KeyboardInterrupt so that every ``finally`` runs."""


_TERMINATED = []


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001
    _TERMINATED.append(signum)
    raise Terminated()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """RoadSeg Studio: road networks from satellite and aerial GeoTIFFs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _load_subcommands() -> None:
    """Import every subcommand module. One that fails to import is a broken installation:
    the error propagates (with its traceback) instead of the command silently missing."""
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(f"app.cli.{name}")


def main(argv=None) -> int:
    """Entry point of ``roadseg``: no traceback for expected errors, non-zero exit."""
    _load_subcommands()
    old_term = None
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rv = cli.main(args=argv, standalone_mode=False, prog_name="roadseg")
    except click.exceptions.Abort:
        if _TERMINATED:  # a job turned the SIGTERM into a clean cancellation
            click.echo("roadseg: terminated", err=True)
            return 143
        click.echo("roadseg: aborted", err=True)
        return 130
    except click.UsageError as exc:
        cmd = exc.ctx.command_path if exc.ctx is not None else "roadseg"
        click.echo(f"roadseg: error: {_one_line(exc.format_message())} (see '{cmd} --help')",
                   err=True)
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"roadseg: error: {_one_line(exc.format_message())}", err=True)
        return exc.exit_code
    except UserError as exc:
        click.echo(f"roadseg: error: {exc}", err=True)
        return 2
    except Terminated:
        click.echo("roadseg: terminated", err=True)
        return 143
    except KeyboardInterrupt:
        click.echo("roadseg: interrupted", err=True)
        return 130
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    return rv if isinstance(rv, int) else 0


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
