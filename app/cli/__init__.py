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

_SUBCOMMAND_MODULES = ("extract", "training", "models", "dataset", "convert_cmd", "recover",
                       "batch")
#: the module of each command, so that ``roadseg extract ...`` imports only ``app.cli.extract``
#: (the other modules pull in the training, dataset and batch services: ~0.1 s of imports). A
#: command missing here still works: every module is loaded when the name is not found.
_COMMAND_MODULES = {
    "extract": "extract", "vectorize": "extract", "info": "extract", "train": "training",
    "models": "models", "export": "models", "eval": "models", "dataset": "dataset",
    "convert": "convert_cmd", "recover": "recover", "batch": "batch",
}


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


def _load_subcommands(argv=None) -> None:
    """Import the subcommand modules: with ``argv``, only the one of the command it names (all
    of them for ``--help`` before the command, no command, or a command that module does not
    register)."""
    if argv is not None:
        args = [str(a) for a in argv]
        command = next((a for a in args if not a.startswith("-")), None)
        if command in _COMMAND_MODULES and not {"-h", "--help"} & set(
                args[:args.index(command)]):
            _import_subcommand(_COMMAND_MODULES[command])
            if command in cli.commands:
                return
    for name in _SUBCOMMAND_MODULES:
        _import_subcommand(name)


def _import_subcommand(name: str) -> None:
    """Import one subcommand module. One that fails to import is a broken installation: the
    error propagates (with its traceback) instead of the command silently missing."""
    importlib.import_module(f"app.cli.{name}")


def main(argv=None) -> int:
    """Entry point of ``roadseg``: no traceback for expected errors, non-zero exit."""
    _load_subcommands(sys.argv[1:] if argv is None else argv)
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
