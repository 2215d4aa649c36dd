"""``make demo`` / ``python -m app.demo``: the bundled sample scene through the whole pipeline.

Runs :func:`app.service.extraction.run_extraction` on
``resources/sample/RGB-PanSharpen_AOI_2_Vegas_img0.tif`` (SpaceNet-3 Las Vegas, CC BY-SA 4.0)
with the bundled demo checkpoint ``resources/models/road_demo.ckpt``, writes everything into
``demo_output/`` (replacing an earlier demo run), draws ``demo_output/preview.png`` (roads over
the imagery) and says how to open the results. Exits non-zero, with one line saying why, when
the sample or the checkpoint is missing or the run fails.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import List, Optional

from app.service.errors import UserError
from app.service.extraction import ExtractionRequest, make_preview, run_extraction

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
CHECKPOINT = ROOT / "resources" / "models" / "road_demo.ckpt"
OUT_DIR = Path("demo_output")


class _Line:
    """A one-line progress display on stderr."""

    def __init__(self) -> None:
        self.stage = None
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, stage: str) -> None:
        if stage != self.stage and self.stage is not None:
            sys.stderr.write("\n")
        self.stage = stage
        sys.stderr.write(f"\r  {stage:<10}{done:>4}/{total:<4} {time.monotonic() - self.t0:6.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.stage is not None:
            sys.stderr.write("\n")


def _fail(msg: str) -> int:
    print(f"demo: {msg}", file=sys.stderr)
    return 2


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=SAMPLE, help="input GeoTIFF [%(default)s]")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT, help="[%(default)s]")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output folder [%(default)s]")
    ap.add_argument("--tta", choices=("none", "flips", "d4"), default="none")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    missing = []
    if not args.checkpoint.is_file():
        missing.append(f"{args.checkpoint}: demo checkpoint not there; rebuild it with "
                       "scripts/build_demo_data.sh (docs/quality.md), or pass --checkpoint")
    if not args.image.is_file():
        missing.append(f"{args.image}: sample image not found (the demo scene belongs in "
                       "resources/sample/, or pass --image)")
    if missing:
        for m in missing:
            _fail(m)
        return 2
    print(f"RoadSeg Studio demo: {args.image.name} with {args.checkpoint.name} -> {args.out}/")
    req = ExtractionRequest(image=str(args.image), out_dir=str(args.out),
                            checkpoint=str(args.checkpoint), tta=args.tta, overwrite=True,
                            formats=("gpkg", "shp"))
    line = _Line()
    try:
        res = run_extraction(req, on_progress=line)
    finally:
        line.close()
    if not res.ok:
        return _fail(res.error or res.status)
    try:
        preview = make_preview(args.image, res.roads_path, args.out / "preview.png",
                               overwrite=True)
    except UserError as exc:
        return _fail(str(exc))

    s = res.summary
    print(f"\nroads: {s['road_km']:.3f} km in {s['edges']} edges, {s['nodes']} nodes, "
          f"{s['components']} connected networks over {s['area_km2']:.3f} km² "
          f"({res.elapsed_s:.0f} s)")
    print("\nfiles:")
    print(f"  probability (COG)   {res.prob_path}")
    print(f"  road mask (COG)     {res.mask_path}")
    print(f"  roads (GeoPackage)  {res.roads_path}   layers: edges, nodes")
    shp = sorted(v for k, v in res.outputs.items() if k.endswith(".shp"))
    if shp:
        print(f"  roads (Shapefile)   {'  '.join(shp)}   (+ .qml styles)")
    print(f"  summary             {res.summary_path}")
    print(f"  preview             {preview}")
    print("\nopen them:")
    print(f"  QGIS:        qgis {args.image} {res.prob_path} {res.roads_path}")
    print("               (the GeoPackage carries its QGIS styles; lines are coloured by "
          "confidence)")
    print(f"  RoadSeg GUI: roadseg-gui, open {args.image.name}, then load "
          f"{Path(res.roads_path).name}")
    print(f"  picture:     {preview}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
