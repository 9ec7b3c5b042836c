"""How the shipped models read faces that look like a detector's crops of everyday photos rather than FER2013's.

Each PrivateTest face is degraded one way at a time: shrunk to a smaller side and scaled back up (a small face in
a photo), JPEG-compressed, darker or brighter (gamma), flatter (half the contrast). Accuracy is then measured
single pass, as on the clean faces. The drops say which degradations the training augmentation
(``augment.low_res_p``, ``jpeg_p``, ``gamma``, ``contrast``; issue #34) should cover. fp32 ONNX by default: int8
answers differ between CPUs.

python benchmarks/robustness.py ae_cnn_attn cnn_attn    # -> benchmarks/results/robustness.json
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, model_args, model_label, write_result  # noqa: E402

from fer_ray.train.loop import degrade_face  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "robustness.json"


def low_res(side: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda face: degrade_face(face, side=side)


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda face: degrade_face(face, quality=quality)


def gamma(g: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda face: np.round(255 * (face / 255.0) ** g).astype(np.uint8)


def contrast(c: float) -> Callable[[np.ndarray], np.ndarray]:
    def f(face: np.ndarray) -> np.ndarray:
        x = face.astype(np.float64)
        return np.clip(np.round((x - x.mean()) * c + x.mean()), 0, 255).astype(np.uint8)

    return f


DEGRADATIONS: dict[str, Callable[[np.ndarray], np.ndarray] | None] = {
    "clean": None,
    "low resolution 32 px": low_res(32),
    "low resolution 24 px": low_res(24),
    "low resolution 16 px": low_res(16),
    "JPEG quality 50": jpeg(50),
    "JPEG quality 20": jpeg(20),
    "darker (gamma 1.5)": gamma(1.5),
    "brighter (gamma 0.67)": gamma(1 / 1.5),
    "half contrast": contrast(0.5),
}


def main(argv: list[str] | None = None) -> int:
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.inference.export import labeled_faces

    a = model_args(__doc__, DEFAULT_OUT, argv)
    parquet = str(fer2013_or_exit(a.data))
    arts = {model_label(m): load_artifact(m, engine=a.engine) for m in a.models}
    faces, labels = labeled_faces(parquet, "test", next(iter(arts.values())).preprocess)
    res: dict = {"split": "PrivateTest", "faces": len(labels), "engine": a.engine, "single_pass": True, "accuracy": {}}
    print(f"{'PrivateTest, single pass':<24}" + "".join(f"{m:>14}" for m in arts))
    for name, f in DEGRADATIONS.items():
        x = faces if f is None else np.stack([f(face) for face in faces])
        acc = {m: round(float((art.predict_proba(x, flip_tta=False).argmax(1) == labels).mean()), 4)
               for m, art in arts.items()}  # fmt: skip
        res["accuracy"][name] = acc
        print(f"{name:<24}" + "".join(f"{v:>14.2%}" for v in acc.values()))
    res["models"] = {m: art.model_id for m, art in arts.items()}
    res["machine"] = machine_info()
    write_result(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
