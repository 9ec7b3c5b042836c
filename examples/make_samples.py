"""Regenerate the bundled sample images in examples/images/ (see its README for provenance).

    python examples/make_samples.py                       # FER2013 from the data root, photos from the crops
    python examples/make_samples.py --skimage-data DIR    # also refresh astronaut.jpg / coffee.jpg from
                                                          # scikit-image's skimage/data (public domain / CC0)

Seven FER2013 test faces (one per emotion, original JPEG bytes) go to ``crops/``; the
"photos" in ``photos/`` are composed from those crops (upscaled, pasted on smooth
backgrounds, several per image) and cover EXIF rotation, PNG with alpha, HEIC and a
photo large enough to be downscaled for detection. ``other/`` holds a real photo without
a face and a truncated JPEG. Every composed photo is checked with the scoring job's own
decoder and detector before it is written; ``expected.json`` records the pasted boxes.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_ray.labels import EMOTIONS  # noqa: E402
from fer_ray.preprocess import decode_image  # noqa: E402
from fer_ray.score.config import DetectConfig  # noqa: E402
from fer_ray.score.faces import detect_faces  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"
ORIENTATION = 0x0112
# EXIF orientation -> transpose that turns the upright picture into the stored pixels
# (the inverse of what viewers and fer_ray.preprocess.decode_image apply).
_STORE_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}

Box = tuple[int, int, int, int]


def background(width: int, height: int, seed: int, noise: float = 2.0) -> Image.Image:
    """A smooth, photo-like RGB backdrop: two-colour gradient, soft blobs, a little sensor noise."""
    rng = np.random.default_rng(seed)
    c0, c1 = rng.uniform(60, 200, 3), rng.uniform(60, 200, 3)
    t = np.linspace(0, 1, width)[None, :, None] * 0.6 + np.linspace(0, 1, height)[:, None, None] * 0.4
    img = c0 * (1 - t) + c1 * t
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(4):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.1, 0.4) * max(width, height)
        img += rng.uniform(-25, 25, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
    img += rng.normal(0, noise, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def paste_face(canvas: Image.Image, face: Image.Image, box: Box) -> None:
    """Paste a grayscale face crop, upscaled to the box, with feathered edges."""
    x, y, w, h = box
    big = face.convert("L").resize((w, h), Image.BICUBIC).convert("RGB")
    mask = Image.new("L", (w, h), 0)
    inset = max(2, w // 20)
    mask.paste(255, (inset, inset, w - inset, h - inset))
    canvas.paste(big, (x, y), mask.filter(ImageFilter.GaussianBlur(inset / 2)))


def compose_photo(
    faces: list[Image.Image], size: tuple[int, int], boxes: list[Box], seed: int, noise: float = 2.0
) -> Image.Image:
    """An upright RGB "photo" of ``size`` with ``faces[i]`` pasted at ``boxes[i]`` (x, y, w, h)."""
    canvas = background(*size, seed=seed, noise=noise)
    for face, box in zip(faces, boxes, strict=True):
        paste_face(canvas, face, box)
    return canvas


def encode(img: Image.Image, fmt: str, orientation: int | None = None, **kw) -> bytes:
    """Encode an upright picture; with ``orientation`` the pixels are stored rotated plus that EXIF tag."""
    buf = io.BytesIO()
    if orientation:
        stored = img.transpose(_STORE_AS[orientation])
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        stored.save(buf, format=fmt, exif=exif.tobytes(), **kw)
    else:
        img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def center_in(box: Box, outer: Box) -> bool:
    cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
    return outer[0] <= cx <= outer[0] + outer[2] and outer[1] <= cy <= outer[1] + outer[3]


def matches(found: list[Box], pasted: list[Box]) -> bool:
    """One detection per pasted face, centred inside it and covering at least a fifth of it."""
    if len(found) != len(pasted):
        return False
    for p in pasted:
        hits = [f for f in found if center_in(f, p) and f[2] * f[3] >= 0.2 * p[2] * p[3]]
        if len(hits) != 1:
            return False
    return True


def detectable(face: Image.Image, sides=(130, 180, 260, 400)) -> bool:
    """True when the cascade finds this crop, alone on a backdrop, at every size we paste it at."""
    for k, side in enumerate(sides):
        pasted = [(side // 2, side // 3, side, side)]
        photo = compose_photo([face], (2 * side, 2 * side), pasted, seed=100 + k)
        if not matches(detect_faces(decode_image(encode(photo, "JPEG", quality=90)), DetectConfig()), pasted):
            return False
    return True


def pick_fer_crops(fer_parquet: Path) -> dict[str, tuple[str, bytes]]:
    """The first PrivateTest image of each emotion (file order, which is seeded-random) that the cascade finds."""
    import pyarrow.parquet as pq

    table = pq.read_table(fer_parquet, columns=["image", "emotion", "usage", "source_name"])
    picked: dict[str, tuple[str, bytes]] = {}
    for row in table.to_pylist():
        if row["usage"] != "PrivateTest" or row["emotion"] in picked:
            continue
        if detectable(Image.open(io.BytesIO(row["image"]))):
            picked[row["emotion"]] = (row["source_name"], row["image"])
        if len(picked) == len(EMOTIONS):
            break
    return picked


# name -> (size, boxes as (x, y, side), face emotions, format, orientation, save kwargs)
# fmt: off
PHOTOS = {
    "photos/group_of_three.jpg": ((1200, 700), [(120, 180, 170), (520, 150, 200), (900, 220, 150)],
                                  ["happy", "neutral", "surprise"], "JPEG", None, {"quality": 85}),
    "photos/pair_rotated_exif6.jpg": ((700, 1000), [(80, 200, 200), (400, 560, 190)],
                                      ["sad", "happy"], "JPEG", 6, {"quality": 85}),
    "photos/upside_down_exif3.jpg": ((900, 600), [(150, 150, 180), (560, 200, 170)],
                                     ["angry", "fear"], "JPEG", 3, {"quality": 85}),
    "photos/portrait_exif8.jpg": ((600, 800), [(180, 220, 240)], ["disgust"], "JPEG", 8, {"quality": 85}),
    "photos/large_4faces.jpg": ((2600, 1700), [(200, 300, 380), (800, 900, 420), (1450, 250, 400), (2050, 950, 360)],
                                ["happy", "surprise", "neutral", "sad"], "JPEG", None, {"quality": 80}),
    "photos/phone_photo.heic": ((1000, 750), [(150, 200, 220), (600, 260, 210)],
                                ["fear", "happy"], "HEIF", None, {"quality": 60}),
}
# fmt: on


def compose_samples(crops: dict[str, Image.Image], out: Path) -> dict[str, dict]:
    expected: dict[str, dict] = {}
    for k, (name, (size, spots, emotions, fmt, orientation, kw)) in enumerate(PHOTOS.items()):
        boxes = [(x, y, s, s) for x, y, s in spots]
        photo = compose_photo([crops[e] for e in emotions], size, boxes, seed=k)
        data = encode(photo, fmt, orientation, **kw)
        _check(name, data, boxes)
        (out / name).write_bytes(data)
        expected[name] = {"faces": len(boxes), "boxes": [list(b) for b in boxes], "size": list(size)}
    # A PNG with alpha: a card on a transparent canvas (decode_image composites alpha on white).
    size, box = (520, 640), (140, 170, 240, 240)
    card = compose_photo([crops["neutral"]], size, [box], seed=42, noise=0).convert("RGBA")
    alpha = Image.new("L", size, 0)
    alpha.paste(255, (60, 60, size[0] - 60, size[1] - 60))
    card.putalpha(alpha)
    data = encode(card, "PNG", optimize=True)
    _check("photos/card_alpha.png", data, [box])
    (out / "photos/card_alpha.png").write_bytes(data)
    expected["photos/card_alpha.png"] = {"faces": 1, "boxes": [list(box)], "size": list(size)}
    return expected


def _check(name: str, data: bytes, boxes: list[Box]) -> None:
    gray = decode_image(data)
    found = detect_faces(gray, DetectConfig())
    if not matches(found, boxes):
        raise SystemExit(f"{name}: detector found {found}, expected one face in each of {boxes}; adjust PHOTOS")


def main(argv: list[str] | None = None) -> int:
    from fer_ray.config import fer2013_parquet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fer", type=Path, default=None, help="FER2013 Parquet (default: the data root's)")
    p.add_argument("--skimage-data", type=Path, default=None, help="scikit-image's skimage/data directory")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    out: Path = a.out
    for d in ("crops", "photos", "other"):
        (out / d).mkdir(parents=True, exist_ok=True)

    expected: dict[str, dict] = {}
    fer = a.fer or fer2013_parquet()
    if fer is not None:
        for old in (out / "crops").glob("*.jpg"):
            old.unlink()
        for emotion, (source, data) in sorted(pick_fer_crops(fer).items()):
            (out / "crops" / f"{emotion}_{Path(source).name}").write_bytes(data)
    crop_files = sorted((out / "crops").glob("*.jpg"))
    if len(crop_files) != len(EMOTIONS):
        raise SystemExit(f"need one FER2013 crop per emotion in {out / 'crops'}; pass --fer PATH/fer2013.parquet")
    crops = {f.name.split("_")[0]: Image.open(f).convert("L") for f in crop_files}
    for f in crop_files:
        expected[f"crops/{f.name}"] = {"faces": 1, "whole_image": True}
    expected.update(compose_samples(crops, out))

    if a.skimage_data is not None:
        for src, dst in (("astronaut.png", "photos/astronaut.jpg"), ("coffee.png", "other/coffee.jpg")):
            Image.open(a.skimage_data / src).convert("RGB").save(out / dst, quality=88)
    if (out / "photos/astronaut.jpg").exists():
        expected["photos/astronaut.jpg"] = {"faces": 1}
    if (out / "other/coffee.jpg").exists():
        expected["other/coffee.jpg"] = {"faces": 0, "status": "no_face"}
    # A JPEG cut off after its first 600 bytes: decoding reports it as truncated.
    (out / "other/truncated.jpg").write_bytes((out / "photos/group_of_three.jpg").read_bytes()[:600])
    expected["other/truncated.jpg"] = {"faces": 0, "status": "error"}
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {len(expected)} sample images to {out} ({total / 1e6:.2f} MB with README and expected.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
