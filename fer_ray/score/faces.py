"""Face detection for batch scoring: OpenCV's frontal-face Haar cascade, shipped inside the opencv wheel.

Detection runs on a copy of the (upright, grayscale) photo downscaled to at most
``DetectConfig.max_side`` pixels, because the cascade's cost grows with the pixel count
while faces in a 4000-pixel photo are rarely small enough to need full resolution;
boxes are mapped back to original-image coordinates. Crops then go through
:func:`fer_ray.preprocess.face_input`, the one preprocessing path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import numpy as np

from fer_ray.preprocess import PreprocessConfig, face_input
from fer_ray.score.config import DetectConfig

CASCADE_FILE = "haarcascade_frontalface_default.xml"

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the upright original image


@functools.lru_cache(maxsize=1)
def _cascade():
    # Loaded once per worker process: parsing the XML takes ~50 ms.
    import cv2

    # Ray Data runs one CPU task per core; OpenCV's own thread pool would oversubscribe them.
    cv2.setNumThreads(1)
    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise RuntimeError(f"could not load the OpenCV face cascade {path}; reinstall opencv-python-headless")
    return cascade


def is_face_crop(gray: np.ndarray, cfg: DetectConfig) -> bool:
    """Tiny images (FER2013's 48x48) are face crops already: too small to detect in, nothing to crop."""
    h, w = gray.shape[:2]
    return max(h, w) <= cfg.crop_max_side


def detect_faces(gray: np.ndarray, cfg: DetectConfig | None = None) -> list[Box]:
    """Face boxes ``(x, y, w, h)`` in ``gray``'s own pixel coordinates, left to right.

    ``gray`` is the ``uint8`` (H, W) array from :func:`fer_ray.preprocess.decode_image`.
    At most ``cfg.max_faces`` boxes are returned (the largest ones).
    """
    import cv2

    cfg = cfg or DetectConfig()
    h, w = gray.shape[:2]
    scale = min(1.0, cfg.max_side / max(h, w))
    small = gray
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)  # area averaging: no aliasing
    # The cascade's window is 24 px; asking for less only costs time.
    min_side = max(24, int(round(cfg.min_face * scale)))
    if min(small.shape[:2]) < min_side:
        return []
    found = _cascade().detectMultiScale(
        np.ascontiguousarray(small),
        scaleFactor=cfg.scale_factor,
        minNeighbors=cfg.min_neighbors,
        minSize=(min_side, min_side),
    )
    boxes: list[Box] = []
    for x, y, bw, bh in np.asarray(found, dtype=np.float64).reshape(-1, 4):
        x0, y0 = int(round(x / scale)), int(round(y / scale))
        x1, y1 = int(round((x + bw) / scale)), int(round((y + bh) / scale))
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if x1 > x0 and y1 > y0:
            boxes.append((x0, y0, x1 - x0, y1 - y0))
    if len(boxes) > cfg.max_faces:
        boxes = sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)[: cfg.max_faces]
    return sorted(boxes, key=lambda b: (b[0], b[1]))


def find_faces(
    gray: np.ndarray,
    detect: DetectConfig,
    preprocess: PreprocessConfig,
    whole_image: bool = False,
    lock: threading.Lock | None = None,
) -> tuple[list[Box | None], list[np.ndarray]]:
    """Boxes (``None``: the whole image is the face) and their ``uint8`` model-input crops.

    The one place that chooses between detection and whole-image scoring, shared by batch
    scoring and Serve so the two cannot drift. ``lock`` guards the shared cascade where
    threads share it (OpenCV does not promise ``detectMultiScale`` is thread-safe).
    """
    boxes: list[Box | None]
    if whole_image or is_face_crop(gray, detect):
        boxes = [None]
    else:
        with lock or contextlib.nullcontext():
            boxes = list(detect_faces(gray, detect))
    return boxes, [face_input(gray, box, preprocess) for box in boxes]
