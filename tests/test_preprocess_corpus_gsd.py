"""One normaliser (segcore.preprocess), the multi-source corpus (app.service.corpus) and
processing at the model's ground resolution (run_extraction's ``gsd``)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from segcore.data.transforms import Normalization
from segcore.preprocess import (Preprocessor, preprocessor_from_meta, stretch_limits,
                                stretch_to_uint8)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PCT = {"method": "percentile", "low": 2, "high": 98, "mean": [0.5], "std": [0.3125]}


# ------------------------------------------------------------------------ preprocessing
def test_training_chip_and_inference_tile_get_identical_arrays():
    """A chip stored as the scene stretch's 8-bit levels, normalised by the training pipeline,
    equals the inference normalisation of the raw pixels with the same scene limits."""
    rng = np.random.default_rng(0)
    raw = rng.integers(50, 2047, size=(3, 64, 80)).astype(np.uint16)  # 11-bit scene
    lo, hi = stretch_limits(raw)
    chip = stretch_to_uint8(raw, lo, hi)  # what `roadseg dataset assemble` writes
    train = Normalization.resolve(mean=[0.5], std=[0.3125]).apply(chip.transpose(1, 2, 0))
    infer = preprocessor_from_meta(PCT, stretch=(lo, hi))(raw)
    assert train.dtype == infer.dtype == np.float32
    assert np.array_equal(train, infer)
    # the fused per-tile path of the tile reader gives the same bits
    out = np.empty(raw.shape, np.float32)
    preprocessor_from_meta(PCT, stretch=(lo, hi)).normalize_into(raw, out)
    assert np.array_equal(out, infer)
    # and the prestretched chips through the percentile normaliser's 8-bit tail
    assert np.array_equal(preprocessor_from_meta(PCT).on_uint8_levels()(chip), infer)


def test_percentile_is_quantised_to_8_bit_levels_and_clipped():
    p = preprocessor_from_meta({"method": "percentile"}, stretch=([0.0], [1000.0]))
    v = p(np.array([-5, 0, 2, 500, 1000, 4000], np.float32).reshape(1, 1, 6)).ravel()
    np.testing.assert_allclose(v, [0, 0, 1 / 255, 128 / 255, 1, 1], atol=1e-7)
    assert len(np.unique(p(np.linspace(0, 1000, 5000, dtype=np.float32).reshape(1, 1, -1)))) \
        == 256


def test_meanstd_and_dlinknet_match_their_formulas():
    raw = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(3, axis=0)
    m = preprocessor_from_meta({"method": "meanstd"})(raw)
    ref = (raw.astype(np.float64) / 255 - np.array([0.485, 0.456, 0.406])[:, None, None]) \
        / np.array([0.229, 0.224, 0.225])[:, None, None]
    np.testing.assert_allclose(m, ref, atol=1e-5)
    d = preprocessor_from_meta({"method": "dlinknet"})(raw)
    np.testing.assert_allclose(d, raw / 255.0 * 3.2 - 1.6, atol=1e-5)
    assert isinstance(preprocessor_from_meta({"normalization": PCT}), Preprocessor)


# ------------------------------------------------------------------------ corpus
def _png_source(folder: Path, name: str, size: int, white_cols: int = 0) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    img = rng.integers(60, 160, size=(size, size, 3)).astype(np.uint8)
    mask = np.zeros((size, size), np.uint8)
    for r in range(20, size, 90):  # horizontal roads, 8 px wide
        img[r:r + 8] = 40
        mask[r:r + 8] = 255
    if white_cols:
        img[:, :white_cols] = 255  # outside the imaged strip
    cv2.imwrite(str(folder / "images" / f"{name}.png"), img)
    cv2.imwrite(str(folder / "masks" / f"{name}.png"), mask)


def test_assemble_resamples_splits_by_area_and_ignores_nodata(tmp_path):
    from app.service.corpus import assemble_corpus, load_sources_yaml

    data = tmp_path / "data"
    _png_source(data / "a", "tile1", 800, white_cols=100)
    _png_source(data / "a", "tile2", 800)
    yml = tmp_path / "sources.yaml"
    yml.write_text(
        "root: data\nsources:\n"
        "  - name: half_metre\n    images: a/images/*.png\n    masks: a/masks/{stem}.png\n"
        "    gsd_m: 0.5\n    nodata_rgb: [255, 255, 255]\n    val_fraction: 0.2\n"
        "    repeat: 2\n    licence: test licence\n", encoding="utf-8")
    sources = load_sources_yaml(yml)
    summary = assemble_corpus(sources, tmp_path / "corpus", 1.0, chip_px=128, gap_px=16)
    man = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert man["corpus"]["gsd_m"] == 1.0
    samples = man["samples"]
    assert {s["split"] for s in samples} == {"train", "val"}
    assert all(s["licence"] == "test licence" and s["source"] == "half_metre" for s in samples)
    # 800 px at 0.5 m -> 400 px at 1 m; the validation band is central, 80 px, gap 16 px
    for s in samples:
        c0, r0, w, h = s["window"]
        assert c0 + w <= 400 and r0 + h <= 400
        if s["split"] == "train":
            assert c0 + w <= 160 - 16 or c0 >= 240 + 16
        else:
            assert c0 == 160 and w == 80
    n_train = sum(v["train"] for v in summary["sources"].values())
    assert sum(s["split"] == "train" for s in samples) == 2 * n_train  # repeat: 2
    # white pixels are nodata (255) in the masks, roads 1, background 0; chips are uint8 RGB
    first = next(s for s in samples if s["file"] == "tile1.png" and s["window"][0] == 0)
    m = cv2.imread(str(tmp_path / "corpus" / first["mask"]), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(m)) <= {0, 1, 255} and (m[:, :50] == 255).all() and (m == 1).any()
    im = cv2.imread(str(tmp_path / "corpus" / first["image"]))
    assert im.dtype == np.uint8 and im.shape[:2] == m.shape


def test_assemble_refuses_a_missing_mask_naming_it(tmp_path):
    from app.service.corpus import CorpusError, load_sources_yaml

    _png_source(tmp_path / "a", "t", 64)
    (tmp_path / "a" / "masks" / "t.png").unlink()
    yml = tmp_path / "s.yaml"
    yml.write_text("sources:\n  - {images: a/images/*.png, masks: 'a/masks/{stem}.png', "
                   "gsd_m: 1}\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"t\.png: mask of t\.png"):
        load_sources_yaml(yml)


@pytest.mark.slow
def test_cli_dataset_assemble(tmp_path):
    import subprocess
    import sys

    _png_source(tmp_path / "a", "t", 300)
    yml = tmp_path / "s.yaml"
    yml.write_text("sources:\n  - {images: a/images/*.png, masks: 'a/masks/{stem}.png', "
                   "gsd_m: 0.5}\n", encoding="utf-8")
    cmd = [sys.executable, "-m", "app.cli", "dataset", "assemble", str(yml), "--gsd", "1.0",
           "--out", str(tmp_path / "c"), "--chip-size", "64"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(Path(__file__).parents[1]))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "c" / "manifest.json").is_file() and "train /" in res.stdout
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(Path(__file__).parents[1]))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"roadseg: error: {tmp_path / 'c'}: already exists (pass --overwrite)"]


# ------------------------------------------------------------------------ ground resolution
def _road_probability(batch: np.ndarray) -> np.ndarray:
    """Stand-in network: bright pixels (the painted roads) are road."""
    return np.ascontiguousarray(batch[:, :1], dtype=np.float32)


def _scene(path: Path, gsd: float, road_mask_03: np.ndarray, origin=(500000.0, 4000000.0)):
    """The 0.3 m road mask painted as a 3-band image resampled to ``gsd``."""
    f = 0.3 / gsd
    h, w = road_mask_03.shape
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    img = cv2.resize(road_mask_03.astype(np.float32) * 255, size, interpolation=cv2.INTER_AREA)
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=size[0], height=size[1], count=3,
                       dtype="uint8", crs=CRS.from_epsg(32611),
                       transform=from_origin(origin[0], origin[1], 0.3 * w / size[0],
                                             0.3 * h / size[1])) as ds:
        ds.write(np.stack([img] * 3))


@pytest.mark.slow
def test_same_scene_at_three_resolutions_gives_the_same_network(tmp_path):
    """One scene at 0.3 m and resampled to 0.6 m and 1.0 m: processed at the model's 1.0 m,
    the road networks agree in length within a few per cent."""
    from app.service.extraction import ExtractionRequest, run_extraction

    mpath = SHARED / "roads" / "spacenet" / "sample_road_raster_mask.tif"
    if not mpath.is_file():
        pytest.skip(f"{mpath} not available (shared data)")
    with rasterio.open(mpath) as ds:
        road = ds.read(1) > 0
    lengths, grids = {}, {}
    for gsd in (0.3, 0.6, 1.0):
        img = tmp_path / f"scene_{gsd}.tif"
        _scene(img, gsd, road)
        res = run_extraction(ExtractionRequest(image=str(img), out_dir=str(tmp_path / f"o{gsd}"),
                                               predict_fn=_road_probability, gsd=1.0,
                                               tile_size_px=256, overlap_px=32))
        assert res.ok, res.error
        s = json.loads(Path(res.summary_path).read_text())
        lengths[gsd] = s["road_km"]
        grids[gsd] = s["processing_grid"]
        with rasterio.open(res.mask_path) as m:  # the COGs are on the processing grid
            assert abs(m.res[0] - 1.0) < 0.02
    assert grids[0.3]["resampled"] and grids[0.6]["resampled"] and not grids[1.0]["resampled"]
    assert lengths[1.0] > 1.0
    for gsd in (0.3, 0.6):
        assert abs(lengths[gsd] / lengths[1.0] - 1) < 0.05, lengths
    # 'native' keeps the input grid
    res = run_extraction(ExtractionRequest(image=str(tmp_path / "scene_0.6.tif"),
                                           out_dir=str(tmp_path / "native"), gsd="native",
                                           predict_fn=_road_probability, tile_size_px=256,
                                           overlap_px=32))
    with rasterio.open(res.mask_path) as m:
        assert abs(m.res[0] - 0.6) < 0.02


@pytest.mark.slow
def test_raster_without_crs_needs_the_input_gsd(tmp_path):
    from app.service.extraction import ExtractionRequest, run_extraction

    img = tmp_path / "nocrs.tif"
    with rasterio.open(img, "w", driver="GTiff", width=200, height=200, count=3,
                       dtype="uint8") as ds:
        data = np.zeros((3, 200, 200), np.uint8)
        data[:, 90:100] = 255
        data[:, 0, 0] = 7
        ds.write(data)
    req = dict(image=str(img), predict_fn=_road_probability, gsd=1.0, allow_pixel_coords=True,
               tile_size_px=64, overlap_px=8)
    res = run_extraction(ExtractionRequest(out_dir=str(tmp_path / "a"), **req))
    assert not res.ok and "--input-gsd" in res.error and "nocrs.tif" in res.error
    res = run_extraction(ExtractionRequest(out_dir=str(tmp_path / "b"), input_gsd_m=0.5, **req))
    assert res.ok, res.error
    with rasterio.open(res.mask_path) as m:
        assert m.width == 100
