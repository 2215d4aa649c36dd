"""segcore.evaluate and the ``roadseg eval`` / ``export`` / ``models`` commands.

The evaluation runs on 64x64 centre crops of two real DeepGlobe pairs with a randomly initialised
ENet (one road output), so it checks plumbing and bookkeeping, not accuracy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import nn  # noqa: E402

import segcore  # noqa: E402
from app.cli import main as cli_main  # noqa: E402
from app.service.models import count_parameters, list_model_rows  # noqa: E402
from segcore.checkpoint import CheckpointMeta, save_checkpoint  # noqa: E402
from segcore.evaluate import EvalConfig, predict_image  # noqa: E402
from segcore.models.layers import count_trainable_params  # noqa: E402
from segcore.predict import MindSporePredictor  # noqa: E402
from segcore.tta import tta_pairs  # noqa: E402

CROP = 64


@pytest.fixture(scope="module")
def road_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("enet")
    net = segcore.create_model("enet", num_classes=1)
    meta = CheckpointMeta(model="enet", num_classes=1, tile_size_px=64, stride=8,
                          normalization={"method": "dlinknet"}, class_names=("road",))
    return save_checkpoint(net, d / "enet_road.ckpt", meta)


@pytest.fixture(scope="module")
def deepglobe(shared_data):
    root = shared_data / "roads" / "deepglobe" / "train"
    if not root.is_dir():
        pytest.skip(f"{root} missing")
    return root


def _centre_crop_road_pixels(mask_path, crop: int) -> int:
    from PIL import Image

    m = np.asarray(Image.open(mask_path))
    m = m.max(axis=2) if m.ndim == 3 else m
    h, w = m.shape
    y, x = (h - crop) // 2, (w - crop) // 2
    return int((m[y:y + crop, x:x + crop] > 127).sum())


# ------------------------------------------------------------------------------ TTA
class _Isotropic(nn.Cell):
    """A D4-equivariant network: a 3x3 convolution with a kernel symmetric under every flip and
    rotation, then a pointwise non-linearity."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, pad_mode="pad", padding=1, has_bias=True)
        k = np.array([[0.1, -0.3, 0.1], [-0.3, 1.2, -0.3], [0.1, -0.3, 0.1]], np.float32)
        w = np.stack([k * s for s in (0.5, -1.0, 2.0)])[None]
        self.conv.weight.set_data(ms.Tensor(w))
        self.act = nn.Tanh()

    def construct(self, x):
        return self.act(self.conv(x)) * 3.0


class _Skewed(_Isotropic):
    """Not equivariant: a kernel with a preferred direction."""

    def __init__(self):
        super().__init__()
        k = np.array([[0.0, 1.0, 0.5], [0.0, 0.2, 0.0], [-1.0, 0.0, 0.0]], np.float32)
        self.conv.weight.set_data(ms.Tensor(np.stack([k, k, k])[None]))


def test_d4_tta_of_an_equivariant_net_equals_no_tta():
    pred = MindSporePredictor(_Isotropic(), meta={"num_classes": 1, "stride": 1})
    img = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    plain = predict_image(pred, img, tta="none")
    d4 = predict_image(pred, img, tta="d4")
    assert plain.shape == d4.shape == (1, 32, 32)
    np.testing.assert_allclose(d4, plain, atol=1e-6)
    np.testing.assert_allclose(predict_image(pred, img, tta="flips"), plain, atol=1e-6)


def test_d4_tta_averages_the_eight_transforms_of_a_skewed_net():
    pred = MindSporePredictor(_Skewed(), meta={"num_classes": 1, "stride": 1})
    img = np.random.default_rng(1).standard_normal((3, 16, 16)).astype(np.float32)
    d4 = predict_image(pred, img, tta="d4")
    plain = predict_image(pred, img, tta="none")
    assert np.abs(d4 - plain).max() > 1e-3  # the test net really is not equivariant
    manual = np.mean([inv(pred.predict_batch(np.ascontiguousarray(fwd(img[None]))))[0]
                      for fwd, inv in tta_pairs("d4")], axis=0)
    np.testing.assert_allclose(d4, manual, atol=1e-6)
    assert len(tta_pairs("d4")) == 8 and len(tta_pairs("none", flip=True)) == 2


def test_sliding_window_equals_whole_image_for_a_local_net():
    class Pointwise(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1, has_bias=True)

        def construct(self, x):
            return self.conv(x)

    pred = MindSporePredictor(Pointwise(), meta={"num_classes": 2, "stride": 1})
    img = np.random.default_rng(2).standard_normal((3, 40, 56)).astype(np.float32)
    whole = predict_image(pred, img)
    sliding = predict_image(pred, img, mode="sliding", tile_size=16, overlap=0.5)
    assert sliding.shape == (2, 40, 56)
    np.testing.assert_allclose(sliding, whole, atol=1e-6)
    # multi-scale with scale 1 only + flip on a pointwise net is the plain prediction
    np.testing.assert_allclose(predict_image(pred, img, scales=(1.0,), flip=True), whole,
                               atol=1e-6)
    ms_probs = predict_image(pred, img, scales=(0.5, 1.0, 1.5), flip=True)
    assert ms_probs.shape == (2, 40, 56)
    np.testing.assert_allclose(ms_probs.sum(0), 1.0, atol=1e-5)


