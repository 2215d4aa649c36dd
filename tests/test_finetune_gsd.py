"""Fine-tuning at the model's ground resolution: ``roadseg dataset build --gsd`` resamples a
synthetic 0.3 m GeoTIFF (bright 6 m road stripes) and its labels to 0.5 m, the manifest records
the chips' ``gsd_m``; ``roadseg train`` inherits ``gsd_m`` from ``--init-checkpoint`` and stops
at start-up on chips of another resolution; the ``road_finetune`` recipe trains for real."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
from gis_fixtures import utm_transform, write_geotiff
from shapely.geometry import LineString

from app.service.dataset import DatasetBuildRequest, build_chip_dataset
from app.service.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
RES, W, H = 0.3, 600, 400          # 180 m x 120 m at 0.3 m
X0, Y0 = 500000.0, 5000000.0       # gis_fixtures.UTM33_ORIGIN
ROAD_X_M, ROAD_Y_M, ROAD_W_M = 60.0, 45.0, 6.0  # vertical / horizontal road centres (metres
#                                                   from the left / top edge), road width
BRIGHT, DARK = 1500, 300


def _scene(path: Path, crs="EPSG:32633") -> Path:
    """uint16 3-band image at 0.3 m: dark noisy ground, two bright 6 m wide road stripes."""
    rng = np.random.default_rng(3)
    img = (DARK + rng.integers(0, 60, (3, H, W))).astype(np.uint16)
    xm = (np.arange(W) + 0.5) * RES
    ym = (np.arange(H) + 0.5) * RES
    img[:, :, np.abs(xm - ROAD_X_M) < ROAD_W_M / 2] = BRIGHT
    img[:, np.abs(ym - ROAD_Y_M) < ROAD_W_M / 2, :] = BRIGHT
    return write_geotiff(path, img, crs=crs, transform=utm_transform(RES))


def _lines(path: Path) -> Path:
    """The two road centre lines (GeoJSON, in the image's CRS)."""
    lines = [LineString([(X0 + ROAD_X_M, Y0), (X0 + ROAD_X_M, Y0 - H * RES)]),
             LineString([(X0, Y0 - ROAD_Y_M), (X0 + W * RES, Y0 - ROAD_Y_M)])]
    gpd.GeoDataFrame(geometry=lines, crs="EPSG:32633").to_file(path, driver="GeoJSON")
    return path


def _mosaic(out: Path, manifest: dict, key: str, band: int = 1) -> np.ndarray:
    """Chips pasted back onto the dataset's grid (-1 where no chip was written)."""
    full = np.full((manifest["height"], manifest["width"]), -1, np.int32)
    for s in manifest["samples"]:
        c, r, w, h = s["window"]
        with rasterio.open(out / s[key]) as src:
            a = src.read(band)
        hh, ww = min(h, full.shape[0] - r), min(w, full.shape[1] - c)
        full[r:r + hh, c:c + ww] = a[:hh, :ww]
    return full


def _build(tmp_path: Path, labels: Path, name: str = "chips", **kw):
    image = tmp_path / "scene_03m.tif"
    if not image.exists():
        _scene(image)
    kw.setdefault("chip_size_px", 64)
    kw.setdefault("val_fraction", 0.25)
    kw.setdefault("gap_px", 0)
    out = tmp_path / name
    res = build_chip_dataset(DatasetBuildRequest(str(image), str(labels), str(out), **kw))
    return image, out, res, json.loads((out / "manifest.json").read_text())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum()) / max(1, int((a | b).sum()))


