"""Host-side postprocessing for the Ascend 310 program: device logits -> mask GeoTIFF + vectors.

    python3 ascend310/postprocess.py WORK_DIR --out OUT_DIR [--threshold 0.5] [--format gpkg ...]
        [--labels MASK.tif]   # optional: road IoU/F1 of the result against a reference mask

Reads ``WORK_DIR/tiles.json`` (from preprocess.py) and ``WORK_DIR/result/<batch>_0.bin`` (raw
float32 NKHW logits written by ``roadseg_310``), turns logits into probabilities with segcore's
own activation, and replays them, batch by batch in the original order, through the same
``app.service.run_extraction`` pipeline ``roadseg extract`` runs: blending, COG writing,
vectorization and vector export are the project's code, not copies.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.service.errors import UserError  # noqa: E402
from app.service.extraction import run_extraction  # noqa: E402

from preprocess import extraction_request, model_metadata, normalizer  # noqa: E402


class Replay:
    """``predict_fn`` that returns the device's outputs for the batches in their original order."""

    def __init__(self, result_dir: Path, batches: List[Dict[str, Any]], shape, num_classes: int):
        from segcore.predict import logits_to_probabilities

        self._to_probs = logits_to_probabilities
        self.result_dir = result_dir
        self.batches = batches
        self.n, _, self.h, self.w = shape
        self.k = num_classes
        self.i = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.i >= len(self.batches):
            raise UserError("more batches requested than the device produced (stale work dir?)")
        entry = self.batches[self.i]
        self.i += 1
        path = self.result_dir / (Path(entry["file"]).stem + "_0.bin")
        if not path.exists():
            raise UserError(f"{path}: device output missing (did roadseg_310 run?)")
        raw = np.fromfile(path, dtype=np.float32)
        expect = self.n * self.k * self.h * self.w
        if raw.size != expect:
            raise UserError(f"{path}: {raw.size} values, expected {expect} "
                            f"({self.n}x{self.k}x{self.h}x{self.w})")
        real = int(entry["tiles"])
        if batch.shape[0] != real:
            raise UserError(f"{path}: batch of {batch.shape[0]} tiles does not match the "
                            f"{real} recorded by preprocess.py")
        logits = raw.reshape(self.n, self.k, self.h, self.w)[:real]
        return self._to_probs(logits).astype(np.float32)


def label_metrics(mask_path: str, labels: Path) -> Dict[str, Any]:
    """Road-class metrics of a 0/1/255 mask GeoTIFF against a 0/255 (or 0/1) label raster."""
    import rasterio

    from segcore.metrics import ConfusionMatrix

    with rasterio.open(mask_path) as m, rasterio.open(labels) as lab:
        pred = m.read(1)
        ref = lab.read(1, out_shape=pred.shape)
    cm = ConfusionMatrix(2)
    valid = pred != 255
    cm.update(pred[valid].astype(np.int64), (ref[valid] > 0).astype(np.int64))
    return cm.summary(positive_class=1)


def postprocess(work: Path, out: Path, threshold: float = 0.5, formats=("gpkg",),
                labels: Optional[Path] = None) -> List[Dict[str, Any]]:
    doc = json.loads((work / "tiles.json").read_text(encoding="utf-8"))
    meta = model_metadata(Path(doc["model"]))
    shape = doc["input_shape"]
    results = []
    for entry in doc["images"]:
        image = Path(entry["image"])
        replay = Replay(work / "result", entry["batches"], shape, int(doc["num_classes"]))
        bands = tuple(meta.get("bands") or range(1, shape[1] + 1))
        req = extraction_request(image, out, meta, shape[0], entry.get("overlap_px"),
                                 entry.get("aoi"), replay, normalizer(image, meta, bands))
        req = req.__class__(**{**{f: getattr(req, f) for f in req.__dataclass_fields__},
                               "threshold": threshold, "formats": tuple(formats)})
        res = run_extraction(req)
        if not res.ok:
            raise UserError(res.error or f"{image}: postprocessing failed")
        if replay.i != len(entry["batches"]):
            raise UserError(f"{image}: {len(entry['batches'])} device batches but only "
                            f"{replay.i} were used (tiling changed since preprocess.py?)")
        item = {"image": str(image), "mask": res.mask_path, "prob": res.prob_path,
                "roads": res.roads_path, "outputs": res.outputs, "summary": {
            k: res.summary.get(k) for k in ("road_km", "edges", "nodes", "components")}}
        if labels is not None:
            item["metrics"] = label_metrics(res.mask_path, labels)
        results.append(item)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path, help="work directory of preprocess.py / roadseg_310")
    ap.add_argument("--out", type=Path, required=True, help="output directory")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--format", dest="formats", action="append", default=None,
                    choices=("gpkg", "shp", "geojson"))
    ap.add_argument("--labels", type=Path, default=None, help="reference road mask raster")
    args = ap.parse_args(argv)
    try:
        results = postprocess(args.work, args.out, args.threshold, args.formats or ("gpkg",),
                              args.labels)
    except UserError as exc:
        print(f"postprocess: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - CLI entry point: one-line error, exit status 2
        print(f"postprocess: error: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
