"""Face detection for batch scoring (fer_ray.score.faces): counts and boxes in original-image coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from fer_ray.preprocess import decode_image
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import detect_faces, is_face_crop
from tests.helpers_score import EXAMPLES, blank_photo, expected, photo_bytes, samples


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0, min(ax1, bx1) - max(a[0], b[0])), max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


COMPOSED = sorted(name for name, e in expected().items() if "boxes" in e)


@pytest.mark.parametrize("name", COMPOSED)
def test_bundled_photos_one_box_per_face_in_upright_coordinates(name):
    # Covers several faces per photo, EXIF orientations 3/6/8, HEIC, RGBA PNG and a 2600 px photo.
    e = expected()[name]
    gray = decode_image((EXAMPLES / name).read_bytes())
    assert gray.shape == (e["size"][1], e["size"][0])  # (H, W) after EXIF rotation
    found = detect_faces(gray, DetectConfig())
    assert samples().matches(found, [tuple(b) for b in e["boxes"]]), (found, e["boxes"])


def test_real_photo_and_photo_without_face():
    assert len(detect_faces(decode_image((EXAMPLES / "photos/astronaut.jpg").read_bytes()))) == 1
    assert detect_faces(decode_image((EXAMPLES / "other/coffee.jpg").read_bytes())) == []
    assert detect_faces(decode_image(blank_photo())) == []


def test_downscaled_detection_maps_boxes_back_to_original_pixels():
    boxes = [(200, 300, 330, 330), (950, 700, 300, 300), (1600, 250, 350, 350)]
    gray = decode_image(photo_bytes((2200, 1400), boxes, seed=3))
    small = detect_faces(gray, DetectConfig(max_side=800, min_face=250))  # detects on an 800x509 copy
    full = detect_faces(gray, DetectConfig(max_side=2200, min_face=250))  # detects at full resolution
    assert samples().matches(small, boxes) and samples().matches(full, boxes), (small, full)
    for s, f in zip(small, full, strict=True):  # the same faces, at the same place, within a few pixels
        assert _iou(s, f) > 0.7, (s, f)
        assert min(s) >= 0 and s[0] + s[2] <= 2200 and s[1] + s[3] <= 1400


def test_min_face_and_max_faces():
    boxes = [(120, 180, 150, 150), (420, 150, 200, 200), (800, 120, 250, 250)]
    gray = decode_image(photo_bytes((1200, 500), boxes, seed=4))
    assert len(detect_faces(gray, DetectConfig())) == 3
    only_large = detect_faces(gray, DetectConfig(min_face=230))
    assert len(only_large) == 1 and only_large[0][0] > 750
    largest_two = detect_faces(gray, DetectConfig(max_faces=2))
    assert len(largest_two) == 2 and min(b[0] for b in largest_two) > 350  # the 150 px face is dropped


def test_small_images_are_face_crops():
    cfg = DetectConfig()
    assert is_face_crop(np.zeros((48, 48), np.uint8), cfg)
    assert is_face_crop(np.zeros((64, 40), np.uint8), cfg)
    assert not is_face_crop(np.zeros((65, 48), np.uint8), cfg)
    assert not is_face_crop(np.zeros((48, 48), np.uint8), DetectConfig(crop_max_side=0))


@pytest.mark.parametrize(
    "kw", [{"scale_factor": 1.0}, {"min_neighbors": -1}, {"min_face": 0}, {"max_side": 10}, {"max_faces": 0}]
)
def test_detect_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        DetectConfig(**kw)
