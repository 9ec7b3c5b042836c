"""Decode, detect and crop for batch scoring and Serve (one path, so the two cannot drift).

YuNet (``cv2.FaceDetectorYN``, shipped in ``fer_ray/assets/yunet`` with its Apache-2.0 licence) is the default:
faster than OpenCV's Haar cascade on real photos, with fewer false boxes. Crops go through
:func:`fer_ray.preprocess.face_input`, the one preprocessing path.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fer_ray.preprocess import PreprocessConfig, decode_image_scaled, face_input
from fer_ray.score.config import DetectConfig

CASCADE_FILE = "haarcascade_frontalface_default.xml"
YUNET_FILE = Path(__file__).resolve().parent.parent / "assets" / "yunet" / "yunet_s_640_640.onnx"

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the upright original image
# Boxes a little under min_face are kept: detectors box a face tighter or looser than a person would.
MIN_FACE_SLACK = 0.8
# YuNet's square box side, as a fraction of its box's longer side: its box already spans the whole face, so with
# the artifact's margin on top the model would see looser faces than it learnt from (chosen by accuracy).
YUNET_BOX_SCALE = 0.8
# A crop is cut from a reduced decode only when the face spans this many times the model's input size there,
# so the final resize still averages over several source pixels; smaller faces trigger a larger decode.
CROP_OVERSAMPLE = 2.0


@functools.lru_cache(maxsize=1)
def _cascade():
    # Loaded once per worker process: parsing the XML for every image would cost more than detecting.
    import cv2

    # Ray Data runs one CPU task per core; OpenCV's own thread pool would oversubscribe them.
    cv2.setNumThreads(1)
    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load the OpenCV face cascade {path}; reinstall opencv-python-headless")
    return cascade


# One YuNet per (thread, settings): FaceDetectorYN keeps per-input-size state, so threads that detect
# concurrently (Serve's preparation pool) must not share one.
_yunet_local = threading.local()


def _yunet(cfg: DetectConfig):
    import cv2

    key = (cfg.score_threshold, cfg.nms_threshold, cfg.top_k)
    cache = _yunet_local.__dict__.setdefault("detectors", {})
    if key not in cache:
        cv2.setNumThreads(1)  # as for the cascade: parallelism comes from Ray tasks / Serve threads
        if not YUNET_FILE.is_file():
            raise RuntimeError(f"the YuNet model {YUNET_FILE} is missing; reinstall fer_ray")
        cache[key] = cv2.FaceDetectorYN.create(
            str(YUNET_FILE), "", (320, 320), cfg.score_threshold, cfg.nms_threshold, cfg.top_k
        )
    return cache[key]


def is_face_crop(gray: np.ndarray, cfg: DetectConfig) -> bool:
    """Tiny images (FER2013's 48x48) are face crops already: too small to detect in, nothing to crop."""
    return max(gray.shape[:2]) <= cfg.crop_max_side


def detection_scale(width: int, height: int, cfg: DetectConfig) -> float:
    """The factor (<= 1) by which a ``width`` x ``height`` image is shrunk before detection."""
    long_side = max(width, height)
    if cfg.detector == "haar":
        return min(1.0, cfg.max_side / long_side)
    # YuNet: the smallest face promised stays detect_face_px for the detector, within max_side.
    return min(1.0, cfg.detect_face_px / cfg.min_face, cfg.max_side / long_side)


def detect_faces(
    gray: np.ndarray, cfg: DetectConfig | None = None, full_size: tuple[int, int] | None = None
) -> list[Box]:
    """Face boxes ``(x, y, w, h)`` in original-image coordinates, left to right, at most ``cfg.max_faces``
    (the largest). ``gray``: a ``uint8`` (H, W) decode, possibly reduced from ``full_size`` (W, H)."""
    return [f.box for f in find_faces(gray, cfg or DetectConfig(), full_size)]


class Face(NamedTuple):
    box: Box
    roll: float | None  # degrees; None for Haar, or with ``align`` off
    landmarks: np.ndarray | None  # (5, 2) eyes, nose tip, mouth corners in original pixels (YuNet); else None


def find_faces(gray: np.ndarray, cfg: DetectConfig, full_size: tuple[int, int] | None) -> list[Face]:
    """:func:`detect_faces` with each face's roll and landmarks."""
    import cv2

    h, w = gray.shape[:2]
    full_w, full_h = full_size or (w, h)
    scale = detection_scale(full_w, full_h, cfg)  # relative to the full image
    size = (max(1, round(full_w * scale)), max(1, round(full_h * scale)))
    small = gray
    if size != (w, h):
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)  # area averaging: no aliasing
    if cfg.detector == "haar":
        found = _haar(small, cfg, scale)
        rolls, marks = [None] * len(found), [None] * len(found)
    else:
        found, rolls, marks = _yunet_boxes(small, cfg)
    if not cfg.align:
        rolls = [None] * len(found)
    sx, sy = full_w / size[0], full_h / size[1]
    faces: list[Face] = []
    for (x, y, bw, bh), roll, mark in zip(found, rolls, marks, strict=True):
        x0, y0 = int(round(x * sx)), int(round(y * sy))
        x1, y1 = int(round((x + bw) * sx)), int(round((y + bh) * sy))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(full_w, x1), min(full_h, y1)
        if x1 > x0 and y1 > y0 and max(x1 - x0, y1 - y0) >= cfg.min_face * MIN_FACE_SLACK:
            faces.append(Face((x0, y0, x1 - x0, y1 - y0), roll, None if mark is None else mark * (sx, sy)))
    if len(faces) > cfg.max_faces:
        faces = sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)[: cfg.max_faces]
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))


