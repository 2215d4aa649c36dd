"""MindSpore CPU convolution throughput: the check that catches a slow MindSpore build.

On a 2-core AMD EPYC with AVX-512, MindSpore 2.8.0 runs a 3x3 64->64 convolution at 256x256
near 89 GFLOP/s, while 2.9.0 and 2.10.0 manage 0.4-0.6 GFLOP/s. ``--check`` exits non-zero
when the measured throughput falls under ``--min-gflops`` (default 10 GFLOP/s: far below a
healthy build, far above a broken one).

Run: ``.venv/bin/python bench/bench_conv.py [--check]``
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("GLOG_v", "3")

import numpy as np  # noqa: E402

from _table import machine, table, today  # noqa: E402

CASES = [  # (channels_in, channels_out, kernel, H, W)
    (64, 64, 3, 256, 256),
    (128, 128, 3, 128, 128),
    (256, 256, 3, 64, 64),
]


def measure(cin: int, cout: int, k: int, h: int, w: int, repeats: int = 5) -> float:
    """GFLOP/s of one conv forward (2*Cin*Cout*k*k*H*W FLOPs), best of ``repeats``."""
    import mindspore as ms
    from mindspore import nn

    ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
    x = ms.Tensor(np.random.rand(1, cin, h, w).astype(np.float32))
    conv = nn.Conv2d(cin, cout, k, pad_mode="pad", padding=k // 2, has_bias=False)
    conv(x).asnumpy()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        conv(x).asnumpy()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * cin * cout * k * k * h * w / best / 1e9


def run(min_gflops: float = 10.0):
    import mindspore as ms

    rows = []
    worst = float("inf")
    for cin, cout, k, h, w in CASES:
        g = measure(cin, cout, k, h, w)
        worst = min(worst, g)
        rows.append([f"{k}x{k} {cin}->{cout} @ {h}x{w}", g, "ok" if g >= min_gflops else "SLOW"])
    header = (f"MindSpore {ms.__version__} CPU conv throughput ({machine()}, {today()}); "
              f"healthy 2.8.0 ~89 GFLOP/s on 3x3 64->64 @256, broken 2.9/2.10 0.4-0.6")
    return header, table(["case", "GFLOP/s", "status"], rows), worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a case is under --min-gflops")
    ap.add_argument("--min-gflops", type=float, default=10.0)
    args = ap.parse_args()
    header, tab, worst = run(args.min_gflops)
    print(header)
    print(tab)
    if args.check and worst < args.min_gflops:
        print(f"FAIL: {worst:.2f} GFLOP/s < {args.min_gflops}: this MindSpore build is too slow "
              "(pin mindspore==2.8.0)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
