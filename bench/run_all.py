"""`make bench`: inference backends, pipeline overhead and memory, in one table.

    PATH=.venv/bin:$PATH .venv/bin/python bench/run_all.py [--quick] [--networks a,b] [--out FILE]

Per network (random weights; speed does not depend on them): ms per tile and km²/hour at 0.3 m
and 1 m ground resolution for MindSpore (PyNative, the checkpoint) and ONNX Runtime (the same
network exported), FLOPs per tile counted on the ONNX graph and the fraction of this CPU's fp32
peak reached; then the extraction pipeline's time over a synthetic scene against the backend's
bare inference time over the same tiles (overhead ratio), and the peak memory of an extraction
of a 5000x5000 synthetic GeoTIFF (and 20000x20000 without --quick) in a child process.
The MindSpore conv throughput check (bench_conv.py) runs first.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from _table import machine, table, today  # noqa: E402

PEAK_GFLOPS = 430.0  # 2 AVX-512 cores, fp32: ~400-450 GFLOP/s (ONNX Runtime reached ~430)


def onnx_flops(path: Path) -> float:
    """2 x multiply-accumulates of every Conv/ConvTranspose/Gemm/MatMul in an ONNX graph."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    inits = {i.name: list(i.dims) for i in g.initializer}
    flops = 0.0
    for n in g.node:
        if n.op_type in ("Conv", "ConvTranspose"):
            w = inits.get(n.input[1]) or shapes.get(n.input[1])
            out = shapes.get(n.output[0])
            if not w or not out or 0 in out:
                continue
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            if n.op_type == "Conv":
                macs = np.prod(out) * w[1] * np.prod(w[2:])
            else:  # weight (Cin, Cout/g, kh, kw): each input pixel scatters Cout/g*k*k
                inp = shapes.get(n.input[0])
                if not inp or 0 in inp:
                    continue
                macs = np.prod(inp) * w[1] * np.prod(w[2:])
                group = 1
            flops += 2.0 * macs / max(group, 1) * (1 if n.op_type == "Conv" else 1)
        elif n.op_type in ("Gemm", "MatMul"):
            a = shapes.get(n.input[0]) or inits.get(n.input[0])
            b = inits.get(n.input[1]) or shapes.get(n.input[1])
            if a and b and 0 not in a and 0 not in b:
                flops += 2.0 * np.prod(a) * b[-1]
    return flops


def km2_per_hour(ms_per_tile: float, tile: int, res_m: float) -> float:
    area_km2 = (tile * res_m) ** 2 / 1e6
    return area_km2 / (ms_per_tile / 1000.0) * 3600.0


def time_fn(fn, x, repeats: int) -> float:
    fn(x)  # warm-up (graph build, allocation)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def backend_rows(networks, tiles, batches, repeats, workdir: Path):
    import mindspore as ms

    from segcore import create_model, model_info
    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.export import export_model
    from segcore.predict import MindSporePredictor, OnnxPredictor

    rows = []
    for name in networks:
        info = model_info(name)
        k = 1 if info.default_classes <= 2 else info.default_classes
        ms.set_seed(0)
        net = create_model(name, num_classes=1)
        for tile in tiles:
            meta = CheckpointMeta(model=name, num_classes=1, tile_size_px=tile, stride=info.stride)
            ckpt = save_checkpoint(net, workdir / f"{name}.ckpt", meta)
            for batch in batches:
                onnx_path = export_model(ckpt, workdir / f"{name}_{tile}_{batch}.onnx", "ONNX",
                                         input_size=(batch, 3, tile, tile), dynamic_batch=False,
                                         verify=False)
                x = np.random.rand(batch, 3, tile, tile).astype(np.float32)
                msp = MindSporePredictor(net, meta=meta)
                oxp = OnnxPredictor(str(onnx_path), meta=meta)
                t_ms = time_fn(msp.predict_batch, x, repeats) / batch
                t_ox = time_fn(oxp.predict_batch, x, repeats) / batch
                gflop = onnx_flops(Path(onnx_path)) / batch / 1e9
                for backend, t in (("mindspore", t_ms), ("onnxruntime", t_ox)):
                    rows.append([name, tile, batch, backend, t, km2_per_hour(t, tile, 0.3),
                                 km2_per_hour(t, tile, 1.0), gflop,
                                 100.0 * gflop / (t / 1000.0) / PEAK_GFLOPS])
        del k
    return rows


def write_scene(path: Path, size: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    prof = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                crs="EPSG:32611", transform=from_origin(660000, 4010000, 0.5, 0.5), tiled=True,
                blockxsize=512, blockysize=512, compress="deflate")
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **prof) as dst:
        for _, win in dst.block_windows(1):
            h, w = int(win.height), int(win.width)
            data = rng.integers(0, 255, (3, h, w), dtype=np.uint8)
            dst.write(data, window=win)


