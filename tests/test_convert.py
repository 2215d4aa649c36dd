"""PyTorch weight import: the torch-free reader, the key mapping and numerical equivalence.

Reference PyTorch networks (tests/torch_reference.py) are saved with ``torch.save`` in the zip
and the legacy format, converted by ``segcore.convert`` (which never imports torch) and run in
both frameworks in eval mode on 64x64 inputs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (test extra) builds the reference networks")

import mindspore as ms  # noqa: E402

from segcore.checkpoint import read_metadata  # noqa: E402
from segcore.convert import (convert_checkpoint, convert_state_dict,  # noqa: E402
                             read_torch_state_dict)
from segcore.errors import CheckpointError  # noqa: E402
from segcore.models.backbones.resnet import resnet  # noqa: E402
from segcore.models import create_model, load_model  # noqa: E402
from segcore.torch_reader import load_torch_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch_reference as tr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FORMATS = ("zip", "legacy")


def _save(obj, path: Path, fmt: str) -> Path:
    torch.save(obj, str(path), _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _rel_diff(ours: np.ndarray, ref: np.ndarray) -> float:
    assert ours.shape == ref.shape
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def _torch_out(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def dink34():
    torch.manual_seed(1)
    model = tr.DinkNet34(num_classes=1)
    tr.randomize_bn(model, seed=1)
    model.eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    return model, x, _torch_out(model, x)


@pytest.fixture(scope="module")
def enet_ref():
    torch.manual_seed(2)
    model = tr.TorchENet(num_classes=4)
    tr.randomize_bn(model, seed=2)
    model.eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    return model, x, _torch_out(model, x)


# ---------------------------------------------------------------------------------- reader
@pytest.mark.parametrize("fmt", FORMATS)
def test_reader_matches_torch_load(tmp_path, fmt):
    x = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    obj = {"state_dict": {"w": torch.randn(3, 2, 2), "t": x.t(), "slice": x[1:, 2:5],
                          "half": torch.randn(5).half(), "bf16": torch.randn(3).bfloat16(),
                          "count": torch.tensor(7), "mask": torch.tensor([True, False])},
           "epoch": 12, "best": 0.5, "tags": ["a", "b"], "blob": b"\x00\x01"}
    path = _save(obj, tmp_path / "ck.pth", fmt)
    got = load_torch_file(path)
    ref = torch.load(str(path), weights_only=True)
    assert got["epoch"] == 12 and got["best"] == 0.5 and got["tags"] == ["a", "b"]
    assert got["blob"] == b"\x00\x01"
    for k, v in ref["state_dict"].items():
        want = v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
        assert got["state_dict"][k].dtype == want.dtype, k
        assert got["state_dict"][k].shape == want.shape, k
        np.testing.assert_array_equal(got["state_dict"][k], want)
    assert got["state_dict"]["t"].flags.c_contiguous


class _Evil:
    """Pickles as a call of os.system (what a hostile checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("fmt", FORMATS)
def test_malicious_pickle_rejected_without_running(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = _save({"state_dict": {"w": torch.zeros(2)}, "x": _Evil(marker)},
                 tmp_path / "evil.pth", fmt)
    with pytest.raises(CheckpointError) as err:
        load_torch_file(path)
    msg = str(err.value)
    assert str(path) in msg and "system" in msg and "not an allowed global" in msg
    assert not marker.exists()
    # the same file through the converter
    with pytest.raises(CheckpointError):
        convert_checkpoint(path, "enet", tmp_path / "out.ckpt")
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()


def test_pickled_module_rejected(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(torch.nn.Conv2d(3, 4, 1), str(path))
    with pytest.raises(CheckpointError, match=r"torch\.nn\.modules\.conv\.Conv2d"):
        load_torch_file(path)


def test_not_a_checkpoint_and_truncated(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"definitely not a pickle")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_torch_file(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_torch_file(tmp_path / "absent.pth")
    full = _save({"w": torch.randn(100)}, tmp_path / "full.pth", "legacy")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="truncated"):
        load_torch_file(cut)


# ---------------------------------------------------------------------------------- networks
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.slow
def test_dlinknet34_release_matches_torch(tmp_path, dink34, fmt):
    model, x, ref = dink34
    src = _save(model.state_dict(), tmp_path / "log01_dink34.th", fmt)
    report = convert_checkpoint(src, "dlinknet34", tmp_path / "dink34.ckpt")
    assert report.source == "dinknet" and report.ok and report.num_classes == 1
    assert report.mapped_count == len(list(create_model("dlinknet34").get_parameters()))
    assert not report.leftover and not report.not_covered
    assert len(report.dropped) == sum(k.endswith("num_batches_tracked")
                                      for k in model.state_dict())
    meta = read_metadata(tmp_path / "dink34.ckpt")
    assert meta.model == "dlinknet34" and meta.normalization == {"method": "dlinknet"}
    assert meta.class_names == ("background", "road") and meta.tile_size_px == 1024
    net, _ = load_model(tmp_path / "dink34.ckpt")
    out = net(ms.Tensor(x)).asnumpy()
    assert _rel_diff(out, ref) < 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.slow
def test_enet_matches_torch(tmp_path, enet_ref, fmt):
    model, x, ref = enet_ref
    src = _save(model.state_dict(), tmp_path / "ENet.pth", fmt)
    report = convert_checkpoint(src, "enet", tmp_path / "enet.ckpt")
    assert report.source == "enet" and report.ok and report.num_classes == 4
    net, meta = load_model(tmp_path / "enet.ckpt")
    assert meta.num_classes == 4 and meta.model_kwargs == {}
    out = net(ms.Tensor(x)).asnumpy()
    assert _rel_diff(out, ref) < 1e-4


@pytest.mark.slow
def test_dataparallel_prefix_nested_and_legacy_names(tmp_path, enet_ref):
    """davidtvs' released files: {'state_dict': ...} with DataParallel's 'module.' prefix;
    older releases call the output activation 'out_prelu'."""
    _, x, _ = enet_ref
    torch.manual_seed(3)
    model = tr.TorchENet(num_classes=4, legacy_names=True)
    tr.randomize_bn(model, seed=3)
    model.eval()
    ref = _torch_out(model, x)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    assert any(".out_prelu." in k for k in sd)
    src = _save({"epoch": 300, "miou": 0.51, "state_dict": sd}, tmp_path / "ENet", "legacy")
    flat, nested, stripped = read_torch_state_dict(src)
    assert nested == "state_dict" and stripped == "module."
    assert all(not k.startswith("module.") for k in flat)
    report = convert_checkpoint(src, "enet", tmp_path / "enet_dp.ckpt")
    assert report.ok and report.stripped_prefix == "module."
    assert report.nested_key == "state_dict"
    net, _ = load_model(tmp_path / "enet_dp.ckpt")
    assert _rel_diff(net(ms.Tensor(x)).asnumpy(), ref) < 1e-4


@pytest.mark.slow
def test_torchvision_resnet34_into_backbone(tmp_path):
    torch.manual_seed(4)
    model = tr.resnet34(num_classes=10)
    tr.randomize_bn(model, seed=4)
    model.eval()
    src = _save(model.state_dict(), tmp_path / "resnet34.pth", "zip")
    sd, _, _ = read_torch_state_dict(src)
    net = resnet(34)
    net.set_train(False)
    params, report = convert_state_dict("resnet34", sd, net)
    assert report.source == "torchvision_resnet"
    assert set(report.leftover) == {"fc.weight", "fc.bias"}
    assert not report.unmapped and not report.missing and report.ok
    assert report.mapped_count == len(list(net.get_parameters()))
    assert "fc.weight" in report.summary()
    ms.load_param_into_net(net, params, strict_load=True)
    x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        ref = model.features(torch.from_numpy(x))
    ours = net(ms.Tensor(x))
    for r, o in zip(ref, ours):
        assert _rel_diff(o.asnumpy(), r.numpy()) < 1e-4


def test_imagenet_backbone_into_dlinknet_encoder(tmp_path):
    torch.manual_seed(5)
    model = tr.resnet34()
    src = _save({"module." + k: v for k, v in model.state_dict().items()},
                tmp_path / "resnet34-imagenet.pth", "zip")
    report = convert_checkpoint(src, "dlinknet34", tmp_path / "init.ckpt")  # strict
    assert report.source == "torchvision_resnet" and report.ok
    assert set(report.leftover) == {"fc.weight", "fc.bias"}
    assert all(n.startswith("encoder.") for _, n in report.mapped)
    assert report.not_covered and all(not n.startswith("encoder.")
                                      for n in report.not_covered)
    assert any(n.startswith("decoder1.") for n in report.not_covered)
    net, meta = load_model(tmp_path / "init.ckpt")
    assert meta.num_classes == 1
    got = net.encoder.layer3[2].conv2.weight.asnumpy()
    np.testing.assert_array_equal(got, model.layer3[2].conv2.weight.detach().numpy())


def test_shape_mismatch_names_key_and_shapes(tmp_path, enet_ref):
    model, _, _ = enet_ref  # 4 classes
    net = create_model("enet", num_classes=5)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        convert_state_dict("enet", sd, net)
    msg = str(err.value)
    assert "transposed_conv.weight" in msg and "(16, 4, 3, 3)" in msg and "(16, 5, 3, 3)" in msg
    # through the file path: a 4-band network for 3-band weights names the bands
    src = _save(model.state_dict(), tmp_path / "enet.pth", "zip")
    with pytest.raises(CheckpointError, match=r"enet\.pth.*initial_block\.main_branch\.weight"):
        convert_checkpoint(src, "enet", tmp_path / "x.ckpt", in_channels=4)
    assert not (tmp_path / "x.ckpt").exists()


@pytest.mark.slow
def test_strict_unexpected_and_missing(tmp_path, enet_ref):
    model, _, _ = enet_ref
    sd = dict(model.state_dict())
    sd["extra_head.weight"] = torch.zeros(3)
    del sd["regular1_1.ext_conv1.0.weight"]
    src = _save(sd, tmp_path / "odd.pth", "zip")
    with pytest.raises(CheckpointError, match="extra_head.weight"):
        convert_checkpoint(src, "enet", tmp_path / "odd.ckpt")
    assert not (tmp_path / "odd.ckpt").exists()
    del sd["extra_head.weight"]
    src2 = _save(sd, tmp_path / "odd2.pth", "zip")
    with pytest.raises(CheckpointError, match="regular1_1.ext_conv1.0.weight"):
        convert_checkpoint(src2, "enet", tmp_path / "odd2.ckpt")
    report = convert_checkpoint(src, "enet", tmp_path / "odd.ckpt", strict=False)
    assert report.unmapped == ("extra_head.weight",)
    assert report.missing == ("regular1_1.ext_conv1.0.weight",)
    assert (tmp_path / "odd.ckpt").exists() and (tmp_path / "odd.json").exists()
    with pytest.raises(CheckpointError, match="already exists"):
        convert_checkpoint(src, "enet", tmp_path / "odd.ckpt", strict=False)


def test_wrong_layout_is_explained(tmp_path, enet_ref):
    model, _, _ = enet_ref
    src = _save(model.state_dict(), tmp_path / "enet.pth", "zip")
    with pytest.raises(CheckpointError, match="unrecognised key layout for dlinknet34.*dinknet"):
        convert_checkpoint(src, "dlinknet34", tmp_path / "d.ckpt")


@pytest.mark.slow
def test_converter_runs_without_torch(tmp_path, enet_ref):
    """The runtime path must not need torch: convert in a process where importing it fails."""
    model, x, ref = enet_ref
    src = _save(model.state_dict(), tmp_path / "enet.pth", "legacy")
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None  # any 'import torch' now raises ImportError\n"
        "from segcore.convert import convert_checkpoint\n"
        f"r = convert_checkpoint({str(src)!r}, 'enet', {str(tmp_path / 'nt.ckpt')!r})\n"
        "print(json.dumps({'n': r.mapped_count, 'torch': 'torch' in sys.modules and "
        "sys.modules['torch'] is not None}))\n")
    env = dict(os.environ, GLOG_v="3")
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["n"] > 500 and res["torch"] is False
    net, _ = load_model(tmp_path / "nt.ckpt")
    assert _rel_diff(net(ms.Tensor(x)).asnumpy(), ref) < 1e-4


@pytest.mark.slow
def test_cli_convert(tmp_path, enet_ref, capsys):
    import app.cli.convert_cmd  # noqa: F401  (registers `roadseg convert`)
    from app.cli import main

    model, _, _ = enet_ref
    src = _save(model.state_dict(), tmp_path / "enet.pth", "zip")
    out = tmp_path / "enet_cli.ckpt"
    assert main(["convert", str(src), str(out), "--model", "enet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "enet" and report["num_classes"] == 4
    assert report["unmapped"] == [] and report["missing"] == []
    assert read_metadata(out).model == "enet"
    # refuses to overwrite, and a wrong model is a one-line error with exit code 2
    assert main(["convert", str(src), str(out), "--model", "enet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "d.ckpt"), "-m", "dlinknet34"]) == 2
    assert "unrecognised key layout" in capsys.readouterr().err


def test_reader_refuses_views_outside_their_storage():
    from segcore.torch_reader import _materialise, _Storage, _StorageType, _TensorRef

    st = _Storage("0", _StorageType("FloatStorage", "f4"), 6,
                  np.arange(6, dtype=np.float32))
    np.testing.assert_array_equal(_materialise(_TensorRef(st, 1, (2, 2), (1, 2)), "f"),
                                  [[1, 3], [2, 4]])
    for offset, size, stride in ((3, (2, 2), (2, 1)), (-1, (2,), (1,)), (0, (3,), (-1,)),
                                 (0, (4, 4), (0, 0))):
        with pytest.raises(CheckpointError, match="f: "):
            _materialise(_TensorRef(st, offset, size, stride), "f")


@pytest.mark.slow
def test_ddrnet23_slim_release_matches_torch(tmp_path):
    """ydhongHIT/DDRNet key layout, HRNet-style 'model.' prefix, training-time aux head."""
    torch.manual_seed(6)
    model = tr.DualResNet(num_classes=3, planes=32, spp_planes=128, head_planes=64,
                          augment=True)
    tr.randomize_bn(model, seed=6)
    model.eval()
    x = np.random.default_rng(6).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = _torch_out(model, x)
    src = _save({"model." + k: v for k, v in model.state_dict().items()},
                tmp_path / "best_val_smaller.pth", "zip")
    report = convert_checkpoint(src, "ddrnet23_slim", tmp_path / "ddr.ckpt")
    assert report.source == "ddrnet" and report.ok and report.num_classes == 3
    assert report.stripped_prefix == "model."
    assert report.leftover and all(k.startswith("seghead_extra.") for k in report.leftover)
    net, _ = load_model(tmp_path / "ddr.ckpt")
    assert _rel_diff(net(ms.Tensor(x)).asnumpy(), ref) < 1e-4


@pytest.mark.slow
def test_dgcnet_release_matches_torch(tmp_path):
    """GALD-DGCNet layout (stem Sequential, Conv1d graph weights, dsn head) into our DGCNet
    (ResNet-50 variant to keep the test small; the mapping is depth-independent)."""
    from segcore.models.dgcnet import DGCNet

    torch.manual_seed(7)
    model = tr.DualSeg((3, 4, 6, 3), num_classes=2, ceil_mode=False)
    tr.randomize_bn(model, seed=7)
    model.eval()
    x = np.random.default_rng(7).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ref = _torch_out(model, x)
    sd = {"module." + k: v.numpy() for k, v in model.state_dict().items()}
    assert sd["module.head.dualgcn.conv_adj.weight"].ndim == 3  # Conv1d (out, in, 1)
    net = DGCNet(num_classes=2, depth=50)
    net.set_train(False)
    params, report = convert_state_dict("dgcnet_resnet101", sd, net)
    assert report.source == "dgcnet" and report.ok
    assert report.leftover and all(k.startswith("dsn.") for k in report.leftover)
    assert ("conv1.6.weight", "backbone.conv3.weight") in report.mapped
    assert ("bn1.running_var", "backbone.bn3.moving_variance") in report.mapped
    ms.load_param_into_net(net, params, strict_load=True)
    assert _rel_diff(net(ms.Tensor(x)).asnumpy(), ref) < 1e-4


@pytest.mark.slow
def test_live_torch_state_dict_is_accepted(enet_ref):
    """A caller that has torch may pass model.state_dict() directly (array-likes)."""
    model, x, ref = enet_ref
    net = create_model("enet", num_classes=4)
    net.set_train(False)
    params, report = convert_state_dict("enet", model.state_dict(), net)
    assert report.ok
    ms.load_param_into_net(net, params, strict_load=True)
    assert _rel_diff(net(ms.Tensor(x)).asnumpy(), ref) < 1e-4
