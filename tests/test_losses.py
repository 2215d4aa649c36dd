"""segcore.losses against direct numpy computations, in PyNative and GRAPH mode."""
from __future__ import annotations

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import ops  # noqa: E402

from segcore.losses import (AuxLoss, BCEDiceLoss, CrossEntropyIgnore,  # noqa: E402
                            OhemCrossEntropy, WeightedCrossEntropy, create_loss,
                            enet_class_weights)

RTOL = 1e-5
IGN = 255


# graph mode compiles every loss (~5-30 s each on a loaded 2-core machine): slow
@pytest.fixture(params=["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def mode(request):
    old = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE if request.param == "pynative" else ms.GRAPH_MODE)
    yield request.param
    ms.set_context(mode=old)


def _inputs(seed=0, n=2, c=4, h=6, w=5, ignore_frac=0.2):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, c, h, w)) * 2).astype(np.float32)
    t = rng.integers(0, c, size=(n, h, w)).astype(np.int32)
    t[rng.random((n, h, w)) < ignore_frac] = IGN
    return x, t


def _log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _nll(x, t):
    """Per-pixel CE (N,H,W) and validity; CE at ignored pixels is 0."""
    valid = t != IGN
    safe = np.where(valid, t, 0)
    logp = _log_softmax(x)
    logp_t = np.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
    return np.where(valid, -logp_t, 0.0), np.exp(logp_t), valid


def _run(loss, x, t):
    return float(loss(ms.Tensor(x), ms.Tensor(t)).asnumpy())


def _grad(loss, x, t):
    def fn(a, b):
        return loss(a, b)
    return ms.grad(fn, grad_position=0)(ms.Tensor(x), ms.Tensor(t)).asnumpy()


def test_cross_entropy_ignore_matches_numpy(mode):
    x, t = _inputs()
    ce, _, valid = _nll(x, t)
    ref = ce.sum() / valid.sum()
    np.testing.assert_allclose(_run(CrossEntropyIgnore(IGN), x, t), ref, rtol=RTOL)


def test_cross_entropy_gradient_is_softmax_minus_onehot(mode):
    x, t = _inputs(seed=1)
    valid = t != IGN
    p = np.exp(_log_softmax(x))
    onehot = np.zeros_like(p)
    np.put_along_axis(onehot, np.where(valid, t, 0)[:, None], 1.0, axis=1)
    ref = (p - onehot) * valid[:, None] / valid.sum()
    g = _grad(CrossEntropyIgnore(IGN), x, t)
    np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-7)
    assert np.all(np.abs(g).sum(axis=1)[~valid] == 0)  # ignored pixels get no gradient


def test_cross_entropy_all_ignored_is_zero(mode):
    x, t = _inputs()
    t[...] = IGN
    assert _run(CrossEntropyIgnore(IGN), x, t) == 0.0


def test_weighted_cross_entropy_matches_numpy(mode):
    x, t = _inputs(seed=2)
    w = np.array([0.5, 2.0, 1.0, 3.0], np.float32)
    ce, _, valid = _nll(x, t)
    wt = np.where(valid, w[np.where(valid, t, 0)], 0.0)
    ref = (wt * ce).sum() / wt.sum()
    np.testing.assert_allclose(_run(WeightedCrossEntropy(w, IGN), x, t), ref, rtol=RTOL)
    # uniform weights reduce to plain CE
    np.testing.assert_allclose(_run(WeightedCrossEntropy([1.0] * 4, IGN), x, t),
                               _run(CrossEntropyIgnore(IGN), x, t), rtol=RTOL)
    assert np.isfinite(_grad(WeightedCrossEntropy(w, IGN), x, t)).all()


def _ohem_ref(x, t, thresh, min_kept):
    ce, prob, valid = _nll(x, t)
    pv = prob[valid]
    cev = ce[valid]
    keep = pv < thresh
    hardest = np.argsort(pv, kind="stable")[:min_kept]  # all valid ones if fewer
    keep[hardest] = True
    return cev[keep].mean(), keep.sum()


