"""Seconds of ``gis.evaluate.apls`` on the CosmiQ sample graphs and on synthetic street grids the
size of a 1300x1300 px scene at 0.3 m and 1 m and of a 3 km square.

    .venv/bin/python bench/bench_apls.py [--repeat N]

A grid has streets every ``block`` metres joined at shared vertices; its "proposal" is the same
grid moved by (1.5 m, -1 m) with one block side in seven cut (a 20 m gap), so both halves of
APLS have unsnapped points and broken paths to score. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import geopandas as gpd  # noqa: E402
from shapely.geometry import LineString  # noqa: E402

from _table import machine, table, today  # noqa: E402
from gis.evaluate import apls  # noqa: E402

SAMPLE = (Path(__file__).resolve().parents[2] / "shared" / "data" / "graphs" / "apls_sample"
          / "gt_json_prop_json" / "AOI_2_Vegas_Train")
UTM = "EPSG:32611"


def grid(size_m: float, block_m: float, cut_every: int = 0, dx: float = 0.0, dy: float = 0.0):
    """Street grid over a ``size_m`` square: one LineString per block side."""
    n = int(size_m // block_m) + 1
    x0, y0 = 660000.0 + dx, 4010000.0 + dy
    lines, k = [], 0
    for i in range(n):
        for j in range(n):
            p = (x0 + i * block_m, y0 + j * block_m)
            for q in ((p[0] + block_m, p[1]), (p[0], p[1] + block_m)):
                if q[0] > x0 + size_m + 1e-6 or q[1] > y0 + size_m + 1e-6:
                    continue
                k += 1
                if cut_every and k % cut_every == 0:
                    mx, my = (p[0] + q[0]) / 2, (p[1] + q[1]) / 2
                    ux, uy = (q[0] - p[0]) / block_m, (q[1] - p[1]) / block_m
                    lines.append(LineString([p, (mx - 10 * ux, my - 10 * uy)]))
                    lines.append(LineString([(mx + 10 * ux, my + 10 * uy), q]))
                else:
                    lines.append(LineString([p, q]))
    return gpd.GeoSeries(lines, crs=UTM)


def timed(pred, ref, repeat: int):
    best, s = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        s = apls(pred, ref)
        best = min(best, time.perf_counter() - t)
    return s, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    rows = []
    if SAMPLE.is_dir():
        for n in (99, 990, 991, 995, 997, 998, 999):
            ref = gpd.read_file(SAMPLE / "spacenetroads" / f"AOI_2_Vegas_img{n}.geojson")
            pred = gpd.read_file(SAMPLE / "osm" / f"AOI_2_Vegas_img{n}.geojson")
            s, sec = timed(pred, ref, a.repeat)
            rows.append([f"SpaceNet img{n} vs OSM", f"{s.gt_length_m / 1000:.1f}",
                         f"{s.gt_control_points} / {s.prop_control_points}",
                         f"{s.gt_pairs + s.prop_pairs:,}", f"{s.apls:.3f}", f"{sec:.2f}"])
    for name, size, block in (("grid 390 m (1300 px at 0.3 m), 80 m blocks", 390, 80),
                              ("grid 1.3 km (1300 px at 1 m), 100 m blocks", 1300, 100),
                              ("grid 3 km, 100 m blocks", 3000, 100)):
        ref = grid(size, block)
        pred = grid(size, block, cut_every=7, dx=1.5, dy=-1.0)
        s, sec = timed(pred, ref, a.repeat if size < 2000 else 1)
        rows.append([name, f"{s.gt_length_m / 1000:.1f}",
                     f"{s.gt_control_points} / {s.prop_control_points}",
                     f"{s.gt_pairs + s.prop_pairs:,}", f"{s.apls:.3f}", f"{sec:.2f}"])
    print(f"### APLS ({today()}, {machine()})\n")
    print(table(["graphs", "reference km", "control points (ref / pred)", "pairs scored",
                 "APLS", "seconds"], rows))


if __name__ == "__main__":
    main()