def _haar(small: np.ndarray, cfg: DetectConfig, scale: float) -> np.ndarray:
    # The cascade's window is 24 px; asking for less only costs time.
    min_side = max(24, int(round(cfg.min_face * scale)))
    if min(small.shape[:2]) < min_side:
        return np.zeros((0, 4))
    found = _cascade().detectMultiScale(
        np.ascontiguousarray(small),
        scaleFactor=cfg.scale_factor,
        minNeighbors=cfg.min_neighbors,
        minSize=(min_side, min_side),
    )
    return np.asarray(found, dtype=np.float64).reshape(-1, 4)


def _yunet_boxes(small: np.ndarray, cfg: DetectConfig) -> tuple[np.ndarray, list[float], np.ndarray]:
    import cv2

    h, w = small.shape[:2]
    det = _yunet(cfg)
    det.setInputSize((w, h))
    _, found = det.detect(cv2.cvtColor(small, cv2.COLOR_GRAY2BGR))  # rows: x, y, w, h, 5 landmarks, score
    if found is None:
        return np.zeros((0, 4)), [], np.zeros((0, 5, 2))
    # YuNet boxes are taller than wide; FER2013 faces are square: a square on the box's centre keeps
    # the face's proportions when face_input resizes the crop to S x S.
    x, y, w, h = (found[:, i].astype(np.float64) for i in range(4))
    side = np.maximum(w, h) * YUNET_BOX_SCALE
    # Landmarks 0 and 1 are the subject's right and left eye (image left, image right): their tilt is the roll.
    rolls = np.degrees(np.arctan2(found[:, 7] - found[:, 5], found[:, 6] - found[:, 4]))
    boxes = np.stack([x + (w - side) / 2, y + (h - side) / 2, side, side], axis=1)
    return boxes, [float(r) for r in rolls], found[:, 4:14].astype(np.float64).reshape(-1, 5, 2)


