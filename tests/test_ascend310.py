"""Ascend 310 path, host side: preprocess -> (device emulated by the exported model) -> postprocess.

The device is replaced by the very model file the 310 would run (MindIR executed by MindSpore's
GraphCell) or its ONNX twin, reading and writing the same raw float32 files as ``roadseg_310``.
The result must equal ``roadseg extract`` on the same exported model: same mask, same vectors.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
A310 = ROOT / "ascend310"
sys.path.insert(0, str(A310))


@pytest.fixture(scope="module")
def scene(tmp_path_factory, shared_data):
    """A 150x130 crop of the SpaceNet Vegas tile (EPSG:4326, 4 bands)."""
    src = shared_data / "geotiff" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
    out = tmp_path_factory.mktemp("scene") / "vegas_crop.tif"
    with rasterio.open(src) as ds:
        win = Window(600, 500, 150, 130)
        prof = ds.profile.copy()
        prof.update(width=150, height=130, transform=ds.window_transform(win), tiled=False)
        prof.pop("blockxsize", None), prof.pop("blockysize", None)
        with rasterio.open(out, "w", **prof) as dst:
            dst.write(ds.read(window=win))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ddrnet23_slim (1 class, random weights) exported to MindIR and ONNX, batch 2, 64x64."""
    import mindspore as ms

    from segcore import create_model
    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.export import export_model

    ms.set_seed(0)
    d = tmp_path_factory.mktemp("model")
    net = create_model("ddrnet23_slim", num_classes=1)
    meta = CheckpointMeta(model="ddrnet23_slim", num_classes=1, tile_size_px=64, stride=8,
                          bands=(1, 2, 3))
    ckpt = save_checkpoint(net, d / "net.ckpt", meta)
    mindir = export_model(ckpt, d / "net.mindir", "MINDIR", input_size=(2, 3, 64, 64),
                          dynamic_batch=False)
    onnx_path = export_model(ckpt, d / "net.onnx", "ONNX", input_size=(2, 3, 64, 64),
                             dynamic_batch=False)
    return {"ckpt": ckpt, "mindir": Path(mindir), "onnx": Path(onnx_path)}


def emulate_device(model_path: Path, tiles: Path, result: Path) -> int:
    """What roadseg_310 does, on the host: every ``<b>.bin`` -> ``<b>_0.bin`` logits."""
    from segcore.export import read_export_metadata

    shape = read_export_metadata(model_path)["export"]["input_shape"]
    result.mkdir(parents=True, exist_ok=True)
    if model_path.suffix == ".mindir":
        import mindspore as ms
        from mindspore import nn

        graph = nn.GraphCell(ms.load(str(model_path)))
        run = lambda x: graph(ms.Tensor(x)).asnumpy()  # noqa: E731
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        run = lambda x: sess.run(None, {name: x})[0]  # noqa: E731
    files = sorted(tiles.glob("*.bin"))
    for f in files:
        x = np.fromfile(f, dtype=np.float32).reshape(shape)
        run(x).astype(np.float32).tofile(result / f"{f.stem}_0.bin")
    return len(files)


@pytest.mark.parametrize("fmt", ["onnx", "mindir"])
@pytest.mark.slow
def test_host_round_trip_matches_roadseg_extract(tmp_path, scene, exported, fmt):
    import preprocess
    import postprocess

    from app.service.extraction import ExtractionRequest, run_extraction

    model = exported[fmt]
    work = tmp_path / "work"
    doc = preprocess.preprocess(scene, model, work, overlap_px=8)
    # 150x130 with 64 px tiles and 8 px overlap: 3x3 tiles in batches of 2 -> 5 files
    batches = doc["images"][0]["batches"]
    assert [b["tiles"] for b in batches] == [2, 2, 2, 2, 1]
    assert all((work / "tiles" / b["file"]).stat().st_size == 2 * 3 * 64 * 64 * 4 for b in batches)
    assert emulate_device(model, work / "tiles", work / "result") == len(batches)

    results = postprocess.postprocess(work, tmp_path / "out310", threshold=0.5)
    assert len(results) == 1
    mask310 = results[0]["mask"]

    ref = run_extraction(ExtractionRequest(
        image=str(scene), out_dir=str(tmp_path / "ref"), checkpoint=str(exported["onnx"]),
        backend="onnx", tile_size_px=64, overlap_px=8, batch_size=2))
    assert ref.ok, ref.error
    with rasterio.open(mask310) as a, rasterio.open(ref.mask_path) as b:
        assert a.crs == b.crs and a.transform == b.transform
        ma, mb = a.read(1), b.read(1)
    # MindIR (MindSpore) and ONNX Runtime logits differ by float rounding only
    assert (ma != mb).mean() < 1e-3 if fmt == "mindir" else np.array_equal(ma, mb)
    with rasterio.open(results[0]["prob"]) as a, rasterio.open(ref.prob_path) as b:
        assert np.abs(a.read().astype(int) - b.read().astype(int)).max() <= 1
    if fmt == "onnx":
        assert results[0]["summary"]["edges"] == ref.summary["edges"]
        assert results[0]["summary"]["road_km"] == pytest.approx(ref.summary["road_km"])


def test_postprocess_reports_missing_device_output(tmp_path, scene, exported):
    import preprocess
    import postprocess

    work = tmp_path / "work"
    preprocess.preprocess(scene, exported["onnx"], work)
    (work / "result").mkdir()
    rc = postprocess.main([str(work), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_preprocess_rejects_missing_input(tmp_path, exported, capsys):
    import preprocess

    rc = preprocess.main([str(tmp_path / "nope.tif"), "--model", str(exported["onnx"]),
                          "--out", str(tmp_path / "w")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.tif" in err[0]


def test_scripts_are_valid_bash():
    for script in ("build.sh", "run_infer_310.sh"):
        subprocess.run(["bash", "-n", str(A310 / script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", str(A310 / "build.sh"), str(A310 / "run_infer_310.sh")],
                       check=True)


def test_run_script_usage_error():
    p = subprocess.run(["bash", str(A310 / "run_infer_310.sh")], capture_output=True, text=True)
    assert p.returncode == 2 and "usage" in p.stderr


@pytest.mark.slow
def test_host_helpers_compile_and_pass(tmp_path):
    if not shutil.which("cmake") or not shutil.which("g++"):
        pytest.skip("cmake/g++ not installed")
    b = tmp_path / "build"
    subprocess.run(["cmake", "-S", str(A310), "-B", str(b), "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(b), "-j2"], check=True, capture_output=True)
    out = subprocess.run([str(b / "test_utils")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 failed" in out.stdout


def test_main_cc_compiles_where_inference_headers_exist():
    import mindspore

    inc = Path(mindspore.__file__).parent / "include" / "api" / "model.h"
    if not inc.exists():
        pytest.skip(f"MindSpore inference headers not installed ({inc} missing: they ship with "
                    "the Ascend/MindSpore Lite C++ packages, not the CPU wheel)")
    subprocess.run(["g++", "-std=c++17", "-fsyntax-only", f"-I{inc.parents[2]}",
                    f"-I{A310 / 'inc'}", str(A310 / "src" / "main.cc")], check=True)
