"""The bundled demo road model: file, metadata, and a sane mask on a crop of the sample scene."""
from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "resources" / "models" / "road_demo.ckpt"
SCENE = ROOT / "resources" / "sample" / "RGB-PanSharpen_AOI_2_Vegas_img0.tif"
LINES = ROOT / "resources" / "sample" / "AOI_2_Vegas_img0.geojson"
CROP = 256


def test_bundled_files_and_metadata():
    assert CKPT.is_file() and CKPT.with_suffix(".json").is_file()
    assert CKPT.stat().st_size < 30 * 1024 * 1024
    assert (ROOT / "resources" / "sample" / "ATTRIBUTION.md").is_file()
    meta = json.loads(CKPT.with_suffix(".json").read_text())
    assert meta["bands"] == [1, 2, 3] and meta["in_channels"] == 3
    assert meta["num_classes"] == 1 and meta["task"] == "segmentation"
    assert meta["normalization"]["method"] in ("dlinknet", "meanstd", "imagenet", "percentile")
    assert meta["tile_size_px"] >= 64 and meta["tile_size_px"] % meta["stride"] == 0
    m = meta["metrics"]
    assert 0.0 < m["iou"] <= 1.0 and 0.0 < m["f1"] <= 1.0  # validation of the chosen epoch
    for key in ("paris_img1447", "vegas_img0"):
        assert 0.0 <= m["holdout"][key]["precision"] <= 1.0
        assert m["holdout"][key]["buffer_m"] == 4.0


def test_quality_tables_from_the_recorded_scores():
    """docs/quality.md's tables are printed from the scores packaged with the model."""
    from app.service.demo_data import scores_markdown

    scores = json.loads(CKPT.with_suffix(".json").read_text())["metrics"]["holdout"]
    text = scores_markdown(scores)
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(rows) == 2 + len(scores)  # two header rows, one row per held-out set
    v = scores["vegas_img0"]
    assert f"| {v['precision']:.3f} | {v['recall']:.3f} |" in text


def test_loads_through_the_checkpoint_reader():
    from segcore.checkpoint import read_metadata

    meta = read_metadata(CKPT)
    assert meta.model in ("enet", "ddrnet23_slim")
    assert tuple(meta.bands) == (1, 2, 3)


def _road_window() -> Window:
    """The CROP x CROP window of the scene holding the most reference centre-line length."""
    from gis.chips import chip_windows, rasterize_lines

    with rasterio.open(SCENE) as src:
        road = rasterize_lines(gpd.read_file(LINES), crs=src.crs, transform=src.transform,
                               width=src.width, height=src.height, width_m=6.0)
        wins = chip_windows(src.width, src.height - 64, CROP)  # skip the burned-in caption
    return max(wins, key=lambda w: road[w.row_off:w.row_off + CROP,
                                        w.col_off:w.col_off + CROP].sum())


@pytest.mark.slow
def test_mask_on_a_crop_of_the_sample_scene(tmp_path):
    from app.service.extraction import ExtractionRequest, run_extraction

    win = _road_window()
    crop = tmp_path / "crop.tif"
    with rasterio.open(SCENE) as src:
        profile = src.profile | {"width": CROP, "height": CROP,
                                 "transform": src.window_transform(win)}
        profile.pop("blockxsize", None), profile.pop("blockysize", None)
        profile["tiled"] = False
        with rasterio.open(crop, "w", **profile) as dst:
            dst.write(src.read(window=win))
    # no model or checkpoint given: the bundled demo model is used
    res = run_extraction(ExtractionRequest(image=str(crop), out_dir=str(tmp_path / "out"),
                                           backend="mindspore"))
    assert res.ok, res.error
    assert Path(res.summary["model"]["checkpoint"]).resolve() == CKPT.resolve()
    # the bundled model declares 0.5 m: the 0.3 m crop is processed (and its COGs written) on a
    # 0.5 m grid over the same extent
    grid = res.summary["processing_grid"]
    assert abs(grid["gsd_m"] - 0.5) < 1e-6
    with rasterio.open(res.mask_path) as m:
        mask = m.read(1)
        assert m.crs == profile["crs"]
        transform, shape = m.transform, m.shape
        west, south, east, north = m.bounds
    cw, cs, ce, cn = rasterio.transform.array_bounds(CROP, CROP, profile["transform"])
    tol = 2 * abs(transform.a)  # same extent, to within the coarser grid's pixel
    assert abs(west - cw) < tol and abs(east - ce) < tol and abs(south - cs) < tol \
        and abs(north - cn) < tol
    road = mask == 1
    assert shape[0] < 0.6 * CROP and shape[1] < 0.6 * CROP  # ~0.27 m pixels read at 0.5 m
    assert 0.01 < road.mean() < 0.7  # some road, not everything
    # the predicted road lies on the reference roads more often than chance
    from gis.chips import rasterize_lines

    ref = rasterize_lines(gpd.read_file(LINES), crs=profile["crs"],
                          transform=transform, width=shape[1], height=shape[0],
                          width_m=10.0) > 0
    assert ref[road].mean() > ref.mean()


