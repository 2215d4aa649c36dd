"""Exact resume (issue 19, item 2): a run stopped anywhere and resumed ends bit-identical to an
uninterrupted one on CPU (dropout masks, augmentation draws of repeated samples, loader threads
and the lr schedule included), and an interrupted ``roadseg train`` exits with 130."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segcore.config import from_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def deepglobe(shared_data) -> Path:
    root = shared_data / "roads" / "deepglobe"
    if not (root / "train").is_dir():
        pytest.skip(f"{root}/train not found")
    return root


def _cfg(tmp_path: Path, root: Path, name: str, **kw):
    # ENet (dropout, PReLU), the D-LinkNet augmentation, 3 training samples drawn 4 times an
    # epoch (repeats), two loader threads and a poly schedule: every source of drift at once
    raw = dict(model="enet", num_classes=1, dataset="deepglobe", data_root=str(root),
               train_split="train", val_fraction=0.25, crop_size=64, batch_size=2, epochs=2,
               steps_per_epoch=2, loss="bce_dice", optimizer="adam", lr=1e-3,
               lr_schedule="poly", lr_power=0.9, augment="dlinknet",
               normalization={"method": "dlinknet"}, num_workers=2, seed=42,
               output_dir=str(tmp_path / name))
    raw.update(kw)
    return from_dict(raw)


def _weights(path: Path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


def _stop_after(n: int):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > n
    return stop


@pytest.mark.slow
def test_resumed_run_is_bit_identical(tmp_path, deepglobe):
    from segcore.train import train

    ref = train(_cfg(tmp_path, deepglobe, "ref"))
    assert ref.status == "completed" and ref.global_step == 4
    # stopped in the middle of epoch 2 (as Ctrl+C), then resumed in a fresh trainer
    cfg = _cfg(tmp_path, deepglobe, "resumed")
    r1 = train(cfg, should_stop=_stop_after(3))
    assert r1.status == "stopped" and r1.global_step == 3
    r2 = train(cfg, resume=True)
    assert r2.status == "completed" and r2.global_step == 4
    for name in ("epoch_002", "last"):
        a = _weights(Path(ref.output_dir) / f"{name}.ckpt")
        b = _weights(Path(cfg.output_dir) / f"{name}.ckpt")
        assert set(a) == set(b)
        differ = [k for k in a if not np.array_equal(a[k], b[k])]
        assert not differ, f"{name}: {len(differ)} tensors differ, e.g. {differ[0]}"
    steps = {e["step"]: e["loss"] for e in map(json.loads, open(Path(ref.output_dir) /
                                                                 "events.jsonl"))
             if e["type"] == "step"}
    resumed = [e for e in map(json.loads, open(Path(cfg.output_dir) / "events.jsonl"))
               if e["type"] == "step" and e["step"] == 4]
    assert resumed and all(e["loss"] == steps[e["step"]] for e in resumed)


@pytest.mark.slow
def test_lr_schedule_reaches_the_optimizer(tmp_path, deepglobe):
    """The lr of every step is the schedule's (it used to stay at the first step's value)."""
    from segcore.train import train

    # a step schedule that divides the lr by 10^6 after epoch 1: epoch 2 barely moves weights
    cfg = _cfg(tmp_path, deepglobe, "step", model="ddrnet23_slim", augment="none",
               lr_schedule="step", lr_step_epochs=1, lr_gamma=1e-6, min_lr=0.0,
               val_fraction=0.0, max_train_samples=2, num_workers=1)
    r = train(cfg)
    assert r.status == "completed"
    e1 = _weights(Path(cfg.output_dir) / "epoch_001.ckpt")
    e2 = _weights(Path(cfg.output_dir) / "epoch_002.ckpt")
    trainable = [k for k in e1 if k.endswith(".weight") and "moving" not in k]
    moved = max(float(np.max(np.abs(e2[k] - e1[k]))) for k in trainable)
    # Adam moves a weight by about lr per step: 2 steps at 1e-9
    assert moved < 1e-7, f"weights moved by {moved} in epoch 2 at lr 1e-9"


@pytest.mark.slow
def test_interrupted_cli_training_exits_130_with_a_checkpoint(tmp_path, deepglobe):
    out = tmp_path / "run"
    env = dict(os.environ, GLOG_v="3",
               PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"]
                                       if os.environ.get("PYTHONPATH") else ""))
    argv = [sys.executable, "-m", "app.cli", "train", "--config", "road_demo", "--data",
            str(deepglobe), "--out", str(out), "--epochs", "2", "-q",
            "--set", "crop_size=64", "--set", "steps_per_epoch=40", "--set", "num_workers=1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    events = out / "events.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if events.exists() and '"type": "step"' in events.read_text():
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    st = json.loads((out / "train_state.json").read_text())
    assert st["status"] == "stopped" and 0 < st["global_step"] < 80
    assert (out / "last.ckpt").is_file()


@pytest.mark.slow
def test_plateau_reload_is_trained_further(tmp_path, deepglobe):
    """The plateau rule's reload of the best weights reaches the optimizer: the next steps
    update the reloaded weights (with ``load_param_into_net`` they updated a stale copy and
    the network stayed frozen at the reloaded values)."""
    import mindspore as ms

    from segcore.builders import batches as epoch_batches
    from segcore.builders import epoch_indices
    from segcore.train import _Trainer

    cfg = _cfg(tmp_path, deepglobe, "plateau", model="ddrnet23_slim", augment="none",
               val_fraction=0.0, max_train_samples=2, num_workers=1, lr_schedule="constant",
               plateau=True)
    tr = _Trainer(cfg, None, None, False, 0, 1)
    tr.setup()
    idx = epoch_indices(len(tr.train_ds), 2, cfg.batch_size, cfg.seed, 1, 0, 1)
    batches = list(epoch_batches(tr.train_ds, idx, cfg.batch_size, 1))
    tr._set_lr(1e-3)
    tr.step_fn(ms.Tensor(batches[0][0]), ms.Tensor(batches[0][1]))  # the optimizer has run
    params = [p for p in tr.net.trainable_params() if p.name.endswith(".weight")]
    tr.best_weights = {p.name: np.full(p.shape, 0.01, np.float32) for p in params}
    tr._plateau_step(1)
    assert all(np.all(p.asnumpy() == np.float32(0.01)) for p in params)
    tr._set_lr(1e-3)
    tr.step_fn(ms.Tensor(batches[1][0]), ms.Tensor(batches[1][1]))
    moved = [p.name for p in params if not np.all(p.asnumpy() == np.float32(0.01))]
    assert len(moved) > len(params) // 2, "the reloaded weights were not trained further"
