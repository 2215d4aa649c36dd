"""Training chips for the bundled demo road model, built outside the project tree.

``python -m app.service.demo_data [--data /work/shared/data] [--out DIR]`` writes a chips
dataset (``images/``, ``masks/``, ``manifest.json`` with status ``accepted``) to
``${XDG_CACHE_HOME:-~/.cache}/roadseg/demo_chips`` from the labelled reference files:

* DeepGlobe road pairs ``roads/deepglobe/train/{104,113,343}`` (training only; pair ``388`` is
  held out for the quality report). DeepGlobe is licensed for research / non-commercial use:
  its chips are written to the cache, never into the project.
* SpaceNet Las Vegas panchromatic tile ``geotiff/road_mask_input.tif`` (uint16, 11-bit) with
  ``roads/spacenet/sample_road_raster_mask.tif``: a 2-98 % percentile stretch to uint8,
  replicated to three bands.
* SpaceNet ``roads/spacenet/AOI_2_Vegas_img33.png`` with its soft (Gaussian) mask thresholded at
  ``>= 128``.

The two SpaceNet tiles are split by area (:func:`gis.chips.split_windows_by_area`): their last
chip column is the validation split, the training chips end before it. The demo scene
``RGB-PanSharpen_AOI_2_Vegas_img0.tif`` is never used. Then train with the committed recipe::

    roadseg train --config resources/configs/road_demo_train.yaml \
        --data ~/.cache/roadseg/demo_chips --out runs/road_demo
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from gis.chips import chip_windows, split_windows_by_area

logger = logging.getLogger(__name__)

#: DeepGlobe pairs used for training; the held-out pair is used only by the quality report.
DEEPGLOBE_TRAIN = ("104", "113", "343")
DEEPGLOBE_HOLDOUT = "388"
CHIP_SIZE_PX = 384
SPACENET_VAL_FRACTION = 0.25

ProgressFn = Callable[[int, int, str], None]


def default_cache_dir() -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/roadseg/demo_chips``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "roadseg" / "demo_chips"


def default_data_dir() -> Path:
    """``$ROADSEG_SHARED_DATA`` or ``../shared/data`` beside the project root."""
    env = os.environ.get("ROADSEG_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def stretch_to_uint8(band: np.ndarray, low_pct: float = 2.0,
                     high_pct: float = 98.0) -> np.ndarray:
    """Linear percentile stretch of one band ``(H, W)`` (any dtype; zeros treated as nodata)
    to uint8 ``(H, W)``."""
    vals = band[band > 0] if np.any(band > 0) else band.ravel()
    lo, hi = np.percentile(vals, [low_pct, high_pct])
    hi = max(float(hi), float(lo) + 1.0)
    out = (band.astype(np.float32) - float(lo)) / (hi - float(lo)) * 255.0
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: missing or unreadable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_gray(path: Path) -> np.ndarray:
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise FileNotFoundError(f"{path}: missing or unreadable mask")
    return m.max(axis=2) if m.ndim == 3 else m


def load_sources(data: Path) -> List[Tuple[str, np.ndarray, np.ndarray, float]]:
    """``(name, image (H, W, 3) uint8, road (H, W) bool, val_fraction)`` per labelled source."""
    import rasterio

    out = []
    for sid in DEEPGLOBE_TRAIN:
        d = data / "roads" / "deepglobe" / "train"
        out.append((f"deepglobe_{sid}", _read_rgb(d / f"{sid}_sat.jpg"),
                    _read_gray(d / f"{sid}_mask.png") > 127, 0.0))
    with rasterio.open(data / "geotiff" / "road_mask_input.tif") as src:
        pan = stretch_to_uint8(src.read(1))
    with rasterio.open(data / "roads" / "spacenet" / "sample_road_raster_mask.tif") as src:
        pan_mask = src.read(1) > 0
    out.append(("spacenet_pan", np.repeat(pan[:, :, None], 3, axis=2), pan_mask,
                SPACENET_VAL_FRACTION))
    d = data / "roads" / "spacenet"
    out.append(("spacenet_img33", _read_rgb(d / "AOI_2_Vegas_img33.png"),
                _read_gray(d / "mask_AOI_2_Vegas_img33.png") >= 128, SPACENET_VAL_FRACTION))
    return out


def build_demo_chips(data: Path, out: Path, chip_size_px: int = CHIP_SIZE_PX,
                     overwrite: bool = False,
                     on_progress: Optional[ProgressFn] = None) -> Dict[str, int]:
    """Write the demo chips dataset to ``out`` (built in a temporary folder beside it and
    renamed). Returns the number of chips per split."""
    import cv2

    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo_chips_", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        samples: List[Dict[str, object]] = []
        sources = load_sources(Path(data))
        for k, (name, img, road, frac) in enumerate(sources):
            h, w = road.shape
            wins = chip_windows(w, h, chip_size_px, 0)
            split = split_windows_by_area(wins, w, h, frac, gap_px=0)
            for part, group in (("train", split.train), ("val", split.val)):
                for win in group:
                    r, c = int(win.row_off), int(win.col_off)
                    chip = img[r:r + chip_size_px, c:c + chip_size_px]
                    m = road[r:r + chip_size_px, c:c + chip_size_px]
                    stem = f"{name}_r{r}_c{c}"
                    cv2.imwrite(str(tmp / "images" / f"{stem}.png"),
                                cv2.cvtColor(chip, cv2.COLOR_RGB2BGR))
                    cv2.imwrite(str(tmp / "masks" / f"{stem}.png"),
                                m.astype(np.uint8) * 255)
                    samples.append({"image": f"images/{stem}.png", "mask": f"masks/{stem}.png",
                                    "split": part, "status": "accepted", "source": name,
                                    "window": [c, r, chip_size_px, chip_size_px],
                                    "road_fraction": round(float(m.mean()), 5)})
            if on_progress:
                on_progress(k + 1, len(sources), "chips")
        (tmp / "manifest.json").write_text(json.dumps({"samples": samples}, indent=1),
                                           encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts: Dict[str, int] = {}
    for s in samples:
        counts[str(s["split"])] = counts.get(str(s["split"]), 0) + 1
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: build the demo chips (see the module docstring)."""
    p = argparse.ArgumentParser(description="Build the demo road-model training chips.")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="the shared reference data folder")
    p.add_argument("--out", type=Path, default=default_cache_dir())
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    counts = build_demo_chips(a.data, a.out, overwrite=a.overwrite)
    print(f"{a.out}: {counts}")  # noqa: T201  (command-line entry point)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