def test_build_at_gsd_resamples_image_and_lines(tmp_path):
    image, out, res, man = _build(tmp_path, _lines(tmp_path / "roads.geojson"), gsd_m=0.5,
                                  width_m=ROAD_W_M)
    assert res.gsd_m == 0.5 and man["gsd_m"] == 0.5 and man["source_gsd_m"] == pytest.approx(RES)
    assert man["resampling"] == "average"
    assert (man["width"], man["height"]) == (360, 240)  # 180 m x 120 m at 0.5 m
    assert man["transform"] == pytest.approx([0.5, 0, X0, 0, -0.5, Y0])
    assert res.counts["train"] > 0 and res.counts["val"] > 0
    s = man["samples"][-1]
    with rasterio.open(out / s["image"]) as chip, rasterio.open(out / s["mask"]) as m:
        assert chip.res == pytest.approx((0.5, 0.5)) and m.transform == chip.transform
        assert chip.dtypes[0] == "uint16" and chip.crs.to_epsg() == 32633
        c, r, _, _ = s["window"]
        assert (chip.transform.c, chip.transform.f) == pytest.approx((X0 + 0.5 * c,
                                                                      Y0 - 0.5 * r))
    img, lab = _mosaic(out, man, "image"), _mosaic(out, man, "mask")
    covered = img >= 0
    assert covered.mean() > 0.9
    # area average of the 0.3 m pixels: levels between dark and bright only at stripe edges
    bright = img > (BRIGHT + DARK) / 2
    road = lab == 255
    assert set(np.unique(lab[covered])) == {0, 255}
    assert _iou(bright & covered, road & covered) > 0.85
    # ... and that agreement is specific to this alignment: 2 m (4 px) off is far worse
    assert _iou(np.roll(bright, (4, 4), axis=(0, 1)) & covered, road & covered) < 0.6
    # 6 m road = 12 px at 0.5 m: the vertical stripe's label is 12 +- 1 px wide
    assert abs(int(road[120, :].sum()) - 12) <= 1


