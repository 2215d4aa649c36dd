"""`make bench`: the speed and memory figures of docs/benchmarks.md, in one command.

    PATH=.venv/bin:$PATH .venv/bin/python bench/run_all.py [--quick] [--networks a,b] [--out FILE]

1. The MindSpore conv throughput check (``bench_conv.py --check``: catches a slow MindSpore).
2. Per network (random weights; speed does not depend on them), tile 512/1024 and batch 1/4:
   ms per tile and km²/hour at 0.3 m and 1 m for MindSpore (PyNative), ONNX Runtime (the same
   network exported) and, where ``tests/torch_reference.py`` has the architecture and torch is
   installed, PyTorch eager as a peer figure; FLOPs per tile counted on the ONNX graph and the
   fraction of this CPU's fp32 peak reached.
3. ``roadseg extract``'s pipeline time against the bare predictor over the same tiles (the
   bundled model on a mirrored copy of the sample scene).
4. Vectorization seconds per km of centre line.
5. Peak memory of extractions of 5000x5000 and 20000x20000 synthetic GeoTIFFs (child process).
6. Seconds per training step per network on the CPU.
7. ``bench_lean.py``: the demo scene's whole ``roadseg extract`` (wall, time to first tile, peak
   RSS, MindSpore imported or not), the whole-scene stretch, int8 against fp32 per tile and
   (full run) int8 accuracy of the bundled model.

Progress goes to stderr; the report (markdown) to stdout and, with ``--out``, into that file
below its hand-written head.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

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


def time_fn(fn, x, repeats: int, budget_s: float = 20.0) -> float:
    """Best wall time in ms of ``fn(x)`` after one warm-up call (graph build, allocation); at
    most ``repeats`` timed calls, fewer once ``budget_s`` is spent (the big networks)."""
    fn(x)
    best = float("inf")
    spent = 0.0
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn(x)
        dt = time.perf_counter() - t0
        best = min(best, dt)
        spent += dt
        if spent > budget_s:
            break
    return best * 1000.0


#: networks whose tile 1024 / batch 4 case is left out (ResNet-101 at 1024 px x 4 needs minutes
#: per call and >10 GB on this machine; per-tile time hardly changes with the batch on a CPU)
HEAVY = {"deeplabv3_resnet101", "deeplabv3_resnet101_os8", "dgcnet_resnet101"}
ALL_SEGMENTATION = ["enet", "ddrnet23_slim", "ddrnet23", "dlinknet34", "dlinknet50",
                    "deeplabv3_resnet101", "deeplabv3_resnet101_os8", "dgcnet_resnet101"]


#: (network, tile, batch) cases whose MindSpore PyNative figure is not measured: one call of
#: D-LinkNet-34 at 1024 px x 4 had not finished after 27 minutes on this machine (MindSpore
#: 2.8.0 CPU; batch 1 takes 2 s per tile), so they would stall the whole run
MS_SKIP = {("dlinknet34", 1024, 4), ("dlinknet50", 1024, 4)}


def cases(name: str, tiles, batches):
    for tile in tiles:
        for batch in batches:
            if name in HEAVY and batch > 1:
                continue
            yield tile, batch


def torch_peer(name: str):
    """The PyTorch eager network of ``tests/torch_reference.py`` with the same architecture, or
    ``None`` (no reference written, or torch not installed: it is a test-only dependency)."""
    try:
        import torch
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import torch_reference as tr
    except ImportError:
        return None
    torch.manual_seed(0)
    make = {"dlinknet34": lambda: tr.DinkNet34(num_classes=1),
            "enet": lambda: tr.TorchENet(num_classes=1),
            "ddrnet23_slim": lambda: tr.DualResNet(num_classes=1, planes=32, spp_planes=128,
                                                   head_planes=64),
            "ddrnet23": lambda: tr.DualResNet(num_classes=1, planes=64, spp_planes=128,
                                              head_planes=128),
            "dgcnet_resnet101": lambda: tr.DualSeg((3, 4, 23, 3), num_classes=1)}.get(name)
    if make is None:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return make().eval(), torch


def _torch_fn(model, torch):
    def run(x):
        with torch.no_grad():
            out = model(torch.from_numpy(x))
            return out[0] if isinstance(out, (tuple, list)) else out
    return run


def backend_rows(networks, tiles, batches, repeats, workdir: Path, log=print):
    import mindspore as ms

    from segcore import create_model, model_info
    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.export import export_model
    from segcore.predict import MindSporePredictor, OnnxPredictor

    rows = []
    for name in networks:
        info = model_info(name)
        ms.set_seed(0)
        net = create_model(name, num_classes=1)
        peer = torch_peer(name)
        for tile, batch in cases(name, tiles, batches):
            meta = CheckpointMeta(model=name, num_classes=1, tile_size_px=tile, stride=info.stride)
            ckpt = save_checkpoint(net, workdir / f"{name}.ckpt", meta)
            onnx_path = export_model(ckpt, workdir / f"{name}_{tile}_{batch}.onnx", "ONNX",
                                     input_size=(batch, 3, tile, tile), dynamic_batch=False,
                                     verify=False)
            x = np.random.rand(batch, 3, tile, tile).astype(np.float32)
            gflop = onnx_flops(Path(onnx_path)) / batch / 1e9
            fns = [("mindspore", MindSporePredictor(net, meta=meta).predict_batch),
                   ("onnxruntime", OnnxPredictor(str(onnx_path), meta=meta).predict_batch)]
            if (name, tile, batch) in MS_SKIP:
                fns = fns[1:]
                rows.append([name, tile, batch, "mindspore", "not measured (>27 min per call)",
                             "", "", gflop, ""])
            if peer is not None:
                fns.append(("pytorch eager (peer)", _torch_fn(*peer)))
            for backend, fn in fns:
                t = time_fn(fn, x, repeats) / batch
                rows.append([name, tile, batch, backend, t, km2_per_hour(t, tile, 0.3),
                             km2_per_hour(t, tile, 1.0), gflop,
                             100.0 * gflop / (t / 1000.0) / PEAK_GFLOPS])
                log(f"  {name} tile {tile} batch {batch} {backend}: {t:.0f} ms/tile")
            Path(onnx_path).unlink(missing_ok=True)
    return rows


def _train_step_fn(net, loss_fn, opt, x, y):
    """One optimizer step of ``net`` on the batch ``(x, y)``: ``step(_) -> loss``."""
    import mindspore as ms

    def forward(x, y):
        return loss_fn(net(x), y)

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    def step(_):
        loss, grads = grad_fn(x, y)
        opt(grads)
        return float(loss.asnumpy())

    return step


def training_rows(networks, crop: int, batch: int, steps: int, log=print):
    """Seconds per optimizer step of ``roadseg train``'s step (PyNative, Adam, one sigmoid road
    output with BCE + Dice, the networks' auxiliary heads on) on random crops."""
    import mindspore as ms

    from segcore import create_model
    from segcore.config import TrainConfig
    from segcore.builders import build_loss, build_optimizer

    rows = []
    for name in networks:
        ms.set_seed(0)
        cfg = TrainConfig(model=name, num_classes=1, loss="bce_dice")
        net = create_model(name, num_classes=1)
        net.set_train(True)
        loss_fn = build_loss(cfg, "segmentation", None)
        opt = build_optimizer(cfg, net.trainable_params(), 1e-4)
        rng = np.random.default_rng(0)
        x = ms.Tensor(rng.standard_normal((batch, 3, crop, crop)).astype(np.float32))
        y = ms.Tensor((rng.random((batch, crop, crop)) < 0.1).astype(np.int32))
        step = _train_step_fn(net, loss_fn, opt, x, y)
        t = time_fn(step, None, steps, budget_s=60.0) / 1000.0
        rows.append([name, f"{batch}x3x{crop}x{crop}", t, batch / t])
        log(f"  train {name}: {t:.2f} s/step")
    return rows


