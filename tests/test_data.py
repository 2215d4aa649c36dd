"""segcore.data: layouts, mask conversion, augmentation alignment, broken samples, loaders."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from segcore.data import (AugmentConfig, Normalization, augment_pair, build_dataset,
                          cityscapes_label_to_train_id, recipe)
from segcore.errors import ConfigError, DatasetError

# ----------------------------------------------------------------------------- helpers


def _write_rgb(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
    return path


def _write_gray(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _write_tif(path: Path, arr_chw: np.ndarray) -> Path:
    from gis_fixtures import utm_transform, write_geotiff

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_geotiff(path, arr_chw, crs="EPSG:32633", transform=utm_transform(0.5))


def _deepglobe_folder(root: Path, n: int = 3, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    d = root / "train"
    for i in range(n):
        _write_rgb(d / f"{i}_sat.jpg", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
        m = np.zeros((size, size, 3), np.uint8)
        m[:, i * 3:i * 3 + 4] = 255
        _write_rgb(d / f"{i}_mask.png", m)
    return root


# ----------------------------------------------------------------------- real DeepGlobe


def test_real_deepglobe_pairs(shared_data):
    root = shared_data / "roads" / "deepglobe"
    ds = build_dataset("deepglobe", root, "train", augment="none", crop_size=64, norm="dlinknet")
    assert len(ds) == 4
    names = [s.image.name for s in ds.samples]
    assert names == sorted(names) and all(n.endswith("_sat.jpg") for n in names)
    img, mask = ds.load_pair(0)
    assert img.shape == (1024, 1024, 3) and img.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    # independent read of the RGB 0/255 mask with PIL: road = channel value 255
    ref = np.asarray(Image.open(ds.samples[0].mask).convert("RGB"))[:, :, 0] == 255
    np.testing.assert_array_equal(mask.astype(bool), ref)
    assert 0.005 < mask.mean() < 0.025  # README: road fraction 0.7-1.9 %
    x, m = ds[0]
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert m.shape == (64, 64) and m.dtype == np.int32
    # centre crop + D-LinkNet normalisation img / 255 * 3.2 - 1.6, from a PIL decode
    pil = np.asarray(Image.open(ds.samples[0].image).convert("RGB")).astype(np.float32)
    crop = pil[480:544, 480:544]
    np.testing.assert_allclose(x, (crop / 255 * 3.2 - 1.6).transpose(2, 0, 1), atol=0.1)
    np.testing.assert_array_equal(m, ref[480:544, 480:544])


def test_real_deepglobe_train_augment_keeps_road_pixels(shared_data):
    ds = build_dataset("deepglobe", shared_data / "roads" / "deepglobe", "train", crop_size=64,
                       seed=3)
    x, m = ds[1]
    assert x.shape == (3, 64, 64) and set(np.unique(m)) <= {0, 1}
    assert np.isfinite(x).all()


# -------------------------------------------------------------------------- Cityscapes

EXPECTED_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                      23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def test_cityscapes_train_id_mapping():
    ids = np.arange(256, dtype=np.uint8)
    got = cityscapes_label_to_train_id(ids)
    for lid in range(256):
        assert got[lid] == EXPECTED_TRAIN_IDS.get(lid, 255), lid


def test_cityscapes_layout(tmp_path):
    rng = np.random.default_rng(1)
    for city, stem in [("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")]:
        _write_rgb(tmp_path / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png",
                   rng.integers(0, 255, (16, 32, 3), dtype=np.uint8))
        lab = rng.choice([0, 1, 7, 8, 9, 26, 33, 4], size=(16, 32)).astype(np.uint8)
        _write_gray(tmp_path / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", lab)
    ds = build_dataset("cityscapes", tmp_path, "val")
    assert len(ds) == 2 and ds.num_classes == 19
    assert ds.samples[0].image.parent.name == "aachen"
    x, m = ds[1]
    raw = np.asarray(Image.open(ds.samples[1].mask))
    expected = np.vectorize(lambda v: EXPECTED_TRAIN_IDS.get(int(v), 255))(raw)
    np.testing.assert_array_equal(m, expected)
    assert x.shape == (3, 16, 32)
    # ImageNet normalisation by default
    img = np.asarray(Image.open(ds.samples[1].image)).astype(np.float32) / 255
    ref = (img - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x, ref.transpose(2, 0, 1), rtol=1e-5, atol=1e-5)


def test_cityscapes_missing_label_file(tmp_path):
    _write_rgb(tmp_path / "leftImg8bit" / "train" / "ulm" / "ulm_1_leftImg8bit.png",
               np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="ulm_1_gtFine_labelIds.png is missing"):
        build_dataset("cityscapes", tmp_path, "train", crop_size=8)


# --------------------------------------------------------------------------------- VOC


def test_voc_two_column_list_and_palette_masks(tmp_path):
    rng = np.random.default_rng(2)
    lines = []
    for i in range(2):
        _write_rgb(tmp_path / "img" / f"{i}.jpg", rng.integers(0, 255, (20, 24, 3), np.uint8))
        lab = rng.integers(0, 21, (20, 24)).astype(np.uint8)
        lab[0] = 255
        pal = Image.fromarray(lab, mode="P")
        pal.putpalette(list(rng.integers(0, 255, 768, dtype=np.uint8)))
        (tmp_path / "lab").mkdir(exist_ok=True)
        pal.save(tmp_path / "lab" / f"{i}.png")
        lines.append(f"img/{i}.jpg lab/{i}.png")
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n\n")
    ds = build_dataset("voc", tmp_path, "val", num_classes=21)
    assert len(ds) == 2
    _, m = ds[1]
    # palette indices, not colours; the 255 border stays ignore
    np.testing.assert_array_equal(m, np.asarray(Image.open(tmp_path / "lab" / "1.png")))
    assert (m[0] == 255).all()
    # class values beyond num_classes are a broken sample
    ds_small = build_dataset("voc", tmp_path, "val", num_classes=5)
    with pytest.raises(DatasetError, match="not a class"):
        ds_small[0]


def test_voc_id_list_and_missing_mask(tmp_path):
    _write_rgb(tmp_path / "JPEGImages" / "2007_000032.jpg", np.zeros((8, 8, 3), np.uint8))
    _write_gray(tmp_path / "SegmentationClass" / "2007_000032.png", np.ones((8, 8), np.uint8))
    _write_rgb(tmp_path / "JPEGImages" / "2007_000039.jpg", np.zeros((8, 8, 3), np.uint8))
    lst = tmp_path / "ImageSets" / "Segmentation" / "train.txt"
    lst.parent.mkdir(parents=True)
    lst.write_text("2007_000032\n2007_000039\n")
    with pytest.raises(DatasetError, match=r"2007_000039\.png.*does not exist"):
        build_dataset("voc", tmp_path, "train", crop_size=8)
    ds = build_dataset("voc", tmp_path, "train", crop_size=8, skip_broken=True)
    assert [s.image.name for s in ds.samples] == ["2007_000032.jpg"]
    x, m = ds[0]
    assert x.shape == (3, 8, 8)
    assert set(np.unique(m)) <= {1, 255}  # 255 only where the deeplab crop padded


# ---------------------------------------------------------------------------- ImageNet


def test_imagenet_class_folders(tmp_path):
    rng = np.random.default_rng(3)
    for cls, n in [("n02", 2), ("n01", 1), ("n10", 1)]:
        for i in range(n):
            _write_rgb(tmp_path / "train" / cls / f"{cls}_{i}.JPEG",
                       rng.integers(0, 255, (40, 30, 3), np.uint8))
    ds = build_dataset("imagenet", tmp_path, "train", crop_size=16)
    assert ds.classes == ["n01", "n02", "n10"]
    labels = {s.image.parent.name: s.label for s in ds.samples}
    assert labels == {"n01": 0, "n02": 1, "n10": 2}
    x, y = ds[3]
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    assert y.dtype == np.int32 and int(y) == 2
    ev = build_dataset("imagenet", tmp_path, "train", crop_size=16, augment="none")
    assert not ev.train
    a, _ = ev[0]
    b, _ = ev[0]
    np.testing.assert_array_equal(a, b)  # evaluation transform is deterministic


# ------------------------------------------------------------------------------- chips


def test_chips_geotiff_any_band_count_and_bands(tmp_path):
    rng = np.random.default_rng(4)
    for i in range(2):
        img = rng.integers(0, 2048, (4, 16, 16)).astype(np.uint16)
        _write_tif(tmp_path / "images" / f"c{i}.tif", img)
        mask = np.zeros((1, 16, 16), np.uint8)
        mask[0, i::4] = 1
        _write_tif(tmp_path / "masks" / f"c{i}.tif", mask)
    mean, std = [1000.0] * 4, [500.0] * 4
    ds = build_dataset("chips", tmp_path, None, augment="none", mean=mean, std=std, scale=1.0)
    x, m = ds[1]
    assert x.shape == (4, 16, 16)
    import rasterio
    with rasterio.open(tmp_path / "images" / "c1.tif") as src:
        raw = src.read().astype(np.float32)
    np.testing.assert_allclose(x, (raw - 1000) / 500, rtol=1e-6, atol=1e-5)  # fused x * a + b
    assert m[1].all() and not m[0].any()
    # band selection
    ds3 = build_dataset("chips", tmp_path, None, augment="none", bands=[3, 2, 1],
                        mean=[1000.0] * 3, std=[500.0] * 3, scale=1.0)
    x3, _ = ds3[1]
    np.testing.assert_allclose(x3, (raw[[2, 1, 0]] - 1000) / 500, rtol=1e-6, atol=1e-5)
    # 4 bands with the default 3-value ImageNet mean: a configuration error naming the file
    with pytest.raises(ConfigError, match="c0.tif.*4 band"):
        build_dataset("chips", tmp_path, None, augment="none")[0]


def test_chips_png_pairs_with_manifest_filter(tmp_path):
    rng = np.random.default_rng(5)
    entries = []
    for i, (split, status) in enumerate([("train", "accepted"), ("train", "rejected"),
                                         ("val", "accepted"), ("train", None)]):
        _write_rgb(tmp_path / "images" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), np.uint8))
        _write_gray(tmp_path / "masks" / f"{i}.png", np.full((8, 8), 255 * (i % 2), np.uint8))
        e = {"image": f"images/{i}.png", "mask": f"masks/{i}.png", "split": split}
        if status:
            e["status"] = status
        entries.append(e)
    (tmp_path / "manifest.json").write_text(json.dumps({"samples": entries}))
    train = build_dataset("chips", tmp_path, "train", augment="none")
    assert [s.image.name for s in train.samples] == ["0.png"]
    val = build_dataset("chips", tmp_path, "val", augment="none")
    assert [s.image.name for s in val.samples] == ["2.png"]
    every = build_dataset("chips", tmp_path, "train", augment="none", statuses=None)
    assert [s.image.name for s in every.samples] == ["0.png", "1.png", "3.png"]
    _, m = every[1]
    assert m.dtype == np.int32 and (m == 1).all()  # 0/255 chip mask -> road 1
    with pytest.raises(DatasetError, match="status"):
        build_dataset("chips", tmp_path, "test", augment="none")


def test_chips_split_folders_without_manifest(tmp_path):
    _write_rgb(tmp_path / "train" / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    _write_gray(tmp_path / "train" / "masks" / "a.tif.png", np.zeros((8, 8), np.uint8))
    _write_gray(tmp_path / "train" / "masks" / "a.png", np.ones((8, 8), np.uint8))
    ds = build_dataset("chips", tmp_path, "train", augment="none")
    assert ds.samples[0].mask.name == "a.png"
    with pytest.raises(DatasetError, match="val.*does not exist"):
        build_dataset("chips", tmp_path, "val")


# ----------------------------------------------------------------------- augmentations


def _block_pattern(rng, size=64, block=8):
    small = rng.integers(0, 2, (size // block, size // block)).astype(np.uint8)
    return np.kron(small, np.ones((block, block), np.uint8))


@pytest.mark.parametrize("cfg", [
    AugmentConfig(crop_size=(40, 40), random_crop=True, hflip=True, vflip=True, rot90=True),
    AugmentConfig(crop_size=(80, 72), random_crop=True, hflip=True, mask_fill=255),
])
def test_exact_geometric_augment_keeps_alignment(cfg):
    """Flips, rot90, pad and crop are exact: image content must equal the mask everywhere."""
    rng = np.random.default_rng(6)
    for seed in range(12):
        mask = _block_pattern(rng)
        img = np.repeat((mask * 200)[:, :, None], 3, axis=2)
        a_img, a_mask = augment_pair(img, mask, cfg, np.random.default_rng(seed),
                                     image_fill=[7, 7, 7])
        assert a_img.shape[:2] == a_mask.shape == cfg.crop_size
        valid = a_mask != 255
        np.testing.assert_array_equal(a_img[:, :, 0][valid], (a_mask * 200)[valid])
        assert (a_img[:, :, 0][~valid] == 7).all()


@pytest.mark.parametrize("name", ["dlinknet", "roads", "deeplabv3", "ddrnet"])
def test_reference_recipes_keep_alignment(name):
    """Interpolating recipes (HSV, shift-scale-rotate, random scale, crop, flips).

    Where the bilinear image is unambiguous (< 64 or > 191, i.e. not a blended edge pixel) the
    thresholded image must equal the nearest-neighbour mask exactly; the same image shifted by
    two pixels must not.
    """
    cfg = recipe(name, crop_size=48)
    if name == "dlinknet":  # also exercise rotation in the shift-scale-rotate step
        cfg = AugmentConfig(**{**cfg.__dict__, "rotate_limit_deg": 30.0})
    if name == "roads":  # geometry only here; the photometric part has its own test
        cfg = AugmentConfig(**{**cfg.__dict__, "photometric": False})
    rng = np.random.default_rng(7)
    for seed in range(20):
        mask = _block_pattern(rng)
        img = np.repeat((mask * 255)[:, :, None], 3, axis=2).astype(np.uint8)
        a_img, a_mask = augment_pair(img, mask, cfg, np.random.default_rng(seed),
                                     image_fill=[0, 0, 0])
        assert a_img.shape == (48, 48, 3) and a_mask.shape == (48, 48)
        v = a_img[:, :, 1].astype(int)
        sure = (a_mask != 255) & ((v < 64) | (v > 191))
        assert sure.mean() > 0.3
        np.testing.assert_array_equal(v[sure] > 127, a_mask[sure].astype(bool))
        shifted = np.roll(v, 2, axis=1)
        assert np.any((shifted[sure] > 127) != a_mask[sure].astype(bool))


def test_photometric_jitter_keeps_order_and_mask():
    """Contrast / brightness / gamma change the values but never the order of two pixels (the
    transforms are monotonic), and leave the mask alone."""
    cfg = AugmentConfig(photometric=True)
    img = np.tile(np.arange(40, 200, 10, dtype=np.uint8)[None, :, None], (8, 1, 3))
    mask = (img[:, :, 0] > 120).astype(np.uint8)
    changed = 0
    for seed in range(10):
        out, m = augment_pair(img, mask, cfg, np.random.default_rng(seed), image_fill=[0, 0, 0])
        assert out.dtype == np.uint8 and out.shape == img.shape
        np.testing.assert_array_equal(m, mask)
        row = out[0, :, 0].astype(int)
        assert np.all(np.diff(row) >= 0)
        changed += int(not np.array_equal(out, img))
    assert changed >= 5


def test_grey_and_blur_augmentation_keep_the_mask_and_the_mean():
    """The roads recipe's grey step makes all bands equal (luminance) and its blur smooths a
    step edge without moving it; neither touches the mask."""
    rng0 = np.random.default_rng(3)
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = (200, 120, 40)
    img += rng0.integers(0, 5, img.shape, dtype=np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 1
    grey = AugmentConfig(grayscale_p=1.0)
    out, m = augment_pair(img, mask, grey, np.random.default_rng(0), image_fill=[0, 0, 0])
    np.testing.assert_array_equal(m, mask)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert abs(int(out[0, 20, 0]) - int(0.299 * 200 + 0.587 * 120 + 0.114 * 40)) <= 3
    blur = AugmentConfig(blur_p=1.0, blur_sigma=(1.0, 1.0))
    out, m = augment_pair(img, mask, blur, np.random.default_rng(0), image_fill=[0, 0, 0])
    np.testing.assert_array_equal(m, mask)
    assert 0 < int(out[10, 15, 0]) < 200 and 0 < int(out[10, 16, 0]) < 204  # edge softened
    assert abs(float(out[:, 2:-2].mean()) - float(img[:, 2:-2].mean())) < 2.0
    never = AugmentConfig(grayscale_p=0.0, blur_p=0.0)
    out, _ = augment_pair(img, mask, never, None, image_fill=[0, 0, 0])
    np.testing.assert_array_equal(out, img)


def test_percentile_training_normalization_matches_inference():
    """Training's per-image stretch + mean/std equals what inference applies for the
    ``percentile`` normalisation (up to the uint8 rounding of the stretched image)."""
    from segcore.predict import normalization_from_meta

    rng = np.random.default_rng(3)
    img = (rng.random((40, 50, 3)) * np.array([60, 90, 30]) + [10, 20, 5]).astype(np.uint16)
    n = Normalization.resolve(mean=[0.5], std=[0.3125], stretch=(2, 98))
    stretched = n.stretch_image(img)
    assert stretched.dtype == np.uint8
    for b in range(3):  # the image's own 2nd/98th percentiles map to ~0/~255
        assert np.percentile(stretched[:, :, b], 1) == 0
        assert np.percentile(stretched[:, :, b], 99) == 255
    train_x = n.apply(stretched)
    infer = normalization_from_meta({"method": "percentile", "low": 2, "high": 98,
                                     "mean": [0.5], "std": [0.3125]})
    infer_x = infer(img.transpose(2, 0, 1))
    np.testing.assert_allclose(train_x, infer_x, atol=0.5 / 255 / 0.3125 + 1e-5)
    with pytest.raises(ConfigError):
        Normalization.resolve(stretch=(98, 2))


def test_augmentation_is_seeded_per_draw(tmp_path):
    root = _deepglobe_folder(tmp_path)
    a = build_dataset("deepglobe", root, "train", crop_size=24, seed=11)
    b = build_dataset("deepglobe", root, "train", crop_size=24, seed=11)
    x1, m1 = a[0]
    y1, n1 = b[0]
    np.testing.assert_array_equal(x1, y1)
    np.testing.assert_array_equal(m1, n1)
    draws = [a[0][0] for _ in range(4)]  # later draws of the same sample differ
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])
    # set_epoch: an epoch's draws do not depend on what earlier epochs drew (resume)
    a.set_epoch(3)
    c = build_dataset("deepglobe", root, "train", crop_size=24, seed=11)
    c.set_epoch(3)
    np.testing.assert_array_equal(a[2][0], c[2][0])
    np.testing.assert_array_equal(a[0][0], c[0][0])
    c.set_epoch(4)
    assert not np.array_equal(a[1][0], c[1][0])


def test_normalization_presets():
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3) * 20
    x = Normalization.resolve("dlinknet").apply(img)
    np.testing.assert_allclose(x, (img / 255.0 * 3.2 - 1.6).transpose(2, 0, 1), rtol=1e-5,
                               atol=1e-6)
    n = Normalization.resolve(mean=[0.5], std=[0.25])  # one value for every band
    np.testing.assert_allclose(n.apply(img[:, :, :1]), ((img[:, :, :1] / 255 - 0.5) / 0.25)
                               .transpose(2, 0, 1), rtol=1e-5)
    with pytest.raises(ConfigError):
        Normalization.resolve("sentinel")
    with pytest.raises(ConfigError):
        recipe("deeplabv3")  # needs a crop size


# ---------------------------------------------------------------------- broken samples


def test_missing_mask_raises_or_is_skipped(tmp_path, caplog):
    root = _deepglobe_folder(tmp_path)
    (root / "train" / "1_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"1_sat\.jpg: mask 1_mask\.png is missing"):
        build_dataset("deepglobe", root, "train")
    with caplog.at_level(logging.WARNING, logger="segcore.data"):
        ds = build_dataset("deepglobe", root, "train", skip_broken=True)
    assert [s.image.name for s in ds.samples] == ["0_sat.jpg", "2_sat.jpg"]
    assert "1_sat.jpg" in caplog.text


def test_size_mismatch_and_unreadable_at_load_time(tmp_path, caplog):
    root = _deepglobe_folder(tmp_path)
    _write_rgb(root / "train" / "1_mask.png", np.zeros((16, 32, 3), np.uint8))  # wrong size
    (root / "train" / "2_sat.jpg").write_bytes(b"not a jpeg at all")
    ds = build_dataset("deepglobe", root, "train", augment="none")
    assert len(ds) == 3  # existence is all that index time checks
    with pytest.raises(DatasetError, match=r"1_mask\.png: mask is 16x32 but image 1_sat\.jpg "
                                           r"is 32x32"):
        ds[1]
    with pytest.raises(DatasetError, match=r"2_sat\.jpg: unreadable image"):
        ds[2]
    assert isinstance(DatasetError("x"), OSError)
    skipping = build_dataset("deepglobe", root, "train", augment="none", skip_broken=True)
    with caplog.at_level(logging.WARNING, logger="segcore.data"):
        x, m = skipping[1]  # replaced by the next sample that loads: sample 0 (wraps around)
    ref_x, ref_m = skipping[0]
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(m, ref_m)
    assert "1_mask.png" in caplog.text and "2_sat.jpg" in caplog.text


def test_unknown_kind_and_missing_root(tmp_path):
    with pytest.raises(ConfigError, match="valid"):
        build_dataset("coco", tmp_path, "train")
    with pytest.raises(DatasetError, match="split 'train' does not exist"):
        build_dataset("deepglobe", tmp_path, "train")


# ------------------------------------------------------------------ MindSpore pipeline


def test_generator_dataset_two_workers_batches_and_shards(tmp_path):
    pytest.importorskip("mindspore")
    from segcore.data import to_generator_dataset
    # 5 chips whose pixel value encodes their index
    for i in range(5):
        _write_rgb(tmp_path / "images" / f"{i}.png", np.full((16, 16, 3), 10 * (i + 1), np.uint8))
        _write_gray(tmp_path / "masks" / f"{i}.png", np.full((16, 16), i % 2, np.uint8))
    ds = build_dataset("chips", tmp_path, None, augment="none", mean=[0.0], std=[1.0], scale=1.0)
    gen = to_generator_dataset(ds, 2, shuffle=True, drop_remainder=False, num_parallel_workers=2)
    seen = []
    for img, mask in gen.create_tuple_iterator(output_numpy=True, num_epochs=1):
        assert img.dtype == np.float32 and img.shape[1:] == (3, 16, 16)
        assert mask.dtype == np.int32 and mask.shape[1:] == (16, 16)
        for b in range(img.shape[0]):
            idx = int(round(img[b, 0, 0, 0] / 10)) - 1
            assert (mask[b] == idx % 2).all()  # image and mask still paired
            seen.append(idx)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    dropped = to_generator_dataset(ds, 2, drop_remainder=True, num_parallel_workers=2)
    assert dropped.get_dataset_size() == 2
    shards = []
    for sid in range(2):
        g = to_generator_dataset(ds, 1, num_shards=2, shard_id=sid)
        shards.append({int(round(b[0][0, 0, 0, 0] / 10)) - 1
                       for b in g.create_tuple_iterator(output_numpy=True, num_epochs=1)})
    assert shards[0] | shards[1] == {0, 1, 2, 3, 4}
    assert len(shards[0]) == len(shards[1]) == 3  # ceil(5 / 2): one sample is repeated
    with pytest.raises(ConfigError):
        to_generator_dataset(ds, 2, num_shards=2)


def test_data_pipeline_works_without_mindspore(tmp_path):
    """Indexing, loading and augmenting need no MindSpore (only the GeneratorDataset wrapper)."""
    import subprocess
    import sys
    root = _deepglobe_folder(tmp_path)
    code = ("import sys; sys.modules['mindspore'] = None\n"
            "from segcore.data import build_dataset\n"
            f"ds = build_dataset('deepglobe', {str(root)!r}, 'train', crop_size=16)\n"
            "x, m = ds[0]\n"
            "assert x.shape == (3, 16, 16) and m.shape == (16, 16)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_roads_recipe_reaches_dark_exposures():
    """The roads recipe's photometric jitter covers dark 8-bit products (a scene stretch held
    open by saturated roofs leaves asphalt near black): over many draws a mid-grey chip is
    sometimes darkened below 50 (the earlier gamma range 0.6-1.6 stopped at 68) and sometimes
    brightened above 150, and the mask never moves."""
    from segcore.data.transforms import recipe

    cfg = recipe("roads")
    cfg = AugmentConfig(photometric=True, contrast_range=cfg.contrast_range,
                        brightness_shift=cfg.brightness_shift, gamma_range=cfg.gamma_range)
    img = np.full((8, 8, 3), 128, np.uint8)
    mask = np.eye(8, dtype=np.uint8)
    means = []
    for seed in range(200):
        out, m = augment_pair(img, mask, cfg, np.random.default_rng(seed), image_fill=[0, 0, 0])
        np.testing.assert_array_equal(m, mask)
        means.append(float(out.mean()))
    assert min(means) < 50 and max(means) > 150