def face_crop(gray: np.ndarray, box: Box, roll: float | None, preprocess: PreprocessConfig) -> np.ndarray:
    """The model input of the face at ``box``, turned upright first when its ``roll`` (degrees) is known:
    FER2013 faces are upright (``benchmarks/align_faces.py``). Only a patch around the face is rotated."""
    if roll is None:
        return face_input(gray, box, preprocess)
    import cv2

    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    r = int(np.ceil(max(w, h) * (0.5 + preprocess.face_margin) * 1.5)) + 2  # covers the crop at any roll
    m = cv2.getRotationMatrix2D((cx, cy), roll, 1.0)
    m[:, 2] -= (cx - r, cy - r)  # the patch's origin
    patch = cv2.warpAffine(gray, m, (2 * r, 2 * r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return face_input(patch, (int(round(r - w / 2)), int(round(r - h / 2)), w, h), preprocess)


def faces_from_bytes(
    data: bytes | None,
    detect: DetectConfig,
    preprocess: PreprocessConfig,
    whole_image: bool = False,
    lock: threading.Lock | None = None,
) -> tuple[list[Box | None], list[np.ndarray], tuple[int, int]]:
    """Encoded image -> (boxes, ``uint8`` crops, upright full size (W, H)); ``None`` box: the whole image.

    A JPEG is decoded only as large as detection needs (Pillow ``draft``), and again larger only when a face
    is too small in it for a crop at full detail (``CROP_OVERSAMPLE``). ``lock`` guards the Haar cascade where
    threads share it (YuNet detectors are per thread). Raises :class:`~fer_ray.preprocess.ImageDecodeError`.
    """
    scale = 1.0 if whole_image else _jpeg_detection_scale(data, detect)
    gray, size = decode_image_scaled(data, preprocess.max_pixels, scale)
    if whole_image or (is_face_crop(gray, detect) and gray.shape[::-1] == size):
        return [None], [face_input(gray, None, preprocess)], size
    guard = lock if lock is not None and detect.detector == "haar" else contextlib.nullcontext()
    with guard:
        faces = find_faces(gray, detect, size)
    if not faces:
        return [], [], size
    boxes = [f.box for f in faces]
    have = gray.shape[1] / size[0]  # the decode's scale
    need = min(1.0, crop_scale(min(max(b[2], b[3]) for b in boxes), preprocess))
    if need > have * 1.001:
        gray, _ = decode_image_scaled(data, preprocess.max_pixels, need)
    sx, sy = gray.shape[1] / size[0], gray.shape[0] / size[1]
    crops = [face_crop(gray, _scale_box(f.box, sx, sy), f.roll, preprocess) for f in faces]
    return boxes, crops, size


def faces_in_frame(
    gray: np.ndarray, detect: DetectConfig, preprocess: PreprocessConfig, whole_image: bool = False
) -> tuple[list[Box | None], list[np.ndarray], list[np.ndarray | None]]:
    """A decoded video frame (``uint8`` (H, W), full size) -> (boxes, crops, landmarks): :func:`faces_from_bytes`'s
    answer plus YuNet's landmarks, which the video tracker uses to tell apart faces whose boxes overlap."""
    if whole_image:
        return [None], [face_input(gray, None, preprocess)], [None]
    faces = find_faces(gray, detect, None)
    crops = [face_crop(gray, f.box, f.roll, preprocess) for f in faces]
    return [f.box for f in faces], crops, [f.landmarks for f in faces]


def crop_scale(face_side: int, preprocess: PreprocessConfig) -> float:
    """Decode scale at which a face of ``face_side`` original pixels (plus margins) spans CROP_OVERSAMPLE x S pixels."""
    return CROP_OVERSAMPLE * preprocess.image_size / (face_side * (1 + 2 * preprocess.face_margin))


def _scale_box(box: Box, sx: float, sy: float) -> Box:
    x, y, w, h = box
    return int(round(x * sx)), int(round(y * sy)), max(1, int(round(w * sx))), max(1, int(round(h * sy)))


def _jpeg_detection_scale(data: bytes | None, detect: DetectConfig) -> float:
    """The scale a JPEG may be decoded at for detection (Pillow ``draft``); 1 for other formats."""
    from PIL import Image

    # The header only: the full size decides how much the JPEG decoder may reduce. decode_image_scaled
    # reports undecodable input with a proper reason.
    with contextlib.suppress(Exception), Image.open(io.BytesIO(data)) as im:
        if im.format == "JPEG" and max(im.size) > detect.crop_max_side:
            return detection_scale(*im.size, detect)
    return 1.0


__all__ = [
    "Box",
    "Face",
    "detect_faces",
    "face_crop",
    "faces_from_bytes",
    "faces_in_frame",
    "find_faces",
    "is_face_crop",
]
