"""Lean CPU inference: no MindSpore on the ONNX path, the per-user export cache, non-root users,
broken cache files, int8 networks.

Everything runs for real: a real (randomly initialised) DDRNet-23-slim checkpoint exported by
MindSpore, a crop of the bundled Vegas sample scene, ``roadseg`` in subprocesses. The
unprivileged checks run as ``nobody`` through ``setpriv`` when the tests run as root (and
directly otherwise; ``make test`` runs this file once more as ``nobody``).
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"

#: a child process: runs ``roadseg ARGS``, then prints which heavy modules it had imported
_PROBE = """
import json, sys
from app.cli import main
rc = main(sys.argv[1:])
print("PROBE " + json.dumps({"rc": rc, "mindspore": "mindspore" in sys.modules,
      "models": "segcore.models" in sys.modules,
      "cli_modules": sorted(m for m in sys.modules if m.startswith("app.cli.")
                            and m != "app.cli.options"),
      "other_services": sorted(m for m in ("app.service.training", "app.service.batch",
                               "app.service.dataset", "segcore.convert") if m in sys.modules)}))
"""


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    env["GLOG_v"] = "3"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _probe(args, env=None, user_prefix=(), cwd=None):
    cmd = list(user_prefix) + [sys.executable, "-c", _PROBE] + [str(a) for a in args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env or _env(), cwd=cwd,
                          timeout=300)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE ")]
    assert line, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return json.loads(line[-1][6:]), proc


def _public_dir(prefix: str) -> Path:
    """A temporary folder every user can read (pytest's tmp_path is private to its owner)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    d.chmod(0o755)
    return d


@pytest.fixture(scope="module")
def scene_crop():
    """384x384 crop of the bundled sample scene, readable by every user."""
    import rasterio
    from rasterio.windows import Window

    d = _public_dir("roadseg-lean-scene-")
    out = d / "vegas_crop.tif"
    with rasterio.open(SCENE) as src:
        win = Window(300, 300, 384, 384)
        profile = src.profile.copy()
        profile.update(width=384, height=384, transform=src.window_transform(win), count=3)
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read((1, 2, 3), window=win))
    out.chmod(0o644)
    yield out
    shutil.rmtree(d, ignore_errors=True)


def _make_ckpt(folder: Path) -> Path:
    import segcore
    from segcore.checkpoint import CheckpointMeta, save_checkpoint

    net = segcore.create_model("ddrnet23_slim", num_classes=1)
    meta = CheckpointMeta(model="ddrnet23_slim", num_classes=1, tile_size_px=128, stride=8,
                          normalization={"method": "percentile", "low": 2, "high": 98,
                                         "mean": [0.5], "std": [0.3125]})
    path = save_checkpoint(net, folder / "slim.ckpt", meta)
    for p in (path, path.with_suffix(".json")):
        p.chmod(0o644)
    return path


@pytest.fixture(scope="module")
def ckpt_dir():
    d = _public_dir("roadseg-lean-ckpt-")
    path = _make_ckpt(d)
    yield path
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# no MindSpore on the ONNX path
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_cpu_extraction_with_cached_onnx_never_imports_mindspore(ckpt_dir, scene_crop, tmp_path):
    xdg = tmp_path / "xdg"
    env = _env(XDG_CACHE_HOME=xdg)
    # first run: no export cached yet, MindSpore exports the checkpoint once
    first, proc = _probe(["extract", scene_crop, "-o", tmp_path / "a", "--checkpoint", ckpt_dir],
                         env=env)
    assert first["rc"] == 0, proc.stderr[-2000:]
    assert first["mindspore"], "the first run has to export with MindSpore"
    cached = list(ckpt_dir.parent.glob(".roadseg-cache/slim-*-128x128.onnx"))
    assert len(cached) == 1
    # every later run reads metadata and the cache with plain Python and ONNX Runtime
    again, proc = _probe(["extract", scene_crop, "-o", tmp_path / "b", "--checkpoint", ckpt_dir,
                          "--json"], env=env)
    assert again["rc"] == 0, proc.stderr[-2000:]
    # only the extract command's module and services are loaded (not training, batch, ...); the
    # shared option declarations (app.cli.options, no imports of its own) are not counted
    assert again["cli_modules"] == ["app.cli.extract"] and again["other_services"] == []
    summary = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    assert summary["model"]["backend"] == "onnx" and summary["model"]["precision"] == "fp32"
    a = (tmp_path / "a" / "vegas_crop_mask.tif").read_bytes()
    assert a == (tmp_path / "b" / "vegas_crop_mask.tif").read_bytes()


