"""Tiny helpers shared by the benchmarks: machine description and table printing."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import List, Sequence


def machine() -> str:
    """One line describing this machine (CPU model, cores, memory)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil
        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except ImportError:  # pragma: no cover
        mem = "?"
    return f"{cpu}, {os.cpu_count()} cores, {mem} RAM"


def today() -> str:
    return _dt.date.today().isoformat()


def table(headers: Sequence[str], rows: List[Sequence]) -> str:
    """A GitHub-markdown table, columns padded for the terminal."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for k, r in enumerate(cells):
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if k == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)