def test_quality_figures_draw_reference_and_extraction(tmp_path):
    """`demo_data evaluate --figures`: the held-out scene's picture shows the reference roads
    (red) and the extracted centre lines (yellow) where they lie; scenes whose extraction or
    data is missing are left out."""
    import cv2

    from app.service.demo_data import quality_figures

    work = tmp_path / "work"
    (work / "vegas").mkdir(parents=True)
    lines = gpd.read_file(LINES)
    # an "extraction" that found the western half of the reference lines
    x0, y0, x1, y1 = lines.total_bounds
    west = gpd.clip(lines, (x0 - 1, y0 - 1, (x0 + x1) / 2, y1 + 1)).explode(index_parts=False)
    west = west[west.geom_type == "LineString"]
    assert len(west) > 0
    west.to_file(work / "vegas" / "scene_roads.gpkg", layer="edges", driver="GPKG")
    written = quality_figures(work, tmp_path / "no_shared_data", tmp_path / "figs", max_size=400)
    assert [p.name for p in written] == ["quality_vegas_img0.jpg"]
    img = cv2.imread(str(written[0]))
    assert img.shape[:2] == (400, 400)
    b, g, r = (img[..., i].astype(int) for i in range(3))
    yellow = (r > 180) & (g > 150) & (b < 90)
    red = (r > 170) & (g < 110) & (b < 110)
    half = img.shape[1] // 2
    assert yellow[:, :half].sum() > 200 and yellow[:, half + 20:].sum() < yellow.sum() * 0.1
    assert red[:, half + 20:].sum() > 200  # the missed eastern roads stay red


def test_package_keeps_every_training_stage(tmp_path):
    """A run's best.ckpt has no provenance of its own: packaging it carries the parent's list
    (the --init-checkpoint the run started from) and appends this stage."""
    from app.service.demo_data import package_model
    from app.service.errors import UserError

    parent = tmp_path / "init.ckpt"
    parent.write_bytes(b"weights of stage 1")
    parent.with_suffix(".json").write_text(json.dumps(
        {"model": "ddrnet23_slim", "provenance": [{"stage": "one", "steps": 10}]}))
    run = tmp_path / "best.ckpt"
    run.write_bytes(b"weights of stage 2")
    run.with_suffix(".json").write_text(json.dumps(
        {"model": "ddrnet23_slim", "gsd_m": 0.5, "metrics": {"iou": 0.5}}))
    scores = {"paris_img1447": {"precision": 0.9, "recall": 0.7, "buffer_m": 4.0}}
    dest = package_model(run, tmp_path / "out" / "m.ckpt", scores, {"stage": "two"}, parent)
    doc = json.loads(dest.with_suffix(".json").read_text())
    assert [s["stage"] for s in doc["provenance"]] == ["one", "two"]
    assert doc["metrics"]["iou"] == 0.5 and doc["metrics"]["holdout"] == scores
    assert dest.read_bytes() == b"weights of stage 2"
    # a parent without its sidecar is refused, naming the file, and nothing is written
    lone = tmp_path / "lone.ckpt"
    lone.write_bytes(b"x")
    with pytest.raises(UserError, match="lone.json"):
        package_model(run, tmp_path / "out2" / "m.ckpt", scores, {"stage": "two"}, lone)
    assert not (tmp_path / "out2" / "m.ckpt").exists()
