"""Training chips for the bundled demo road model, built outside the project tree.

``python -m app.service.demo_data chips [--data ../shared/data] [--out DIR]`` writes a chips
dataset (``images/``, ``masks/``, ``manifest.json`` with status ``accepted``) to
``${XDG_CACHE_HOME:-~/.cache}/roadseg/demo_chips`` from the labelled reference files:

Every source is first stretched per band between its whole-scene 2nd and 98th percentiles to
0..255 (:func:`stretch_scene`), as inference does for the model's ``percentile`` normalisation,
so scenes from different sensors and exposures look alike to the network.

* DeepGlobe road pairs ``roads/deepglobe/train/{104,113,343}`` (training only; pair ``388`` is
  held out for the quality report). DeepGlobe is licensed for research / non-commercial use:
  its chips are written to the cache, never into the project.
* SpaceNet Las Vegas panchromatic tile ``geotiff/road_mask_input.tif`` (uint16, 11-bit) with
  ``roads/spacenet/sample_road_raster_mask.tif``: a 2-98 % percentile stretch to uint8,
  replicated to three bands. Its mask labels only some of the visible roads, so only chips
  with at least 1 % labelled road are kept.
* SpaceNet ``roads/spacenet/AOI_2_Vegas_img33.png`` with its soft (Gaussian) mask thresholded at
  ``>= 128``; chips overlap by half a chip (this is the best-labelled tile and the closest to
  the demo scene, so it gets more crops).

The two SpaceNet tiles are split by area (:func:`gis.chips.split_windows_by_area`): their last
chip column is the validation split, the training chips end before it (no shared pixel). The
demo scene ``RGB-PanSharpen_AOI_2_Vegas_img0.tif`` is never used. Then train with the committed
recipe::

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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from app.service.errors import UserError
from app.service.staging import atomic_file, atomic_write_text, recover_folder, replace_folder
from gis.chips import chip_windows, split_windows_by_area

logger = logging.getLogger(__name__)

#: DeepGlobe pairs used for training; the held-out pair is used only by the quality report.
DEEPGLOBE_TRAIN = ("104", "113", "343")
DEEPGLOBE_HOLDOUT = "388"
CHIP_SIZE_PX = 384

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
    """Linear percentile stretch of one band ``(H, W)`` (any dtype; zeros treated as nodata in
    the statistics) to 8-bit levels ``(H, W)`` uint8, by :mod:`segcore.preprocess`."""
    from segcore.preprocess import stretch_limits
    from segcore.preprocess import stretch_to_uint8 as _levels

    x = band[None]
    valid = band > 0 if np.any(band > 0) else None
    lo, hi = stretch_limits(x, valid, low_pct, high_pct)
    return _levels(x, lo, hi)[0]


def stretch_scene(img: np.ndarray) -> np.ndarray:
    """:func:`stretch_to_uint8` of each band of an ``(H, W, C)`` scene (the whole-scene stretch
    that inference applies for the ``percentile`` normalisation)."""
    return np.stack([stretch_to_uint8(img[:, :, b]) for b in range(img.shape[2])], axis=2)


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


@dataclass(frozen=True)
class DemoSource:
    """One labelled image: ``image`` (H, W, 3) uint8, ``road`` (H, W) bool; chips overlap by
    ``overlap_px`` (more crops from the best-labelled tile); ``val_fraction`` of its chip
    columns go to validation; chips with less road than ``min_road_fraction`` are left out
    (for masks that label only some roads, so unlabelled roads do not teach 'background')."""

    name: str
    image: np.ndarray
    road: np.ndarray
    val_fraction: float = 0.0
    overlap_px: int = 0
    min_road_fraction: float = 0.0


def load_sources(data: Path) -> List[DemoSource]:
    """The labelled sources of the demo model (see the module docstring)."""
    import rasterio

    out = []
    for sid in DEEPGLOBE_TRAIN:
        d = data / "roads" / "deepglobe" / "train"
        out.append(DemoSource(f"deepglobe_{sid}", stretch_scene(_read_rgb(d / f"{sid}_sat.jpg")),
                              _read_gray(d / f"{sid}_mask.png") > 127))
    with rasterio.open(data / "geotiff" / "road_mask_input.tif") as src:
        pan = stretch_to_uint8(src.read(1))
    with rasterio.open(data / "roads" / "spacenet" / "sample_road_raster_mask.tif") as src:
        pan_mask = src.read(1) > 0
    # this mask labels only some of the tile's roads: keep the chips where it labels some
    out.append(DemoSource("spacenet_pan", np.repeat(pan[:, :, None], 3, axis=2), pan_mask,
                          val_fraction=0.25, min_road_fraction=0.01))
    d = data / "roads" / "spacenet"
    out.append(DemoSource("spacenet_img33", stretch_scene(_read_rgb(d / "AOI_2_Vegas_img33.png")),
                          _read_gray(d / "mask_AOI_2_Vegas_img33.png") >= 128,
                          val_fraction=0.15, overlap_px=CHIP_SIZE_PX // 2))
    return out


def build_demo_chips(data: Path, out: Path, chip_size_px: int = CHIP_SIZE_PX,
                     overwrite: bool = False,
                     on_progress: Optional[ProgressFn] = None) -> Dict[str, int]:
    """Write the demo chips dataset to ``out`` (built in a temporary folder beside it and
    renamed). Returns the number of chips per split."""
    import cv2

    out = Path(out)
    recover_folder(out)  # a replacement of ``out`` a killed run left half done
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo_chips_", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "masks").mkdir()
        samples: List[Dict[str, object]] = []
        sources = load_sources(Path(data))
        for k, src in enumerate(sources):
            name, img, road = src.name, src.image, src.road
            h, w = road.shape
            wins = chip_windows(w, h, chip_size_px, src.overlap_px)
            # gap 0: chips never straddle the band edge, so no pixel is in both splits
            split = split_windows_by_area(wins, w, h, src.val_fraction, gap_px=0)
            for part, group in (("train", split.train), ("val", split.val)):
                for win in group:
                    r, c = int(win.row_off), int(win.col_off)
                    chip = img[r:r + chip_size_px, c:c + chip_size_px]
                    m = road[r:r + chip_size_px, c:c + chip_size_px]
                    if m.mean() < src.min_road_fraction:
                        continue
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
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts: Dict[str, int] = {}
    for s in samples:
        counts[str(s["split"])] = counts.get(str(s["split"]), 0) + 1
    return counts


# ------------------------------------------------------------------------ evaluation
def _pixel_scores(pred: np.ndarray, ref: np.ndarray, valid: Optional[np.ndarray] = None,
                  relax_px: int = 0) -> Dict[str, float]:
    """Road IoU / F1 / precision / recall of two bool masks ``(..., H, W)`` over ``valid``
    pixels, plus relaxed precision / recall (a pixel counts when the other mask has road within
    ``relax_px`` pixels, Mnih's relaxed measure) when ``relax_px`` > 0."""
    from scipy import ndimage

    if valid is None:
        valid = np.ones(pred.shape, bool)
    pred, ref = pred & valid, ref & valid
    tp = float(np.logical_and(pred, ref).sum())
    fp = float(np.logical_and(pred, ~ref).sum())
    fn = float(np.logical_and(~pred, ref).sum())
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    out = {"iou": round(iou, 4), "f1": round(f1, 4), "precision": round(prec, 4),
           "recall": round(rec, 4), "road_fraction_ref": round(float(ref.sum() / valid.sum()), 4),
           "road_fraction_pred": round(float(pred.sum() / valid.sum()), 4)}
    if relax_px > 0:
        def near(m: np.ndarray) -> np.ndarray:
            m2 = m.reshape((-1,) + m.shape[-2:])
            return np.stack([ndimage.distance_transform_edt(~x) <= relax_px
                             for x in m2]).reshape(m.shape)
        rp = float((pred & near(ref)).sum()) / max(1.0, float(pred.sum()))
        rr = float((ref & near(pred)).sum()) / max(1.0, float(ref.sum()))
        out.update({"relaxed_precision": round(rp, 4), "relaxed_recall": round(rr, 4),
                    "relaxed_f1": round(2 * rp * rr / (rp + rr), 4) if rp + rr else 0.0,
                    "relax_m": None})
    return out


def _extract(checkpoint: Path, image: Path, work: Path, **kw) -> Dict[str, object]:
    """``run_extraction`` with the defaults (the model's GSD); returns the summary dict."""
    from app.service.extraction import ExtractionRequest, run_extraction

    res = run_extraction(ExtractionRequest(image=str(image), out_dir=str(work),
                                           checkpoint=str(checkpoint), backend="mindspore",
                                           overwrite=True, **kw))
    if not res.ok:
        raise RuntimeError(f"{image}: extraction failed: {res.error}")
    summary = json.loads(Path(res.summary_path).read_text(encoding="utf-8"))
    summary["_roads"] = str(res.roads_path)
    summary["_prob"] = str(res.prob_path)
    return summary


def _extract_and_score(checkpoint: Path, image: Path, ref_lines: Path, work: Path,
                       buffer_m: float = 4.0) -> Dict[str, float]:
    """Centre-line precision/recall within ``buffer_m`` and APLS against ``ref_lines``, and the
    extraction's speed in km² per hour (whole run, one process)."""
    import geopandas as gpd

    from gis.evaluate import apls, buffered_precision_recall

    s = _extract(checkpoint, image, work)
    pred = gpd.read_file(s["_roads"], layer="edges")
    ref = gpd.read_file(ref_lines)
    sc = buffered_precision_recall(pred, ref, buffer_m)
    ap = apls(pred, ref)
    total_s = float(s["timings_s"]["total"])
    area = float(s.get("area_km2") or 0.0)
    return {"precision": round(sc.precision, 4), "recall": round(sc.recall, 4),
            "f1": round(sc.f1, 4), "apls": round(ap.apls, 4),
            "pred_length_m": round(sc.pred_length_m, 1),
            "ref_length_m": round(sc.ref_length_m, 1), "buffer_m": buffer_m,
            "km2_per_hour": round(area / total_s * 3600, 1) if total_s else None,
            "processing_gsd_m": (s.get("processing_grid") or {}).get("gsd_m")}


def _corpus_scores(predictor, chips: Path, gsd_m: float) -> Dict[str, Dict[str, float]]:
    """Pixel and relaxed (3 m) scores per source on the validation chips of an assembled
    corpus (``roadseg dataset assemble``; chips hold 8-bit levels, masks 0/1/255)."""
    import cv2

    from segcore.evaluate import predict_image
    from segcore.preprocess import preprocessor_from_meta

    norm = preprocessor_from_meta(predictor.meta).on_uint8_levels()
    man = json.loads((chips / "manifest.json").read_text(encoding="utf-8"))
    relax = max(1, int(round(3.0 / gsd_m)))
    by_src: Dict[str, List] = {}
    seen = set()
    for s in man["samples"]:
        if s["split"] != "val" or s["image"] in seen:
            continue
        seen.add(s["image"])
        im = cv2.cvtColor(cv2.imread(str(chips / s["image"])), cv2.COLOR_BGR2RGB)
        m = cv2.imread(str(chips / s["mask"]), cv2.IMREAD_UNCHANGED)
        x = norm(np.ascontiguousarray(im.transpose(2, 0, 1)))
        p = predict_image(predictor.predict_batch, x, mode="sliding", tile_size=512,
                          overlap=0.25, batch_size=2)
        prob = p[0] if p.shape[0] == 1 else p[1]
        by_src.setdefault(str(s["source"]), []).append((prob >= 0.5, m == 1, m != 255))
    out = {}
    for src, items in sorted(by_src.items()):
        pred = np.concatenate([a.ravel() for a, _, _ in items])
        ref = np.concatenate([b.ravel() for _, b, _ in items])
        valid = np.concatenate([c.ravel() for _, _, c in items])
        sc = _pixel_scores(pred, ref, valid)
        # relaxed scores need the 2-D chips
        rp_num = rp_den = rr_num = rr_den = 0.0
        from scipy import ndimage
        for a, b, c in items:
            a, b = a & c, b & c
            rp_num += float((a & (ndimage.distance_transform_edt(~b) <= relax)).sum())
            rp_den += float(a.sum())
            rr_num += float((b & (ndimage.distance_transform_edt(~a) <= relax)).sum())
            rr_den += float(b.sum())
        rp, rr = rp_num / max(1.0, rp_den), rr_num / max(1.0, rr_den)
        sc.update({"relaxed_precision": round(rp, 4), "relaxed_recall": round(rr, 4),
                   "relaxed_f1": round(2 * rp * rr / (rp + rr), 4) if rp + rr else 0.0,
                   "relax_m": 3.0, "chips": len(items)})
        out[src] = sc
    return out


def default_corpus_dir(gsd_m: float = 1.0) -> Path:
    """``${XDG_CACHE_HOME:-~/.cache}/roadseg/corpus_<gsd>m`` (``corpus_05m`` at 0.5 m,
    ``corpus_1m`` at 1 m): where ``make quality`` builds the corpus at the model's GSD."""
    return default_cache_dir().parent / f"corpus_{gsd_m:g}m".replace(".", "")


def evaluate_demo_model(checkpoint: Path, data: Path, chips: Optional[Path] = None,
                        work: Optional[Path] = None) -> Dict[str, Dict[str, float]]:
    """Scores of ``checkpoint`` on data it was not trained on.

    * ``corpus_val/<source>``: pixel and relaxed (3 m) scores per source on the validation
      chips of ``chips`` (an assembled corpus at the model's GSD; the split that picked the
      epoch, so slightly optimistic).
    * ``deepglobe_388``: pixel road IoU/F1/recall (and relaxed at 3 m) on the held-out
      DeepGlobe pair, extracted with the tool's defaults (input 0.5 m).
    * ``paris_img1447`` / ``vegas_img0``: centre-line precision/recall within 4 m and APLS
      against the OSM lines of the evaluation-only Paris tile and the SpaceNet lines of the
      demo scene, with ``roadseg extract``'s defaults, plus km²/h.
    """
    import cv2
    import rasterio
    from rasterio.transform import from_origin

    from segcore.predict import load_predictor

    out: Dict[str, Dict[str, float]] = {}
    work = Path(work or tempfile.mkdtemp(prefix="roadseg_demo_eval_"))
    # the CPU inference path extraction takes (ONNX Runtime; MindSpore where it cannot export)
    pred = load_predictor(checkpoint, backend="auto", device="cpu")
    gsd = getattr(pred.meta, "gsd_m", None)
    if chips is not None and (chips / "manifest.json").is_file() and gsd:
        cm = json.loads((chips / "manifest.json").read_text(encoding="utf-8")).get("corpus", {})
        if cm.get("gsd_m") and abs(float(cm["gsd_m"]) - float(gsd)) < 1e-6:
            for src, sc in _corpus_scores(pred, chips, float(gsd)).items():
                out[f"corpus_val/{src}"] = sc
    d = data / "roads" / "deepglobe" / "train"
    img = _read_rgb(d / f"{DEEPGLOBE_HOLDOUT}_sat.jpg")
    ref = _read_gray(d / f"{DEEPGLOBE_HOLDOUT}_mask.png") > 127
    work.mkdir(parents=True, exist_ok=True)
    tif = work / f"deepglobe_{DEEPGLOBE_HOLDOUT}.tif"
    # DeepGlobe carries no georeference: a local metric grid at its 0.5 m
    with rasterio.open(tif, "w", driver="GTiff", width=img.shape[1], height=img.shape[0],
                       count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000.0, 5000000.0, 0.5, 0.5)) as ds:
        ds.write(img.transpose(2, 0, 1))
    s = _extract(checkpoint, tif, work / "deepglobe")
    with rasterio.open(s["_prob"]) as ds:
        p = ds.read(1)
    p = cv2.resize(p, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    sc = _pixel_scores((p >= 127) & (p < 255), ref, relax_px=6)
    sc["relax_m"] = 3.0
    out[f"deepglobe_{DEEPGLOBE_HOLDOUT}"] = sc
    out["paris_img1447"] = _extract_and_score(
        checkpoint, data / "holdout" / "RGB-PanSharpen_img1447.tif",
        data / "holdout" / "apls_paris_img1447" / "OSMroads_img1447.geojson", work / "paris")
    scene = Path(__file__).resolve().parents[2] / "resources" / "sample"
    out["vegas_img0"] = _extract_and_score(
        checkpoint, scene / "RGB-PanSharpen_AOI_2_Vegas_img0.tif",
        scene / "AOI_2_Vegas_img0.geojson", work / "vegas")
    return out


#: BGR colours of the quality figures: reference roads, extracted centre lines
_FIG_REF = (60, 60, 230)
_FIG_PRED = (0, 215, 255)


def quality_figures(work: Path, data: Path, out_dir: Path, max_size: int = 900) -> List[Path]:
    """Pictures of what the evaluated model finds and misses, from the extractions that
    :func:`evaluate_demo_model` left in ``work``: the reference roads in red (DeepGlobe: its
    mask), the extracted centre lines in yellow over the image, one JPEG per held-out scene
    (``quality_<name>.jpg`` in ``out_dir``)."""
    import cv2
    import geopandas as gpd

    from app.service.preview import draw_lines, line_thickness, pixel_mapper
    from gis.io import read_overview

    scene = Path(__file__).resolve().parents[2] / "resources" / "sample"
    cases = (("vegas_img0", scene / "RGB-PanSharpen_AOI_2_Vegas_img0.tif",
              scene / "AOI_2_Vegas_img0.geojson", work / "vegas"),
             ("paris_img1447", data / "holdout" / "RGB-PanSharpen_img1447.tif",
              data / "holdout" / "apls_paris_img1447" / "OSMroads_img1447.geojson",
              work / "paris"),
             (f"deepglobe_{DEEPGLOBE_HOLDOUT}", work / f"deepglobe_{DEEPGLOBE_HOLDOUT}.tif",
              data / "roads" / "deepglobe" / "train" / f"{DEEPGLOBE_HOLDOUT}_mask.png",
              work / "deepglobe"))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image, ref, run in cases:
        roads = sorted(run.glob("*_roads.gpkg"))
        if not image.is_file() or not ref.is_file() or not roads:
            continue
        ov = read_overview(image, max_size=max_size)
        bgr = np.ascontiguousarray(ov.rgb[:, :, ::-1])
        thick = line_thickness(bgr)
        to_px = pixel_mapper(ov.transform)
        if ref.suffix == ".png":  # a reference mask on the image's own pixel grid
            m = _read_gray(ref) > 127
            m = cv2.resize(m.astype(np.uint8), (bgr.shape[1], bgr.shape[0]),
                           interpolation=cv2.INTER_AREA) > 0
            bgr[m] = (0.4 * bgr[m] + 0.6 * np.array(_FIG_REF)).astype(np.uint8)
        else:
            gref = gpd.read_file(ref)
            if ov.crs is not None:
                gref = gref.to_crs(ov.crs.to_wkt())
            draw_lines(bgr, gref.geometry, to_px, _FIG_REF, thick + 2)
        edges = gpd.read_file(roads[0], layer="edges")
        if ov.crs is not None and edges.crs is not None:
            edges = edges.to_crs(ov.crs.to_wkt())
        draw_lines(bgr, edges.geometry, to_px, _FIG_PRED, thick)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            dest = out_dir / f"quality_{name}.jpg"
            with atomic_file(dest) as tmp:
                tmp.write_bytes(buf.tobytes())
            written.append(dest)
    return written


def package_model(checkpoint: Path, dest: Path, scores: Dict[str, Dict[str, float]],
                  stage: Optional[Dict[str, object]] = None,
                  parent: Optional[Path] = None) -> Path:
    """Copy ``checkpoint`` (+ sidecar) to ``dest`` (``.ckpt``), adding the held-out scores to
    the sidecar's ``metrics`` under ``holdout`` and appending ``stage`` (how this training
    stage was made) to its ``provenance`` list. A training run's checkpoint carries no
    provenance of its own: ``parent`` (the ``--init-checkpoint`` the run started from) supplies
    the earlier stages, so the list keeps every stage. Written to temporary names and renamed."""
    src_json = checkpoint.with_suffix(".json")
    meta = json.loads(src_json.read_text(encoding="utf-8"))
    metrics = dict(meta.get("metrics") or {})
    metrics["holdout"] = scores
    meta["metrics"] = metrics
    prov = list(meta.get("provenance") or [])
    if not prov and parent is not None:
        side = Path(parent).with_suffix(".json")
        if not side.is_file():
            raise UserError(f"{side}: the parent checkpoint's sidecar is missing; its "
                            "provenance (the earlier training stages) cannot be carried over")
        prov = list(json.loads(side.read_text(encoding="utf-8")).get("provenance") or [])
    if stage:
        prov.append(stage)
    meta["provenance"] = prov
    meta["training_data"] = {
        "corpus": "resources/datasets/roads_corpus.yaml (roadseg dataset assemble --gsd "
                  f"{meta.get('gsd_m')})",
        "preprocessing": "each source image resampled to the model's GSD and stretched 2-98 % "
                         "per band to 8-bit levels (segcore.preprocess), as inference does",
        "held_out": [f"deepglobe {DEEPGLOBE_HOLDOUT}", "paris img1447 (evaluation only)",
                     "demo scene Vegas img0 (never trained on)"],
        "recipe": "resources/configs/road_model_train.yaml"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest) as tmp:
        shutil.copyfile(checkpoint, tmp)
    atomic_write_text(dest.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
    return dest


_LINE_ROWS = (("vegas_img0", "Vegas img0, the demo scene, vs SpaceNet centre lines"),
              ("paris_img1447", "Paris img1447 vs OSM lines (evaluation only)"))


def _pixel_label(key: str) -> str:
    if key.startswith("corpus_val/"):
        return f"validation band of {key.split('/', 1)[1]} (picked the epoch)"
    if key.startswith("deepglobe_"):
        return f"DeepGlobe pair {key.split('_', 1)[1]} (held out), 0.5 m"
    if key == "spacenet_val":
        return "SpaceNet validation band (picked the epoch)"
    return key


def scores_markdown(scores: Dict[str, Dict[str, float]]) -> str:
    """The held-out scores as the markdown tables of ``docs/quality.md``."""
    def f(v: Dict[str, float], k: str) -> str:
        return f"{v[k]:.3f}" if isinstance(v.get(k), (int, float)) else "-"

    out = ["| data (never trained on) | road IoU | F1 | precision | recall | relaxed P / R "
           "(3 m) | road pixels (reference / predicted) |", "|---|---|---|---|---|---|---|"]
    for key, v in scores.items():
        if key in dict(_LINE_ROWS):
            continue
        out.append(f"| {_pixel_label(key)} | {f(v, 'iou')} | {f(v, 'f1')} | "
                   f"{f(v, 'precision')} | {f(v, 'recall')} | {f(v, 'relaxed_precision')} / "
                   f"{f(v, 'relaxed_recall')} | {100 * v['road_fraction_ref']:.1f} % / "
                   f"{100 * v['road_fraction_pred']:.1f} % |")
    out += ["", "| scene (`roadseg extract` defaults) | centre-line precision @ 4 m | "
                "recall @ 4 m | F1 | APLS | extracted / reference length | km²/h |",
            "|---|---|---|---|---|---|---|"]
    for key, label in _LINE_ROWS:
        if key in scores:
            v = scores[key]
            kmh = v.get("km2_per_hour")
            out.append(f"| {label} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | "
                       f"{f(v, 'apls')} | {v['pred_length_m']:.0f} m / {v['ref_length_m']:.0f} m "
                       f"| {kmh if kmh is not None else '-'} |")
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: ``chips`` (default), ``evaluate [CKPT]`` (held-out scores as JSON and as the
    markdown tables of ``docs/quality.md``; default the bundled model) or ``package CKPT``
    (evaluate and copy to ``resources/models/road_demo.ckpt``)."""
    p = argparse.ArgumentParser(description="Demo road model: training chips, evaluation, "
                                            "packaging.")
    p.add_argument("action", nargs="?", default="chips", choices=("chips", "evaluate",
                                                                   "package"))
    p.add_argument("checkpoint", nargs="?", type=Path, default=None,
                   help="evaluate/package: the trained checkpoint (best.ckpt of the run)")
    p.add_argument("--data", type=Path, default=default_data_dir(),
                   help="the shared reference data folder")
    p.add_argument("--out", type=Path, default=default_cache_dir(),
                   help="chips folder (written by 'chips', read by 'evaluate')")
    p.add_argument("--corpus", type=Path, default=None,
                   help="assembled corpus whose validation chips 'evaluate' scores per source "
                        "[default: the cache's corpus at the model's GSD]")
    p.add_argument("--dest", type=Path, default=Path(__file__).resolve().parents[2]
                   / "resources" / "models" / "road_demo.ckpt")
    p.add_argument("--parent", type=Path, default=None,
                   help="package: the checkpoint the run started from (--init-checkpoint); its "
                   "provenance list is carried over")
    p.add_argument("--stage", default=None,
                   help="package: JSON describing this training stage (model provenance)")
    p.add_argument("--work", type=Path, default=None,
                   help="evaluate/package: keep the extractions in this folder "
                        "[default: a temporary folder]")
    p.add_argument("--figures", type=Path, default=None,
                   help="evaluate/package: also draw reference vs extracted roads of the "
                        "held-out scenes as quality_<scene>.jpg in this folder")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    if a.action == "chips":
        counts = build_demo_chips(a.data, a.out, overwrite=a.overwrite)
        print(f"{a.out}: {counts}")  # noqa: T201  (command-line entry point)
        return 0
    if a.checkpoint is None:
        if a.action == "package":
            p.error("package needs the checkpoint path")
        a.checkpoint = a.dest
    if a.corpus is None:
        side = Path(a.checkpoint).with_suffix(".json")
        gsd = (json.loads(side.read_text(encoding="utf-8")).get("gsd_m")
               if side.exists() else None)
        a.corpus = default_corpus_dir(float(gsd) if gsd else 1.0)
    work = a.work or Path(tempfile.mkdtemp(prefix="roadseg_demo_eval_"))
    scores = evaluate_demo_model(a.checkpoint, a.data, a.corpus, work)
    print(json.dumps(scores, indent=1))  # noqa: T201
    if a.figures is not None:
        for f in quality_figures(work, a.data, a.figures):
            print(f)  # noqa: T201
    print(scores_markdown(scores))  # noqa: T201
    if a.action == "package":
        stage = json.loads(a.stage) if a.stage else None
        print(package_model(a.checkpoint, a.dest, scores, stage, a.parent))  # noqa: T201
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
