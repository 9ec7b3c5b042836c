"""Engines verified on the host that runs them, before they score anything that counts.

int8 answers depend on the CPU (:mod:`fer_ray.inference.quantize`): an accuracy recorded at export proves nothing
elsewhere. So every ONNX engine is checked where it is loaded, on faces stored in the artifact (``host_check.npz``,
cut from two public-domain photos) against the fp32 logits stored beside them; below :data:`BOUNDS`,
``load_artifact`` falls back from ``onnx-int8`` to ``onnx`` with one warning line.
"""

from __future__ import annotations

import functools
import io
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_ray.inference.outputs import softmax
from fer_ray.preprocess import PreprocessConfig

if TYPE_CHECKING:
    from fer_ray.inference.engine import Engine

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


def make_check_faces(
    preprocess: PreprocessConfig | None = None, per_photo: int = VARIANTS_PER_PHOTO, seed: int = 0
) -> np.ndarray:
    """``uint8`` (len(PHOTOS) x per_photo, S, S): each photo's face, found by YuNet and cut by the scoring path, in
    seeded variants; stored with the artifact, so the check does not depend on the host's library versions."""
    from fer_ray.preprocess import decode_image
    from fer_ray.score.config import DetectConfig
    from fer_ray.score.faces import _detect

    pp = preprocess or PreprocessConfig()
    rng = np.random.default_rng(seed)
    faces = []
    for name in PHOTOS:
        gray = decode_image((PHOTOS_DIR / name).read_bytes(), pp.max_pixels)
        found = _detect(gray, DetectConfig(), None)
        if len(found) != 1:
            raise RuntimeError(f"{PHOTOS_DIR / name}: expected one face, YuNet found {len(found)}")
        (box, roll) = found[0]
        faces += [_variant(gray, box, roll or 0.0, rng, pp) for _ in range(per_photo)]
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
