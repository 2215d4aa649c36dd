"""The run folder (segcore.run_folder: events log and readers, state, result read back) and the
schedule's stopping rules (segcore.schedule), without training; real training runs that write
run folders are in test_train.py."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from segcore.config import TrainConfig
from segcore.errors import CheckpointError, ConfigError
from segcore.run_folder import (EVENTS_FILE, STATE_FILE, STOP_FILE, EventLog, EventTail,
                                atomic_write_json, clear_run, holds_run, read_events,
                                read_train_state, result_from_state, run_summary)
from segcore.schedule import epoch_end_rule, is_better, plateau_lr_scale, resolve_monitor


def test_event_log_and_readers(tmp_path: Path) -> None:
    seen = []
    log = EventLog(tmp_path, seen.append, write=True)
    log.emit("start", step=0, epoch=0)
    log.emit("step", step=1, loss=0.5)
    log.emit("step", step=2, loss=0.4)  # within a second of the last step line: not written
    log.emit("step", step=3, loss=0.3, force=True)
    log.emit("epoch", step=3, epoch=1, metrics={"iou": float("nan")})
    assert [e["type"] for e in seen] == ["start", "step", "step", "step", "epoch"]
    assert all("force" not in e for e in seen)
    on_disk = read_events(tmp_path)
    assert [(e["type"], e.get("step")) for e in on_disk] == [("start", 0), ("step", 1),
                                                             ("step", 3), ("epoch", 3)]
    assert all(isinstance(e["time"], float) for e in on_disk)

    # a listener that fails does not stop the log
    def broken(ev):
        raise RuntimeError("listener bug")

    EventLog(tmp_path, broken, write=True).emit("plateau", step=4)
    assert read_events(tmp_path)[-1]["type"] == "plateau"

    # a rank > 0 log forwards without writing
    quiet = []
    EventLog(tmp_path / "other", quiet.append, write=False).emit("start")
    assert quiet and not (tmp_path / "other" / EVENTS_FILE).exists()

    # the incremental reader and the one-shot reader agree on a growing file
    tail = EventTail(tmp_path / EVENTS_FILE)
    assert len(tail.read()) == 5 and tail.read() == []
    with open(tmp_path / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write('{"type": "end", "st')  # half-written
    assert tail.read() == [] and tail.pending() is None
    assert read_events(tmp_path)[-1]["type"] == "plateau"
    with open(tmp_path / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write('atus": "completed"}')  # whole but without its newline yet
    assert tail.read() == [] and tail.pending() == {"type": "end", "status": "completed"}
    assert read_events(tmp_path)[-1] == {"type": "end", "status": "completed"}
    with open(tmp_path / EVENTS_FILE, "a", encoding="utf-8") as f:
        f.write("\nnot json\n")
    assert tail.read() == [{"type": "end", "status": "completed"}]
    # a replaced (shorter) file is read from its start; from_end skips what is there
    (tmp_path / EVENTS_FILE).write_text('{"type": "start"}\n')
    assert tail.read() == [{"type": "start"}]
    assert EventTail(tmp_path / EVENTS_FILE, from_end=True).read() == []
    assert read_events(tmp_path / "nowhere") == []


def test_state_result_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    assert holds_run(out) == [] and not run_summary(out)["can_resume"]
    with pytest.raises(CheckpointError, match="no training state"):
        read_train_state(out)
    # a worker node without node 0's folder
    r = result_from_state(out, monitor="iou")
    assert (r.status, r.epochs_done, r.monitor, r.best_checkpoint) == ("completed", 0, "iou",
                                                                       None)

    hist = [{"epoch": 1, "step": 4, "lr": 0.01, "train_loss": 0.7, "iou": float("nan")},
            {"epoch": 2, "step": 8, "lr": 0.01, "train_loss": 0.5, "iou": 0.25}]
    atomic_write_json(out / STATE_FILE, {"epoch": 2, "global_step": 8, "status": "stopped",
                                         "best_metric": 0.25, "best_epoch": 2,
                                         "history": hist})
    assert not list(out.glob(".*tmp*"))
    st = read_train_state(out)
    assert st["history"][0]["iou"] is None  # nan is written as null (strict JSON)
    (out / "last.ckpt").write_bytes(b"x")
    log = EventLog(out, None, write=True)
    log.emit("end", status="completed", monitor="val_loss", reason="first run")
    log.emit("start", step=8)
    log.emit("end", status="stopped", monitor="iou", reason="stop requested")
    r = result_from_state(out)
    assert (r.status, r.output_dir, r.epochs_done, r.global_step) == ("stopped", out, 2, 8)
    assert (r.monitor, r.best_metric, r.best_epoch, r.stop_reason) == ("iou", 0.25, 2,
                                                                       "stop requested")
    assert r.best_checkpoint is None and r.last_checkpoint == out / "last.ckpt"
    assert [h["train_loss"] for h in r.history] == [0.7, 0.5]
    s = run_summary(out)
    assert s["can_resume"] and s["last_checkpoint"] == str(out / "last.ckpt")
    assert (s["status"], s["epoch"], s["best_metric"]) == ("stopped", 2, 0.25)

    assert holds_run(out) == [STATE_FILE, EVENTS_FILE]
    (out / STOP_FILE).write_text("stop\n")
    clear_run(out)
    assert holds_run(out) == [] and not (out / STOP_FILE).exists()
    assert (out / "last.ckpt").exists()  # checkpoints stay until the new run replaces them

    (out / STATE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        read_train_state(out)
    assert run_summary(out)["status"] is None


def test_monitor_and_stopping_rules() -> None:
    seg = TrainConfig(num_classes=1)
    assert resolve_monitor(seg, "segmentation", True) == ("iou", True)
    assert resolve_monitor(TrainConfig(num_classes=5), "segmentation", True) == ("miou", True)
    assert resolve_monitor(seg, "classification", True) == ("top1", True)
    assert resolve_monitor(seg, "segmentation", False) == ("train_loss", False)
    assert resolve_monitor(TrainConfig(monitor="loss"), "segmentation", True) == ("val_loss",
                                                                                  False)
    with pytest.raises(ConfigError, match="validation set"):
        resolve_monitor(TrainConfig(monitor="iou"), "segmentation", False)

    assert is_better(0.5, None, True) and is_better(0.4, 0.5, False)
    assert not is_better(0.5, 0.5, True) and not is_better(None, 0.1, True)
    assert not is_better(math.nan, None, True)

    # early stopping wins over the plateau rule
    es = TrainConfig(early_stopping_patience=3, plateau=True, plateau_patience=1)
    reason, reload = epoch_end_rule(es, "iou", 3, 1e-3)
    assert "early_stopping_patience" in reason and "iou" in reason and not reload
    assert epoch_end_rule(es, "iou", 2, 1e-3) == ("", True)
    plat = TrainConfig(plateau=True, plateau_patience=2, plateau_stop_patience=5,
                       plateau_min_lr=1e-6, plateau_factor=5.0)
    assert epoch_end_rule(plat, "iou", 2, 1e-3) == ("", False)  # not more than the patience
    assert epoch_end_rule(plat, "iou", 3, 1e-3) == ("", True)
    reason, reload = epoch_end_rule(plat, "iou", 3, 1e-7)
    assert reason.startswith("plateau rule: lr") and not reload
    reason, reload = epoch_end_rule(plat, "iou", 6, 1e-3)
    assert reason == "plateau rule: no improvement for 6 epochs" and not reload
    assert epoch_end_rule(TrainConfig(), "iou", 100, 1e-3) == ("", False)
    assert plateau_lr_scale(plat, 1.0) == pytest.approx(0.2)
    assert type(plateau_lr_scale(plat, 1)) is float  # plain JSON in train_state.json