def test_cli_loads_only_the_command_it_runs():
    """`roadseg info` imports app.cli.extract alone; `roadseg --help` and `-h` before a command
    still list every command; an unknown command gets click's one-line error."""
    info, proc = _probe(["-v", "info", SCENE, "--json"])
    assert info["rc"] == 0, proc.stderr[-2000:]
    assert info["cli_modules"] == ["app.cli.extract"] and info["other_services"] == []
    assert json.loads(proc.stdout[:proc.stdout.index("PROBE ")])["width"] == 1300
    for args in (["--help"], ["-h", "train"]):
        helped, proc = _probe(args)
        assert helped["rc"] == 0
        assert "app.cli.training" in helped["cli_modules"] and "app.cli.batch" in \
            helped["cli_modules"]
        for command in ("extract", "train", "export", "dataset", "convert", "recover", "batch"):
            assert f"  {command} " in proc.stdout, (command, proc.stdout)
    unknown, proc = _probe(["nosuchcommand"])
    assert unknown["rc"] == 2 and "No such command 'nosuchcommand'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_exported_onnx_model_extracts_without_mindspore(ckpt_dir, scene_crop, tmp_path):
    from app.cli import main

    onnx_path = tmp_path / "slim.onnx"
    assert main(["export", "--checkpoint", str(ckpt_dir), "--out", str(onnx_path)]) == 0
    doc = json.loads((tmp_path / "slim.onnx.json").read_text())
    assert doc["export"]["precision"] == "fp32" and doc["export"]["stride"] == 8
    res, proc = _probe(["extract", scene_crop, "-o", tmp_path / "out", "--checkpoint", onnx_path])
    assert res["rc"] == 0, proc.stderr[-2000:]
    assert not res["mindspore"] and not res["models"]


# ---------------------------------------------------------------------------------------------
# the export cache: broken files, read-only folders, other users
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_corrupt_cache_file_is_rebuilt(tmp_path, caplog):
    from segcore.predict import OnnxPredictor, load_predictor, onnx_cache_path

    ckpt = _make_ckpt(tmp_path)
    first = load_predictor(ckpt, backend="onnx")
    cached = Path(first.source)
    assert cached == onnx_cache_path(ckpt, (128, 128))
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    want = first.predict_batch(x)
    cached.write_bytes(cached.read_bytes()[:5000])  # truncated, as after a full disk
    again = load_predictor(ckpt, backend="onnx")
    assert isinstance(again, OnnxPredictor)
    assert "removed the broken cache file" in caplog.text and str(cached) in caplog.text
    np.testing.assert_allclose(again.predict_batch(x), want, rtol=1e-5, atol=1e-6)
    assert cached.stat().st_size > 100_000


