"""Hostile PyTorch files (issue 19, items 6 and 7): a zip bomb behind a tiny tensor and a deeply
nested pickle, both inside real ``torch.save`` zip archives, are refused with one line."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) writes the real .pth files")

from segcore.errors import CheckpointError  # noqa: E402
from segcore.torch_reader import MAX_NESTING, load_torch_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _rewrite(src: Path, dst: Path, replace: dict) -> None:
    """Copy the zip ``src`` to ``dst`` with some records replaced: ``replace[name]`` is bytes
    or ``(chunk, repeats)`` (streamed, deflated)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename not in replace:
                zout.writestr(info, zin.read(info.filename))
                continue
            new = replace[info.filename]
            if isinstance(new, bytes):
                zout.writestr(info.filename, new)
                continue
            chunk, repeats = new
            zi = zipfile.ZipInfo(info.filename)
            zi.compress_type = zipfile.ZIP_DEFLATED
            with zout.open(zi, "w", force_zip64=True) as fh:
                for _ in range(repeats):
                    fh.write(chunk)


def _record(path: Path, suffix: str) -> str:
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if n.endswith(suffix))


@pytest.mark.slow
def test_zip_bomb_behind_a_four_byte_tensor_is_read_in_bounded_memory(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.tensor([1.5])}, str(good))  # one float32: 4 bytes
    bomb = tmp_path / "bomb.pth"
    # the 4-byte storage record inflated to 768 MB of zeros (under 1 MB on disk)
    _rewrite(good, bomb, {_record(good, "/data/0"): (b"\0" * (1 << 20), 768)})
    assert bomb.stat().st_size < 2 << 20
    probe = textwrap.dedent("""
        import resource, sys
        from segcore.torch_reader import MAX_NESTING, load_torch_file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        w = load_torch_file(sys.argv[1])["w"]
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(float(w[0]), (after - before) // 1024)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", probe, str(bomb)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    value, grown_mb = p.stdout.split()
    assert float(value) == 0.0  # the first 4 bytes of the bomb, nothing more was inflated
    assert int(grown_mb) < 100, f"reading the bomb grew the process by {grown_mb} MB"


@pytest.mark.slow
def test_zip_bomb_declaring_a_huge_tensor_is_refused(tmp_path):
    big = tmp_path / "big.pth"
    torch.save({"w": torch.zeros(1 << 8)}, str(big))
    pkl_name = _record(big, "data.pkl")
    with zipfile.ZipFile(big) as zf:
        pkl = zf.read(pkl_name)
    # storage size and tensor size 256 (BININT2) -> 2^28 float32 elements (BININT): 1 GiB
    assert pkl.count(b"M\x00\x01") == 2
    huge = pkl.replace(b"M\x00\x01", b"J" + (1 << 28).to_bytes(4, "little"))
    bomb = tmp_path / "huge.pth"
    # and a record that really inflates to that GiB (about 1 MB on disk)
    _rewrite(big, bomb, {pkl_name: huge, _record(big, "/data/0"): (b"\0" * (1 << 20), 1 << 10)})
    assert bomb.stat().st_size < 4 << 20
    with pytest.raises(CheckpointError) as err:
        load_torch_file(bomb)
    msg = str(err.value)
    assert str(bomb) in msg and "zip bomb" in msg and len(msg.splitlines()) == 1


def _nested_pickle(depth: int) -> bytes:
    # protocol 2: {"w": [[[...]]]} built with EMPTY_LIST / APPEND opcodes (no recursion)
    return (b"\x80\x02}q\x00X\x01\x00\x00\x00w" + b"]" * depth + b"a" * (depth - 1)
            + b"s.")


@pytest.mark.slow
def test_deeply_nested_pickle_is_refused_in_one_line(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": [1.0]}, str(good))
    deep = tmp_path / "deep.pth"
    _rewrite(good, deep, {_record(good, "data.pkl"): _nested_pickle(100_000)})
    with pytest.raises(CheckpointError) as err:
        load_torch_file(deep)
    msg = str(err.value)
    assert str(deep) in msg and "nested" in msg and len(msg.splitlines()) == 1
    # a shallow nesting still loads
    ok = tmp_path / "ok.pth"
    _rewrite(good, ok, {_record(good, "data.pkl"): _nested_pickle(MAX_NESTING - 5)})
    got = load_torch_file(ok)
    assert isinstance(got["w"], list)
    # and the command line says it in one line, without a traceback
    env = dict(os.environ, PYTHONPATH=str(ROOT), GLOG_v="3")
    p = subprocess.run([sys.executable, "-m", "app.cli", "convert", str(deep),
                        str(tmp_path / "out.ckpt"), "--model", "enet"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().startswith("roadseg: error:")
    assert len(p.stderr.strip().splitlines()) == 1
