"""Data-parallel training with MindSpore's msrun: 2 CPU workers, a few steps on the DeepGlobe
pairs; both ranks end with identical weights and only rank 0 writes checkpoints and events."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mindspore")


def _trainable(path: Path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


@pytest.mark.slow
def test_msrun_two_workers_identical_weights(tmp_path, shared_data):
    from app.service.training import TrainingRequest, run_training
    from segcore.distributed import msrun_executable
    from segcore.train import read_events, read_train_state

    root = shared_data / "roads" / "deepglobe"
    if not (root / "train").is_dir():
        pytest.skip(f"{root}/train not found")
    try:
        msrun_executable()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    cfg = tmp_path / "dp.yaml"
    # batch 2 per rank: DDRNet's BatchNorm after global pooling needs more than one value
    cfg.write_text(
        "model: ddrnet23_slim\nnum_classes: 1\ndataset: deepglobe\ntrain_split: train\n"
        "crop_size: 64\nbatch_size: 2\nepochs: 1\nsteps_per_epoch: 2\nloss: bce_dice\n"
        "optimizer: adam\nlr: 0.001\naugment: none\nnormalization: {method: dlinknet}\n"
        "num_workers: 1\nseed: 3\ndebug_save_rank_weights: true\n")
    out = tmp_path / "run"
    seen = []
    outcome = run_training(TrainingRequest(config=str(cfg), data_root=str(root),
                                           output_dir=str(out), nproc=2, timeout_s=300),
                           on_event=seen.append)
    assert outcome.status == "completed" and outcome.global_step == 2
    # read back from the run folder: the monitor and the reason come from the end event
    assert (outcome.monitor, outcome.stop_reason) == ("train_loss", "1 epochs")
    assert [e["type"] for e in seen].count("start") == 1  # events came through the tail

    w0 = _trainable(out / "rank_weights" / "rank_0.ckpt")
    w1 = _trainable(out / "rank_weights" / "rank_1.ckpt")
    assert w0 and set(w0) == set(w1)
    diff = max(float(np.max(np.abs(w0[k] - w1[k]))) for k in w0)
    assert diff == 0.0, f"ranks diverged by {diff}"
    # the saved checkpoint is rank 0's network
    saved = _trainable(out / "epoch_001.ckpt")
    assert all(np.array_equal(saved[k], w0[k]) for k in w0)

    # one set of checkpoints, one event stream, one state file
    assert sorted(p.name for p in out.glob("*.ckpt")) == ["best.ckpt", "epoch_001.ckpt",
                                                          "last.ckpt"]
    events = read_events(out)
    types = [e["type"] for e in events]
    assert types.count("start") == 1 and types.count("end") == 1 and types.count("epoch") == 1
    assert events[0]["world_size"] == 2
    st = read_train_state(out)
    assert (st["epoch"], st["global_step"], st["status"]) == (1, 2, "completed")