@pytest.mark.parametrize("thresh,min_kept", [(0.7, 5), (0.3, 20), (0.9, 1000), (0.05, 0)])
def test_ohem_matches_numpy(mode, thresh, min_kept):
    x, t = _inputs(seed=3, h=8, w=8)
    ref, kept = _ohem_ref(x, t, thresh, min_kept)
    assert kept > 0
    np.testing.assert_allclose(_run(OhemCrossEntropy(thresh, min_kept, IGN), x, t), ref,
                               rtol=RTOL)


def test_ohem_selection_and_gradient_mask(mode):
    # 1 image, 2 classes, 4 pixels: true-class probabilities 0.99, 0.6, 0.2, (ignored)
    logit = np.log(np.array([0.99, 0.6, 0.2, 0.5]) / (1 - np.array([0.99, 0.6, 0.2, 0.5])))
    x = np.zeros((1, 2, 1, 4), np.float32)
    x[0, 1, 0] = logit  # class-1 logit vs 0 -> p(class 1) = sigmoid(logit)
    t = np.array([[[1, 1, 1, IGN]]], np.int32)
    ce = -np.log([0.99, 0.6, 0.2])
    loss = OhemCrossEntropy(thresh=0.7, min_kept=1, ignore_index=IGN)
    np.testing.assert_allclose(_run(loss, x, t), ce[1:].mean(), rtol=1e-5)
    g = _grad(loss, x, t)
    assert np.all(g[0, :, 0, 0] == 0)  # easy pixel (0.99 >= 0.7) not kept
    assert np.all(g[0, :, 0, 3] == 0)  # ignored pixel
    assert np.all(g[0, :, 0, 1:3] != 0)
    # min_kept 3 forces the easy pixel back in
    np.testing.assert_allclose(_run(OhemCrossEntropy(0.7, 3, IGN), x, t), ce.mean(), rtol=1e-5)
    # a tiny threshold keeps exactly the min_kept hardest
    np.testing.assert_allclose(_run(OhemCrossEntropy(0.01, 1, IGN), x, t), ce[2], rtol=1e-5)


def test_bce_dice_matches_numpy(mode):
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(2, 1, 6, 6)) * 3).astype(np.float32)
    y = (rng.random((2, 6, 6)) < 0.3).astype(np.int32)
    xd = x.astype(np.float64)[:, 0]
    p = 1 / (1 + np.exp(-xd))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    dice = 2 * (p * y).sum() / (p.sum() + y.sum())
    ref = bce + 1 - dice
    np.testing.assert_allclose(_run(BCEDiceLoss(), x, y), ref, rtol=RTOL)
    # (N,1,H,W) float targets give the same result
    np.testing.assert_allclose(_run(BCEDiceLoss(), x, y[:, None].astype(np.float32)), ref,
                               rtol=RTOL)
    g = _grad(BCEDiceLoss(), x, y)
    assert g.shape == x.shape and np.isfinite(g).all() and np.abs(g).sum() > 0


def test_bce_dice_ignore_and_large_logits(mode):
    x = np.array([[[[50.0, -50.0, 3.0, 0.0]]]], np.float32)
    y = np.array([[[1, 0, IGN, 1]]], np.int32)
    loss = BCEDiceLoss(ignore_index=IGN)
    xv, yv = np.array([50.0, -50.0, 0.0]), np.array([1, 0, 1])
    p = 1 / (1 + np.exp(-xv))
    bce = (np.maximum(xv, 0) - xv * yv + np.log1p(np.exp(-np.abs(xv)))).mean()
    ref = bce + 1 - 2 * (p * yv).sum() / (p.sum() + yv.sum())
    np.testing.assert_allclose(_run(loss, x, y), ref, rtol=RTOL)
    assert np.isfinite(_run(BCEDiceLoss(), x, np.clip(y, 0, 1)))


