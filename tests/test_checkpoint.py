"""segcore.checkpoint: .ckpt + JSON sidecar round trip, fine-tune head mismatch, optimizer state,
clear errors, segcore.models.load_model through the registry."""
from __future__ import annotations

import json

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import nn  # noqa: E402

from segcore.checkpoint import (CheckpointMeta, average_checkpoints,  # noqa: E402
                                load_optimizer_state,
                                load_weights, read_checkpoint_train_state, read_metadata,
                                save_checkpoint, sidecar_path)
from segcore.errors import CheckpointError  # noqa: E402
from segcore.models import load_model  # noqa: E402


class Tiny(nn.Cell):
    """conv -> BN -> relu -> 1x1 head with ``k`` outputs."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.body = nn.SequentialCell([nn.Conv2d(3, 4, 3, has_bias=False), nn.BatchNorm2d(4),
                                       nn.ReLU()])
        self.head = nn.Conv2d(4, k, 1, has_bias=True)

    def construct(self, x):
        return self.head(self.body(x))


def _params(net):
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def _meta(**kw) -> CheckpointMeta:
    base = dict(model="tiny", num_classes=2, in_channels=3, bands=[3, 2, 1],
                normalization={"method": "meanstd", "mean": [0.4, 0.5, 0.6],
                               "std": [0.2, 0.2, 0.2], "scale": 255},
                tile_size_px=256, stride=8, class_names=["background", "road"],
                metrics={"iou": 0.5}, epoch=3, model_kwargs={"output_stride": 16})
    base.update(kw)
    return CheckpointMeta(**base)


def _randomise(net, seed=0):
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        p.set_data(ms.Tensor(rng.normal(size=p.shape).astype(np.float32)))


def test_save_and_read_metadata_round_trip(tmp_path):
    net = Tiny()
    meta = _meta()
    path = save_checkpoint(net, tmp_path / "m.ckpt", meta, train_state={"epoch": 3, "step": 9})
    assert path == tmp_path / "m.ckpt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt", "m.json"]  # no temp files
    back = read_metadata(path)
    assert back == meta
    assert back.bands == (3, 2, 1) and back.normalization["mean"] == [0.4, 0.5, 0.6]
    assert read_metadata(sidecar_path(path)) == meta  # the .json path works too
    assert read_checkpoint_train_state(path) == {"epoch": 3, "step": 9}
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["model"] == "tiny" and doc["created"] and doc["roadseg_version"]


def test_weights_round_trip_and_overwrite(tmp_path):
    a = Tiny()
    _randomise(a, 1)
    save_checkpoint(a, tmp_path / "w.ckpt", _meta())
    _randomise(a, 2)  # saving again replaces the read-only file MindSpore wrote
    save_checkpoint(a, tmp_path / "w.ckpt", _meta(epoch=4))
    b = Tiny()
    rep = load_weights(b, tmp_path / "w.ckpt")
    assert set(rep.loaded) == set(_params(a)) and not rep.skipped_mismatch
    pa, pb = _params(a), _params(b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert read_metadata(tmp_path / "w.ckpt").epoch == 4


def test_head_mismatch_fine_tune(tmp_path):
    src = Tiny(k=5)
    _randomise(src, 3)
    save_checkpoint(src, tmp_path / "five.ckpt", _meta(num_classes=5))
    dst = Tiny(k=1)
    fresh_head = dst.head.weight.asnumpy().copy()
    with pytest.raises(CheckpointError,
                       match=r"five.ckpt: parameter head\.(weight|bias) has shape"):
        load_weights(dst, tmp_path / "five.ckpt")
    rep = load_weights(dst, tmp_path / "five.ckpt", allow_head_mismatch=True)
    assert set(rep.skipped_mismatch) == {"head.weight", "head.bias"}
    # the head keeps its initialisation, everything else comes from the checkpoint
    assert np.array_equal(dst.head.weight.asnumpy(), fresh_head)
    ps, pd = _params(src), _params(dst)
    body = [k for k in pd if not k.startswith("head.")]
    assert body and all(np.array_equal(ps[k], pd[k]) for k in body)


def test_strict_missing_parameters(tmp_path):
    class Bigger(Tiny):
        def __init__(self):
            super().__init__()
            self.extra = nn.Dense(2, 2)

    save_checkpoint(Tiny(), tmp_path / "t.ckpt", _meta())
    with pytest.raises(CheckpointError, match="t.ckpt.*missing"):
        load_weights(Bigger(), tmp_path / "t.ckpt")
    rep = load_weights(Bigger(), tmp_path / "t.ckpt", strict=False)
    assert set(rep.missing) == {"extra.weight", "extra.bias"}


def test_optimizer_state_round_trip(tmp_path):
    net = Tiny()
    opt = nn.Adam(net.trainable_params(), learning_rate=1e-2)
    grad_fn = ms.value_and_grad(lambda x: net(x).sum(), None, opt.parameters)
    _, g = grad_fn(ms.Tensor(np.ones((1, 3, 8, 8), np.float32)))
    opt(g)
    save_checkpoint(net, tmp_path / "o.ckpt", _meta(), optimizer=opt)
    saved = {q.name: q.asnumpy().copy() for _, q in opt.parameters_and_names()
             if q.name.startswith("moment")}
    assert saved and any(np.abs(v).sum() > 0 for v in saved.values())

    net2 = Tiny()
    load_weights(net2, tmp_path / "o.ckpt")  # optimizer entries are not network weights
    opt2 = nn.Adam(net2.trainable_params(), learning_rate=1e-2)
    n = load_optimizer_state(opt2, tmp_path / "o.ckpt")
    assert n >= len(saved)
    got = {q.name: q.asnumpy() for _, q in opt2.parameters_and_names()}
    assert all(np.array_equal(saved[k], got[k]) for k in saved)
    assert int(opt2.global_step.asnumpy()[0]) == int(opt.global_step.asnumpy()[0]) == 1

    save_checkpoint(net, tmp_path / "plain.ckpt", _meta())
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_optimizer_state(opt2, tmp_path / "plain.ckpt")


def test_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="nope.ckpt.*not found"):
        read_metadata(tmp_path / "nope.ckpt")
    (tmp_path / "lonely.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="lonely.ckpt.*sidecar lonely.json"):
        read_metadata(tmp_path / "lonely.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"hello")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json.*unreadable"):
        read_metadata(tmp_path / "bad.ckpt")
    (tmp_path / "bad.json").write_text('{"something": "else"}')
    with pytest.raises(CheckpointError, match="bad.json.*not RoadSeg"):
        read_metadata(tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="bad.ckpt.*not a readable MindSpore checkpoint"):
        load_weights(Tiny(), tmp_path / "bad.ckpt")
    assert isinstance(CheckpointError("x"), OSError)


def test_load_model_through_registry(tmp_path):
    from segcore.models import create_model

    net = create_model("ddrnet23_slim", num_classes=2, in_channels=3)
    save_checkpoint(net, tmp_path / "d.ckpt", _meta(model="ddrnet23_slim", num_classes=2,
                                                   model_kwargs={}))
    loaded, meta = load_model(tmp_path / "d.ckpt")
    assert meta.model == "ddrnet23_slim" and not loaded.training
    x = ms.Tensor(np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
    net.set_train(False)
    assert np.array_equal(net(x).asnumpy(), loaded(x).asnumpy())
    # the registry's checkpoint= argument goes through load_weights
    again = create_model("ddrnet23_slim", num_classes=2, checkpoint=str(tmp_path / "d.ckpt"))
    again.set_train(False)
    assert np.array_equal(again(x).asnumpy(), loaded(x).asnumpy())


def test_average_checkpoints_is_the_mean_of_the_weights(tmp_path):
    nets, files = [], []
    for i in range(3):
        net = Tiny()
        _randomise(net, 10 + i)
        files.append(save_checkpoint(net, tmp_path / f"e{i}.ckpt", _meta(epoch=i + 1)))
        nets.append(_params(net))
    out = average_checkpoints(files, tmp_path / "avg.ckpt")
    assert out == tmp_path / "avg.ckpt" and not list(tmp_path.glob(".*tmp*"))
    back = Tiny()
    load_weights(back, out)  # strict: same names and shapes as the network
    got = _params(back)
    for k, v in got.items():
        assert np.allclose(v, np.mean([n[k] for n in nets], axis=0), atol=1e-6), k
    doc = json.loads((tmp_path / "avg.json").read_text())
    assert doc["epoch"] == 3 and doc["metrics"] == {} and doc["model"] == "tiny"
    assert doc["averaged_from"] == [str(f) for f in files]
    # another network's checkpoint, or a single file, is refused with the file named
    save_checkpoint(Tiny(k=3), tmp_path / "other.ckpt", _meta(num_classes=3))
    with pytest.raises(CheckpointError, match="other.ckpt.*shape"):
        average_checkpoints([files[0], tmp_path / "other.ckpt"], tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints(files[:1], tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_roadseg_average_command(tmp_path):
    import subprocess
    import sys

    files = []
    for i in range(2):
        net = Tiny()
        _randomise(net, 20 + i)
        files.append(str(save_checkpoint(net, tmp_path / f"e{i}.ckpt", _meta(epoch=i + 1))))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "app.cli", "average", *args],
                              capture_output=True, text=True, check=False)

    r = run(*files, "-o", str(tmp_path / "swa"))
    assert r.returncode == 0, r.stderr
    assert "mean of 2 checkpoints" in r.stdout and (tmp_path / "swa.ckpt").is_file()
    r = run(*files, "-o", str(tmp_path / "swa"))  # refuses to replace without --overwrite
    assert r.returncode != 0 and "already exists" in r.stderr and "Traceback" not in r.stderr
    r = run(files[0], str(tmp_path / "missing.ckpt"), "-o", str(tmp_path / "x"))
    assert r.returncode != 0 and "missing.ckpt" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
