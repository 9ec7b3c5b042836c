"""Static int8 quantization that gives the same answers on every CPU, and the proof that it does.

ONNX Runtime multiplies a QDQ model's u8 activations by s8 weights. VNNI/AMX CPUs add those products
in 32 bits; x86 CPUs without VNNI (AVX2-only) use ``vpmaddubsw``, which adds each *pair* into a signed
16-bit value and saturates above 32,767, and with 8-bit weights a pair reaches 2 x 255 x 127 = 64,770.
7-bit weights (``reduce_range``: |w| <= 64) keep every pair within 2 x 255 x 64 = 32,640, so no kernel
saturates and every CPU gives the same answers (measurements: docs/RESULTS.md, "Portable int8").
:func:`int8_pair_bound` proves it for a file; export refuses one over 32,767.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.inference.engine import INPUT_NAME, model_input
from fer_ray.preprocess import PreprocessConfig

CALIBRATION_FACES = 512
INT16_MAX = 32_767  # vpmaddubsw's saturating pair sum
QUANTIZATION = {
    "format": "QDQ",
    "per_channel": True,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "reduce_range": True,
    "calibrate_method": "MinMax",
    "why": (
        "7-bit weights (|w| <= 64): every pair of u8 x s8 products stays <= 2 x 255 x 64 = 32,640, so CPUs "
        "without VNNI (16-bit pair sums) give the same answers as VNNI/AMX hosts; 8-bit weights saturated "
        "there (90.8% top-1 agreement with fp32). u8 weights avoid it too but ran 2.6x slower."
    ),
}
# The operators whose u8 x s8 products ONNX Runtime's integer kernels add in pairs.
_INTEGER_OPS = {"Conv", "MatMul", "Gemm", "ConvTranspose"}


class _Calibration:
    """``onnxruntime.quantization.CalibrationDataReader`` over normalized calibration faces."""

    def __init__(self, x: np.ndarray, batch_size: int = 64):
        self._batches = iter([{INPUT_NAME: x[i : i + batch_size]} for i in range(0, len(x), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_int8(
    fp32: Path, out: Path, calib_faces: np.ndarray, preprocess: PreprocessConfig, reduce_range: bool = True
) -> None:
    """Static int8 (:data:`QUANTIZATION`) of ``fp32``, calibrated on ``calib_faces`` (uint8 (N, S, S));
    ``reduce_range=False`` gives the former 8-bit weights, kept only to measure what they cost."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger("onnxruntime").setLevel(logging.WARNING)  # one INFO line per quantization step otherwise
    with tempfile.TemporaryDirectory(prefix="fer_ray_quant_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))  # shape inference + graph optimisation before quantizing
        quantize_static(
            str(pre),
            str(out),
            _Calibration(model_input(calib_faces, preprocess)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def int8_pair_bound(path: str | Path) -> dict[str, Any]:
    """The largest sum of two adjacent u8 x s8 products any input can produce in ``path``'s integer kernels:
    2 x max|activation| x max|w| per Conv/MatMul/Gemm fed by two DequantizeLinear nodes (calibration maps any
    input into the activation type's range). At most :data:`INT16_MAX`: the same answers with and without VNNI."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def dq_source(name: str):
        """(quantized tensor, element type) behind a DequantizeLinear output, else None."""
        n = producer.get(name)
        if n is None or n.op_type != "DequantizeLinear":
            return None
        q = n.input[0]
        if q in inits:
            return numpy_helper.to_array(inits[q]), inits[q].data_type
        zp = inits.get(n.input[2]) if len(n.input) > 2 else None  # the activation's zero point gives its type
        return None, (zp.data_type if zp is not None else onnx.TensorProto.UINT8)

    worst, ops, max_w = ("", 0), 0, 0
    for node in g.node:
        if node.op_type not in _INTEGER_OPS or len(node.input) < 2:
            continue
        act, wgt = dq_source(node.input[0]), dq_source(node.input[1])
        if act is None or wgt is None or wgt[0] is None:
            continue  # a float op: nothing to bound
        if wgt[1] != onnx.TensorProto.INT8:
            continue  # u8 weights run in u8u8 kernels, which widen to 16 bits before adding: no pair sums
        a_max = 255 if act[1] == onnx.TensorProto.UINT8 else 128  # |raw value| the kernel can see
        w_max = int(np.abs(wgt[0].astype(np.int64)).max()) if wgt[0].size else 0
        ops += 1
        max_w = max(max_w, w_max)
        if 2 * a_max * w_max > worst[1]:
            worst = (node.name or node.op_type, 2 * a_max * w_max)
    return {"max_pair_sum": worst[1], "max_abs_weight": max_w, "ops": ops, "worst": worst[0]}
