"""Short test clips written with OpenCV's ``mp4v`` writer (its default keyframe every 12 frames, so
segments start between keyframes) from the bundled public-domain face crops: known frame counts,
motion and cuts, for the video tests of decoding, tracking and scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CROPS = Path(__file__).resolve().parents[1] / "examples" / "images" / "crops"
W, H, RATE = 320, 240, 30
FACE = 100  # px: the 48x48 crops upscaled, well above DetectConfig.min_face


def face(name: str) -> np.ndarray:
    import cv2

    return cv2.resize(cv2.imread(str(CROPS / name)), (FACE, FACE), interpolation=cv2.INTER_CUBIC)


def write_clip(path: Path, frames) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), RATE, (W, H))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def scene(faces: list[tuple[np.ndarray, int, int]], background: int = 90) -> np.ndarray:
    frame = np.full((H, W, 3), background, np.uint8)
    for img, x, y in faces:
        frame[y : y + FACE, x : x + FACE] = img
    return frame


def make_clips(d: Path) -> dict[str, Path]:
    astronaut, hopper = face("astronaut.jpg"), face("grace_hopper.jpg")
    return {
        # 5 s, one face moving 1 px per frame (6 px between samples at 5 fps)
        "moving": write_clip(d / "moving.mp4", (scene([(astronaut, 20 + i, 60 + i // 5)]) for i in range(5 * RATE))),
        # 4 s, a cut at 2 s to another scene with another face elsewhere
        "cut": write_clip(
            d / "cut.mp4",
            (
                scene([(astronaut, 30, 60)]) if i < 2 * RATE else scene([(hopper, 190, 80)], background=160)
                for i in range(4 * RATE)
            ),
        ),
        # 3 s, two faces side by side, both drifting a little
        "two": write_clip(
            d / "two.mp4", (scene([(astronaut, 20 + i // 6, 60), (hopper, 190 - i // 6, 70)]) for i in range(3 * RATE))
        ),
    }
