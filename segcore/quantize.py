"""int8 networks: ONNX Runtime static quantisation (QDQ), calibrated on real tiles.

:func:`quantize_onnx` turns an fp32 ``.onnx`` written by :func:`segcore.export.export_model`
into an int8 one (weights int8 per output channel, activations uint8 with ranges from the
calibration tiles, QDQ format) and writes its metadata beside it with
``export.precision = "int8"``. The result only depends on the fp32 file and the calibration
tiles, so a cache built from the same tiles is the same file on every machine.

No MindSpore here (the import-linter contract in ``setup.cfg``); the caller supplies the tiles,
already normalised, as float32 ``(N, C, H, W)`` arrays (the service layer reads them from the
checkpoint's training chips or a scene).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

from .errors import CheckpointError
from .onnx_infer import read_export_sidecar

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
#: at most this many calibration tiles are used (more adds time, not accuracy here)
MAX_CALIBRATION_TILES = 32
#: the last convolutions (the segmentation head) kept in fp32
FP32_HEAD_CONVS = 2


def quantize_onnx(fp32_path: PathLike, out_path: PathLike, batches: Iterable[np.ndarray],
                  calibration_note: str = "", per_channel: bool = True,
                  method: str = "minmax") -> Path:
    """Write the int8 (QDQ) version of ``fp32_path`` to ``out_path`` (and ``<out>.json``).

    Args:
        fp32_path: an fp32 ONNX export with its metadata JSON.
        out_path: destination ``.onnx``; written under a temporary name and renamed.
        batches: float32 ``(N, C, H, W)`` normalised real tiles at the network's input size
            (at most :data:`MAX_CALIBRATION_TILES` are used).
        calibration_note: where the tiles came from (recorded in the metadata).
        per_channel: per-output-channel weight scales (better accuracy, same speed).
        method: ``minmax`` or ``percentile`` activation ranges.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(fp32_path)
    out = Path(out_path)
    doc = read_export_sidecar(src)
    info = dict(doc.get("export", {}))
    if info.get("precision", "fp32") != "fp32":
        raise CheckpointError(f"{src}: already {info.get('precision')}; quantise the fp32 file")
    input_name = str(info.get("input_name") or "x")
    shape = [int(v) for v in info.get("input_shape", [])]
    tiles: List[np.ndarray] = []
    for b in batches:
        arr = np.asarray(b, np.float32)
        if arr.ndim != 4:
            raise CheckpointError(f"calibration batch of shape {arr.shape}; need (N, C, H, W)")
        for t in arr:
            if len(shape) == 4 and tuple(t.shape) != tuple(shape[1:]):
                raise CheckpointError(f"{src}: calibration tile {t.shape} differs from the "
                                      f"network input {tuple(shape[1:])}")
            tiles.append(np.ascontiguousarray(t[None]))
            if len(tiles) >= MAX_CALIBRATION_TILES:
                break
        if len(tiles) >= MAX_CALIBRATION_TILES:
            break
    if not tiles:
        raise CheckpointError(f"{src}: no calibration tiles")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(tiles)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            t = next(self._it, None)
            return None if t is None else {input_name: t}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.stem}.quant-", dir=str(out.parent)))
    try:
        pre = tmpdir / "pre.onnx"
        try:  # shape inference + graph clean-up: recommended before static quantisation
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # noqa: BLE001  fall back to the file as exported
            logger.info("%s: quantisation pre-processing skipped (%s)", src, exc)
            shutil.copyfile(src, pre)
        q = tmpdir / "model_int8.onnx"
        import onnx

        pre_model = onnx.load(str(pre))
        opset = max((o.version for o in pre_model.opset_import if o.domain in ("", "ai.onnx")),
                    default=0)
        if opset < 13:  # per-channel QuantizeLinear/DequantizeLinear (axis) need opset 13
            from onnx import version_converter

            try:
                pre_model = version_converter.convert_version(pre_model, 13)
            except Exception as exc:  # noqa: BLE001  an operator the converter cannot move
                raise CheckpointError(f"{src}: cannot move opset {opset} to 13 for int8 "
                                      f"({str(exc).splitlines()[0] if str(exc) else exc})"
                                      ) from exc
            onnx.save(pre_model, str(pre))

        # convolutions only (they are nearly all of the work), and the last two of them (the
        # segmentation head, whose output is thresholded) stay fp32: on the bundled DDRNet this
        # kept the logits closest to fp32 (correlation 0.92 against 0.09 with every operator
        # quantised) and ran fastest (1.8x against 1.4x)
        convs = [n.name for n in pre_model.graph.node if n.op_type == "Conv"]
        keep = convs[-FP32_HEAD_CONVS:] if len(convs) > FP32_HEAD_CONVS else []
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # onnxruntime.quantization warns on the root logger
        try:
            quantize_static(
                str(pre), str(q), _Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=per_channel, nodes_to_exclude=keep, op_types_to_quantize=["Conv"],
                calibrate_method=(CalibrationMethod.Percentile if method == "percentile"
                                  else CalibrationMethod.MinMax),
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        finally:
            root.setLevel(level)
        del pre_model
        model = onnx.load(str(q))
        model.graph.name = f"{doc.get('model') or src.stem}-int8"  # no per-process names
        onnx.save(model, str(q))
        info.update(precision="int8", quantization={
            "tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "operators": "Conv", "fp32_head_convs": len(keep),
            "activations": "uint8", "weights": "int8 per channel" if per_channel else "int8",
            "calibration": calibration_note or "caller-supplied tiles",
            "calibration_tiles": len(tiles), "method": method,
            "source_onnx": src.name})
        new_doc: Dict[str, Any] = dict(doc)
        new_doc["export"] = info
        side = out.with_name(out.name + ".json")
        tmp_side = tmpdir / "meta.json"
        with open(tmp_side, "w", encoding="utf-8") as f:
            json.dump(new_doc, f, indent=2)
            f.write("\n")
        os.replace(tmp_side, side)  # metadata first: a network never stands without it
        os.chmod(q, 0o644)
        os.replace(q, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    logger.info("quantised %s to int8: %s (%d calibration tiles)", src, out, len(tiles))
    return out


__all__ = ["quantize_onnx", "MAX_CALIBRATION_TILES"]