def synthetic_road_mask(size: int, seed: int = 0) -> np.ndarray:
    """A road-like mask: a street grid with gaps, diagonal avenues and curves, 12-20 px wide."""
    import cv2

    rng = np.random.default_rng(seed)
    m = np.zeros((size, size), np.uint8)
    step = 400
    for k in range(step // 2, size, step):
        w = int(rng.integers(12, 20))
        a, b = sorted(rng.integers(0, size, 2))
        cv2.line(m, (0, k), (size - 1, k), 1, w)
        cv2.line(m, (k, 0), (k, a), 1, w)
        cv2.line(m, (k, b), (k, size - 1), 1, w)
    for _ in range(size // 1000):
        p = rng.integers(0, size, 4)
        cv2.line(m, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), 1, 16)
        c = rng.integers(0, size, 2)
        cv2.ellipse(m, (int(c[0]), int(c[1])), (int(rng.integers(200, 800)),) * 2, 0, 0,
                    int(rng.integers(90, 270)), 1, 14)
    return m


def vectorize_rows(sizes, res_m: float = 0.5, log=print):
    """Time of :func:`gis.vectorize.vectorize_mask` per km of extracted centre line."""
    from rasterio.transform import from_origin

    from gis.vectorize import vectorize_mask

    rows = []
    for size in sizes:
        m = synthetic_road_mask(size)
        t0 = time.perf_counter()
        net = vectorize_mask(m, from_origin(660000, 4010000, res_m, res_m), "EPSG:32611")
        dt = time.perf_counter() - t0
        km = float(net.edges["length_m"].sum()) / 1000.0
        rows.append([f"{size}x{size} @{res_m} m", (size * res_m / 1000.0) ** 2, km,
                     len(net.edges), dt, dt / km if km else float("nan")])
        log(f"  vectorize {size}: {km:.1f} km in {dt:.1f} s")
    return rows


def write_scene(path: Path, width: int, height: Optional[int] = None) -> None:
    import rasterio
    from rasterio.transform import from_origin

    prof = dict(driver="GTiff", width=width, height=height or width, count=3, dtype="uint8",
                crs="EPSG:32611", transform=from_origin(660000, 4010000, 0.5, 0.5), tiled=True,
                blockxsize=512, blockysize=512)  # uncompressed: quick to write at 20000 px
    # dark noise crossed by bright roads (a 256 m grid and diagonals, continuous across blocks);
    # the memory benchmark's stand-in network finds them by brightness
    block = np.random.default_rng(0).integers(0, 120, (3, 512, 512), dtype=np.uint8)
    block[:, 100:116] = 250
    block[:, :, 300:316] = 250
    for i in range(512):
        block[:, i, max(0, i - 8):i + 8] = 250
    with rasterio.open(path, "w", **prof) as dst:
        for _, win in dst.block_windows(1):
            dst.write(block[:, :int(win.height), :int(win.width)], window=win)


ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
DEMO_CKPT = ROOT / "resources" / "models" / "road_demo.ckpt"


def mirrored_scene(src_path: Path, dst: Path, reps: int) -> None:
    """A ``reps x reps`` mirror tiling of a real scene (no seams), same CRS and pixel size."""
    import rasterio

    with rasterio.open(src_path) as src:
        a = src.read([1, 2, 3])
        prof = src.profile.copy()
    rows = []
    for i in range(reps):
        row = [a[:, ::-1 if i % 2 else 1, ::-1 if j % 2 else 1] for j in range(reps)]
        rows.append(np.concatenate(row, axis=2))
    big = np.ascontiguousarray(np.concatenate(rows, axis=1))
    prof.update(count=3, width=big.shape[2], height=big.shape[1], tiled=True, blockxsize=512,
                blockysize=512, compress="deflate", driver="GTiff")
    prof.pop("photometric", None)
    with rasterio.open(dst, "w", **prof) as out:
        out.write(big)


def bare_seconds(ckpt: Path, tile: int, batch: int, n_batches: int) -> float:
    """The network's own time for ``n_batches`` batches of random input: the faster of one call
    at a time using all cores and (as the pipeline runs it) concurrent calls sharing them."""
    from segcore.predict import concurrent_call_threads, load_predictor

    x = np.random.rand(batch, 3, tile, tile).astype(np.float32)
    seq = load_predictor(str(ckpt), backend="onnx", input_hw=(tile, tile))
    bare = time_fn(seq.predict_batch, x, 5) / 1000.0 * n_batches
    par = load_predictor(str(ckpt), backend="onnx", input_hw=(tile, tile),
                         threads=concurrent_call_threads())
    k = par.parallel_calls
    if k > 1:
        with ThreadPoolExecutor(k) as pool:
            list(pool.map(par.predict_batch, [x] * k))  # warm-up
            t0 = time.perf_counter()
            list(pool.map(par.predict_batch, [x] * n_batches))
            bare = min(bare, time.perf_counter() - t0)
    return bare


def pipeline_overhead(workdir: Path, reps: int, tile: int = 512, batch: int = 2, log=print):
    """``run_extraction`` (the bundled model, ONNX Runtime, the CLI's defaults otherwise) over a
    mirrored copy of the sample scene, against the bare predictor over the same tiles."""
    from app.service.extraction import ExtractionRequest, run_extraction

    scene = workdir / "scene.tif"
    mirrored_scene(SAMPLE, scene, reps)
    req = dict(image=str(scene), checkpoint=str(DEMO_CKPT), backend="onnx", tile_size_px=tile,
               batch_size=batch, overwrite=True)
    run_extraction(ExtractionRequest(out_dir=str(workdir / "warm"), **req))  # export + caches
    res = run_extraction(ExtractionRequest(out_dir=str(workdir / "pipe_out"), **req))
    if not res.ok:
        raise RuntimeError(res.error)
    summ = res.summary
    tiles = int(summ["tiles"])
    bare = bare_seconds(DEMO_CKPT, tile, batch, -(-tiles // batch))
    t = summ["timings_s"]
    raster = float(t["infer"]) + float(t.get("mosaic", 0.0))
    km = float(summ.get("road_km") or 0.0)
    inner = summ.get("inference_timings_s", {})
    log(f"  pipeline: {tiles} tiles, bare {bare:.1f} s, infer+mosaic {raster:.1f} s ({inner})")
    return ["road_demo (ddrnet23_slim)", f"{summ['window'][2]}x{summ['window'][3]}", tiles, bare,
            raster, raster / bare, float(inner.get("predict", float("nan"))),
            float(inner.get("cog", float("nan"))), float(t["read"]), float(t["vectorize"]),
            float(t["write"]), float(t["total"]), km]


def raster_pipeline_overhead(workdir: Path, name: str, tile: int = 512, batch: int = 2,
                             log=print):
    """The raster part of the pipeline (``gis.inference.run_tiled_inference``: reading,
    normalising, inference, blending, COGs) with a heavier network (random weights, so no
    vectorization), on the mirrored scene written by :func:`pipeline_overhead`."""
    import mindspore as ms

    from gis.inference import run_tiled_inference
    from segcore import create_model, model_info
    from segcore.checkpoint import CheckpointMeta, save_checkpoint
    from segcore.predict import concurrent_call_threads, load_predictor

    scene = workdir / "scene.tif"
    ms.set_seed(0)
    meta = CheckpointMeta(model=name, num_classes=1, tile_size_px=tile,
                          stride=model_info(name).stride)
    ckpt = save_checkpoint(create_model(name, num_classes=1), workdir / f"pipe_{name}.ckpt", meta)
    pred = load_predictor(str(ckpt), backend="onnx", input_hw=(tile, tile),
                          threads=concurrent_call_threads())
    norm = {"method": "uint8", "mean": [0.5], "std": [0.25]}
    kw = dict(tile_size_px=tile, overlap_px=tile // 8, batch_size=batch, normalize=norm,
              overwrite=True, inference_workers=pred.parallel_calls)
    out = [workdir / "p_prob.tif", workdir / "p_mask.tif"]
    t0 = time.perf_counter()
    res = run_tiled_inference(scene, pred.predict_batch, *out, **kw)
    raster = time.perf_counter() - t0
    bare = bare_seconds(ckpt, tile, batch, -(-res.tiles // batch))
    log(f"  raster pipeline {name}: {res.tiles} tiles, bare {bare:.1f} s, pipeline {raster:.1f} s "
        f"({res.timings})")
    nan = float("nan")
    return [f"{name} (random weights)", f"{res.width}x{res.height}", res.tiles, bare, raster,
            raster / bare, float(res.timings.get("predict", nan)),
            float(res.timings.get("cog", nan)), nan, nan, nan, nan, nan]


CHILD = r"""
import sys, numpy as np, psutil
from pathlib import Path
from app.service.extraction import ExtractionRequest, run_extraction
from gis.inference import run_tiled_inference
print("imported_rss", psutil.Process().memory_info().rss, flush=True)
def fn(b):  # no road anywhere: measures reading, mosaicking and writing
    return np.zeros((b.shape[0], 1) + b.shape[2:], np.float32)
def roads(b):  # the scene's bright roads (any monotonic normalisation keeps them brightest)
    m = b.mean(axis=1, keepdims=True)
    lo = m.min(axis=(1, 2, 3), keepdims=True); hi = m.max(axis=(1, 2, 3), keepdims=True)
    return (m - lo > 0.75 * (hi - lo)).astype(np.float32)
if sys.argv[3] == "raster":  # the raster stage alone: reading, tiling, blending, COGs
    out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
    run_tiled_inference(sys.argv[1], fn, out / "p.tif", out / "m.tif", tile_size_px=512,
                        overlap_px=64, batch_size=4, normalize="uint8", overwrite=True)
    print("ok")
else:  # the whole extraction, vectorization of the road grid included
    r = run_extraction(ExtractionRequest(image=sys.argv[1], out_dir=sys.argv[2], predict_fn=roads,
        tile_size_px=512, overlap_px=64, batch_size=4, overwrite=True))
    print(f"ok, {r.summary.get('road_km', 0):.0f} km of road" if r.ok else r.error)
"""


def peak_memory(workdir: Path, size: int, mode: str = "extract", height: Optional[int] = None):
    """Peak RSS (MB) of an extraction of a ``size`` x ``height`` (default square) raster with a
    cheap predict_fn, polled every 50 ms on the child process (its threads included)."""
    import psutil

    height = height or size
    tag = f"{size}x{height}"
    scene = workdir / f"mem_{tag}.tif"
    write_scene(scene, size, height)
    t0 = time.perf_counter()
    log_path = workdir / f"mem_{tag}.log"
    log_f = open(log_path, "w+", encoding="utf-8")  # a file, not a pipe: a full pipe would block
    proc = psutil.Popen([sys.executable, "-c", CHILD, str(scene), str(workdir / f"mem_out_{tag}"),
                         mode],
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
    base = next((int(ln.split()[1]) for ln in lines if ln.startswith("imported_rss")), 0)
    return [{"raster": "raster stage", "extract": "whole extraction"}[mode], tag,
            size * height * 3 / 1e6, base / 2**20, peak / 2**20,
            (peak - base) / 2**20, dt, status]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tile 512 batch 1, two networks, small scenes (a few minutes)")
    ap.add_argument("--networks", default=None, help="comma-separated network names")
    ap.add_argument("--out", default=None,
                    help="write the report to this markdown file (make bench: "
                         "docs/benchmarks.md, keeping its hand-written head)")
    args = ap.parse_args()
    import mindspore
    import onnxruntime

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    nets = (args.networks.split(",") if args.networks else
            (["ddrnet23_slim", "dlinknet34"] if args.quick else ALL_SEGMENTATION))
    tiles = [512] if args.quick else [512, 1024]
    batches = [1] if args.quick else [1, 4]
    t_start = time.perf_counter()
    out = [f"## Measured {today()} (`bench/run_all.py{' --quick' if args.quick else ''}`)", "",
           f"Machine: {machine()}. MindSpore {mindspore.__version__}, ONNX Runtime "
           f"{onnxruntime.__version__}" + _torch_version() + ". Peak fp32 of this CPU "
           f"~{PEAK_GFLOPS:.0f} GFLOP/s (2 cores x AVX-512; ONNX Runtime reached ~430 on "
           "ResNet-34 at 1024 px).", ""]
    log("MindSpore conv check")
    conv = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__),
                                                        "bench_conv.py"), "--check"],
                          capture_output=True, text=True)
    out += ["### MindSpore conv throughput check (`bench_conv.py --check`)", "",
            conv.stdout.strip(), ""]
    with tempfile.TemporaryDirectory() as d:
        wd = Path(d)
        log("inference backends")
        rows = backend_rows(nets, tiles, batches, 2 if args.quick else 3, wd, log)
        out += ["### Inference per tile (random weights; one sigmoid output)", "",
                "`% of peak` = GFLOP per tile (convolutions and matrix products counted on the "
                "ONNX graph) / time / peak. km²/h: tiles of that size without overlap.", "",
                table(["network", "tile", "batch", "backend", "ms/tile", "km²/h @0.3 m",
                       "km²/h @1 m", "GFLOP/tile", "% of peak"], rows), ""]
        log("pipeline overhead")
        pipe = [pipeline_overhead(wd, 2 if args.quick else 4, log=log),
                raster_pipeline_overhead(wd, "dlinknet34", log=log)]
        out += ["### Pipeline overhead: `roadseg extract` vs bare inference", "",
                "ONNX Runtime, tile 512, overlap 64, batch 2, on a mirrored copy of the sample "
                "scene: the bundled model through the whole `roadseg extract` pipeline, and "
                "D-LinkNet-34 (a usual road network, ~6x the bundled model's compute) through "
                "its raster part. `ratio` = tiling + reading + normalising + inference + "
                "blending + COG writing, over the bare network's time for the same number of "
                "batches (the faster of one all-cores call at a time and one call per core pair "
                "in parallel; target <= 1.15); `of which predict` is the network's own time "
                "inside the pipeline (it shares the two cores with the reader and the blender). "
                "Model loading, vectorising and vector writing are shown apart.", "",
                table(["network", "scene px", "tiles", "bare inference s", "infer+mosaic s",
                       "ratio", "of which predict s", "of which COG s", "read+load s",
                       "vectorize s", "vector write s", "total s", "road km"], pipe), ""]
        log("vectorization")
        vec = vectorize_rows([4000] if args.quick else [4000, 10000], log=log)
        out += ["### Vectorization (`gis.vectorize.vectorize_mask`, synthetic road mask)", "",
                table(["mask", "km²", "road km", "edges", "s", "s per km"], vec), ""]
        log("peak memory")
        # square rasters, and a tall one as wide as the small square: memory follows the width
        # (rows of tiles, strips of the mask) and the km of road, not the area
        sizes = [(5000, 5000)] if args.quick else [(5000, 5000), (5000, 20000), (20000, 20000)]
        mem = [peak_memory(wd, w, m, h) for m in ("raster", "extract") for w, h in sizes]
        out += ["### Peak memory of an extraction (child process, stand-in network)", "",
                "A synthetic 3-band uint8 GeoTIFF at 0.5 m: dark noise crossed by bright roads "
                "(a 256 m grid and diagonals, ~13 km per km²). The network is replaced by a cheap "
                "function so that only the pipeline's own memory is measured (must not grow "
                "with the raster's area).", "",
                "`raster stage`: `gis.inference.run_tiled_inference` alone, the function returning "
                "zeros (reading, tiling, blending, COGs); `whole extraction`: `run_extraction` "
                "with a function that finds the bright roads, so the strip-wise vectorization "
                "traces the whole grid (its network grows with the km of road).", "",
                table(["stage", "raster", "MB of pixels", "RSS after imports MB", "peak RSS MB",
                       "peak - imports MB", "time s", "status"], mem), ""]
        log("lean CPU inference: demo whole run, stretch, int8")
        from bench_lean import lean_sections

        out += lean_sections(wd, runs=2 if args.quick else 3, int8=True,
                             accuracy=not args.quick, log=log)
        log("training steps")
        tr = training_rows(nets, 256, 2, 2 if args.quick else 3, log)
        out += ["### Training step on the CPU (PyNative, Adam, BCE + Dice, random crops)", "",
                table(["network", "batch", "s/step", "images/s"], tr), ""]
    out += [f"Whole run: {time.perf_counter() - t_start:.0f} s.", ""]
    text = "\n".join(out)
    print(text)
    if args.out:
        write_report(Path(args.out), text)
    return 0


def _torch_version() -> str:
    try:
        import torch
        return f", PyTorch {torch.__version__} (peer figures)"
    except ImportError:
        return ", PyTorch not installed (no peer figures)"


MARK = "<!-- bench/run_all.py writes below this line -->"


def write_report(path: Path, text: str) -> None:
    """Replace what follows :data:`MARK` in ``path`` with ``text`` (written to a temporary name
    and renamed); the hand-written part above the mark is kept."""
    head = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    head = head.split(MARK)[0].rstrip() + "\n\n" + MARK + "\n\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(head + text.rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
