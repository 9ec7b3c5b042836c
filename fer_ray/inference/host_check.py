"""Static int8 that gives the same answers on every CPU, the proof that it does, and engines verified on the
host that runs them, before they score anything that counts.

ONNX Runtime multiplies a QDQ model's u8 activations by s8 weights. VNNI/AMX CPUs add those products
in 32 bits; x86 CPUs without VNNI (AVX2-only) use ``vpmaddubsw``, which adds each *pair* into a signed
16-bit value and saturates above 32,767, and with 8-bit weights a pair reaches 2 x 255 x 127 = 64,770.
7-bit weights (``reduce_range``: |w| <= 64) keep every pair within 2 x 255 x 64 = 32,640, so no kernel
saturates and every CPU gives the same answers (measurements: docs/RESULTS.md, "Portable int8").
:func:`int8_pair_bound` proves it for a file; export refuses one over 32,767.

Still, an accuracy recorded at export proves nothing elsewhere. So every ONNX engine is checked where it is
loaded, on faces stored in the artifact (``host_check.npz``, cut from two public-domain photos) against the fp32
logits stored beside them; below :data:`BOUNDS`, ``load_artifact`` falls back from ``onnx-int8`` to ``onnx``
with one warning line.
"""

from __future__ import annotations

import functools
import io
import logging
import platform
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.inference.engine import INPUT_NAME, Engine, model_input
from fer_ray.inference.outputs import softmax
from fer_ray.preprocess import PreprocessConfig, decode_image

CHECK_FILE = "host_check.npz"  # in the artifact directory: faces (N, S, S) uint8, logits (N, K) float32
PHOTOS_DIR = Path(__file__).resolve().parents[1] / "assets" / "check"
PHOTOS = ("astronaut.jpg", "grace_hopper.jpg")
VARIANTS_PER_PHOTO = 128

