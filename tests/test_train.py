"""Training configs, lr schedules, and real (tiny) training runs on the DeepGlobe pairs:
CLI run with events and checkpoints, exact resume after a mid-epoch stop, DeviceError."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from segcore.config import (TrainConfig, apply_overrides, from_dict, load_config,  # noqa: E402
                            save_resolved)
from segcore.errors import ConfigError, DeviceError
from segcore.train import lr_at, read_events, read_train_state

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "resources" / "configs").glob("*.yaml"))


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    from segcore.models import list_models, model_info

    cfg = load_config(path)
    assert cfg.model in list_models()
    text = path.read_text()
    assert text.lstrip().startswith("#")  # each recipe names its source in a comment
    assert model_info(cfg.model).task == ("classification" if cfg.dataset == "imagenet"
                                          else "segmentation")
    h, w = cfg.crop_hw
    stride = model_info(cfg.model).stride
    assert h % stride == 0 or cfg.model.startswith("deeplabv3")  # 513 = DeepLab's odd crop


def test_seed_recipes_values():
    dl = load_config(ROOT / "resources/configs/dlinknet34.yaml")
    assert (dl.optimizer, dl.lr, dl.batch_size, dl.crop_hw, dl.loss) == ("adam", 2e-4, 4,
                                                                        (1024, 1024), "bce_dice")
    assert dl.plateau and dl.plateau_factor == 5 and dl.plateau_min_lr == 5e-7
    dd = load_config(ROOT / "resources/configs/ddrnet23_slim.yaml")
    assert (dd.loss, dd.ohem_thresh, dd.ohem_min_kept, dd.aux_weight, dd.epochs) == (
        "ohem", 0.9, 131072, 0.4, 484)
    en = load_config(ROOT / "resources/configs/enet.yaml")
    assert (en.lr, en.weight_decay, en.lr_step_epochs, en.lr_gamma, en.class_weights) == (
        5e-4, 2e-4, 100, 0.1, "enet")


def test_unknown_key_and_bad_values_are_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model: enet\nnum_classes: 1\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    msg = str(ei.value)
    assert "\n" not in msg and "c.yaml" in msg and "'learning_rate'" in msg
    p.write_text("model: enet\nnum_classes: 1\noptimizer: rmsprop\n")
    with pytest.raises(ConfigError, match="optimizer.*sgd, adam, adamw"):
        load_config(p)
    p.write_text("model: enet\nnum_classes: 1\nbatch_size: many\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="flat mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_are_coerced_and_resolved_config_round_trips(tmp_path):
    cfg = from_dict({"model": "enet", "num_classes": 1})
    cfg = apply_overrides(cfg, ["lr=1e-3", "crop_size=[64, 32]", "plateau=yes", "epochs=3",
                                "bands=3,2,1", "val_split=null", "model_kwargs={prelu: channel}",
                                "momentum=1"])
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.crop_hw == (64, 32) and cfg.plateau is True and cfg.epochs == 3
    assert cfg.bands == [3, 2, 1] and cfg.val_split is None
    assert cfg.model_kwargs == {"prelu": "channel"} and cfg.momentum == 1.0
    with pytest.raises(ConfigError, match="epochs"):
        apply_overrides(cfg, ["epochs=0"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["epochs"])
    path = save_resolved(cfg, tmp_path)
    assert load_config(path) == cfg


def test_percentile_normalization_trains_and_is_written_out():
    """A ``percentile`` config stretches each training image; the checkpoint metadata spells
    out the defaults so inference applies the same mean/std."""
    from segcore.builders import dataset_kwargs, inference_normalization
    from segcore.config import TrainConfig

    cfg = TrainConfig(model="ddrnet23_slim", num_classes=1, loss="bce_dice", dataset="chips",
                      crop_size=64, augment="roads",
                      normalization={"method": "percentile", "low": 1})
    kw = dataset_kwargs(cfg, True)
    assert kw["stretch"] == (1.0, 98.0) and kw["augment"] == "roads"
    assert inference_normalization(cfg) == {"method": "percentile", "low": 1, "high": 98.0,
                                             "mean": [0.5], "std": [0.3125]}
    with pytest.raises(ConfigError):
        dataset_kwargs(TrainConfig(normalization={"method": "zscore"}), True)


def test_lr_schedules():
    base = dict(model="enet", num_classes=1, lr=0.1)
    poly = from_dict({**base, "lr_schedule": "poly", "lr_power": 0.9})
    assert lr_at(poly, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(poly, 50, 100, 10) == pytest.approx(0.1 * 0.5 ** 0.9)
    assert lr_at(poly, 100, 100, 10) == 0.0
    cos = from_dict({**base, "lr_schedule": "cosine", "min_lr": 0.001})
    assert lr_at(cos, 50, 100, 10) == pytest.approx(0.001 + 0.099 * 0.5)
    step = from_dict({**base, "lr_schedule": "step", "lr_milestones": [3, 6]})
    assert [lr_at(step, s, 100, 10) for s in (29, 30, 59, 60)] == pytest.approx(
        [0.1, 0.01, 0.01, 0.001])
    every = from_dict({**base, "lr_schedule": "step", "lr_step_epochs": 2, "lr_gamma": 0.5})
    assert lr_at(every, 45, 100, 10) == pytest.approx(0.1 * 0.5 ** 2)
    warm = from_dict({**base, "lr_schedule": "constant", "warmup_epochs": 1,
                      "warmup_start_factor": 0.0})
    assert [lr_at(warm, s, 100, 10) for s in (0, 5, 10, 50)] == pytest.approx(
        [0.0, 0.05, 0.1, 0.1])


# ----------------------------------------------------------------------------- training
def _tiny(tmp_path: Path, root: Path, name: str, **kw) -> TrainConfig:
    raw = dict(model="ddrnet23_slim", num_classes=1, dataset="deepglobe", data_root=str(root),
               train_split="train", crop_size=64, batch_size=2, epochs=2, steps_per_epoch=2,
               max_train_samples=2, loss="bce_dice", optimizer="adam", lr=1e-3,
               augment="none", normalization={"method": "dlinknet"}, num_workers=1,
               output_dir=str(tmp_path / name), seed=7)
    raw.update(kw)
    return from_dict(raw)


@pytest.fixture(scope="module")
def deepglobe(shared_data) -> Path:
    root = shared_data / "roads" / "deepglobe"
    if not (root / "train").is_dir():
        pytest.skip(f"{root}/train not found")
    return root


@pytest.mark.slow
def test_cli_train_run_events_and_checkpoints(tmp_path, deepglobe):
    from app.cli import main
    from segcore.checkpoint import read_metadata

    out = tmp_path / "run"
    argv = ["train", "--config", "road_demo", "--data", str(deepglobe), "--out", str(out),
            "--epochs", "2", "--lr", "0.001", "-q",
            "--set", "model=ddrnet23_slim", "--set", "crop_size=64", "--set", "batch_size=2",
            "--set", "steps_per_epoch=3", "--set", "max_train_samples=2",
            "--set", "augment=none", "--set", "lr_schedule=constant"]
    assert main(argv) == 0
    events = read_events(out)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end"
    assert set(types) <= {"start", "step", "epoch", "checkpoint", "end"}
    assert types.count("epoch") == 2 and all("time" in e for e in events)
    steps = [e for e in events if e["type"] == "step"]
    assert steps[0]["step"] == 1 and steps[-1]["step"] == 6  # first and epoch-final steps
    assert all(isinstance(e["loss"], float) and e["lr"] == pytest.approx(1e-3) for e in steps)
    # the same two training images seen 6 times: the loss goes down
    assert steps[-1]["loss"] < steps[0]["loss"]
    epochs = [e for e in events if e["type"] == "epoch"]
    assert {"train_loss", "iou", "f1", "miou"} <= set(epochs[-1]["metrics"])
    end = events[-1]
    assert end["status"] == "completed" and end["monitor"] == "iou"
    for name in ("epoch_001", "epoch_002", "best", "last"):
        assert (out / f"{name}.ckpt").is_file() and (out / f"{name}.json").is_file()
    meta = read_metadata(out / "epoch_002.ckpt")
    assert (meta.model, meta.num_classes, meta.tile_size_px, meta.stride, meta.epoch) == (
        "ddrnet23_slim", 1, 64, 8, 2)
    assert meta.bands == (1, 2, 3) and meta.normalization == {"method": "dlinknet"}
    assert meta.class_names == ("background", "road") and "iou" in meta.metrics
    st = read_train_state(out)
    assert (st["epoch"], st["global_step"], st["status"]) == (2, 6, "completed")
    assert (out / "config.yaml").is_file()
    # the same command again refuses to overwrite the run
    assert main(argv) == 2


def _weights(path):
    import mindspore as ms

    return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}


@pytest.mark.slow
def test_stop_and_exact_resume(tmp_path, deepglobe):
    from segcore.checkpoint import OPTIMIZER_PREFIX
    from segcore.train import train

    # reference: 2 epochs x 2 steps without interruption
    ref = train(_tiny(tmp_path, deepglobe, "ref"))
    assert ref.status == "completed" and ref.global_step == 4

    # same run, stopped by should_stop after 3 steps (in the middle of epoch 2)
    calls = []

    def stop_after_three():
        calls.append(1)
        return len(calls) > 3

    cfg = _tiny(tmp_path, deepglobe, "resumed")
    r1 = train(cfg, should_stop=stop_after_three)
    assert r1.status == "stopped" and r1.global_step == 3 and r1.epochs_done == 1
    st = read_train_state(cfg.output_dir)
    assert (st["epoch"], st["step_in_epoch"], st["global_step"]) == (1, 1, 3)
    saved = _weights(Path(cfg.output_dir) / "last.ckpt")
    opt_keys = [k for k in saved if k.startswith(OPTIMIZER_PREFIX)]
    assert any("moment1" in k for k in opt_keys)
    assert saved[OPTIMIZER_PREFIX + "global_step"][0] == 3

    # resume and stop at once: the restored optimizer state is saved back unchanged
    r2 = train(cfg, resume=True, should_stop=lambda: True)
    assert r2.status == "stopped" and r2.global_step == 3
    again = _weights(Path(cfg.output_dir) / "last.ckpt")
    assert set(again) == set(saved)
    assert all(np.array_equal(saved[k], again[k]) for k in saved)

    # resume to the end: continues at step 4 and ends with the reference weights
    seen = []
    r3 = train(cfg, resume=True, on_event=seen.append)
    assert r3.status == "completed" and r3.global_step == 4 and r3.epochs_done == 2
    start = seen[0]
    assert start["type"] == "start" and start["resumed"] and start["step"] == 3
    assert [e["step"] for e in seen if e["type"] == "step"] == [4]
    a, b = _weights(Path(ref.output_dir) / "last.ckpt"), _weights(Path(cfg.output_dir) /
                                                                  "last.ckpt")
    net_keys = [k for k in a if not k.startswith(OPTIMIZER_PREFIX)]
    assert net_keys
    worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in net_keys)
    assert worst <= 1e-5, f"resumed run differs from the uninterrupted one by {worst}"
    hist_ref = [h["train_loss"] for h in ref.history]
    hist_res = [h["train_loss"] for h in r3.history]
    assert np.allclose(hist_ref, hist_res, rtol=1e-5)
    assert not math.isnan(hist_res[-1])
    # the run folder alone gives back the same result (what a data-parallel launch returns)
    from segcore.run_folder import result_from_state

    assert result_from_state(cfg.output_dir) == r3 and r3.stop_reason == "2 epochs"


def test_gpu_request_on_cpu_machine_is_device_error(tmp_path, deepglobe):
    from app.cli import main
    from segcore.device import device_available
    from segcore.train import train

    if device_available("gpu"):
        pytest.skip("this machine has a GPU")
    cfg = _tiny(tmp_path, deepglobe, "gpu", device="gpu")
    with pytest.raises(DeviceError, match="gpu"):
        train(cfg)
    events = read_events(cfg.output_dir)
    assert events and events[-1]["type"] == "error" and "gpu" in events[-1]["message"]
    assert main(["train", "--config", "road_demo", "--data", str(deepglobe), "--out",
                 str(tmp_path / "gpu_cli"), "--device", "gpu", "-q"]) == 2


def test_stop_file_and_resume_without_state(tmp_path, deepglobe):
    from segcore.errors import CheckpointError
    from segcore.train import STOP_FILE, train

    cfg = _tiny(tmp_path, deepglobe, "stopfile", epochs=1)
    with pytest.raises(CheckpointError, match="no training state"):
        train(cfg, resume=True)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / STOP_FILE).write_text("stop\n")
    r = train(cfg)
    assert r.status == "stopped" and r.global_step == 0
    assert json.loads((Path(cfg.output_dir) / "train_state.json").read_text())["status"] == \
        "stopped"


def test_launch_blocking_recipe_trains_with_synchronous_operators(tmp_path, deepglobe):
    """``launch_blocking: true`` (the road recipes) switches MindSpore's CPU PyNative operators
    to synchronous launches for the training process, and the run trains as usual. In a child
    process: the switch lasts for the process."""
    import subprocess
    import sys

    code = f"""
import json, sys
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
from pathlib import Path
from mindspore._c_expression import RuntimeConf
from test_train import _tiny
from segcore.train import train
assert not RuntimeConf.get_instance().is_launch_blocking()
res = train(_tiny(Path({str(tmp_path)!r}), Path({str(deepglobe)!r}), "run", launch_blocking=True))
print(json.dumps([res.status, res.global_step, RuntimeConf.get_instance().is_launch_blocking()]))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                       env={**__import__("os").environ, "GLOG_v": "3"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == ["completed", 4, True]
    assert load_config(ROOT / "resources/configs/road_model_train.yaml").launch_blocking is True
    assert load_config(ROOT / "resources/configs/dlinknet34.yaml").launch_blocking is False