def test_aux_loss_tuple_and_single(mode):
    x, t = _inputs(seed=5)
    x2, _ = _inputs(seed=6)
    ce = CrossEntropyIgnore(IGN)
    aux = AuxLoss(OhemCrossEntropy(0.7, 10, IGN), ce, aux_weight=0.4)
    ref = _ohem_ref(x, t, 0.7, 10)[0] + 0.4 * _run(ce, x2, t)
    np.testing.assert_allclose(float(aux((ms.Tensor(x), ms.Tensor(x2)), ms.Tensor(t)).asnumpy()),
                               ref, rtol=RTOL)
    # evaluation output (a single tensor): main loss only
    np.testing.assert_allclose(_run(aux, x, t), _ohem_ref(x, t, 0.7, 10)[0], rtol=RTOL)


def test_aux_loss_resizes_low_resolution_aux(mode):
    x, t = _inputs(seed=7, h=8, w=8)
    small = np.random.default_rng(8).normal(size=(2, 4, 4, 4)).astype(np.float32)
    up = ops.interpolate(ms.Tensor(small), size=(8, 8), mode="bilinear",
                         align_corners=False).asnumpy()
    ce = CrossEntropyIgnore(IGN)
    aux = AuxLoss(ce, aux_weight=0.4)
    got = float(aux((ms.Tensor(x), ms.Tensor(small)), ms.Tensor(t)).asnumpy())
    ref = _nll(x, t)[0].sum() / (t != IGN).sum() + 0.4 * _nll(up, t)[0].sum() / (t != IGN).sum()
    np.testing.assert_allclose(got, ref, rtol=1e-4)


def test_aux_loss_gradients_reach_both_heads(mode):
    x, t = _inputs(seed=9)
    aux = AuxLoss(CrossEntropyIgnore(IGN), aux_weight=0.4)

    def fn(a, b, tt):
        return aux((a, b), tt)
    ga, gb = ms.grad(fn, grad_position=(0, 1))(ms.Tensor(x), ms.Tensor(x * 0.5), ms.Tensor(t))
    assert np.abs(ga.asnumpy()).sum() > 0 and np.abs(gb.asnumpy()).sum() > 0
    # the aux head's gradient is 0.4 x what it would get as a main head
    g_main = _grad(CrossEntropyIgnore(IGN), x * 0.5, t)
    np.testing.assert_allclose(gb.asnumpy(), 0.4 * g_main, rtol=1e-4, atol=1e-8)


def test_enet_class_weights():
    w = enet_class_weights([0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(w, 1 / np.log(1.02 + np.array([0.5, 0.25, 0.25, 0.0])), rtol=1e-6)
    # counts are normalised, and label arrays give the same weights (255 not counted)
    np.testing.assert_allclose(enet_class_weights([200, 100, 100, 0]), w, rtol=1e-6)
    labels = [np.array([[0, 0, 1, 255]]), np.array([0, 0, 2, 1, 255, 2])]
    np.testing.assert_allclose(enet_class_weights(labels, num_classes=4), w, rtol=1e-6)
    assert w[3] == pytest.approx(1 / np.log(1.02))  # absent class: maximal weight
    with pytest.raises(ValueError):
        enet_class_weights([np.array([5])], num_classes=4)
    with pytest.raises(ValueError):
        enet_class_weights([0, 0])
    with pytest.raises(ValueError):
        enet_class_weights([1, 1], c=1.0)


def test_create_loss_names():
    assert isinstance(create_loss("bce_dice"), BCEDiceLoss)
    assert isinstance(create_loss("ce"), CrossEntropyIgnore)
    wrapped = create_loss("ohem", aux_weight=0.4, ohem_thresh=0.9, ohem_min_kept=131072)
    assert isinstance(wrapped, AuxLoss) and isinstance(wrapped.main_loss, OhemCrossEntropy)
    assert isinstance(wrapped.aux_loss, CrossEntropyIgnore)
    assert wrapped.main_loss.thresh == 0.9 and wrapped.main_loss.min_kept == 131072
    with pytest.raises(ValueError, match="valid"):
        create_loss("focal")
