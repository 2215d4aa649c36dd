"""Issue 19, item 3 (folders): a dataset folder replaced by a new build goes through a journal,
so a process killed between the two renames leaves something the next build into the same
folder, or ``roadseg recover``, finishes (no dataset left only under a backup name)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString

from gis_fixtures import utm_transform, write_geotiff

ROOT = Path(__file__).resolve().parents[1]


def _folder(path: Path, tag: str) -> Path:
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps({"tag": tag}))
    (path / "images").mkdir()
    (path / "images" / "a.tif").write_bytes(tag.encode() * 10)
    return path


def _tag(path: Path) -> str:
    return json.loads((path / "manifest.json").read_text())["tag"]


def _leftovers(parent: Path, name: str) -> list:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}"))


def _journal(out: Path, new: Path, old) -> None:
    (out.parent / f".{out.name}.swap.json").write_text(json.dumps(
        {"version": 1, "state": "swap", "pid": 999999, "new": new.name,
         "old": old.name if old is not None else None, "out": out.name}))


@pytest.mark.parametrize("moment", ["journal_written", "old_moved_aside", "new_in_place"])
def test_recover_completes_a_swap_killed_at_any_moment(tmp_path, moment):
    from app.service.staging import recover_folder

    out = _folder(tmp_path / "ds", "old")
    new = _folder(tmp_path / ".ds.x1.tmp", "new")
    old = tmp_path / ".ds.old-abc"
    _journal(out, new, old)
    if moment in ("old_moved_aside", "new_in_place"):
        os.replace(out, old)
    if moment == "new_in_place":
        os.replace(new, out)
    assert recover_folder(out) == "completed"
    assert _tag(out) == "new" and (out / "images" / "a.tif").read_bytes() == b"new" * 10
    assert _leftovers(tmp_path, "ds") == []
    assert recover_folder(out) is None  # nothing left to do


def test_recover_rolls_back_when_the_new_folder_is_gone(tmp_path):
    from app.service.staging import recover_folder

    old = _folder(tmp_path / ".ds.old-abc", "old")
    out = tmp_path / "ds"
    _journal(out, tmp_path / ".ds.x1.tmp", old)
    assert recover_folder(out) == "rolled_back"
    assert _tag(out) == "old" and _leftovers(tmp_path, "ds") == []


def test_first_swap_and_replacement_leave_nothing_beside(tmp_path):
    from app.service.staging import replace_folder

    out = tmp_path / "ds"
    replace_folder(_folder(tmp_path / ".ds.a.tmp", "one"), out)
    assert _tag(out) == "one"
    replace_folder(_folder(tmp_path / ".ds.b.tmp", "two"), out)
    assert _tag(out) == "two" and _leftovers(tmp_path, "ds") == []


def _inputs(tmp_path: Path):
    img = write_geotiff(tmp_path / "img.tif",
                        np.random.default_rng(0).integers(1, 255, (3, 64, 64), dtype=np.uint8),
                        crs="EPSG:32611", transform=utm_transform(1.0, origin=(600000.0,
                                                                                4000064.0)))
    lines = gpd.GeoDataFrame(geometry=[LineString([(600000, 4000032), (600064, 4000032)]),
                                       LineString([(600020, 4000000), (600020, 4000064)])],
                             crs="EPSG:32611")
    lines.to_file(tmp_path / "roads.geojson")
    return img, tmp_path / "roads.geojson"


def _build(img, labels, out, chip, *, overwrite=False, pause=None, popen=False):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("ROADSEG_TEST_SWAP_PAUSE_S", None)
    if pause is not None:
        env["ROADSEG_TEST_SWAP_PAUSE_S"] = str(pause)
    cmd = [sys.executable, "-m", "app.cli", "dataset", "build", str(img), "--labels",
           str(labels), "--out", str(out), "--chip-size", str(chip), "--val-fraction", "0",
           "-q"] + (["--overwrite"] if overwrite else [])
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _kill_between_renames(img, labels, out, chip) -> None:
    """``dataset build --overwrite`` killed (SIGKILL) after the old folder went aside and
    before the new one took its name."""
    p = _build(img, labels, out, chip, overwrite=True, pause=300, popen=True)
    journal = out.parent / f".{out.name}.swap.json"
    deadline = time.monotonic() + 240
    while not (journal.exists() and not out.exists()):
        assert p.poll() is None and time.monotonic() < deadline, "the build never reached the swap"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert not out.exists() and journal.exists()
    names = _leftovers(out.parent, out.name)
    assert any(".old-" in n for n in names) and any(n.endswith(".tmp") for n in names), names


def _chip(out: Path) -> int:
    return json.loads((out / "manifest.json").read_text())["chip_size_px"]


@pytest.mark.slow
def test_a_build_killed_between_the_renames_is_finished_by_the_next_run(tmp_path):
    img, labels = _inputs(tmp_path)
    out = tmp_path / "ds"
    r = _build(img, labels, out, 32)
    assert r.returncode == 0, r.stderr
    assert _chip(out) == 32

    # killed mid-swap; `roadseg recover` puts the complete new dataset in place
    _kill_between_renames(img, labels, out, 16)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-m", "app.cli", "recover", str(out)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{out}: completed an interrupted replacement of the folder" in r.stdout
    assert _chip(out) == 16 and len(list((out / "images").iterdir())) == 16
    assert _leftovers(tmp_path, "ds") == []

    # killed again; the next build into the folder finishes the swap before anything else:
    # the killed run's dataset stands, so a build without --overwrite is refused
    _kill_between_renames(img, labels, out, 8)
    r = _build(img, labels, out, 32)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(
        f"{out}: already exists (use --overwrite to replace it)"), r.stderr
    assert _chip(out) == 8 and len(list((out / "images").iterdir())) == 64
    assert _leftovers(tmp_path, "ds") == []
