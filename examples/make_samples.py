"""Rebuild the bundled sample images in examples/images/ from public-domain photos (see its README).

    python examples/make_samples.py                       # every file and expected.json, the same bytes each time
    python examples/make_samples.py --skimage-data DIR    # also re-encode other/coffee.jpg from scikit-image's
                                                          # skimage/data/coffee.png (CC0)

No FER2013 pixels: every face comes from the two public-domain portraits of the engine check,
``fer_ray/assets/check/astronaut.jpg`` (NASA) and ``grace_hopper.jpg`` (U.S. Navy), which are also
copied into ``photos/`` unchanged. From them:

* ``crops/``: 48x48 grayscale faces cut through the scoring path (YuNet box, turned upright by the eyes,
  :func:`fer_ray.score.faces.face_crop`), as captured and under a few camera conditions; scored whole.
* ``photos/``: copies of the two faces (head and shoulders, at several sizes, some mirrored) pasted on a
  smooth synthetic backdrop, several per photo, covering EXIF rotation (6, 3, 8), an RGBA PNG, HEIC and a
  photo large enough to be downscaled for detection. Each is checked with the scoring job's own decoder
  and both detectors before it is written; ``expected.json`` records where each face was pasted.
* ``other/``: a photo without a face (``coffee.jpg``, kept as it is) and a JPEG cut off after 600 bytes.

The helpers (:func:`compose_photo`, :func:`encode`, :func:`matches`, ...) are also used by the tests and
benchmarks to compose photos of their own.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fer_ray.preprocess import PreprocessConfig, decode_image  # noqa: E402
from fer_ray.score.config import DETECTORS, DetectConfig  # noqa: E402
from fer_ray.score.faces import detect_faces, face_crop, find_faces  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"
ORIGINALS = ROOT / "fer_ray" / "assets" / "check"  # the engine check's photos (fer_ray.inference.host_check)
SOURCES = ("astronaut", "grace_hopper")
ORIENTATION = 0x0112
# EXIF orientation -> transpose that turns the upright picture into the stored pixels
# (the inverse of what viewers and fer_ray.preprocess.decode_image apply).
_STORE_AS = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
HEAD = 2.0  # the pasted region's side, in face-box sides: head, hair and a little of the shoulders

Box = tuple[int, int, int, int]


# -- composing photos (also used by tests and benchmarks) ---------------------------------------------
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
    """An upright RGB "photo" of ``size`` with face crops ``faces[i]`` pasted at ``boxes[i]`` (x, y, w, h)."""
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


def detectable(face: Image.Image, sides=(130, 180, 260, 400), detectors=DETECTORS) -> bool:
    """True when every detector finds this crop, alone on a backdrop, at every size we paste it at."""
    for k, side in enumerate(sides):
        pasted = [(side // 2, side // 3, side, side)]
        photo = decode_image(
            encode(compose_photo([face], (2 * side, 2 * side), pasted, seed=100 + k), "JPEG", quality=90)
        )
        if not all(matches(detect_faces(photo, DetectConfig(detector=d)), pasted) for d in detectors):
            return False
    return True


# -- the public-domain sources --------------------------------------------------------------------------
class Source:
    """One original photo and its face as the scoring path finds it (YuNet's square box and roll)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = path.read_bytes()
        self.rgb = Image.open(io.BytesIO(self.data)).convert("RGB")
        self.gray = decode_image(self.data)
        found = find_faces(self.gray, DetectConfig(), None)
        if len(found) != 1:
            raise SystemExit(f"{path}: expected one face, YuNet found {len(found)}")
        self.box, self.roll = found[0].box, found[0].roll or 0.0

    def head(self, side: int, mirror: bool = False) -> tuple[Image.Image, Image.Image, tuple[float, float]]:
        """The head region scaled so that the face box is ``side`` px: (RGB, feathered oval mask, face box
        offset inside the region)."""
        x, y, w, h = self.box
        s = max(w, h)
        cx, cy, r = x + w / 2, y + h / 2, HEAD * s / 2
        x0, y0 = max(0, int(cx - r)), max(0, int(cy - r))
        x1, y1 = min(self.rgb.width, int(cx + r)), min(self.rgb.height, int(cy + r))
        scale = side / s
        size = (round((x1 - x0) * scale), round((y1 - y0) * scale))
        region = self.rgb.crop((x0, y0, x1, y1)).resize(size, Image.LANCZOS)
        mask = Image.new("L", size, 0)
        feather = max(2, size[0] // 16)
        ImageDraw.Draw(mask).ellipse((feather, feather, size[0] - feather, size[1] - feather), fill=255)
        mask = mask.filter(ImageFilter.GaussianBlur(feather / 2))
        off = ((cx - s / 2 - x0) * scale, (cy - s / 2 - y0) * scale)
        if mirror:
            region, mask = (
                region.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            )
            off = (size[0] - off[0] - side, off[1])
        return region, mask, off

    def crop(self, pp: PreprocessConfig, face_px: int | None = None) -> np.ndarray:
        """The 48x48 model input as scoring cuts it; from a copy where the face is ``face_px`` pixels if given."""
        gray, (x, y, w, h) = self.gray, self.box
        if face_px is not None:
            k = face_px / max(w, h)
            gray = np.asarray(
                Image.fromarray(gray).resize((round(gray.shape[1] * k), round(gray.shape[0] * k)), Image.LANCZOS)
            )
            x, y, w, h = x * k, y * k, w * k, h * k
        cx, cy, s = x + w / 2, y + h / 2, max(w, h)
        box = (int(round(cx - s / 2)), int(round(cy - s / 2)), int(round(s)), int(round(s)))
        return face_crop(gray, box, self.roll, pp)


def paste_heads(
    canvas: Image.Image, sources: dict[str, Source], faces: list[tuple[str, int, int, int, bool]]
) -> list[Box]:
    """Paste (source, x, y, side, mirror) heads so that each face box lands at (x, y, side, side)."""
    boxes = []
    for name, x, y, side, mirror in faces:
        region, mask, (ox, oy) = sources[name].head(side, mirror)
        canvas.paste(region, (int(round(x - ox)), int(round(y - oy))), mask)
        boxes.append((x, y, side, side))
    return boxes


# -- the set ----------------------------------------------------------------------------------------------
A, G = SOURCES
# name -> (size, faces as (source, x, y, face side, mirrored), format, EXIF orientation, save kwargs)
# fmt: off
PHOTOS = {
    "photos/group_of_three.jpg": ((1200, 700), [(A, 130, 200, 170, False), (G, 520, 150, 200, False),
                                                (A, 900, 230, 150, True)], "JPEG", None, {"quality": 85}),
    "photos/pair_rotated_exif6.jpg": ((700, 1000), [(G, 140, 200, 200, False), (A, 400, 600, 190, False)],
                                      "JPEG", 6, {"quality": 85}),
    "photos/upside_down_exif3.jpg": ((900, 600), [(A, 150, 180, 180, True), (G, 560, 200, 170, True)],
                                     "JPEG", 3, {"quality": 85}),
    "photos/portrait_exif8.jpg": ((600, 800), [(G, 180, 220, 240, False)], "JPEG", 8, {"quality": 85}),
    "photos/large_4faces.jpg": ((2600, 1700), [(A, 250, 300, 380, False), (G, 950, 950, 400, True),
                                               (G, 1500, 250, 400, False), (A, 2100, 950, 360, True)],
                                "JPEG", None, {"quality": 80}),
    "photos/phone_photo.heic": ((1000, 750), [(G, 160, 220, 220, False), (A, 620, 260, 210, False)],
                                "HEIF", None, {"quality": 60}),
}
# name -> (source, how it differs from the face as captured)
CROPS = {
    "crops/astronaut.jpg": (A, {}),
    "crops/astronaut_low_res.jpg": (A, {"face_px": 40}),  # the smallest face scoring looks for
    "crops/astronaut_blurred.jpg": (A, {"blur": 1.0}),  # out of focus (Gaussian sigma, 48x48 pixels)
    "crops/grace_hopper.jpg": (G, {}),
    "crops/grace_hopper_dark.jpg": (G, {"gamma": 1.8}),  # under-exposed
    "crops/grace_hopper_low_contrast.jpg": (G, {"contrast": 0.45}),
    "crops/grace_hopper_jpeg_q15.jpg": (G, {"quality": 15}),  # heavily compressed
}
# fmt: on
ORIGINAL_COPIES = {"photos/astronaut.jpg": f"{A}.jpg", "photos/grace_hopper.jpg": f"{G}.jpg"}


def make_crop(
    src: Source,
    pp: PreprocessConfig,
    gamma: float = 1.0,
    contrast: float = 1.0,
    blur: float = 0.0,
    quality: int = 92,
    face_px: int | None = None,
) -> bytes:
    """One crop of ``src`` as a camera might deliver it: exposure (gamma), contrast, focus, JPEG quality."""
    face = src.crop(pp, face_px).astype(np.float64)
    if blur:
        import cv2

        face = cv2.GaussianBlur(face, (0, 0), blur)
    face = 255.0 * (face / 255.0) ** gamma
    face = (face - face.mean()) * contrast + face.mean()
    img = Image.fromarray(np.clip(face + 0.5, 0, 255).astype(np.uint8), "L")
    return encode(img, "JPEG", quality=quality)


def _check(name: str, data: bytes, boxes: list[Box]) -> None:
    gray = decode_image(data)
    for detector in DETECTORS:
        found = detect_faces(gray, DetectConfig(detector=detector))
        if not matches(found, boxes):
            raise SystemExit(f"{name}: {detector} found {found}, expected one face in each of {boxes}; adjust PHOTOS")


def build(out: Path) -> dict[str, dict]:
    """Write every derived sample under ``out``; returns expected.json's content."""
    sources = {name: Source(ORIGINALS / f"{name}.jpg") for name in SOURCES}
    pp = PreprocessConfig()
    expected: dict[str, dict] = {}
    files: dict[str, bytes] = {}

    for name, original in ORIGINAL_COPIES.items():
        files[name] = (ORIGINALS / original).read_bytes()
        expected[name] = {"faces": 1}
    for name, (source, how) in CROPS.items():
        data = make_crop(sources[source], pp, **how)
        if not detectable(Image.open(io.BytesIO(data))):  # tests paste these crops into photos of their own
            raise SystemExit(f"{name}: a detector misses this crop when it is pasted into a photo; adjust CROPS")
        files[name] = data
        expected[name] = {"faces": 1, "whole_image": True}
    for k, (name, (size, faces, fmt, orientation, kw)) in enumerate(PHOTOS.items()):
        photo = background(*size, seed=k)
        boxes = paste_heads(photo, sources, faces)
        files[name] = encode(photo, fmt, orientation, **kw)
        _check(name, files[name], boxes)
        expected[name] = {"faces": len(boxes), "boxes": [list(b) for b in boxes], "size": list(size)}
    # A PNG with alpha: a card on a transparent canvas (decode_image composites alpha on white).
    size, border = (400, 500), 40
    card = background(*size, seed=42, noise=0)
    boxes = paste_heads(card, sources, [(A, 120, 150, 160, False)])
    card = card.convert("RGBA")
    alpha = Image.new("L", size, 0)
    alpha.paste(255, (border, border, size[0] - border, size[1] - border))
    card.putalpha(alpha)
    files["photos/card_alpha.png"] = encode(card, "PNG", optimize=True)
    _check("photos/card_alpha.png", files["photos/card_alpha.png"], boxes)
    expected["photos/card_alpha.png"] = {"faces": 1, "boxes": [list(b) for b in boxes], "size": list(size)}
    # A JPEG cut off after its first 600 bytes: decoding reports it as truncated.
    files["other/truncated.jpg"] = files["photos/group_of_three.jpg"][:600]
    expected["other/truncated.jpg"] = {"faces": 0, "status": "error"}
    expected["other/coffee.jpg"] = {"faces": 0, "status": "no_face"}

    for sub in ("crops", "photos"):  # the set is exactly what is built here: drop files of older sets
        for old in (out / sub).glob("*"):
            if old.is_file() and f"{sub}/{old.name}" not in files:
                old.unlink()
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    return expected


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--skimage-data", type=Path, default=None, help="scikit-image's skimage/data directory")
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    out: Path = a.out
    (out / "other").mkdir(parents=True, exist_ok=True)
    if a.skimage_data is not None:
        Image.open(a.skimage_data / "coffee.png").convert("RGB").save(out / "other/coffee.jpg", quality=88)
    elif not (out / "other/coffee.jpg").is_file():
        shutil.copyfile(OUT / "other/coffee.jpg", out / "other/coffee.jpg")
    expected = build(out)
    if detect_faces(decode_image((out / "other/coffee.jpg").read_bytes()), DetectConfig()):
        raise SystemExit("other/coffee.jpg: a face was found in the no-face photo")
    (out / "expected.json").write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {len(expected)} sample images to {out} ({total / 1e6:.2f} MB with README and expected.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