# Against the fp32 reference (single pass, temperature 1): between int8 that does not saturate and int8
# that does (docs/RESULTS.md, "Portable int8"); fp32 ONNX differs from PyTorch by rounding only.
BOUNDS: dict[str, dict[str, float]] = {
    "onnx-int8": {"min_agreement": 0.95, "max_mean_abs_diff": 0.01},
    "onnx": {"min_agreement": 0.99, "max_mean_abs_diff": 1e-4},
}
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

    q = QUANTIZATION  # the settings artifact.json records are the ones applied
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)  # one INFO line per quantization step otherwise
    with tempfile.TemporaryDirectory(prefix="fer_ray_quant_") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))  # shape inference + graph optimisation before quantizing
        quantize_static(
            str(pre),
            str(out),
            _Calibration(model_input(calib_faces, preprocess)),
            quant_format=QuantFormat[q["format"]],
            per_channel=q["per_channel"],
            reduce_range=reduce_range,
            activation_type=QuantType[q["activation_type"]],
            weight_type=QuantType[q["weight_type"]],
            calibrate_method=CalibrationMethod[q["calibrate_method"]],
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


@functools.lru_cache(maxsize=1)
def cpu_description() -> str:
    """The CPU model and the flags that decide int8 answers, e.g. ``AMD EPYC 7B13 (avx2; no avx512_vnni, amx)``."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            name = m.group(1).strip()
        if m := re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M):
            flags = set(m.group(1).split())
    except OSError:  # not Linux
        pass
    if not flags:
        return name
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm") if f in flags]
    lacks = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f not in flags] if "avx2" in flags else []
    return f"{name} ({', '.join(have) or 'none of avx2/vnni/amx'}{'; no ' + ', '.join(lacks) if lacks else ''})"


def _jpeg(face: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(face).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"), dtype=np.uint8)


def _variant(gray: np.ndarray, box, roll: float, rng: np.random.Generator, pp: PreprocessConfig) -> np.ndarray:
    """One face as a detector and a camera might deliver it: box jitter, tilt, light, blur, JPEG, occlusion, mirror."""
    import cv2

    from fer_ray.score.faces import face_crop

    x, y, w, h = box
    side = max(w, h) * rng.uniform(0.8, 1.25)
    cx, cy = x + w / 2 + rng.uniform(-0.12, 0.12) * w, y + h / 2 + rng.uniform(-0.12, 0.12) * h
    jittered = (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side)), int(round(side)))
    face = face_crop(gray, jittered, roll + rng.uniform(-15, 15), pp).astype(np.float32)  # (S, S)
    face = 255.0 * (face / 255.0) ** rng.uniform(0.6, 1.7)  # gamma
    face = (face - face.mean()) * rng.uniform(0.5, 1.3) + face.mean() + rng.uniform(-40, 40)  # contrast, brightness
    if rng.random() < 0.4:
        face = cv2.GaussianBlur(face, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        face = face + rng.normal(0, rng.uniform(3, 12), face.shape)
    face = np.clip(face + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        face = _jpeg(face, int(rng.integers(15, 90)))
    if rng.random() < 0.3:  # a hand, a cup, a microphone
        s = pp.image_size
        ow, oh = (int(v) for v in rng.integers(s // 6, s // 2, 2))
        ox, oy = int(rng.integers(0, s - ow)), int(rng.integers(0, s - oh))
        face = face.copy()
        face[oy : oy + oh, ox : ox + ow] = int(rng.integers(0, 256))
    return face[:, ::-1].copy() if rng.random() < 0.5 else face


def make_check_faces(pp: PreprocessConfig) -> np.ndarray:
    """``uint8`` (len(PHOTOS) x VARIANTS_PER_PHOTO, S, S): each photo's face, found by YuNet and cut by the scoring
    path, in seeded variants; stored with the artifact, so the check does not depend on the host's library versions."""
    from fer_ray.score.config import DetectConfig
    from fer_ray.score.faces import find_faces

    rng = np.random.default_rng(0)
    faces = []
    for name in PHOTOS:
        gray = decode_image((PHOTOS_DIR / name).read_bytes(), pp.max_pixels)
        found = find_faces(gray, DetectConfig(), None)
        if len(found) != 1:
            raise RuntimeError(f"{PHOTOS_DIR / name}: expected one face, YuNet found {len(found)}")
        faces += [_variant(gray, found[0].box, found[0].roll or 0.0, rng, pp) for _ in range(VARIANTS_PER_PHOTO)]
    return np.stack(faces)


@dataclass(frozen=True)
class HostCheck:
    """One engine's answers on the check faces against the fp32 reference, on this host."""

    engine: str
    faces: int
    agreement: float  # share of faces with the reference's top class
    mean_abs_diff: float  # mean over faces and classes of |p - p_ref|
    max_abs_diff: float
    passed: bool
    cpu: str

    def line(self) -> str:
        b = BOUNDS[self.engine]
        return (
            f"{self.engine} on {self.cpu}: same top class as fp32 on {self.agreement:.1%} of {self.faces} check "
            f"faces (needs >= {b['min_agreement']:.0%}), mean |dp| {self.mean_abs_diff:.4f} "
            f"(needs <= {b['max_mean_abs_diff']})"
        )


def compare(engine: str, logits: np.ndarray, reference: np.ndarray) -> HostCheck:
    """:class:`HostCheck` of ``logits`` against ``reference`` logits (both (N, K)) under :data:`BOUNDS`."""
    p, q = softmax(logits), softmax(reference)
    agreement = float((p.argmax(1) == q.argmax(1)).mean())
    diff = np.abs(p - q)
    b = BOUNDS[engine]
    passed = agreement >= b["min_agreement"] and float(diff.mean()) <= b["max_mean_abs_diff"]
    return HostCheck(engine, len(p), agreement, float(diff.mean()), float(diff.max()), passed, cpu_description())


def load_check(artifact_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored check faces and fp32 reference logits, or ``None`` (an artifact exported before the check)."""
    f = Path(artifact_dir) / CHECK_FILE
    if not f.is_file():
        return None
    with np.load(f) as z:
        return z["faces"], z["logits"]


def save_check(artifact_dir: Path, faces: np.ndarray, logits: np.ndarray) -> None:
    np.savez_compressed(Path(artifact_dir) / CHECK_FILE, faces=faces.astype(np.uint8), logits=logits.astype(np.float32))


_CACHE: dict[tuple[str, str | None, str | None], HostCheck] = {}


def check_engine(engine: Engine, check: tuple[np.ndarray, np.ndarray]) -> HostCheck:
    """Run ``engine`` on the check faces once per process and model file, and compare (cached)."""
    faces, reference = check
    key = (engine.name, engine.sha256, str(engine.file))
    if key not in _CACHE:
        _CACHE[key] = compare(engine.name, engine.logits(faces), reference)
    return _CACHE[key]
