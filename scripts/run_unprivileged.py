"""Run pytest files as an unprivileged user (``make test-unprivileged``, part of ``make test``).

Root ignores file permissions, so tests run as root cannot catch a "Permission denied" that
every other user gets (issue: MindSpore's owner-read-only export file). Run as root, this
script runs the given test files once more as ``nobody`` through ``setpriv`` (or ``runuser``),
with a private ``HOME`` and ``XDG_CACHE_HOME``. The virtual environment's interpreter may live
under a folder other users cannot enter (``/root/.pyenv``): those parent folders get the
search bit for others (``o+x``: enter, not list), and the script says which. Run as any other
user, it runs the files directly.

    python scripts/run_unprivileged.py tests/test_cli_extract.py tests/test_lean_inference.py
"""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER = "nobody"


def _parents_needing_search_bit(path: Path, uid: int, gids) -> list:
    """Folders above ``path`` that ``uid`` cannot enter."""
    out = []
    for folder in reversed(path.parents):
        st = folder.stat()
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            out.append(folder)
    return out


def main(argv) -> int:
    files = argv or ["tests/test_cli_extract.py"]
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *files]
    if os.geteuid() != 0:
        return subprocess.call([sys.executable, *pytest_args], cwd=ROOT)
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        print(f"test-unprivileged: setpriv not found; cannot run the tests as {USER}")
        return 1
    pw = pwd.getpwnam(USER)
    gids = {pw.pw_gid}
    interpreter = Path(os.path.realpath(sys.executable))
    for target in (interpreter, Path(os.path.realpath(sys.prefix)) / "lib", ROOT / "setup.cfg"):
        for folder in _parents_needing_search_bit(target, pw.pw_uid, gids):
            print(f"test-unprivileged: chmod o+x {folder} (so that {USER} can reach "
                  f"{interpreter.name})")
            folder.chmod(folder.stat().st_mode | stat.S_IXOTH)
    home = Path(tempfile.mkdtemp(prefix="roadseg-unprivileged-"))
    try:
        os.chown(home, pw.pw_uid, pw.pw_gid)
        env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"),
                   PYTHONDONTWRITEBYTECODE="1", USER=USER, LOGNAME=USER,
                   TMPDIR=str(home))
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                         if env.get("PYTHONPATH") else "")
        cmd = [setpriv, f"--reuid={USER}", f"--regid={pw.pw_gid}", "--clear-groups", "--",
               sys.executable, *pytest_args]
        print(f"test-unprivileged: as {USER}: pytest {' '.join(files)}", flush=True)
        return subprocess.call(cmd, cwd=ROOT, env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