def test_eval_config_rejects_bad_options():
    with pytest.raises(segcore.errors.ConfigError, match="dataset"):
        EvalConfig("kitti", "/x")
    with pytest.raises(segcore.errors.ConfigError, match="TTA"):
        EvalConfig("deepglobe", "/x", tta="d8")
    with pytest.raises(segcore.errors.ConfigError, match="scales"):
        EvalConfig("voc", "/x", scales=(0.0,))


# ------------------------------------------------------------------------------ roadseg eval
@pytest.mark.slow
def test_eval_on_real_deepglobe_crops_gives_a_well_formed_report(road_ckpt, deepglobe, tmp_path):
    out = tmp_path / "report.json"
    rc = cli_main(["eval", "--checkpoint", str(road_ckpt), "--data", str(deepglobe),
                   "--dataset", "deepglobe", "--crop", str(CROP), "--limit", "2",
                   "--tta", "d4", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left
    assert report["model"] == "enet" and report["dataset"]["samples"] == 2
    assert report["inference"]["tta"] == "d4"
    m = report["metrics"]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == 2 * CROP * CROP
    # ground-truth road pixels come from the real masks (same centre crops)
    samples = sorted(deepglobe.glob("*_sat.jpg"))[:2]
    gt_road = sum(_centre_crop_road_pixels(p.with_name(p.name.replace("_sat.jpg", "_mask.png")),
                                           CROP) for p in samples)
    assert cm[1].sum() == gt_road
    tp, fp, fn = cm[1, 1], cm[0, 1], cm[1, 0]
    if tp + fp + fn:
        assert m["road_iou"] == pytest.approx(tp / (tp + fp + fn))
    bg = cm[0, 0] / (cm[0, 0] + cm[0, 1] + cm[1, 0])
    assert m["background_iou"] == pytest.approx(bg)
    for key in ("road_iou", "road_f1", "road_precision", "road_recall"):
        assert m[key] is None or 0.0 <= m[key] <= 1.0
    assert "background" in m["note"]


def test_eval_refuses_to_overwrite_and_reports_missing_data(road_ckpt, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    rc = cli_main(["eval", "-c", str(road_ckpt), "--data", str(tmp_path), "--dataset",
                   "deepglobe", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists" in err and str(out) in err
    rc = cli_main(["eval", "-c", str(road_ckpt), "--data", str(tmp_path / "nope"),
                   "--dataset", "deepglobe", "--out", str(tmp_path / "r2.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "nope" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ CLI errors
@pytest.mark.parametrize("command", ["eval", "export"])
def test_cli_missing_checkpoint_is_one_line_error(command, tmp_path, capsys):
    missing = tmp_path / "missing.ckpt"
    args = ([command, "--checkpoint", str(missing), "--out", str(tmp_path / "o")]
            + (["--data", str(tmp_path), "--dataset", "deepglobe"] if command == "eval" else []))
    rc = cli_main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.count("\n") == 0 and str(missing) in err and "not found" in err


@pytest.mark.slow
def test_cli_unreadable_checkpoint_is_one_line_error(road_ckpt, tmp_path, capsys):
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    (tmp_path / "broken.json").write_text(road_ckpt.with_suffix(".json").read_text())
    rc = cli_main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "b.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and str(bad) in err
    assert not (tmp_path / "b.onnx").exists()
    nometa = tmp_path / "nometa.ckpt"
    nometa.write_bytes(b"x")
    rc = cli_main(["export", "-c", str(nometa), "-o", str(tmp_path / "n.onnx")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "nometa.json" in err


@pytest.mark.slow
def test_cli_export_onnx_and_refuse_overwrite(road_ckpt, tmp_path, capsys):
    out = tmp_path / "enet"
    rc = cli_main(["export", "-c", str(road_ckpt), "--format", "onnx", "-o", str(out),
                   "--input-size", "32", "32", "--static-batch"])
    assert rc == 0
    path = tmp_path / "enet.onnx"
    doc = json.loads((tmp_path / "enet.onnx.json").read_text())
    assert path.exists() and doc["export"]["input_shape"] == [1, 3, 32, 32]
    assert doc["model"] == "enet" and doc["export"]["verified_rel_error"] < 1e-4
    capsys.readouterr()
    rc = cli_main(["export", "-c", str(road_ckpt), "-o", str(path)])
    assert rc == 2 and "already exists" in capsys.readouterr().err
    rc = cli_main(["export", "-c", str(road_ckpt), "-o", str(tmp_path / "x"),
                   "--input-size", "30", "32", "--overwrite"])
    assert rc == 2 and "multiples of" in capsys.readouterr().err


@pytest.mark.slow
def test_models_lists_the_registry(capsys):
    rc = cli_main(["models", "--no-params"])
    out = capsys.readouterr().out
    assert rc == 0
    for name in segcore.list_models():
        assert name in out
    rows = {r.name: r for r in list_model_rows(count_params=False)}
    assert rows["dlinknet34"].stride == 32 and rows["dlinknet34"].default_classes == 1
    assert rows["ddrnet23_imagenet"].task == "classification"
    net = segcore.create_model("enet")
    assert count_parameters("enet") == count_trainable_params(net)


# ------------------------------------------------------------------------------ classifier
@pytest.mark.slow
def test_classifier_eval_reports_top1_top5(tmp_path):
    from PIL import Image

    from segcore.evaluate import build_eval_dataset, evaluate
    from segcore.metrics import topk_accuracy
    from segcore.predict import normalization_from_meta

    rng = np.random.default_rng(3)
    classes = [f"c{i}" for i in range(6)]
    for i, c in enumerate(classes):
        d = tmp_path / "data" / "val" / c
        d.mkdir(parents=True)
        for j in range(2 if i < 2 else 1):
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"{j}.png")
    net = segcore.create_model("ddrnet23_imagenet", num_classes=6)
    meta = CheckpointMeta(model="ddrnet23_imagenet", num_classes=6, task="classification",
                          stride=8, tile_size_px=32, class_names=tuple(classes))
    pred = MindSporePredictor(net, meta=meta)
    cfg = EvalConfig("imagenet", str(tmp_path / "data"), crop_size=32)
    report = evaluate(pred, cfg, batch_size=4)
    m = report["metrics"]
    assert set(m) == {"top1", "top5"} and report["dataset"]["samples"] == 8
    ds = build_eval_dataset(cfg, meta)
    norm = normalization_from_meta(meta)
    xs = np.stack([norm(ds[i][0]) for i in range(len(ds))])
    labels = np.array([int(ds[i][1]) for i in range(len(ds))])
    assert xs.shape == (8, 3, 32, 32) and sorted(set(labels)) == list(range(6))
    want = topk_accuracy(pred.predict_batch(xs), labels, (1, 5))
    assert m["top1"] == pytest.approx(want[1]) and m["top5"] == pytest.approx(want[5])
    assert 0.0 <= m["top1"] <= m["top5"] <= 1.0
    seg_meta = CheckpointMeta(model="enet", num_classes=1)
    with pytest.raises(segcore.errors.ConfigError, match="classifier"):
        evaluate(MindSporePredictor(segcore.create_model("enet", num_classes=1), meta=seg_meta),
                 cfg)


# ------------------------------------------------------------------------------ multi-class
def _tiny_voc(root) -> int:
    """Two 48x40 images with 3-class labels (first 5 rows ignore=255) and a val.txt list;
    returns the number of ignored pixels."""
    from PIL import Image

    rng = np.random.default_rng(4)
    lines = []
    ignored = 0
    for k in range(2):
        Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)).save(
            root / f"img{k}.png")
        mask = rng.integers(0, 3, (48, 40)).astype(np.uint8)
        mask[:5] = 255
        ignored += int((mask == 255).sum())
        Image.fromarray(mask).save(root / f"lbl{k}.png")
        lines.append(f"img{k}.png lbl{k}.png")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return ignored


@pytest.mark.slow
def test_multiclass_eval_miou_with_ignore_and_multiscale_flip(tmp_path):
    from segcore.evaluate import evaluate

    ignored = _tiny_voc(tmp_path)
    net = segcore.create_model("ddrnet23_slim", num_classes=3)
    meta = CheckpointMeta(model="ddrnet23_slim", num_classes=3, stride=8, tile_size_px=32,
                          class_names=("a", "b", "c"))
    cfg = EvalConfig("voc", str(tmp_path), split="val", scales=(0.75, 1.0), flip=True)
    report = evaluate(MindSporePredictor(net, meta=meta), cfg)
    m = report["metrics"]
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 2 * 48 * 40 - ignored
    diag = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - diag
    iou = np.where(union > 0, diag / np.maximum(union, 1), np.nan)
    assert m["miou"] == pytest.approx(float(np.nanmean(iou)))
    assert set(m["confusion"]["per_class_iou"]) == {"a", "b", "c"}
    assert report["inference"]["scales"] == [0.75, 1.0] and report["inference"]["flip"]


@pytest.mark.slow
def test_eval_progress_and_cancel(tmp_path):
    from segcore.evaluate import EvaluationCancelled, evaluate

    _tiny_voc(tmp_path)
    net = segcore.create_model("ddrnet23_slim", num_classes=3)
    pred = MindSporePredictor(net, meta=CheckpointMeta(model="ddrnet23_slim", num_classes=3,
                                                       stride=8))
    cfg = EvalConfig("voc", str(tmp_path), split="val")
    calls = []
    evaluate(pred, cfg, on_progress=lambda d, t, s: calls.append((d, t, s)))
    assert calls == [(1, 2, "evaluate"), (2, 2, "evaluate")]
    seen = []

    def cancel_after_first() -> bool:
        seen.append(1)
        return len(seen) > 1

    with pytest.raises(EvaluationCancelled, match="after 1 of 2"):
        evaluate(pred, cfg, should_cancel=cancel_after_first)
