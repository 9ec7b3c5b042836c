"""The video settings: how often to sample, how long a segment is, how faces are tracked.

One frozen dataclass, so batch scoring (``jobs/score.py``) and Serve's clip endpoint sample and
track a video the same way; ``fer_ray.cli`` turns the fields into flags once video is wired in.
"""

from __future__ import annotations

import math
import posixpath
from dataclasses import dataclass

from fer_ray.config import setting

# Containers routed to the video path. FFmpeg (inside the PyAV wheel) opens all of them; the
# list only decides which files are treated as video rather than as images.
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


def is_video(path: str) -> bool:
    """By extension, as listings and uploads name files; here so Serve can ask without importing scoring."""
    return posixpath.splitext(str(path).lower())[1] in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class VideoConfig:
    """Sampling, segmenting and tracking of videos.

    Sampled frames are the frames on screen at the times ``k / fps`` (k = 0, 1, 2, ...), so a
    sample belongs to exactly one segment and segments decoded in parallel give the frames a
    single pass gives. Segments are what spreads one long video over workers and what a killed
    run resumes by; a minute keeps each task short and the seek to its start cheap.
    """

    fps: float = setting(2.0, "frames per second of video to score (0: every frame)", group="video")
    segment_s: float = setting(
        60.0,
        "split videos into segments of this many seconds, scored in parallel and resumed one by one",
        group="video",
    )
    max_duration_s: float | None = setting(
        None, "longer videos become error rows", default_text="no limit", group="video"
    )
    max_frames: int | None = setting(
        None, "at most this many sampled frames per video; more become an error row", default_text="no limit",
        group="video",
    )  # fmt: skip
    decode_threads: int = setting(
        1,
        "FFmpeg decoding threads per segment (0: FFmpeg decides); parallelism comes from segments on separate CPUs",
        group="video",
    )
    skip_gops: bool = setting(
        True,
        "decode every keyframe group, not only those that hold a sampled frame (the same frames, more decoding)",
        flag="--decode-all",
        default_text="off",
        group="video",
    )
    track_iou: float = setting(
        0.3, "a face continues a track when its box overlaps the track's last box by at least this IoU", group="video"
    )
    track_max_gap: int = setting(
        2, "a track ends after this many sampled frames without its face (a blink of the detector)", group="video"
    )
    track_landmark_weight: float = setting(
        0.5, "weight of landmark agreement next to IoU when faces compete for a track (0: IoU only)", group="video"
    )

    def samples_in(self, duration_s: float, source_fps: float) -> int:
        """About how many frames a video of this length and frame rate gives at ``fps``: what ``max_frames`` limits,
        known from the header before anything is decoded."""
        return math.ceil(duration_s * (min(self.fps, source_fps) if self.fps else source_fps))

    def __post_init__(self) -> None:
        if self.fps < 0:
            raise ValueError(f"fps must be >= 0 (0: every frame), got {self.fps}")
        if not self.segment_s > 0:
            raise ValueError(f"segment_s must be > 0 seconds (e.g. 60), got {self.segment_s}")
        if self.max_duration_s is not None and not self.max_duration_s > 0:
            raise ValueError(f"max_duration_s must be > 0 seconds or None (no limit), got {self.max_duration_s}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None (no limit), got {self.max_frames}")
        if self.decode_threads < 0:
            raise ValueError(f"decode_threads must be >= 0 (0: FFmpeg decides), got {self.decode_threads}")
        if not 0 < self.track_iou <= 1:
            raise ValueError(f"track_iou must be in (0, 1] (e.g. 0.3), got {self.track_iou}")
        if self.track_max_gap < 0:
            raise ValueError(f"track_max_gap must be >= 0 sampled frames, got {self.track_max_gap}")
        if self.track_landmark_weight < 0:
            raise ValueError(f"track_landmark_weight must be >= 0, got {self.track_landmark_weight}")


__all__ = ["VIDEO_EXTENSIONS", "VideoConfig", "is_video"]
