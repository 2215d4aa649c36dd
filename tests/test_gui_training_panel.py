"""Training panel with pytest-qt (offscreen): a real short ENet fine-tune through
``roadseg train`` in a child process, live curve points, stop, resume, the best checkpoint
reported and selectable (and usable for the review panel's prediction diff)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from app.gui.training_panel import LineChart, TrainingPanel, format_eta  # noqa: E402


@pytest.fixture(scope="module")
def chips(vegas_chips_built: Path, tmp_path_factory) -> Path:
    """Chips of the real SpaceNet tile + lines, reviewed: every other training chip and every
    validation chip accepted, the rest rejected."""
    from app.service.review import ReviewDataset

    out = Path(shutil.copytree(vegas_chips_built, tmp_path_factory.mktemp("traingui") / "chips"))
    ds = ReviewDataset(out)
    for i in range(len(ds)):
        keep = i % 2 == 0 or ds.samples[i]["split"] == "val"
        ds.set_status(i, "accepted" if keep else "rejected", save=False)
    ds.save()
    return out


def _form(panel: TrainingPanel, chips: Path, out: Path) -> None:
    panel.set_config(str(Path(__file__).resolve().parents[1] / "resources" / "configs"
                         / "road_demo_train.yaml"))
    panel.network.setCurrentText("enet")
    panel.data.setText(str(chips))
    panel.out.setText(str(out))
    panel.device.setCurrentText("cpu")
    panel.epochs.setValue(2)
    panel.batch.setValue(1)
    panel.lr.setValue(0.001)
    for key, value in (("crop_size", 64), ("steps_per_epoch", 6), ("val_steps", 1),
                       ("tile_size_px", 64), ("num_workers", 0), ("warmup_epochs", 0),
                       ("seed", 7)):
        panel.set_field(key, value)


def test_chart_and_eta(qtbot) -> None:
    c = LineChart("Loss", "step")
    qtbot.addWidget(c)
    c.resize(300, 200)
    c.add_point("train", 1, 0.9)
    c.add_point("train", 2, float("nan"))  # skipped
    c.add_point("train", 3, 0.5)
    assert c.point_count("train") == 2
    assert not c.grab().toImage().isNull()
    assert format_eta(75) == "1:15" and format_eta(3725) == "1:02:05" and format_eta(None) == "?"


@pytest.mark.slow
def test_train_stop_resume_and_checkpoint(qtbot, chips: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    reported = []
    panel = TrainingPanel(on_checkpoint_ready=reported.append, checkpoint_dirs=[str(out)])
    panel.resize(1040, 700)
    qtbot.addWidget(panel)
    panel.show()
    # every network family can be picked
    nets = [panel.network.itemText(i) for i in range(panel.network.count())]
    for fam in ("dlinknet", "dgcnet", "deeplabv3", "ddrnet", "enet"):
        assert any(n.startswith(fam) for n in nets), fam
    _form(panel, chips, out)
    form = panel.form()
    assert form.statuses == ("accepted",) and form.model == "enet"
    assert {"crop_size": 64, "steps_per_epoch": 6}.items() <= form.fields.items()

    assert panel.start(), panel.state_label.text()
    assert panel.running and not panel.start_btn.isEnabled()
    cmd = panel.process.command
    launch = out.resolve() / "launch_config.yaml"
    assert cmd[3:] == ["train", "--config", str(launch), "--out", str(out.resolve()),
                       "--overwrite"]
    from segcore.config import load_config

    cfg = load_config(launch)
    assert (cfg.model, cfg.crop_size, cfg.steps_per_epoch, cfg.epochs) == ("enet", 64, 6, 2)
    # the curve gets its first points while the child process trains
    qtbot.waitUntil(lambda: panel.loss_chart.point_count("train") >= 1 or not panel.running,
                    timeout=90_000)
    assert panel.running, panel.process.log_tail()
    assert panel.progress.maximum() == 12
    qtbot.mouseClick(panel.stop_btn, Qt.LeftButton)
    with qtbot.waitSignal(panel.trainingFinished, timeout=90_000) as blocker:
        pass
    assert blocker.args == ["stopped"], panel.process.log_tail()
    state = json.loads((out / "train_state.json").read_text())
    assert state["status"] == "stopped" and 1 <= state["global_step"] < 12
    assert (out / "last.ckpt").exists()
    assert panel.resume_btn.isEnabled()
    stopped_at = state["global_step"]

    # only accepted chips were used: half of them
    start = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()
             if '"start"' in x][0]
    n_acc = sum(1 for s in json.loads((chips / "manifest.json").read_text())["samples"]
                if s["status"] == "accepted" and s["split"] == "train")
    assert start["train_samples"] == n_acc

    qtbot.mouseClick(panel.resume_btn, Qt.LeftButton)
    assert panel.running
    with qtbot.waitSignals([panel.trainingFinished, panel.checkpointReady],
                           timeout=120_000, order="none") as blocker:
        pass
    assert panel.last_status == "completed", panel.process.log_tail()
    state = json.loads((out / "train_state.json").read_text())
    assert state["status"] == "completed" and state["global_step"] == 12 > stopped_at
    resumed = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()
               if '"start"' in x]
    assert resumed[-1]["resumed"] is True and resumed[-1]["step"] == stopped_at
    assert panel.iou_chart.point_count("IoU") == 2
    assert panel.loss_chart.point_count("val") == 2
    assert panel.progress.value() == 12

    best = out / "best.ckpt"
    assert reported == [str(best)] and panel.best_checkpoint == str(best)
    # the extraction panel's checkpoint list sees it with its metrics; so does this panel
    from app.service.checkpoints import list_checkpoints

    entry = [e for e in list_checkpoints([out]) if Path(e.path).name == "best.ckpt"][0]
    assert entry.meta.model == "enet" and "iou" in entry.meta.metrics
    panel.set_init_checkpoint(str(best))
    assert panel.init_ckpt.currentData() == str(best)
    assert panel.form().init_checkpoint == str(best)

    # ... and the review panel computes its prediction-vs-label diff with it
    from app.gui.dataset_review import DatasetReviewPanel

    review = DatasetReviewPanel(dataset_dir=str(chips), checkpoint_dirs=[str(out)])
    qtbot.addWidget(review)
    review.set_checkpoint(str(best))
    assert review.mode_combo.currentText() == "diff"
    # computed off the UI thread; the view gets it when done
    qtbot.waitUntil(lambda: review.view.codes is not None, timeout=60_000)
    assert review.view.codes is not None and review.view.codes.shape == (256, 256)
    assert "IoU" in review.diff_label.text()
