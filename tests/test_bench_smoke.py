"""The benchmark helpers count FLOPs and convert throughput correctly (no timing asserted)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_km2_per_hour_arithmetic():
    from run_all import km2_per_hour

    # a 1000 px tile at 1 m is 1 km²; one tile per second is 3600 km²/h
    assert km2_per_hour(1000.0, 1000, 1.0) == pytest.approx(3600.0)
    assert km2_per_hour(500.0, 1000, 0.3) == pytest.approx(0.09 * 7200.0)


def test_onnx_flops_counts_convolutions(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from run_all import onnx_flops

    w1 = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w1")
    w2 = numpy_helper.from_array(np.zeros((4, 8, 1, 1), np.float32), "w2")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("Conv", ["y", "w2"], ["z"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4, 16, 16])], [w1, w2])
    path = tmp_path / "two_convs.onnx"
    onnx.save(helper.make_model(graph), str(path))
    expect = 2 * (16 * 16 * 8 * 3 * 9) + 2 * (16 * 16 * 4 * 8)
    assert onnx_flops(path) == pytest.approx(expect)


def test_conv_check_table_structure():
    from _table import table

    t = table(["case", "GFLOP/s"], [["a", 1.5], ["b", float("nan")]]).splitlines()
    assert t[0].startswith("| case") and t[1].startswith("|--") and "n/a" in t[3]
