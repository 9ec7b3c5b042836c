"""Face-detection recall and speed on composed photos: the table that chose DetectConfig's defaults.

FER2013 faces are pasted at known boxes (sides 40-200 px, 3-5 per photo, not overlapping) on
smooth photo-like backgrounds of 0.5-3 MP, saved as JPEG. For each detector setting it reports
recall per face size (a pasted face counts as found when the region cropped for the model, the
box plus the artifact's face_margin, overlaps the pasted FER crop with IoU >= 0.5: detectors box
the face, FER2013 crops add a margin around it),
false boxes per photo, and photos/s of the fused decode + detect + crop
(:func:`fer_ray.score.faces.faces_from_bytes`) on one thread, as batch scoring runs it.

python benchmarks/detect_recall.py                      # -> benchmarks/results/detect_recall.{json,md}
python benchmarks/detect_recall.py --photos 12 --out out/detect_smoke.json   # smoke test
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, write_result  # noqa: E402

from fer_ray.cli import setup  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "detect_recall.json"
FACE_SIDES = (40, 64, 96, 128, 200)
PHOTO_SIZES = ((816, 612), (1200, 900), (1600, 1200), (2000, 1500))  # 0.5, 1.1, 1.9, 3.0 MP


def iou(a, b) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def compose_set(faces: list, n_photos: int, seed: int = 0) -> list[tuple[bytes, list[tuple[int, int, int, int]]]]:
    """``n_photos`` JPEGs with 3-5 of ``faces`` (grayscale PIL images) pasted at random sizes and places."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "examples" / "make_samples.py")
    samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(samples)
    rng = np.random.default_rng(seed)
    out, k = [], 0
    for i in range(n_photos):
        w, h = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        boxes: list[tuple[int, int, int, int]] = []
        for _ in range(200):  # rejection sampling of non-overlapping boxes (with a gap)
            if len(boxes) == 3 + i % 3:
                break
            side = int(FACE_SIDES[(k + len(boxes)) % len(FACE_SIDES)])
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            gap = side // 2
            if all(
                x + side + gap < bx or bx + bs + gap < x or y + side + gap < by or by + bs + gap < y
                for bx, by, bs, _ in boxes
            ):
                boxes.append((x, y, side, side))
        k += len(boxes)
        picked = [faces[(k + j) % len(faces)] for j in range(len(boxes))]
        photo = samples.compose_photo(picked, (w, h), boxes, seed=int(rng.integers(1 << 30)))
        buf = io.BytesIO()
        photo.save(buf, format="JPEG", quality=88)
        out.append((buf.getvalue(), boxes))
    return out


def evaluate(photos, detect, preprocess) -> dict:
    """Recall per face side, false boxes per photo and photos/s of decode + detect + crop (one thread)."""
    from fer_ray.score.faces import faces_from_bytes

    found_by_side = {s: [0, 0] for s in FACE_SIDES}
    false_boxes = 0
    faces_from_bytes(photos[0][0], detect, preprocess)  # warm-up: loads the detector
    t0 = time.perf_counter()
    results = [faces_from_bytes(data, detect, preprocess)[0] for data, _ in photos]
    seconds = time.perf_counter() - t0
    m = preprocess.face_margin
    for (_, truth), boxes in zip(photos, results, strict=True):
        boxes = [(x - m * w, y - m * h, w * (1 + 2 * m), h * (1 + 2 * m)) for x, y, w, h in boxes]  # crop regions
        matched = set()
        for t in truth:
            hit = [j for j, b in enumerate(boxes) if j not in matched and iou(t, b) >= 0.5]
            found_by_side[t[2]][1] += 1
            if hit:
                matched.add(hit[0])
                found_by_side[t[2]][0] += 1
        false_boxes += len(boxes) - len(matched)
    return {
        "recall": {str(s): round(f / n, 3) if n else None for s, (f, n) in found_by_side.items()},
        "faces": {str(s): n for s, (_, n) in found_by_side.items()},
        "false_boxes_per_photo": round(false_boxes / len(photos), 3),
        "photos_per_s": round(len(photos) / seconds, 1),
    }


SETTINGS = [
    ("haar, max_side 1024", {"detector": "haar", "max_side": 1024}),
    ("haar, full resolution", {"detector": "haar", "max_side": 4096}),
    ("yunet, max_side 512", {"max_side": 512, "detect_face_px": 1000}),
    ("yunet, max_side 640", {"max_side": 640, "detect_face_px": 1000}),
    ("yunet, max_side 800", {"max_side": 800, "detect_face_px": 1000}),
    ("yunet, max_side 800, score 0.7", {"max_side": 800, "detect_face_px": 1000, "score_threshold": 0.7}),
    ("yunet, max_side 1024", {"max_side": 1024, "detect_face_px": 1000}),
    ("yunet, max_side 1280", {"max_side": 1280, "detect_face_px": 1000}),
    ("yunet, full resolution", {"max_side": 4096, "detect_face_px": 1000}),
    ("yunet, min_face 40 at 20 px (scale 0.5)", {"max_side": 4096, "detect_face_px": 20}),
    ("**default** (DetectConfig())", {}),
]


def markdown(rows: list[dict], command: str, note: str) -> str:
    head = " | ".join(f"{s} px" for s in FACE_SIDES)
    lines = [
        f"Recall (IoU >= 0.5 of crop region and pasted face) by face side, on composed 0.5-3 MP JPEGs. "
        f"`{command}`; {note}\n",
        f"| setting | {head} | false boxes / photo | photos/s (1 thread) |",
        "|---|" + "---|" * len(FACE_SIDES) + "---|---|",
    ]
    for r in rows:
        rec = " | ".join(f"{r['recall'][str(s)]:.0%}" for s in FACE_SIDES)
        lines.append(f"| {r['setting']} | {rec} | {r['false_boxes_per_photo']:.2f} | {r['photos_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=int, default=80)
    p.add_argument("--data", default=None, help="FER2013 Parquet (default: the shared copy)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--note", default="", help="what else ran on the machine (speed depends on it)")
    a = p.parse_args(argv)
    import cv2
    import pyarrow.parquet as pq
    from PIL import Image

    from fer_ray.preprocess import PreprocessConfig
    from fer_ray.score.config import DetectConfig

    cv2.setNumThreads(1)
    data = fer2013_or_exit(a.data)
    t = pq.read_table(data, columns=["image", "usage"], filters=[("usage", "=", "PrivateTest")]).slice(0, 600)
    faces = [Image.open(io.BytesIO(b)).convert("L") for b in t.column("image").to_pylist()]
    photos = compose_set(faces, a.photos)
    pp = PreprocessConfig()
    rows = []
    for name, kw in SETTINGS:
        r = {"setting": name, "config": kw, **evaluate(photos, DetectConfig(**kw), pp)}
        print(f"{name:<34} recall {r['recall']} false/photo {r['false_boxes_per_photo']} {r['photos_per_s']}/s")
        rows.append(r)
    command = " ".join(["python benchmarks/detect_recall.py", *(argv if argv is not None else sys.argv[1:])])
    result = {
        "benchmark": "face detection recall and speed on composed photos",
        "command": command,
        "photos": len(photos),
        "faces": sum(len(b) for _, b in photos),
        "note": a.note,
        "rows": rows,
        "machine": machine_info(opencv=cv2.__version__),
    }
    write_result(result, a.out)
    Path(a.out).with_suffix(".md").write_text(markdown(rows, command, a.note or "machine idle"))
    print(markdown(rows, command, a.note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
