"""RoadSeg Studio on a shown window: a real X server (Xvfb), the xcb platform plugin, and real
X key events sent with xdotool. Each test starts its own Xvfb and skips with a reason where
Xvfb, xdotool or Qt's xcb plugin cannot run (``make sysdeps`` installs them on Debian).

- ``make gui`` opens a real window (not the offscreen platform the Makefile uses for tests);
- quitting during an extraction: no freeze (the UI keeps its heartbeat), the window closes
  once the run has stopped, the process ends, no dialog is left;
- the dataset review's R / P keys and the map's R / P keys each work in their own tab.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).resolve().parent / "gui_x11_harness.py"
SAMPLE = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"


def _missing_tools() -> Optional[str]:
    for tool in ("Xvfb", "xdotool"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make sysdeps installs it on Debian)"
    return None


@pytest.fixture()
def display(tmp_path: Path):
    """A fresh Xvfb display (``:N``) for one test."""
    why = _missing_tools()
    if why:
        pytest.skip(why)
    for n in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    else:
        pytest.skip("no free X display number")
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1600x1000x24", "-nolisten",
                             "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.1)
    yield f":{n}"
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _env(display: str) -> Dict[str, str]:
    """A user's shell: no QT_QPA_PLATFORM (conftest sets offscreen for this process), our
    worktree's code first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "QT_QPA_PLATFORM"}
    env.update(DISPLAY=display, PYTHONPATH=str(ROOT), GLOG_v="3",
               XDG_RUNTIME_DIR=env.get("XDG_RUNTIME_DIR", "/tmp"))
    return env


def _xdotool(display: str, *args: str, timeout: float = 60) -> str:
    r = subprocess.run(["xdotool", *args], env=_env(display), capture_output=True, text=True,
                       timeout=timeout)
    return r.stdout.strip()


def _window(display: str, proc: subprocess.Popen, timeout: float = 90) -> str:
    """The id of the shown main window (skips when Qt cannot use the display)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            if "xcb" in out and ("could not" in out.lower() or "Could not" in out):
                pytest.skip("Qt's xcb platform plugin cannot load (make sysdeps installs its "
                            "X11 libraries)")
            pytest.fail(f"the app exited with {proc.returncode} before showing a window:\n"
                        f"{out[-3000:]}")
        ids = _xdotool(display, "search", "--onlyvisible", "--name", "^RoadSeg Studio")
        if ids:
            return ids.splitlines()[0]
        time.sleep(0.3)
    pytest.fail("no RoadSeg Studio window appeared")


def _key(display: str, win: str, *keys: str) -> None:
    """Real key presses into window ``win`` (focused first: Xvfb runs no window manager)."""
    _xdotool(display, "windowfocus", "--sync", win)
    _xdotool(display, "key", "--clearmodifiers", "--delay", "120", *keys)


def _wait_exit(proc: subprocess.Popen, timeout: float) -> Optional[int]:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _settings(tmp_path: Path) -> Path:
    ini = tmp_path / "settings.ini"
    ini.write_text(f"[workspace]\ndir={tmp_path / 'workspace'}\n")
    return ini


def _harness(display: str, tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HARNESS), *args, "--state",
                             str(tmp_path / "state.json"), "--settings",
                             str(_settings(tmp_path))], env=_env(display), cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


# ------------------------------------------------------------------------------ item 1
@pytest.mark.slow
def test_make_gui_shows_a_real_window(display: str, tmp_path: Path) -> None:
    """``make gui`` on a user's shell: the xcb platform (not offscreen), a viewable window with
    the image; Ctrl+Q ends the process."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "-o", "install", "gui",
         f"ARGS=--settings {_settings(tmp_path)} {SAMPLE}"],
        cwd=str(ROOT), env=_env(display), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        win = _window(display, proc)
        deadline = time.monotonic() + 60
        while "RGB-PanSharpen" not in _xdotool(display, "getwindowname", win):
            assert time.monotonic() < deadline, "the image did not open"
            time.sleep(0.3)
        geo = _xdotool(display, "getwindowgeometry", win)
        assert "Geometry:" in geo
        w, h = (int(v) for v in geo.split("Geometry:")[1].split()[0].split("x"))
        assert w >= 800 and h >= 500
        if shutil.which("import"):  # ImageMagick: what the screen shows, for a look
            time.sleep(1.5)
            subprocess.run(["import", "-window", "root", str(tmp_path / "make_gui.png")],
                           env=_env(display), timeout=60, check=False)
        _key(display, win, "ctrl+q")
        assert _wait_exit(proc, 30) == 0
    finally:
        _stop(proc)
    out = proc.stdout.read()
    assert "offscreen" not in out.lower() or "QT_QPA_PLATFORM" not in out


