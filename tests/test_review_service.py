"""Review service (Qt-free): manifest state, atomic mask edits, undo/redo, diff, and the
training runner's launch config, command line and event tail."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from app.service.errors import UserError
from app.service.review import (DIFF_FN, DIFF_FP, DIFF_TN, DIFF_TP, MaskEditor, ReviewDataset,
                                diff_codes, diff_stats)
from app.service.training_runner import (EventTail, TrainingForm, config_fields,
                                         launch_command, overrides_for, write_launch_config)


def test_manifest_state_persists_atomically(vegas_chips: Path) -> None:
    root = vegas_chips
    ds = ReviewDataset(root)
    n = len(ds)
    assert n > 4 and ds.counts()["unreviewed"] == n
    ds.set_status(0, "accepted")
    ds.set_status(1, "rejected")
    ds.set_flag(2, True, "road missing in the label")
    ds.set_last_index(3, save=True)
    # no temporary files left beside the manifest
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    again = ReviewDataset(root)
    assert again.status(0) == "accepted" and again.status(1) == "rejected"
    assert again.flagged(2) and again.comment(2) == "road missing in the label"
    assert again.last_index == 3
    c = again.counts()
    assert (c["accepted"], c["rejected"], c["unreviewed"], c["flagged"]) == (1, 1, n - 2, 1)
    assert again.indices("accepted") == [0]
    assert again.first_unreviewed() == 2
    # the segcore chips reader now sees exactly the accepted sample
    from segcore.data import index_chips

    got = index_chips(root, split=None)
    assert [s.image.name for s in got] == [again.name(0)]
    with pytest.raises(UserError):
        again.set_status(0, "maybe")


def test_mask_edit_written_as_hard_geotiff(vegas_chips: Path) -> None:
    import rasterio

    root = vegas_chips
    ds = ReviewDataset(root)
    i = max(range(len(ds)), key=lambda k: ds.samples[k]["road_fraction"])
    m = ds.read_mask(i)
    assert set(np.unique(m)) <= {0, 255} and (m > 0).any()
    ed = MaskEditor(m)
    assert ed.stroke([(20, 20), (60, 30)], radius_px=3, value=255)
    ds.write_mask(i, ed.mask)
    with rasterio.open(ds.mask_path(i)) as src, rasterio.open(ds.image_path(i)) as img:
        back = src.read(1)
        assert src.crs == img.crs and src.transform == img.transform
    assert set(np.unique(back)) == {0, 255}
    assert back[20, 20] == 255 and back[30, 60] == 255
    again = ReviewDataset(root)
    assert again.status(i) == "edited" and again.samples[i]["edited"] is True
    assert abs(again.samples[i]["road_fraction"] - (back > 0).mean()) < 1e-5
    with pytest.raises(UserError):
        ds.write_mask(i, np.zeros((10, 10), np.uint8))


def test_editor_undo_redo_and_eraser() -> None:
    m = np.zeros((40, 50), np.uint8)
    m[10:20, 10:20] = 1  # any value > 0 is road
    ed = MaskEditor(m)
    assert set(np.unique(ed.mask)) == {0, 255}
    start = ed.mask.copy()
    assert ed.stroke([(30, 5), (45, 5)], radius_px=2, value=255)
    painted = ed.mask.copy()
    assert painted[5, 30:46].min() == 255 and painted[5, 29 - 3] == 0
    assert ed.stroke([(15, 15)], radius_px=3, value=0)
    erased = ed.mask.copy()
    assert erased[15, 15] == 0 and erased[10, 10] == 255
    assert ed.undo() and np.array_equal(ed.mask, painted)
    assert ed.undo() and np.array_equal(ed.mask, start)
    assert not ed.undo()
    assert ed.redo() and np.array_equal(ed.mask, painted)
    # a new stroke clears the redo stack
    assert not ed.stroke([(0, 39)], radius_px=0, value=0)  # erasing background: no change
    assert ed.stroke([(0, 39)], radius_px=0, value=255)
    assert not ed.can_redo and ed.mask[39, 0] == 255
    assert ed.dirty
    ed.mark_saved()
    assert not ed.dirty
    assert set(np.unique(ed.mask)) <= {0, 255}


def test_diff_codes_and_stats() -> None:
    label = np.zeros((4, 4), np.uint8)
    pred = np.zeros((4, 4), np.uint8)
    label[0, :2] = 255
    pred[0, 1:3] = 255
    codes = diff_codes(pred, label)
    assert codes[0, 0] == DIFF_FN and codes[0, 1] == DIFF_TP and codes[0, 2] == DIFF_FP
    assert codes[3, 3] == DIFF_TN
    st = diff_stats(codes)
    assert (st["tp"], st["fp"], st["fn"]) == (1, 1, 1)
    assert st["iou"] == pytest.approx(1 / 3)
    assert diff_stats(diff_codes(np.zeros((2, 2)), np.zeros((2, 2))))["iou"] == 1.0


def test_training_command_and_event_tail(tmp_path: Path) -> None:
    base = config_fields("road_demo_train")
    assert base["model"] == "ddrnet23_slim" and "seed" in base
    form = TrainingForm(config="road_demo_train", data_root=str(tmp_path / "d"),
                        output_dir=str(tmp_path / "run"), model="enet", epochs=2,
                        batch_size=1, lr=0.002, init_checkpoint=str(tmp_path / "w.ckpt"),
                        nproc=2, fields={**base, "crop_size": 64},
                        statuses=("accepted", "edited"))
    ov = overrides_for(form)
    assert "crop_size=64" in ov and "model=enet" in ov
    assert "dataset_kwargs={statuses: [accepted, edited]}" in ov
    # fields left at the recipe's values are not repeated as overrides; a changed one is
    assert not any(o.startswith("augment=") or o.startswith("seed=") for o in ov)
    other = "dlinknet" if base["augment"] != "dlinknet" else "none"
    changed = dataclasses.replace(form, fields={**form.fields, "augment": other})
    assert f"augment={other}" in overrides_for(changed)
    # the form becomes a resolved YAML in the run folder; the command names that file and only
    # the options that are not config keys
    from segcore.config import load_config

    path = write_launch_config(form)
    assert path == (tmp_path / "run" / "launch_config.yaml").resolve()
    assert not list(path.parent.glob(".*tmp*"))  # staged and renamed
    cfg = load_config(path)
    assert (cfg.model, cfg.epochs, cfg.batch_size, cfg.lr, cfg.crop_size) == ("enet", 2, 1,
                                                                            0.002, 64)
    assert cfg.augment == base["augment"] and cfg.seed == base["seed"]
    assert cfg.dataset_kwargs["statuses"] == ["accepted", "edited"]
    assert cfg.init_checkpoint == str((tmp_path / "w.ckpt").resolve())
    assert cfg.data_root == str((tmp_path / "d").resolve())
    assert cfg.output_dir == str((tmp_path / "run").resolve())
    cmd = launch_command(path, tmp_path / "run", nproc=form.nproc)
    assert cmd[cmd.index("train") + 1:] == ["--config", str(path), "--out",
                                            str(tmp_path / "run"), "--nproc", "2", "--overwrite"]
    assert load_config(write_launch_config(form, resume=True)).init_checkpoint is None
    assert launch_command(path, tmp_path / "run", resume=True)[-1] == "--resume"
    with pytest.raises(UserError, match="dataset folder"):
        write_launch_config(dataclasses.replace(form, data_root=""))
    with pytest.raises(UserError, match="crop_size"):
        write_launch_config(dataclasses.replace(form, fields={**form.fields, "crop_size": -3}))
    # the tail returns complete lines only, once each
    ev = tmp_path / "events.jsonl"
    tail = EventTail(ev)
    assert tail.read() == []
    ev.write_text(json.dumps({"type": "start"}) + "\n" + '{"type": "st')
    assert [e["type"] for e in tail.read()] == ["start"]
    with open(ev, "a") as f:
        f.write('ep", "step": 1}\n')
    assert tail.read() == [{"type": "step", "step": 1}]
    assert tail.read() == []