def _nobody_prefix():
    """``setpriv`` to ``nobody`` when root (skip where that cannot run this interpreter), else
    nothing: an unprivileged user already."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot test as another user")
    prefix = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    ok = subprocess.run(prefix + [sys.executable, "-c", "import sys, onnxruntime, app.cli; "
                                  "print(sys.prefix)"],
                        capture_output=True, text=True, env=_env(), cwd="/")
    if ok.returncode != 0 or ok.stdout.strip() != sys.prefix:
        pytest.skip(f"user nobody cannot run {sys.executable} (make test-unprivileged makes the "
                    "interpreter reachable)")
    return prefix


def _give_to_user(path: Path, prefix) -> None:
    if prefix:
        import pwd

        pw = pwd.getpwnam("nobody")
        os.chown(path, pw.pw_uid, pw.pw_gid)


@pytest.mark.slow
def test_other_user_extracts_with_read_only_checkpoint_folder(scene_crop):
    prefix = _nobody_prefix()
    ck_dir = _public_dir("roadseg-lean-ro-")
    work = _public_dir("roadseg-lean-user-")
    try:
        ckpt = _make_ckpt(ck_dir)
        _give_to_user(work, prefix)
        if not prefix:  # an unprivileged run: make the checkpoint folder read-only ourselves
            ck_dir.chmod(0o555)
        xdg = work / "xdg"
        env = _env(XDG_CACHE_HOME=xdg, HOME=work)
        # no cache anywhere: export into the user's XDG cache (MindSpore leaves its file
        # owner-read-only; writing over it was the "Permission denied")
        res, proc = _probe(["extract", scene_crop, "-o", work / "out1", "--checkpoint", ckpt],
                           env=env, user_prefix=prefix, cwd="/")
        assert res["rc"] == 0, proc.stderr[-2000:]
        made = list((xdg / "roadseg" / "onnx").glob("slim-*-128x128.onnx"))
        assert len(made) == 1 and not (ck_dir / ".roadseg-cache").exists()
        assert stat.S_IMODE(made[0].stat().st_mode) & 0o444 == 0o444
        # `roadseg export --format onnx` as that user
        res, proc = _probe(["export", "--checkpoint", ckpt, "--out", work / "m.onnx"],
                           env=env, user_prefix=prefix, cwd="/")
        assert res["rc"] == 0 and (work / "m.onnx").exists(), proc.stderr[-2000:]
        # a valid cache beside the read-only checkpoint is used as is: no new export
        if not prefix:
            ck_dir.chmod(0o755)
        shared = ck_dir / ".roadseg-cache"
        shared.mkdir()
        shutil.copy2(made[0], shared / made[0].name)
        shutil.copy2(str(made[0]) + ".json", shared / (made[0].name + ".json"))
        shutil.rmtree(xdg)
        for p in (shared, *shared.iterdir()):
            p.chmod(0o755 if p.is_dir() else 0o644)
        if not prefix:
            ck_dir.chmod(0o555)
            shared.chmod(0o555)
        res, proc = _probe(["extract", scene_crop, "-o", work / "out2", "--checkpoint", ckpt],
                           env=env, user_prefix=prefix, cwd="/")
        assert res["rc"] == 0, proc.stderr[-2000:]
        assert not res["mindspore"], "re-exported although a valid cache was readable"
        assert not list(xdg.glob("roadseg/onnx/*.onnx"))
        # a broken cache file that this user may not remove: skipped with a line naming it,
        # the network is exported into the user's own cache instead
        if not prefix:
            shared.chmod(0o755)
        (shared / made[0].name).write_bytes(b"not an onnx file")
        if not prefix:
            shared.chmod(0o555)
        res, proc = _probe(["-v", "extract", scene_crop, "-o", work / "out3", "--checkpoint",
                            ckpt], env=env, user_prefix=prefix, cwd="/")
        assert res["rc"] == 0, proc.stderr[-2000:]
        assert f"delete {shared / made[0].name}" in proc.stderr
        assert list(xdg.glob("roadseg/onnx/*.onnx"))
    finally:
        for d in (ck_dir, work):
            for p in [d, *d.rglob("*")]:
                if p.is_dir() and not p.is_symlink():
                    try:
                        p.chmod(0o755)
                    except OSError:
                        pass
            shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# int8
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_int8_is_deterministic_and_close_to_fp32(ckpt_dir, scene_crop, tmp_path):
    from app.cli import main
    from segcore.predict import load_predictor

    outs = []
    for k in range(2):
        out = tmp_path / f"slim_int8_{k}.onnx"
        assert main(["export", "--checkpoint", str(ckpt_dir), "--out", str(out), "--precision",
                     "int8", "--calibration", str(scene_crop)]) == 0
        outs.append(out)
    assert outs[0].read_bytes() == outs[1].read_bytes()
    doc = json.loads((tmp_path / "slim_int8_0.onnx.json").read_text())
    q = doc["export"]["quantization"]
    assert doc["export"]["precision"] == "int8" and q["format"] == "QDQ"
    assert q["calibration"] == "real tiles of vegas_crop.tif" and q["calibration_tiles"] >= 4
    import onnx
    ops = {n.op_type for n in onnx.load(str(outs[0])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert load_predictor(outs[0]).precision == "int8"


@pytest.mark.slow
def test_int8_bundled_model_finds_the_same_roads(tmp_path):
    """A trained network (random weights blow activations up to hundreds, no test of
    quantisation): the int8 road mask of a real crop agrees with the fp32 one."""
    from app.service.calibration import calibration_tiles
    from app.service.models import ExportRequest, export_checkpoint
    from segcore.predict import load_predictor

    ckpt = ROOT / "resources" / "models" / "road_demo.ckpt"
    paths = {}
    for prec in ("fp32", "int8"):
        res = export_checkpoint(ExportRequest(
            checkpoint=str(ckpt), out=str(tmp_path / f"demo_{prec}.onnx"), input_hw=(384, 384),
            precision=prec, calibration=(str(SCENE),) if prec == "int8" else ()))
        paths[prec] = res.path
    fp32, int8 = load_predictor(paths["fp32"]), load_predictor(paths["int8"])
    assert int8.precision == "int8" and fp32.precision == "fp32"
    from scipy import ndimage

    la, lb = [], []
    for x in calibration_tiles(fp32.meta, [str(SCENE)], (384, 384), per_scene=9):
        la.append(fp32.predict_logits(x)[0, 0])
        lb.append(int8.predict_logits(x)[0, 0])
    la, lb = np.stack(la), np.stack(lb)
    a, b = la >= 0, lb >= 0
    assert a.mean() > 0.02  # the scene has roads
    # int8 is not fp32 (7 points of centre-line F1 lost on the demo scene, docs/benchmarks.md),
    # but the same network: correlated logits, and the fp32 roads lie within 3 px of int8 ones
    assert np.corrcoef(la.ravel(), lb.ravel())[0, 1] > 0.9
    assert (a & b).sum() / (a | b).sum() > 0.6
    near = np.stack([ndimage.binary_dilation(m, iterations=3) for m in b])
    assert (a & near).sum() / a.sum() > 0.9


@pytest.mark.slow
def test_export_precision_errors_are_one_line(ckpt_dir, tmp_path, capsys):
    from app.cli import main

    assert main(["export", "--checkpoint", str(ckpt_dir), "--out", str(tmp_path / "m"),
                 "--format", "mindir", "--precision", "int8"]) == 2
    assert "needs --format onnx" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(ckpt_dir), "--out", str(tmp_path / "m"),
                 "--precision", "int8", "--calibration", str(tmp_path / "none.tif")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "calibration scene not found" in err[0]


@pytest.mark.slow
def test_extract_int8_made_at_first_use_then_cached(scene_crop, tmp_path):
    from segcore.predict import resolve_precision
    from segcore.onnx_infer import cpu_has_int8_dot

    ckpt = _make_ckpt(tmp_path)
    env = _env(XDG_CACHE_HOME=tmp_path / "xdg")
    res, proc = _probe(["extract", scene_crop, "-o", tmp_path / "a", "--checkpoint", ckpt,
                        "--precision", "int8", "--json"], env=env)
    assert res["rc"] == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    assert summary["model"]["precision"] == "int8"
    made = list(tmp_path.glob(".roadseg-cache/slim-*-128x128-int8.onnx"))
    assert len(made) == 1
    doc = json.loads(Path(str(made[0]) + ".json").read_text())
    assert doc["export"]["quantization"]["calibration"].endswith(
        "RGB-PanSharpen_AOI_2_Vegas_img0.tif")
    res, proc = _probe(["extract", scene_crop, "-o", tmp_path / "b", "--checkpoint", ckpt,
                        "--precision", "int8"], env=env)
    assert res["rc"] == 0 and not res["mindspore"], proc.stderr[-2000:]
    # auto: int8 only on CPUs with int8 dot products (VNNI/AMX) and a cached int8 network
    res, proc = _probe(["extract", scene_crop, "-o", tmp_path / "c", "--checkpoint", ckpt,
                        "--precision", "auto", "--json"], env=env)
    summary = json.loads(proc.stdout[:proc.stdout.index("PROBE ")])
    assert summary["model"]["precision"] == ("int8" if cpu_has_int8_dot() else "fp32")
    assert resolve_precision("auto", False) == "fp32"
