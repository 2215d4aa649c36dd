"""Crash-safe output commits (issue 19, item 3): a run killed in the middle of its final renames
is completed by ``roadseg recover`` or by the next run into the folder; stale staging folders
of dead runs are swept; SIGTERM cleans up like Ctrl+C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    env.setdefault("GLOG_v", "3")
    return env


def _write_tif(path: Path, value: int, size: int = 64) -> None:
    data = np.full((1, size, size), value, np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", crs="EPSG:32611",
                       transform=from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(data)


def _value(path: Path) -> int:
    with rasterio.open(path) as src:
        return int(src.read(1)[0, 0])


# A child process that stages two real GeoTIFFs over two existing ones and is killed with
# SIGKILL right after the first old file has been moved aside (the moment of the report).
_KILLED_COMMIT = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import numpy as np, rasterio
    from rasterio.transform import from_origin
    from app.service import staging as st

    out = Path(sys.argv[1])
    s = st.Staging(out)
    for name in ("scene_mask.tif", "scene_prob.tif"):
        with rasterio.open(s.path(name), "w", driver="GTiff", width=64, height=64, count=1,
                           dtype="uint8", crs="EPSG:32611",
                           transform=from_origin(500000, 4000000, 0.5, 0.5)) as dst:
            dst.write(np.full((1, 64, 64), 2, np.uint8))
    real_replace, calls = os.replace, []

    def replace_then_die(src, dst):
        real_replace(src, dst)
        if not str(dst).endswith(".journal.json"):
            calls.append(dst)
        if len(calls) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

    st.os.replace = replace_then_die
    s.commit(overwrite=True)
""")


def _killed_commit(out: Path, after_renames: int) -> None:
    out.mkdir(exist_ok=True)
    for name in ("scene_mask.tif", "scene_prob.tif"):
        _write_tif(out / name, 1)
    p = subprocess.run([sys.executable, "-c", _KILLED_COMMIT, str(out), str(after_renames)],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr


@pytest.mark.parametrize("after_renames", [1, 3])
@pytest.mark.slow
def test_killed_commit_is_completed_by_roadseg_recover(tmp_path, after_renames):
    out = tmp_path / "out"
    _killed_commit(out, after_renames)
    # the state of the report: a final name is missing (or half the set is new)
    staging = [p for p in out.iterdir() if p.name.startswith(".roadseg-staging-")]
    assert len(staging) == 1 and (staging[0] / ".journal.json").is_file()
    if after_renames == 1:
        assert not (out / "scene_mask.tif").exists()
        assert (staging[0] / ".backup" / "scene_mask.tif").is_file()

    p = subprocess.run([sys.executable, "-m", "app.cli", "recover", str(out)], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "completed the interrupted commit of 2 file(s)" in p.stdout
    # the new set, complete and readable, under the final names; nothing else left
    assert sorted(x.name for x in out.iterdir()) == ["scene_mask.tif", "scene_prob.tif"]
    assert _value(out / "scene_mask.tif") == 2 and _value(out / "scene_prob.tif") == 2

    p = subprocess.run([sys.executable, "-m", "app.cli", "recover", str(out)], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "nothing to recover" in p.stdout


@pytest.mark.slow
def test_next_run_into_the_folder_completes_the_commit_and_sweeps(tmp_path, shared_data):
    from app.service.extraction import vectorize_mask

    mask = shared_data / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    out = tmp_path / "out"
    _killed_commit(out, 1)
    # what kill -9 during inference leaves: a staging folder whose lock no process holds
    dead = out / ".roadseg-staging-0123456789"
    dead.mkdir()
    (dead / ".lock").write_text("99999\n")
    (dead / "scene_prob.tif").write_bytes(b"half-written")
    assert len([p for p in out.iterdir() if p.name.startswith(".roadseg-staging-")]) == 2

    vectorize_mask(mask, out / "roads.gpkg")
    names = sorted(x.name for x in out.iterdir())
    assert not [n for n in names if n.startswith(".roadseg-staging-")], names
    assert {"scene_mask.tif", "scene_prob.tif", "roads.gpkg"} <= set(names)
    assert _value(out / "scene_mask.tif") == 2


def test_live_run_staging_folder_is_left_alone(tmp_path):
    from app.service.staging import Staging, recover

    out = tmp_path / "out"
    out.mkdir()
    live = Staging(out)  # held by this (live) process
    try:
        _write_tif(live.path("a_mask.tif"), 3)
        found = recover(out)
        assert [r.action for r in found] == ["in_use"]
        assert live.path("a_mask.tif").is_file()
        live.commit(overwrite=False)
    finally:
        live.discard(failed=False)
    assert sorted(x.name for x in out.iterdir()) == ["a_mask.tif"]


@pytest.mark.slow
def test_sigterm_during_extraction_cleans_up_and_exits_143(tmp_path, shared_data):
    scene = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    ckpt = ROOT / "resources" / "models" / "road_demo.ckpt"
    if not ckpt.is_file():
        pytest.skip(f"{ckpt} not found")
    out = tmp_path / "out"
    out.mkdir()
    _write_tif(out / "RGB-PanSharpen_AOI_2_Vegas_img0_mask.tif", 1)
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "extract", str(scene), "-o",
                             str(out), "--checkpoint", str(ckpt), "--overwrite",
                             "--tta", "d4"], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.name.startswith(".roadseg-staging-") for p in out.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "roadseg: terminated" and "Traceback" not in err
    assert sorted(x.name for x in out.iterdir()) == ["RGB-PanSharpen_AOI_2_Vegas_img0_mask.tif"]
    assert _value(out / "RGB-PanSharpen_AOI_2_Vegas_img0_mask.tif") == 1
