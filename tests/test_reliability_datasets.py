"""Chips datasets (issue 19, item 8): manifest paths stay inside the dataset folder, and broken
chips (truncated, not an image) are found when the dataset is opened, not epochs later."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from segcore.data import build_dataset
from segcore.errors import DatasetError


def _chip(path: Path, value: int, bands: int, size: int = 64) -> None:
    rng = np.random.default_rng(value)
    data = rng.integers(0, 255, (bands, size, size), dtype=np.uint8)
    if bands == 1:
        data = (data > 200).astype(np.uint8) * 255
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=bands,
                       dtype="uint8", crs="EPSG:32611", tiled=True, blockxsize=16,
                       blockysize=16, transform=from_origin(500000, 4000000, 0.5, 0.5)) as dst:
        dst.write(data)


def _dataset(root: Path, n: int = 4) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    entries = []
    for i in range(n):
        _chip(root / "images" / f"c{i}.tif", i, 3)
        _chip(root / "masks" / f"c{i}.tif", 100 + i, 1)
        entries.append({"image": f"images/c{i}.tif", "mask": f"masks/c{i}.tif",
                        "split": "train", "status": "accepted"})
    (root / "manifest.json").write_text(json.dumps({"samples": entries}))
    return root


@pytest.mark.parametrize("bad", ["../../../../etc/passwd", "/etc/passwd",
                                 "images/../../outside.tif"])
def test_manifest_paths_outside_the_dataset_are_refused(tmp_path, bad):
    root = _dataset(tmp_path / "chips")
    (tmp_path / "outside.tif").write_bytes((root / "images" / "c0.tif").read_bytes())
    doc = json.loads((root / "manifest.json").read_text())
    doc["samples"][1]["image"] = bad
    (root / "manifest.json").write_text(json.dumps(doc))
    for skip in (False, True):
        with pytest.raises(DatasetError) as err:
            build_dataset("chips", root, "train", crop_size=32, skip_broken=skip)
        msg = str(err.value)
        assert "outside the dataset folder" in msg and bad in msg
        assert len(msg.splitlines()) == 1


def test_truncated_or_foreign_chip_is_found_at_start(tmp_path, caplog):
    root = _dataset(tmp_path / "chips")
    cut = root / "images" / "c1.tif"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (root / "masks" / "c2.tif").write_bytes(b"<html>not an image</html>")
    with pytest.raises(DatasetError) as err:
        build_dataset("chips", root, "train", crop_size=32)
    assert "c1.tif" in str(err.value) and "unreadable" in str(err.value)
    # skip_broken: both broken pairs left out with a warning, the others load
    ds = build_dataset("chips", root, "train", crop_size=32, skip_broken=True)
    assert [s.image.name for s in ds.samples] == ["c0.tif", "c3.tif"]
    assert "c1.tif" in caplog.text and "c2.tif" in caplog.text
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and y.shape == (32, 32)


def test_folder_layout_checks_chips_too(tmp_path):
    root = tmp_path / "plain"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(2):
        _chip(root / "images" / f"c{i}.tif", i, 3)
        _chip(root / "masks" / f"c{i}.tif", 10 + i, 1)
    m = root / "masks" / "c1.tif"
    m.write_bytes(m.read_bytes()[:300])
    with pytest.raises(DatasetError, match="c1.tif"):
        build_dataset("chips", root, None, crop_size=32)


def test_training_on_a_broken_chip_fails_before_any_checkpoint(tmp_path):
    from segcore.config import from_dict
    from segcore.train import train

    root = _dataset(tmp_path / "chips")
    cut = root / "images" / "c3.tif"
    cut.write_bytes(cut.read_bytes()[:1000])
    cfg = from_dict(dict(model="ddrnet23_slim", num_classes=1, dataset="chips",
                         data_root=str(root), train_split="train", crop_size=32, batch_size=2,
                         epochs=3, steps_per_epoch=1, augment="none",
                         normalization={"method": "dlinknet"}, num_workers=1,
                         output_dir=str(tmp_path / "run")))
    with pytest.raises(DatasetError, match="c3.tif"):
        train(cfg)
    assert not list((tmp_path / "run").glob("*.ckpt"))