def pipeline_overhead(workdir: Path, network: str, tile: int, size: int):
    """End-to-end extraction time vs bare ONNX inference over the same number of tiles."""
    import rasterio  # noqa: F401

    from app.service.extraction import ExtractionRequest, run_extraction
    from segcore import create_model, model_info
    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.export import export_model
    from segcore.predict import OnnxPredictor

    info = model_info(network)
    meta = CheckpointMeta(model=network, num_classes=1, tile_size_px=tile, stride=info.stride)
    ckpt = save_checkpoint(create_model(network, num_classes=1), workdir / "pipe.ckpt", meta)
    onnx_path = export_model(ckpt, workdir / "pipe.onnx", "ONNX", input_size=(2, 3, tile, tile),
                             dynamic_batch=False, verify=False)
    scene = workdir / "scene.tif"
    write_scene(scene, size)
    res = run_extraction(ExtractionRequest(image=str(scene), out_dir=str(workdir / "pipe_out"),
                                           checkpoint=str(onnx_path), backend="onnx",
                                           tile_size_px=tile, overlap_px=tile // 8,
                                           batch_size=2, overwrite=True))
    if not res.ok:
        raise RuntimeError(res.error)
    tiles = int(res.summary["tiles"])
    pred = OnnxPredictor(str(onnx_path), meta=meta)
    x = np.random.rand(2, 3, tile, tile).astype(np.float32)
    bare = time_fn(pred.predict_batch, x, 2) / 1000.0 * (tiles / 2.0)
    t = res.summary["timings_s"]
    pipe = float(t["infer"]) + float(t.get("mosaic", 0.0))
    return [network, f"{size}x{size}", tiles, bare, pipe, pipe / bare,
            float(t["vectorize"]), float(t["total"])]


CHILD = r"""
import sys, numpy as np
from app.service.extraction import ExtractionRequest, run_extraction
def fn(b):  # no road anywhere: measures reading, mosaicking and writing, not vectorizing noise
    return np.zeros((b.shape[0], 1) + b.shape[2:], np.float32)
r = run_extraction(ExtractionRequest(image=sys.argv[1], out_dir=sys.argv[2], predict_fn=fn,
    tile_size_px=512, overlap_px=64, batch_size=4, overwrite=True))
print("ok" if r.ok else r.error)
"""


def peak_memory(workdir: Path, size: int):
    """Peak RSS (MB) of an extraction of a size x size raster with a cheap predict_fn, polled
    every 50 ms on the child process (its threads included)."""
    import psutil

    scene = workdir / f"mem_{size}.tif"
    write_scene(scene, size)
    t0 = time.perf_counter()
    log_path = workdir / f"mem_{size}.log"
    log_f = open(log_path, "w+", encoding="utf-8")  # a file, not a pipe: a full pipe would block
    proc = psutil.Popen([sys.executable, "-c", CHILD, str(scene), str(workdir / f"mem_out_{size}")],
                        stdout=log_f, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    proc.wait()
    dt = time.perf_counter() - t0
    log_f.close()
    lines = [ln for ln in log_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    scene.unlink(missing_ok=True)
    status = lines[-1][:120] if lines else f"exit {proc.returncode}"
    return [f"{size}x{size}", size * size * 3 / 1e6, peak / 2**20, dt, status]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tile 512, batch 1, two networks")
    ap.add_argument("--networks", default=None)
    ap.add_argument("--out", default=None, help="also append the tables to this markdown file")
    args = ap.parse_args()
    import onnxruntime
    import mindspore

    nets = (args.networks.split(",") if args.networks else
            (["ddrnet23_slim", "dlinknet34"] if args.quick else
             ["enet", "ddrnet23_slim", "ddrnet23", "dlinknet34", "deeplabv3_resnet101"]))
    tiles = [512] if args.quick else [512, 1024]
    batches = [1] if args.quick else [1, 4]
    out = [f"## Inference benchmarks ({today()})", "",
           f"Machine: {machine()}. MindSpore {mindspore.__version__}, ONNX Runtime "
           f"{onnxruntime.__version__}. Peak fp32 of this CPU ~{PEAK_GFLOPS:.0f} GFLOP/s.", ""]
    conv = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "bench_conv.py"),
                           "--check"], capture_output=True, text=True)
    out += ["### MindSpore conv check", "", conv.stdout.strip(), ""]
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d)
        rows = backend_rows(nets, tiles, batches, 2 if args.quick else 3, wd)
        out += ["### Backends (ms per tile, random weights)", "", table(
            ["network", "tile", "batch", "backend", "ms/tile", "km²/h @0.3 m", "km²/h @1 m",
             "GFLOP/tile", "% of peak"], rows), ""]
        pipe = pipeline_overhead(wd, nets[0], 512, 2048 if args.quick else 4096)
        out += ["### Pipeline overhead (ONNX Runtime, tile 512, overlap 64, batch 2)", "", table(
            ["network", "scene", "tiles", "bare inference s", "pipeline infer+mosaic s",
             "ratio", "vectorize s", "total s"], [pipe]), ""]
        sizes = [5000] if args.quick else [5000, 20000]
        mem = [peak_memory(wd, s) for s in sizes]
        out += ["### Peak memory of an extraction (cheap predict_fn, child process)", "", table(
            ["raster", "MB of pixels", "peak RSS MB", "time s", "status"], mem), ""]
    text = "\n".join(out)
    print(text)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
