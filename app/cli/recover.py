"""``roadseg recover``: finish or roll back output commits that a killed run left behind."""
from __future__ import annotations

from pathlib import Path

import click

from app.cli import cli
from app.service.errors import EXPECTED_ERRORS, UserError, as_user_error
from app.service.staging import recover, recover_folder


@cli.command("recover")
@click.argument("out_dir", type=click.Path(file_okay=False))
def recover_cmd(out_dir: str) -> None:
    """Complete an interrupted commit of outputs in OUT_DIR and remove stale staging folders;
    finish an interrupted replacement of OUT_DIR itself (a dataset or corpus folder).

    Every run into OUT_DIR does this by itself first; this command is for a folder that no
    further run will write into.
    """
    d = Path(out_dir)
    try:
        swapped = recover_folder(d)
    except EXPECTED_ERRORS as exc:
        raise as_user_error(exc) from exc
    if swapped is not None:
        click.echo(f"{d}: {'completed' if swapped == 'completed' else 'rolled back'} an "
                   "interrupted replacement of the folder")
    if not d.is_dir():
        raise UserError(f"{d}: not a directory")
    found = recover(d)
    if not found and swapped is None:
        click.echo(f"{d}: nothing to recover")
    for r in found:
        what = {"completed": "completed the interrupted commit of",
                "rolled_back": "rolled back the interrupted commit of",
                "removed": "removed the leftovers of a dead run",
                "in_use": "left alone (a running job owns it)"}[r.action]
        files = f" {len(r.files)} file(s): {', '.join(r.files)}" if r.files else ""
        click.echo(f"{r.folder.name}: {what}{files}")
