"""Does aligning faces by YuNet's eye landmarks before the crop help accuracy? Rotated FER faces in photos.

PrivateTest faces (labels known) are rotated by 0, +-10, +-20 or +-30 degrees, upscaled to 240 px and pasted
one per photo on 1200x900 photo-like backgrounds (JPEG), then found by YuNet with the default DetectConfig
and classified by the shipped default model (its default engine, single pass) twice, through batch
scoring's own :func:`fer_ray.score.faces.faces_from_bytes`:

(a) ``DetectConfig(align=False)``: YuNet's box made square, cut from the upright photo;
(b) ``DetectConfig(align=True)`` (the default): the face turned so that its eye landmarks are level, then cut.

Prints detection rate and accuracy per |angle| for both and writes JSON. A benchmark, not a test:
it is why batch scoring aligns (issue #10).

python benchmarks/align_faces.py --faces 700          # -> benchmarks/results/align_faces.json
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, write_result  # noqa: E402
from detect_recall import iou  # noqa: E402

from fer_ray.cli import setup  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "align_faces.json"
ANGLES = (0, 10, -10, 20, -20, 30, -30)
SIDE, PHOTO = 240, (1200, 900)


def _samples():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "examples" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose(face, angle: float, k: int, samples) -> tuple[bytes, tuple[int, int, int, int]]:
    """A JPEG photo with ``face`` rotated by ``angle`` degrees (counter-clockwise) pasted at a seeded place."""
    from PIL import Image

    rng = np.random.default_rng(k)
    big = face.convert("L").resize((SIDE, SIDE), Image.BICUBIC)
    fill = int(np.median(np.concatenate([np.asarray(big)[0], np.asarray(big)[-1]])))
    big = big.rotate(angle, resample=Image.BICUBIC, fillcolor=fill)
    x, y = int(rng.integers(40, PHOTO[0] - SIDE - 40)), int(rng.integers(40, PHOTO[1] - SIDE - 40))
    photo = samples.compose_photo([big], PHOTO, [(x, y, SIDE, SIDE)], seed=k)
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    return buf.getvalue(), (x, y, SIDE, SIDE)


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=int, default=700, help="PrivateTest faces (one photo each)")
    p.add_argument("--data", default=None, help="FER2013 Parquet (default: the shared copy)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    a = p.parse_args(argv)
    import cv2
    import pyarrow.parquet as pq
    from PIL import Image

    from fer_ray.inference.artifact import load_artifact
    from fer_ray.score.config import DetectConfig
    from fer_ray.score.faces import faces_from_bytes

    cv2.setNumThreads(1)
    t = pq.read_table(fer2013_or_exit(a.data), columns=["image", "label", "usage"])
    t = t.filter(np.asarray(t.column("usage").to_pylist()) == "PrivateTest").slice(0, a.faces)
    images, labels = t.column("image").to_pylist(), np.asarray(t.column("label").to_pylist())
    art, samples = load_artifact(), _samples()
    modes = {"upright": DetectConfig(align=False), "aligned": DetectConfig(align=True)}
    crops: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    kept, angles = [], []
    for k, data in enumerate(images):
        angle = ANGLES[k % len(ANGLES)]
        photo, truth = compose(Image.open(io.BytesIO(data)), angle, k, samples)
        angles.append(angle)
        found = {m: faces_from_bytes(photo, cfg, art.preprocess) for m, cfg in modes.items()}
        boxes = found["upright"][0]  # the same detections in both modes; only the crops differ
        best = max(range(len(boxes)), key=lambda j: iou(boxes[j], truth), default=None)
        kept.append(best is not None and iou(boxes[best], truth) >= 0.3)
        if kept[-1]:
            for m, (_, mode_crops, _) in found.items():
                crops[m].append(mode_crops[best])
    kept, angles = np.asarray(kept), np.abs(np.asarray(angles))
    y = labels[kept]
    pred = {m: art.predict_proba(np.stack(c), flip_tta=False).argmax(1) for m, c in crops.items()}
    rows = []
    for side in sorted(set(angles.tolist())):
        sel_all = angles == side
        sel = angles[kept] == side
        row = {"abs_angle": side, "faces": int(sel_all.sum()), "detected": int(kept[sel_all].sum())}
        for m in pred:
            row[f"accuracy_{m}"] = round(float((pred[m][sel] == y[sel]).mean()), 4) if sel.any() else None
        rows.append(row)
        print(
            f"|angle| {side:>2}: detected {row['detected']}/{row['faces']}, accuracy upright "
            f"{row['accuracy_upright']:.3f} vs aligned {row['accuracy_aligned']:.3f}"
        )
    total = {m: round(float((pred[m] == y).mean()), 4) for m in pred}
    print(f"all detected faces ({int(kept.sum())}): upright {total['upright']:.3f}, aligned {total['aligned']:.3f}")
    command = " ".join(["python benchmarks/align_faces.py", *(argv if argv is not None else sys.argv[1:])])
    write_result(
        {
            "benchmark": "eye-landmark alignment before the crop, rotated PrivateTest faces in composed photos",
            "command": command,
            "model_id": art.model_id,
            "detect": {"max_side": modes["aligned"].max_side, "score_threshold": modes["aligned"].score_threshold},
            "rows": rows,
            "all_detected": {"faces": int(kept.sum()), **{f"accuracy_{m}": v for m, v in total.items()}},
            "machine": machine_info(opencv=cv2.__version__),
        },
        a.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
