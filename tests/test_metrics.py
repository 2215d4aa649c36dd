"""Hand-computed checks of segcore.metrics (pure numpy, no MindSpore)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from segcore.metrics import ConfusionMatrix, topk_accuracy

# gt / pred on 3 classes, one ignored pixel (255) and one class never appearing.
GT = np.array([[0, 0, 1, 1],
               [0, 2, 2, 255]])
PRED = np.array([[0, 1, 1, 1],
                 [0, 2, 0, 3]])  # 3 at an ignored pixel must not count


def _cm4():
    cm = ConfusionMatrix(4)
    cm.update(PRED, GT)
    return cm


def test_matrix_counts_and_ignore():
    cm = _cm4()
    expected = np.zeros((4, 4), np.int64)
    # (gt, pred): (0,0) x2, (0,1), (1,1) x2, (2,2), (2,0)
    expected[0, 0] = 2
    expected[0, 1] = 1
    expected[1, 1] = 2
    expected[2, 2] = 1
    expected[2, 0] = 1
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.total == 7


def test_iou_miou_and_empty_class():
    cm = _cm4()
    iou = cm.iou()
    # class 0: tp 2, fp 1 (gt2->0), fn 1 (gt0->1) -> 2/4 ; class 1: tp 2, fp 1, fn 0 -> 2/3
    # class 2: tp 1, fp 0, fn 1 -> 1/2 ; class 3: absent everywhere -> nan
    np.testing.assert_allclose(iou[:3], [0.5, 2 / 3, 0.5])
    assert math.isnan(iou[3])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)


def test_class_present_only_in_prediction_counts_as_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 2, 1]), np.array([0, 0, 1]))
    iou = cm.iou()
    assert iou[2] == 0.0  # predicted but never in gt: union 1, intersection 0
    assert cm.miou() == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    # class accuracy leaves class 2 out (not in gt)
    assert math.isnan(cm.class_accuracy()[2])
    assert cm.mean_class_accuracy() == pytest.approx((0.5 + 1.0) / 2)


def test_pixel_and_class_accuracy():
    cm = _cm4()
    assert cm.pixel_accuracy() == pytest.approx(5 / 7)
    acc = cm.class_accuracy()
    np.testing.assert_allclose(acc[:3], [2 / 3, 1.0, 0.5])
    assert math.isnan(acc[3])
    assert cm.mean_class_accuracy() == pytest.approx((2 / 3 + 1 + 0.5) / 3)


def test_precision_recall_f1_positive_class():
    cm = _cm4()
    prf = cm.precision_recall_f1(positive_class=1)
    assert prf["precision"] == pytest.approx(2 / 3)
    assert prf["recall"] == pytest.approx(1.0)
    assert prf["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 0))


def test_update_binary_probabilities_and_logits():
    probs = np.array([[[[0.9, 0.2], [0.6, 0.4]]]])  # (1,1,2,2)
    target = np.array([[[1, 0], [0, 255]]])
    cm = ConfusionMatrix(2)
    cm.update_binary(probs, target, threshold=0.5)
    # pixels: (1,1) tp, (0,0) tn, (0,1) fp, ignored
    np.testing.assert_array_equal(cm.matrix, [[1, 1], [0, 1]])
    cm2 = ConfusionMatrix(2)
    logits = np.log(probs / (1 - probs))
    cm2.update_binary(logits, target, threshold=0.5, from_logits=True)
    np.testing.assert_array_equal(cm2.matrix, cm.matrix)
    # a stricter threshold turns the 0.6 pixel into background
    cm3 = ConfusionMatrix(2)
    cm3.update_binary(probs, target, threshold=0.7)
    np.testing.assert_array_equal(cm3.matrix, [[2, 0], [0, 1]])


def test_road_vs_background_iou_on_sparse_roads():
    """The D-LinkNet-style "98 %" is the background IoU; the road IoU is far lower."""
    gt = np.zeros((10, 10), np.int64)
    gt[4, :] = 1  # 10 % road
    pred = np.zeros_like(gt)
    pred[4, :5] = 1  # half the road found
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    iou = cm.iou()
    assert iou[0] == pytest.approx(90 / 95)
    assert iou[1] == pytest.approx(0.5)
    s = cm.summary()
    assert s["positive_class"] == "1"
    assert s["positive_iou"] == pytest.approx(0.5)


def test_summary_is_json_and_maps_nan_to_none():
    cm = _cm4()
    s = cm.summary(positive_class=1, class_names=["bg", "road", "car", "tree"])
    text = json.dumps(s)  # must not raise and must not contain NaN
    assert "NaN" not in text
    assert s["per_class_iou"]["tree"] is None
    assert s["per_class_iou"]["road"] == pytest.approx(2 / 3)
    assert s["miou"] == pytest.approx(cm.miou())
    assert s["pixels"] == 7


def test_empty_matrix_and_reset_and_merge():
    cm = ConfusionMatrix(2)
    assert math.isnan(cm.miou())
    assert math.isnan(cm.pixel_accuracy())
    assert cm.summary()["miou"] is None
    a, b = ConfusionMatrix(2), ConfusionMatrix(2)
    a.update(np.array([1, 0]), np.array([1, 1]))
    b.update(np.array([0]), np.array([0]))
    a.merge(b)
    np.testing.assert_array_equal(a.matrix, [[1, 0], [1, 1]])
    a.reset()
    assert a.total == 0


def test_invalid_values_raise():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="target value 3"):
        cm.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(ValueError, match="predicted class 2"):
        cm.update(np.array([2, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="num_classes == 2"):
        ConfusionMatrix(3).update_binary(np.zeros(2), np.zeros(2))


def test_topk_accuracy_hand_computed():
    logits = np.array([[0.1, 0.5, 0.4],   # label 2: rank 1
                       [0.9, 0.05, 0.05],  # label 0: rank 0
                       [0.2, 0.3, 0.5],   # label 0: rank 2
                       [0.0, 0.0, 0.0]])  # label 0: tie -> class 0 first
    labels = np.array([2, 0, 0, 0])
    acc = topk_accuracy(logits, labels, ks=(1, 2, 3))
    assert acc[1] == pytest.approx(2 / 4)
    assert acc[2] == pytest.approx(3 / 4)
    assert acc[3] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        topk_accuracy(logits, labels, ks=(4,))
    with pytest.raises(ValueError):
        topk_accuracy(logits, np.array([0, 0, 0, 3]), ks=(1,))


def test_importable_without_mindspore():
    code = ("import sys; sys.modules['mindspore'] = None\n"
            "import segcore.metrics as m\n"
            "assert 'mindspore' not in [k for k, v in sys.modules.items() if v is not None]\n")
    subprocess.run([sys.executable, "-c", code], check=True)