def test_mask_labels_are_resampled_nearest(tmp_path):
    rng = np.random.default_rng(5)
    label = np.kron(rng.integers(0, 2, (H // 20, W // 20)), np.ones((20, 20))).astype(np.uint8)
    label[:, 300:303] = 7  # a 0.9 m line: nearest keeps values, never averages them
    lab_path = write_geotiff(tmp_path / "labels_03m.tif", label, transform=utm_transform(RES))
    _, out, res, man = _build(tmp_path, lab_path, gsd_m=0.5)
    assert man["source"]["label_kind"] == "mask" and man["gsd_m"] == 0.5
    got = _mosaic(out, man, "mask")
    covered = got >= 0
    assert set(np.unique(got[covered])) == {0, 255}
    # nearest neighbour: each 0.5 m pixel takes the 0.3 m label pixel under its centre
    rows = ((np.arange(man["height"]) + 0.5) * 0.5 / RES).astype(int)
    cols = ((np.arange(man["width"]) + 0.5) * 0.5 / RES).astype(int)
    want = np.where(label[np.ix_(rows, cols)] > 0, 255, 0)
    assert (got[covered] == want[covered]).mean() > 0.995


def test_without_gsd_chips_are_native_and_the_manifest_records_it(tmp_path):
    image, out, res, man = _build(tmp_path, _lines(tmp_path / "roads.geojson"))
    assert man["gsd_m"] == pytest.approx(RES) and man["resampling"] is None
    assert (man["width"], man["height"]) == (W, H) and res.gsd_m == pytest.approx(RES)
    with rasterio.open(image) as src:
        for s in man["samples"][:2] + man["samples"][-2:]:
            c, r, w, h = s["window"]
            with rasterio.open(out / s["image"]) as chip:
                win = rasterio.windows.Window(c, r, w, h)
                assert chip.transform == src.window_transform(win)
                assert np.array_equal(chip.read(), src.read(window=win, boundless=True))
    # within 5 % of the image's own resolution nothing is resampled
    _, _, res2, man2 = _build(tmp_path, tmp_path / "roads.geojson", "near", gsd_m=0.31)
    assert man2["resampling"] is None and man2["gsd_m"] == pytest.approx(RES)
    assert res2.counts == res.counts


def test_image_without_crs_needs_input_gsd(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 255, (3, 300, 300)).astype(np.uint8)
    label = np.zeros((300, 300), np.uint8)
    label[:, 20:30] = 1
    ident = rasterio.Affine.identity()
    image = write_geotiff(tmp_path / "pix.tif", img, crs=None, transform=ident)
    lab = write_geotiff(tmp_path / "pix_mask.tif", label, crs=None, transform=ident)
    req = dict(image=str(image), labels=str(lab), chip_size_px=64, gap_px=0, gsd_m=0.5)
    with pytest.raises(UserError, match=r"pix\.tif: raster has no CRS.*--input-gsd"):
        build_chip_dataset(DatasetBuildRequest(out_dir=str(tmp_path / "a"), **req))
    assert not (tmp_path / "a").exists()
    res = build_chip_dataset(DatasetBuildRequest(out_dir=str(tmp_path / "b"),
                                                 input_gsd_m=0.25, **req))
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert res.gsd_m == 0.5 and man["source_gsd_m"] == 0.25
    assert (man["width"], man["height"]) == (150, 150)
    got = _mosaic(tmp_path / "b", man, "mask")
    assert (got[:, 5:20] >= 0).all()
    assert np.array_equal(np.nonzero((got == 255).any(axis=0))[0], np.arange(10, 15))


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture()
def bundled_05(bundled_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of the bundled model with ``gsd_m: 0.5`` in its metadata (as it will record; a
    copy, not a link: ``roadseg train`` resolves links to the original's sidecar)."""
    d = tmp_path / "model"
    d.mkdir()
    shutil.copyfile(bundled_checkpoint, d / "road_demo.ckpt")
    meta = json.loads(bundled_checkpoint.with_suffix(".json").read_text())
    meta["gsd_m"] = 0.5
    (d / "road_demo.json").write_text(json.dumps(meta), encoding="utf-8")
    return d / "road_demo.ckpt"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_cli_gsd_from_checkpoint_and_one_line_errors(tmp_path, bundled_05, capsys):
    from app.cli import main

    image, lines = _scene(tmp_path / "scene.tif"), _lines(tmp_path / "roads.geojson")
    base = ["dataset", "build", str(image), "--labels", str(lines), "--chip-size", "64",
            "--gap", "0", "-q"]
    assert main(base + ["--out", str(tmp_path / "a"), "--gsd-from", str(bundled_05)]) == 0
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["gsd_m"] == 0.5
    assert "0.5 m per pixel" in capsys.readouterr().out
    rc = main(base + ["--out", str(tmp_path / "b"), "--gsd", "0.5", "--gsd-from",
                      str(bundled_05)])
    assert rc != 0 and "either --gsd or --gsd-from" in _one_line_error(capsys)
    no_gsd = tmp_path / "nogsd"
    no_gsd.mkdir()
    shutil.copyfile(bundled_05, no_gsd / "m.ckpt")
    shutil.copy(bundled_05.with_suffix(".json"), no_gsd / "m.json")
    meta = json.loads((no_gsd / "m.json").read_text())
    meta.pop("gsd_m")
    (no_gsd / "m.json").write_text(json.dumps(meta))
    rc = main(base + ["--out", str(tmp_path / "c"), "--gsd-from", str(no_gsd / "m.ckpt")])
    err = _one_line_error(capsys)
    assert rc != 0 and "m.ckpt" in err and "no ground resolution" in err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_resolve_gsd_inherits_and_refuses_other_chips(tmp_path, bundled_05):
    from segcore.builders import resolve_gsd
    from segcore.config import from_dict
    from segcore.errors import ConfigError

    _, out05, _, _ = _build(tmp_path, _lines(tmp_path / "roads.geojson"), "c05", gsd_m=0.5)
    _, out03, _, _ = _build(tmp_path, tmp_path / "roads.geojson", "c03")
    base = dict(model="ddrnet23_slim", dataset="chips", init_checkpoint=str(bundled_05))
    cfg = resolve_gsd(from_dict(dict(base, data_root=str(out05))))
    assert cfg.gsd_m == 0.5
    # a config's own gsd_m wins over the checkpoint's
    assert resolve_gsd(from_dict(dict(base, data_root=str(out03), gsd_m=0.3))).gsd_m == 0.3
    with pytest.raises(ConfigError, match=r"manifest\.json: the chips are at 0\.3 m per pixel "
                                          r"but the model's gsd_m is 0\.5 m .*--gsd 0\.5"):
        resolve_gsd(from_dict(dict(base, data_root=str(out03))))
    # a corpus manifest (per-sample gsd_m) is checked too
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text(json.dumps(
        {"corpus": {"gsd_m": 1.0}, "samples": [{"image": "i.png", "mask": "m.png",
                                                "gsd_m": 1.0}]}))
    with pytest.raises(ConfigError, match="1 m per pixel"):
        resolve_gsd(from_dict(dict(base, data_root=str(tmp_path / "corpus"))))


def test_cli_train_stops_at_start_on_chips_of_another_gsd(tmp_path, bundled_05, capsys):
    from app.cli import main

    _, chips, _, _ = _build(tmp_path, _lines(tmp_path / "roads.geojson"), status="accepted")
    out = tmp_path / "run"
    rc = main(["train", "--config", "road_finetune", "--data", str(chips), "--out", str(out),
               "--init-checkpoint", str(bundled_05), "-q", "--epochs", "1",
               "--set", "steps_per_epoch=1", "--set", "crop_size=64"])  # bounded if it ran
    err = _one_line_error(capsys)
    assert rc != 0
    assert "0.3 m per pixel" in err and "gsd_m is 0.5 m" in err
    assert "roadseg dataset build --gsd 0.5" in err
    events = (out / "events.jsonl").read_text() if (out / "events.jsonl").exists() else ""
    assert '"type": "step"' not in events and not list(out.glob("*.ckpt"))


@pytest.mark.slow
def test_finetune_recipe_trains_and_inherits_gsd(tmp_path, bundled_05):
    from app.cli import main
    from segcore.meta import read_metadata

    _, chips, _, _ = _build(tmp_path, _lines(tmp_path / "roads.geojson"), gsd_m=0.5,
                            status="accepted")
    out = tmp_path / "run"
    rc = main(["train", "--config", "road_finetune", "--data", str(chips), "--out", str(out),
               "--init-checkpoint", str(bundled_05), "--epochs", "1", "-q",
               "--set", "steps_per_epoch=2", "--set", "crop_size=64", "--set", "batch_size=2",
               "--set", "val_steps=1"])
    assert rc == 0
    meta = read_metadata(out / "last.ckpt")
    assert meta.gsd_m == 0.5 and meta.model == "ddrnet23_slim"
    assert meta.normalization["method"] == "percentile" and "prestretched" not in \
        meta.normalization
    resolved = yaml.safe_load((out / "config.yaml").read_text())
    assert resolved["gsd_m"] == 0.5 and resolved["lr"] == pytest.approx(2e-4)
    steps = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "step" for e in steps) >= 1
    assert all(np.isfinite(e["loss"]) for e in steps if e["type"] == "step")


def test_finetune_recipe_is_for_raw_chips():
    from segcore.builders import dataset_kwargs
    from segcore.config import load_config

    cfg = load_config(ROOT / "resources" / "configs" / "road_finetune.yaml")
    meta = json.loads((ROOT / "resources" / "models" / "road_demo.json").read_text())
    assert cfg.model == meta["model"] and cfg.gsd_m is None and cfg.augment == "roads"
    assert cfg.lr == pytest.approx(2e-4) and cfg.epochs * cfg.steps_per_epoch <= 500
    kw = dataset_kwargs(cfg, True)
    assert kw["stretch"] == (2.0, 98.0)  # each raw chip is stretched, as inference does
    assert "mask_mode" not in kw  # 0/255 masks of dataset build read as binary
    norm = {k: v for k, v in cfg.normalization.items()}
    assert norm == meta["normalization"]
