"""Crash-safe output commits: a hidden staging folder, a commit journal and recovery; and the
single-file and whole-folder forms of the same rule (:func:`atomic_file`,
:func:`atomic_write_text`, :func:`replace_folder`) that every other writer in the service uses.

Every job writes its outputs into ``OUT/.roadseg-staging-<id>/`` and, when the whole set is
complete, :meth:`Staging.commit` moves it into ``OUT``:

1. the staged files are flushed to disk (``fsync``);
2. ``.journal.json`` is written (atomically, then ``fsync``): the file names and which of them
   replace an existing file;
3. existing targets are moved into ``.backup/`` inside the staging folder, then the new files
   are renamed into place (``SIGINT``/``SIGTERM`` are held back until this is over);
4. the journal is removed and the staging folder deleted.

A process that dies between 2 and 4 (``kill -9``, power loss) leaves the journal behind. The
next job into the same folder, or ``roadseg recover OUT``, then *completes* the commit (every
staged file is complete by step 2, so rolling forward is always possible) and removes the
folder. A commit that fails inside the process (an ``OSError`` on a rename) is rolled back at
once: the journal is switched to ``rollback`` first, so a crash during the roll-back is finished
the same way by the next run.

A running job holds an exclusive ``flock`` on ``.lock`` in its staging folder; the lock dies
with the process, so a folder whose lock can be taken belongs to a dead run and is swept
(deleted, or its commit completed). A folder without a lock file (written by an older version)
is swept once it is more than :data:`UNLOCKED_GRACE_S` seconds old.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from gis.errors import OutputDirError, OutputExistsError

log = logging.getLogger(__name__)

PREFIX = ".roadseg-staging-"
JOURNAL = ".journal.json"
LOCK = ".lock"
BACKUP = ".backup"
#: Age after which a staging folder without a lock file counts as abandoned.
UNLOCKED_GRACE_S = 600.0


# --------------------------------------------------------------------------------------------
# small file-system helpers
# --------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_journal(folder: Path, doc: Dict) -> None:
    tmp = folder / f"{JOURNAL}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / JOURNAL)
    _fsync_dir(folder)


def _read_journal(folder: Path) -> Optional[Dict]:
    p = folder / JOURNAL
    try:
        with open(p, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OutputDirError(f"{p}: unreadable commit journal ({exc}); restore the files in "
                             f"{folder} by hand") from None
    if not isinstance(doc, dict) or doc.get("state") not in ("commit", "rollback") \
            or not isinstance(doc.get("files"), list):
        raise OutputDirError(f"{p}: not a commit journal; restore the files in {folder} by hand")
    return doc


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the renames run (main thread only); a signal that came
    in meanwhile is re-raised afterwards, to the handler that was installed before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: List[int] = []
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            old[sig] = signal.signal(sig, lambda s, f: got.append(s))
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        for sig in dict.fromkeys(got):
            signal.raise_signal(sig)


# --------------------------------------------------------------------------------------------
# the staging folder
# --------------------------------------------------------------------------------------------
class Staging:
    """A hidden folder next to the final outputs; :meth:`commit` moves its files into place.

    Creating one first sweeps the stale staging folders of dead runs in ``out_dir``
    (see :func:`recover`). ``out_dir`` is created when missing (its parent must exist).
    """

    def __init__(self, out_dir: Path) -> None:
        out_dir = Path(out_dir)
        self.out_dir = out_dir
        self.created_out_dir = False
        if not out_dir.exists():
            parent = out_dir.parent
            for anc in out_dir.parents:
                if anc.exists():
                    if not anc.is_dir():
                        raise OutputDirError(f"{out_dir}: {anc} is a file, not a directory")
                    break
            if not parent.is_dir():
                raise OutputDirError(f"{out_dir}: parent directory {parent} does not exist")
            out_dir.mkdir()
            self.created_out_dir = True
        elif not out_dir.is_dir():
            raise OutputDirError(f"{out_dir}: exists and is not a directory")
        else:
            recover(out_dir)
        self.dir = out_dir / f"{PREFIX}{uuid.uuid4().hex[:10]}"
        self.dir.mkdir()
        self._lock_fd: Optional[int] = os.open(str(self.dir / LOCK),
                                               os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())

    def path(self, name: str) -> Path:
        return self.dir / name

    def files(self) -> List[Path]:
        return sorted(p for p in self.dir.iterdir() if p.is_file() and not p.name.startswith("."))

    def commit(self, overwrite: bool) -> List[Path]:
        """Move the staged files into ``out_dir`` (see the module docstring). Existing targets
        are refused unless ``overwrite``. Returns the final paths."""
        new = self.files()
        targets = [self.out_dir / p.name for p in new]
        if not overwrite:
            for t in targets:
                if t.exists():
                    raise OutputExistsError(f"{t}: output exists (use overwrite to replace it)")
        for p in new:
            _fsync_file(p)
        _fsync_dir(self.dir)
        entries = [{"name": t.name, "replaces": t.exists()} for t in targets]
        doc = {"version": 1, "state": "commit", "pid": os.getpid(), "files": entries}
        backup = self.dir / BACKUP
        backup.mkdir(exist_ok=True)
        with _signals_held():
            _write_journal(self.dir, doc)
            try:
                for e in entries:
                    if e["replaces"]:
                        os.replace(self.out_dir / e["name"], backup / e["name"])
                for e in entries:
                    os.replace(self.dir / e["name"], self.out_dir / e["name"])
                _fsync_dir(self.out_dir)
            except OSError:
                doc["state"] = "rollback"
                try:
                    _write_journal(self.dir, doc)
                    _roll_back(self.dir, self.out_dir, entries)
                    (self.dir / JOURNAL).unlink()
                except OSError:
                    log.error("could not roll back the commit in %s; run 'roadseg recover %s'",
                              self.dir, self.out_dir)
                raise
            (self.dir / JOURNAL).unlink()
            _fsync_dir(self.dir)
        return targets

    def discard(self, failed: bool) -> None:
        """Delete the staging folder (never one holding a journal: that needs recovery) and,
        for a failed run, ``out_dir`` when this run created it and it is empty."""
        if not (self.dir / JOURNAL).exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if failed and self.created_out_dir:
            try:
                self.out_dir.rmdir()  # only when empty
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# recovery
# --------------------------------------------------------------------------------------------
def _roll_forward(folder: Path, out_dir: Path, entries: List[Dict]) -> None:
    for e in entries:
        src = folder / e["name"]
        if src.exists():
            os.replace(src, out_dir / e["name"])
    _fsync_dir(out_dir)


def _roll_back(folder: Path, out_dir: Path, entries: List[Dict]) -> None:
    backup = folder / BACKUP
    for e in entries:
        src, target, old = folder / e["name"], out_dir / e["name"], backup / e["name"]
        if not src.exists() and target.exists() and not (e["replaces"] and not old.exists()):
            os.replace(target, src)  # a new file that was already placed: take it back
        if e["replaces"] and old.exists():
            os.replace(old, target)
    _fsync_dir(out_dir)


@dataclass
class Recovered:
    """What :func:`recover` did with one staging folder: ``completed`` (an interrupted commit
    finished), ``rolled_back``, ``removed`` (a dead run's leftovers) or ``in_use``."""

    folder: Path
    action: str
    files: Tuple[str, ...] = ()


def _lock_is_free(folder: Path) -> Optional[bool]:
    """True when no live process holds ``folder``'s lock, None when it has no lock file."""
    try:
        fd = os.open(str(folder / LOCK), os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    finally:
        os.close(fd)  # releases the lock we may have taken
    return True


def recover(out_dir: Path) -> List[Recovered]:
    """Finish or clean up what dead runs left in ``out_dir``: a staging folder with a journal
    has its commit completed (or its roll-back finished), one without is removed. Folders of
    live runs are left alone. Returns one :class:`Recovered` per staging folder found."""
    out_dir = Path(out_dir)
    done: List[Recovered] = []
    try:
        folders = sorted(p for p in out_dir.iterdir() if p.name.startswith(PREFIX) and p.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return done
    for folder in folders:
        free = _lock_is_free(folder)
        if free is False:
            done.append(Recovered(folder, "in_use"))
            continue
        if free is None:
            try:
                age = time.time() - folder.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < UNLOCKED_GRACE_S and not (folder / JOURNAL).exists():
                done.append(Recovered(folder, "in_use"))
                continue
        doc = _read_journal(folder)
        if doc is None:
            shutil.rmtree(folder, ignore_errors=True)
            done.append(Recovered(folder, "removed"))
            continue
        entries = doc["files"]
        names = tuple(str(e["name"]) for e in entries)
        if doc["state"] == "commit":
            _roll_forward(folder, out_dir, entries)
            action = "completed"
        else:
            _roll_back(folder, out_dir, entries)
            action = "rolled_back"
        (folder / JOURNAL).unlink()
        shutil.rmtree(folder, ignore_errors=True)
        log.warning("%s: %s an interrupted commit of %d file(s) (%s)", out_dir,
                    "completed" if action == "completed" else "rolled back", len(names),
                    ", ".join(names))
        done.append(Recovered(folder, action, names))
    return done


# --------------------------------------------------------------------------------------------
# whole folders: a dataset or corpus folder replaced by a newly built one
# --------------------------------------------------------------------------------------------
#: Test hook: seconds to sleep between the two renames of :func:`replace_folder` (a test kills
#: the process there to check that the next run recovers).
SWAP_PAUSE_ENV = "ROADSEG_TEST_SWAP_PAUSE_S"


def _swap_journal(out: Path) -> Path:
    return out.parent / f".{out.name}.swap.json"


def _swap_lock(out: Path) -> Path:
    return out.parent / f".{out.name}.swap.lock"


def replace_folder(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` (built beside ``out``, same file system) under the
    name ``out``, replacing an earlier ``out``, so that a process killed at any moment leaves
    something :func:`recover_folder` can finish:

    1. ``.<out>.swap.json`` beside ``out`` is written (then ``fsync``): the names of ``tmp``
       and of the backup name the old ``out`` gets (``.<out>.old-<id>``);
    2. the old ``out`` is renamed to the backup name, ``tmp`` to ``out``
       (``SIGINT``/``SIGTERM`` held back meanwhile);
    3. the backup is deleted, then the journal.

    While it runs, an exclusive ``flock`` on ``.<out>.swap.lock`` marks the swap as live. A
    rename that fails here is undone at once (the old ``out`` comes back)."""
    tmp, out = Path(tmp), Path(out)
    recover_folder(out)  # a swap a killed run left behind comes first
    parent = out.parent
    old = parent / f".{out.name}.old-{uuid.uuid4().hex[:10]}" if out.exists() else None
    journal = _swap_journal(out)
    lock_fd = os.open(str(_swap_lock(out)), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        _fsync_dir(tmp)
        doc = {"version": 1, "state": "swap", "pid": os.getpid(), "new": tmp.name,
               "old": old.name if old is not None else None, "out": out.name}
        with _signals_held():
            _write_json_synced(journal, doc)
            try:
                if old is not None:
                    os.replace(out, old)
                pause = os.environ.get(SWAP_PAUSE_ENV)
                if pause:
                    time.sleep(float(pause))
                os.replace(tmp, out)
                _fsync_dir(parent)
            except OSError:
                if old is not None and old.exists() and not out.exists():
                    os.replace(old, out)
                journal.unlink()
                _fsync_dir(parent)
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        journal.unlink()
        _fsync_dir(parent)
    finally:
        os.close(lock_fd)
        try:
            _swap_lock(out).unlink()
        except FileNotFoundError:
            pass


def _write_json_synced(path: Path, doc: Dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def recover_folder(out: Path) -> Optional[str]:
    """Finish a :func:`replace_folder` of ``out`` that a killed process left behind: when the
    new folder is still there it is put in place (it was complete before the journal was
    written), otherwise the old one comes back; the backup and the journal are removed.

    Returns ``"completed"``, ``"rolled_back"``, or None when there was nothing to do. Raises
    :class:`OutputDirError` while a live process is swapping ``out``, or for an unreadable
    journal."""
    out = Path(out)
    journal = _swap_journal(out)
    if not journal.exists():
        return None
    lock_path = _swap_lock(out)
    lock_fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(lock_fd)  # the lock file is the live swapper's: left in place
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise OutputDirError(f"{out}: another process is replacing this folder right "
                                 "now; try again when it is done") from None
        raise
    try:
        try:
            with open(journal, encoding="utf-8") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return None  # the swap finished meanwhile
        except (OSError, ValueError) as exc:
            raise OutputDirError(f"{journal}: unreadable folder-swap journal ({exc}); check "
                                 f"{out} by hand and delete the journal") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("new"), str) or \
                "/" in doc["new"] or (doc.get("old") is not None and "/" in str(doc["old"])):
            raise OutputDirError(f"{journal}: not a folder-swap journal; check {out} by hand "
                                 "and delete the journal")
        parent = out.parent
        new = parent / doc["new"]
        old = parent / doc["old"] if doc.get("old") else None
        with _signals_held():
            if new.is_dir():
                action = "completed"
                if out.exists():
                    if old is not None and not old.exists():
                        os.replace(out, old)  # killed before the first rename
                    else:
                        # out is not the folder the journal moved aside: keep it, drop new
                        shutil.rmtree(new, ignore_errors=True)
                        action = "rolled_back"
                if action == "completed":
                    os.replace(new, out)
            else:
                if not out.exists() and old is not None and old.exists():
                    os.replace(old, out)  # the new folder is gone: the old one comes back
                    action = "rolled_back"
                else:
                    action = "completed"
            _fsync_dir(parent)
            if old is not None and old.exists() and out.exists():
                shutil.rmtree(old, ignore_errors=True)
            journal.unlink()
            _fsync_dir(parent)
        log.warning("%s: %s an interrupted replacement of the folder", out,
                    "completed" if action == "completed" else "rolled back")
        return action
    finally:
        os.close(lock_fd)
        try:
            lock_path.unlink()
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------------------------
# single files (complete under a hidden name, then renamed)
# --------------------------------------------------------------------------------------------
def missing_dir(out: Path) -> str:
    """Why ``out``'s folder cannot hold it: the nearest existing ancestor is a file, or the
    folder does not exist."""
    for anc in out.parents:
        if anc.exists():
            if not anc.is_dir():
                return f"{out}: {anc} is a file, not a directory"
            break
    return f"{out}: output directory {out.parent} does not exist"


def refuse_existing(paths: Iterable[Path], overwrite: bool) -> None:
    """:class:`OutputExistsError` for the first of ``paths`` that exists, unless ``overwrite``."""
    if overwrite:
        return
    for p in paths:
        if p.exists():
            raise OutputExistsError(f"{p}: output exists (use overwrite to replace it)")


@contextlib.contextmanager
def atomic_file(path: "os.PathLike[str] | str") -> Iterator[Path]:
    """Write one file through a hidden temporary name beside ``path``.

    Yields the temporary path (it keeps ``path``'s suffix, so GDAL/OGR pick the same driver);
    when the block ends without an exception the file is flushed to disk and renamed to
    ``path`` (replacing an existing file), otherwise it is removed. A check that must see the
    finished file before it replaces anything (``overwrite``) goes at the end of the block.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.stem}.tmp-{uuid.uuid4().hex[:8]}{p.suffix}")
    try:
        yield tmp
        if tmp.is_file():
            _fsync_file(tmp)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: "os.PathLike[str] | str", text: str) -> None:
    """``path`` replaced by ``text`` (UTF-8) as a whole, never half written."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


__all__ = ["Staging", "Recovered", "recover", "PREFIX", "missing_dir", "refuse_existing",
           "atomic_file", "atomic_write_text", "replace_folder", "recover_folder"]
