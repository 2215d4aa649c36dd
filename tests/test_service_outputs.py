"""app.service.staging's single-file and folder writes, and app.service.checkpoints' one metadata
reader for .ckpt / .onnx / .mindir files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from app.service.errors import UserError
from app.service.staging import atomic_file, atomic_write_text, replace_folder

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "road_demo.ckpt"


def _hidden(folder: Path):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_file_replaces_only_when_the_block_completes(tmp_path):
    target = tmp_path / "mask.tif"
    profile = dict(driver="GTiff", width=8, height=4, count=1, dtype="uint8")
    with atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.suffix == ".tif"
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(np.full((1, 4, 8), 7, np.uint8))
        assert not target.exists()
    with rasterio.open(target) as src:
        assert src.read(1).max() == 7
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("half way")
    assert target.read_bytes() == before and _hidden(tmp_path) == []


def test_atomic_write_text_and_a_check_before_the_rename(tmp_path):
    p = tmp_path / "manifest.json"
    atomic_write_text(p, json.dumps({"a": 1}))
    atomic_write_text(p, json.dumps({"a": 2}))
    assert json.loads(p.read_text()) == {"a": 2}
    with pytest.raises(UserError, match="exists"):
        with atomic_file(p) as tmp:
            tmp.write_text("{}")
            if p.exists():
                raise UserError(f"{p}: output exists")
    assert json.loads(p.read_text()) == {"a": 2} and _hidden(tmp_path) == []


def test_replace_folder(tmp_path):
    out = tmp_path / "chips"
    for n in (1, 2):
        tmp = tmp_path / f".chips-{n}"
        tmp.mkdir()
        (tmp / "manifest.json").write_text(str(n))
        replace_folder(tmp, out)
    assert (out / "manifest.json").read_text() == "2" and _hidden(tmp_path) == []


# ---------------------------------------------------------------- checkpoint metadata
@pytest.fixture()
def models_dir(tmp_path) -> Path:
    """The bundled demo checkpoint, and an export metadata file in the layout segcore.export
    writes (``<name>.json`` with an ``export`` entry) beside a copy named ``.onnx``."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(DEMO, d / DEMO.name)
    shutil.copy(DEMO.with_suffix(".json"), d / "road_demo.json")
    doc = json.loads(DEMO.with_suffix(".json").read_text())
    doc["export"] = {"format": "ONNX", "input_shape": [1, 3, 512, 512], "dynamic_batch": True}
    (d / "road_demo.onnx").write_bytes(b"not read by the metadata reader")
    (d / "road_demo.onnx.json").write_text(json.dumps(doc))
    (d / "stray.onnx").write_bytes(b"")  # no metadata: skipped by the listing
    return d


def test_one_reader_for_ckpt_and_exported_files(models_dir):
    from app.service.checkpoints import check_checkpoint, describe_checkpoint, list_checkpoints
    from segcore.meta import CheckpointMeta, read_checkpoint_meta

    ckpt, onnx = models_dir / "road_demo.ckpt", models_dir / "road_demo.onnx"
    a, b = read_checkpoint_meta(ckpt), read_checkpoint_meta(onnx)
    assert isinstance(a, CheckpointMeta) and a.model == b.model == "ddrnet23_slim"
    assert describe_checkpoint(onnx)["tile_size_px"] == describe_checkpoint(ckpt)["tile_size_px"]
    assert [Path(e.path).name for e in list_checkpoints([models_dir])] == \
        ["road_demo.ckpt", "road_demo.onnx"]
    assert check_checkpoint(onnx) == onnx
    with pytest.raises(UserError, match="stray.onnx.json not found"):
        check_checkpoint(models_dir / "stray.onnx")
    with pytest.raises(UserError, match="stray.onnx.json not found"):
        describe_checkpoint(models_dir / "stray.onnx")


def test_invalid_export_metadata_names_the_file(models_dir):
    from segcore.errors import CheckpointError
    from segcore.meta import read_checkpoint_meta

    side = models_dir / "road_demo.onnx.json"
    side.write_text(json.dumps({"export": {"format": "ONNX"}}))  # no model fields
    with pytest.raises(CheckpointError, match="road_demo.onnx.json: invalid checkpoint metadata"):
        read_checkpoint_meta(models_dir / "road_demo.onnx")
    side.write_text("{")
    with pytest.raises(CheckpointError, match="unreadable export metadata"):
        read_checkpoint_meta(models_dir / "road_demo.onnx")