# ------------------------------------------------------------------------------ item 3
@pytest.mark.slow
def test_quit_during_extraction_does_not_freeze_and_leaves_nothing(
        display: str, tmp_path: Path, demo_scene: Path, bundled_checkpoint: Path) -> None:
    out = tmp_path / "out"
    proc = _harness(display, tmp_path, "extract", "--image", str(demo_scene), "--checkpoint",
                    str(bundled_checkpoint), "--out", str(out))
    ready = Path(str(tmp_path / "state.json") + ".ready")
    try:
        win = _window(display, proc)
        deadline = time.monotonic() + 180
        while not ready.exists():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "the extraction did not start"
            time.sleep(0.2)
        time.sleep(0.5)
        t_quit = time.monotonic()
        _key(display, win, "ctrl+q")
        rc = _wait_exit(proc, 60)
        t_exit = time.monotonic()
    finally:
        _stop(proc)
    log = proc.stdout.read()
    assert rc == 0, log[-3000:]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["platform"] == "xcb"
    assert state["result"] is None and not state["running"] and not state["thread_alive"]
    assert state["visible_windows"] == []                    # no orphan dialog or window
    assert t_exit - t_quit < 20, f"quitting took {t_exit - t_quit:.1f} s"
    # the event loop kept running while the extraction stopped: no frozen UI
    beats = [float(v) for v in Path(str(tmp_path / "state.json") + ".beat").read_text()
             .split()]
    during = [b for b in beats if b >= t_quit - 0.2]
    gaps = [b - a for a, b in zip(during, during[1:])]
    assert during and max(gaps or [0]) < 2.0, f"UI blocked for {max(gaps):.1f} s"
    assert "stopping the extraction before closing" in log
    stages = {s for _, _, s in state["progress"]}
    assert "vectorize" not in stages                         # it really stopped
    assert not out.exists() or not any(out.iterdir())        # and left no outputs


# ------------------------------------------------------------------------------ item 7
@pytest.mark.slow
def test_dataset_review_keys_and_map_keys_on_a_shown_window(display: str,
                                                            tmp_path: Path) -> None:
    import numpy as np

    from app.service.dataset import DatasetBuildRequest, build_chip_dataset
    from test_gui_first_hour import _image, _network

    img = _image(tmp_path / "scene.tif")
    net = _network(tmp_path / "roads.gpkg", img)
    chips = tmp_path / "chips"
    build_chip_dataset(DatasetBuildRequest(image=str(img), labels=str(net),
                                           out_dir=str(chips), chip_size_px=128,
                                           skip_empty=True))
    n = len(json.loads((chips / "manifest.json").read_text())["samples"])
    assert n >= 3
    proc = _harness(display, tmp_path, "dataset", "--image", str(img), "--dataset",
                    str(chips))
    ready = Path(str(tmp_path / "state.json") + ".ready")
    try:
        win = _window(display, proc)
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        # Dataset review tab: R rejects (and moves on), P goes back
        _key(display, win, "r")
        deadline = time.monotonic() + 10
        manifest = chips / "manifest.json"
        while json.loads(manifest.read_text())["samples"][0]["status"] != "rejected":
            assert time.monotonic() < deadline, "R did not reject the sample"
            time.sleep(0.2)
        _key(display, win, "p")
        # Map tab (Ctrl+1): R is the AOI rectangle tool again
        _key(display, win, "ctrl+1", "r")
        time.sleep(0.5)
        _key(display, win, "ctrl+q")
        rc = _wait_exit(proc, 30)
    finally:
        _stop(proc)
    assert rc == 0, proc.stdout.read()[-3000:]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["platform"] == "xcb"
    assert state["dataset_status"][0] == "rejected"
    assert state["dataset_status"][1:] == ["unreviewed"] * (n - 1)
    assert state["dataset_current"] == 0                     # P went back from sample 1
    assert state["tool"] == "aoi_rect"
    assert np.isfinite(state["quit_at"])
