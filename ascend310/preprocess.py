"""Host-side preprocessing for the Ascend 310 program: GeoTIFF (or image folder) -> binary tiles.

    python3 ascend310/preprocess.py IMAGE.tif|IMAGE_DIR --model net.mindir --out WORK_DIR
        [--batch N] [--overlap PX] [--aoi FILE]

Writes ``WORK_DIR/tiles/<image>_b<NNNNN>.bin`` (raw float32 NCHW batches with exactly the exported
model's input shape; the last batch is zero-padded) and ``WORK_DIR/tiles.json`` (per image: the
source path, the extraction parameters, and per batch file the number of real tiles), which
postprocess.py needs.

Nothing here re-implements tiling or normalisation: the batches come from the tile iterator of
the pipeline ``roadseg extract`` runs (:class:`gis.inference.TileBatchReader` over
:func:`gis.inference.plan_inference`, on the processing grid of ``app.service.extraction`` at the
model's ground resolution, with the checkpoint's input normalisation), so band selection, the
percentile stretch of 16-bit imagery, the AOI window, tile order, overlap and padding are the
same by construction; no model runs and no outputs are written here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.service.errors import UserError  # noqa: E402
from app.service.extraction import ExtractionRequest  # noqa: E402

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")


def model_metadata(model_path: Path) -> Dict[str, Any]:
    """The metadata JSON that ``roadseg export`` writes beside the MindIR/ONNX file."""
    from segcore.export import read_export_metadata

    return read_export_metadata(model_path)


def input_shape(meta: Dict[str, Any]) -> List[int]:
    """Static NCHW input shape of the exported model (batch 1 when it was exported dynamic)."""
    shape = [int(v) if v is not None and int(v) > 0 else 1 for v in meta["export"]["input_shape"]]
    if len(shape) != 4:
        raise UserError(f"exported model input shape {shape} is not NCHW")
    return shape


def list_images(src: Path) -> List[Path]:
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"{src}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if not src.exists():
        raise UserError(f"{src}: no such file")
    return [src]


def extraction_request(image: Path, out_dir: Path, meta: Dict[str, Any], batch: int,
                       overlap_px: int | None, aoi: str | None, predict_fn, normalization=None
                       ) -> ExtractionRequest:
    """The request both halves use, so pre- and postprocessing see the same tiles."""
    n, c, h, w = input_shape(meta)
    if h != w:
        raise UserError(f"exported model input {h}x{w} is not square (tiles are square)")
    return ExtractionRequest(
        image=str(image), out_dir=str(out_dir), predict_fn=predict_fn,
        normalization=normalization, bands=tuple(meta.get("bands") or range(1, c + 1)),
        tile_size_px=h, overlap_px=overlap_px, batch_size=batch, tta="none", aoi=aoi,
        allow_pixel_coords=True, overwrite=True, stem=image.stem,
        # tiles at the model's ground resolution, as `roadseg extract` reads them
        gsd=meta.get("gsd_m"),
    )


def normalizer(image: Path, meta: Dict[str, Any], bands):
    """The checkpoint's input normalisation for this raster (same function extraction uses)."""
    from app.service.extraction import input_normalizer

    return input_normalizer(meta, image, bands)


def write_batches(image: Path, meta: Dict[str, Any], tiles_dir: Path, overlap_px: int | None,
                  aoi: str | None) -> List[Dict[str, Any]]:
    """Write the normalised tile batches of ``image`` as ``<stem>_b<NNNNN>.bin`` files (the
    last batch zero-padded to the model's batch size); returns ``[{"file", "tiles"}, ...]``."""
    from app.service.grid import processing_grid
    from gis.aoi import load_aoi
    from gis.inference import TileBatchReader, plan_inference
    from gis.io import open_raster

    n, c, h, w = input_shape(meta)
    req = extraction_request(image, tiles_dir, meta, n, overlap_px, aoi, None)
    overlap = int(overlap_px if overlap_px is not None else h // 8)
    if overlap * 2 >= h:
        raise UserError(f"overlap {overlap} px must be less than half the tile size {h} px")
    bands = tuple(meta.get("bands") or range(1, c + 1))
    info = open_raster(image, allow_pixel_coords=True)
    grid = processing_grid(req, info, None)  # the model's GSD (req.gsd), as extraction reads
    files: List[Dict[str, Any]] = []
    try:
        plan = plan_inference(grid.path, tile_size_px=h, overlap_px=overlap, bands=bands,
                              aoi=load_aoi(aoi) if aoi is not None else None,
                              allow_pixel_coords=True)
        with TileBatchReader(plan, n, normalizer(image, meta, bands)) as batches:
            for batch in batches:
                real = batch.x.shape[0]
                padded = np.zeros((n, c, h, w), np.float32)
                padded[:real] = batch.x
                name = f"{image.stem}_b{len(files):05d}.bin"
                tmp = tiles_dir / (name + ".part")
                padded.tofile(tmp)
                os.replace(tmp, tiles_dir / name)
                files.append({"file": name, "tiles": real})
    finally:
        grid.close()
    return files


def preprocess(src: Path, model: Path, out: Path, overlap_px: int | None = None,
               aoi: str | None = None) -> Dict[str, Any]:
    """Write the binary batches of every image under ``src``; returns the tiles.json content."""
    meta = model_metadata(model)
    n, c, h, w = input_shape(meta)
    if h != w:
        raise UserError(f"exported model input {h}x{w} is not square (tiles are square)")
    num_classes = int(meta.get("num_classes") or 1)
    tiles_dir = out / "tiles"
    tiles_dir.mkdir(parents=True, exist_ok=True)
    doc: Dict[str, Any] = {"model": str(model), "input_shape": [n, c, h, w],
                           "num_classes": num_classes, "images": []}
    for image in list_images(src):
        files = write_batches(image, meta, tiles_dir, overlap_px, aoi)
        doc["images"].append({"image": str(image.resolve()), "overlap_px": overlap_px,
                              "aoi": aoi, "batches": files})
    tmp = out / "tiles.json.part"
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "tiles.json")
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="GeoTIFF or folder of images")
    ap.add_argument("--model", type=Path, required=True, help="exported MindIR (metadata beside)")
    ap.add_argument("--out", type=Path, required=True, help="work directory")
    ap.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels")
    ap.add_argument("--aoi", default=None, help="area of interest (vector file)")
    args = ap.parse_args(argv)
    try:
        doc = preprocess(args.src, args.model, args.out, args.overlap, args.aoi)
    except UserError as exc:
        print(f"preprocess: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - library errors carry file + problem in line 1
        print(f"preprocess: error: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
        return 2
    nb = sum(len(i["batches"]) for i in doc["images"])
    print(f"{nb} batches of {doc['input_shape']} in {args.out / 'tiles'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
