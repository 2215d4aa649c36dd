"""`roadseg batch` throughput on local Dask clusters, and the cost of joining networks.

    PATH=.venv/bin:$PATH .venv/bin/python bench/bench_batch.py [--scenes N] [--workers 1,2]

1. Scenes per hour and km²/h: N copies of the sample scene (1300² px at 0.3 m, the bundled
   model) run by ``app.service.batch.run_batch`` on a fresh ``LocalCluster`` of 1 and of 2
   single-threaded worker processes. ``wall`` includes starting the cluster and the workers'
   imports; ``steady`` is scenes per hour of worker time (workers x 3600 / mean seconds per
   scene), what a long batch approaches.
2. Joining: :func:`gis.merge.merge_networks` on a synthetic road grid (100 m spacing plus
   diagonals) cut into 2 x 2 .. 6 x 6 overlapping scenes: seconds per km of road and the
   growth of the process's peak memory.
3. Seams: the sample scene cut into four overlapping GeoTIFFs on the model's tile grid, run as
   a batch (the whole scene's stretch for every run) against the whole scene: km of road.

Prints markdown tables (docs/benchmarks.md, section "Batch on Dask").
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_v", "3")

from _table import machine, table, today  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"


def bench_batch(n_scenes: int, workers: list) -> list:
    from app.service.batch import BatchRequest, run_batch
    from app.service.extraction import ExtractionRequest

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ins = Path(tmp) / "in"
        ins.mkdir()
        for i in range(n_scenes):
            shutil.copy(DEMO, ins / f"scene{i:02d}.tif")
        for w in workers:
            out = Path(tmp) / f"out{w}"
            t0 = time.perf_counter()
            res = run_batch(BatchRequest(inputs=(str(ins),), out_dir=str(out), workers=w,
                                         extraction=ExtractionRequest(image="", out_dir="")))
            wall = time.perf_counter() - t0
            t = res.summary["totals"]
            per_scene = [s["time_s"] for s in res.summary["scenes"] if s["state"] == "done"]
            mean_s = sum(per_scene) / len(per_scene)
            area = t["area_km2_run"]
            rows.append([w, t["done"], f"{area:.3f}", f"{wall:.1f}",
                         f"{t['done'] / wall * 3600:.0f}", f"{area / wall * 3600:.2f}",
                         f"{mean_s:.1f}", f"{w * 3600 / mean_s:.0f}",
                         f"{w * 3600 / mean_s * area / t['done']:.2f}",
                         f"{res.summary['merged']['time_s']:.2f}"])
            print(f"  {w} worker(s): {wall:.1f} s", file=sys.stderr)
    return rows


def _grid_parts(k: int, scene_m: float = 1000.0, overlap_m: float = 100.0, spacing: float = 100.0):
    """Parts of a k x k grid of scenes over a road grid; each part has the roads of its footprint
    (split at every crossing, as a vectorized network is), slightly shifted per scene."""
    import geopandas as gpd
    from shapely.geometry import LineString, box

    from gis.merge import NetworkPart

    x0, y0 = 600000.0, 4000000.0
    size = k * scene_m
    lines = []
    n = int(size / spacing)
    for i in range(n + 1):
        c = i * spacing + 7.0
        for j in range(n):
            a, b = j * spacing + 7.0, (j + 1) * spacing + 7.0
            lines.append(LineString([(x0 + c, y0 + a), (x0 + c, y0 + b)]))
            lines.append(LineString([(x0 + a, y0 + c), (x0 + b, y0 + c)]))
    lines.append(LineString([(x0, y0), (x0 + size, y0 + size)]))
    roads = gpd.GeoDataFrame(geometry=lines, crs="EPSG:32611")
    parts = []
    for r in range(k):
        for c in range(k):
            fp = box(x0 + c * scene_m - (overlap_m / 2 if c else 0),
                     y0 + r * scene_m - (overlap_m / 2 if r else 0),
                     x0 + (c + 1) * scene_m + (overlap_m / 2 if c < k - 1 else 0),
                     y0 + (r + 1) * scene_m + (overlap_m / 2 if r < k - 1 else 0))
            e = roads.clip(fp).explode(ignore_index=True)
            e = e[e.geom_type == "LineString"]
            e["geometry"] = e.geometry.translate(0.3 * ((r + c) % 3), -0.2 * (c % 2))
            parts.append(NetworkPart(e.reset_index(drop=True), fp, f"s{r}{c}"))
    return parts, float(roads.length.sum() / 1000.0)


def _peak_rss_during(fn):
    """``(result, peak RSS growth in MB)`` of ``fn()``: RSS sampled every 10 ms meanwhile."""
    import threading

    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.01)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        result = fn()
    finally:
        stop.set()
        t.join()
    return result, (max(peak[0], proc.memory_info().rss) - base) / 2**20


def bench_merge(ks=(2, 4, 6)) -> list:
    from gis.merge import merge_networks

    rows = []
    for k in ks:
        parts, km = _grid_parts(k)
        edges = sum(len(p.edges) for p in parts)
        t0 = time.perf_counter()
        m, grew = _peak_rss_during(lambda parts=parts: merge_networks(parts, snap_m=6.0))
        dt = time.perf_counter() - t0
        rows.append([f"{k}x{k}", f"{km:.0f}", edges, len(m.edges), m.stats["joined_pairs"],
                     f"{dt:.2f}", f"{dt / km:.4f}", f"{grew:.0f}"])
        print(f"  merge {k}x{k}: {dt:.2f} s", file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=4)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--skip-batch", action="store_true")
    args = ap.parse_args()
    print(f"## Batch on Dask (`bench/bench_batch.py`), {today()}\n")
    print(f"Machine: {machine()}.\n")
    if not args.skip_batch:
        rows = bench_batch(args.scenes, [int(w) for w in args.workers.split(",")])
        print(table(["workers", "scenes", "km²", "wall s", "scenes/h (wall)", "km²/h (wall)",
                     "s per scene (worker)", "scenes/h (steady)", "km²/h (steady)",
                     "join s"], rows))
        print()
    rows = bench_merge()
    print(table(["scenes", "road km", "edges in", "edges out", "seam joins", "s",
                 "s per km", "peak RSS growth MB"], rows))
    if not args.skip_batch:
        print()
        print(table(["run", "road km", "edges", "networks", "seam joins", "dangling seam ends"],
                    bench_seams()))
    return 0


def bench_seams() -> list:
    import geopandas as gpd
    import rasterio
    from rasterio.windows import Window

    from app.service.batch import BatchRequest, run_batch
    from app.service.extraction import ExtractionRequest, run_extraction
    from gis.io import compute_stretch
    from segcore.checkpoint import read_metadata
    from segcore.predict import normalization_from_meta

    meta = read_metadata(ROOT / "resources" / "models" / "road_demo.ckpt")
    norm = normalization_from_meta(meta, stretch=compute_stretch(str(DEMO), tuple(meta.bands)))
    spans = ((0, 960), (448, 1300))  # on the grid of 512 px tiles with 64 px overlap
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ins = Path(tmp) / "quads"
        ins.mkdir()
        with rasterio.open(DEMO) as ds:
            for r, (y0, y1) in enumerate(spans):
                for c, (x0, x1) in enumerate(spans):
                    win = Window(x0, y0, x1 - x0, y1 - y0)
                    prof = ds.profile.copy()
                    prof.update(width=win.width, height=win.height,
                                transform=ds.window_transform(win))
                    with rasterio.open(ins / f"q{r}{c}.tif", "w", **prof) as o:
                        o.write(ds.read(window=win))
        whole = run_extraction(ExtractionRequest(image=str(DEMO), out_dir=f"{tmp}/whole",
                                                 normalization=norm))
        s = whole.summary
        rows.append(["whole scene", f"{s['road_km']:.3f}", s["edges"], s["components"], "", ""])
        res = run_batch(BatchRequest(inputs=(str(ins),), out_dir=f"{tmp}/batch", workers=2,
                                     extraction=ExtractionRequest(image="", out_dir="",
                                                                  normalization=norm)))
        m = res.summary["merged"]
        e = gpd.read_file(m["path"], layer="edges")
        rows.append(["4 cuts, joined", f"{m['road_km']:.3f}", len(e), m["components"],
                     m["join"]["joined_pairs"], m["join"]["dangling_seam_ends"]])
        rows.append(["4 cuts, sum of scenes", f"{res.summary['totals']['road_km']:.3f}", "", "",
                     "", ""])
    return rows


if __name__ == "__main__":
    sys.exit(main())
