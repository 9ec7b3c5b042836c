"""A short clip held in memory -> sampled frames -> faces -> tracks -> per-track timelines: Serve's clip endpoint.

Ray-free, and in two halves around the model call, because Serve makes that call asynchronously (batched with
other requests' faces) between them: :func:`clip_faces` decodes, detects, crops and tracks (blocking work, for a
thread), :func:`clip_response` turns the model's probabilities into JSON. Both are batch scoring's parts (the
decoder, :func:`~fer_ray.score.faces.faces_in_frame`, the tracker and its summaries,
:func:`~fer_ray.inference.outputs.outputs`), and a clip shorter than a segment is one segment, so a clip posted to
Serve and the same file scored by ``jobs/score.py`` give the same frames, faces, tracks and emotions.

    faces = clip_faces(data, VideoConfig(max_duration_s=30), DetectConfig(), artifact.preprocess)
    body = clip_response(faces, artifact.predict_proba(faces.crops), artifact.labels, artifact.uncertain_below)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_ray.inference.outputs import outputs
from fer_ray.preprocess import PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import Box, faces_in_frame
from fer_ray.video.config import VideoConfig, is_video
from fer_ray.video.decode import Segment, VideoError, VideoInfo, probe, sample_frames
from fer_ray.video.track import Tracker, track_summaries

# Said with every "too long / too large" answer: the limits protect one request, not what fer_ray can do.
CLIP_HINT = "score longer or larger videos with batch scoring: python jobs/score.py VIDEO... --out DIR"
_FEWER = f"sample fewer frames per second (clip_fps) or {CLIP_HINT}"
# What a person track's summary keeps of batch scoring's (tracks.parquet), under the same names.
_SUMMARY = ("track_id", "dominant_emotion", "start_s", "end_s", "duration_s", "frames", "uncertain_share")


class ClipTooLong(VideoError):
    """A readable clip over a limit: HTTP 413 rather than 422, since the file is fine but belongs in batch scoring."""


# ISO BMFF brands of still images (HEIC, AVIF): an ``ftyp`` box alone does not make a video.
_IMAGE_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")


def looks_like_video(head: bytes) -> bool:
    """The first bytes of an MP4/MOV/M4V (an ISO BMFF or QuickTime box), Matroska/WebM (EBML) or AVI (RIFF) file."""
    if head[4:8] == b"ftyp":
        return head[8:12] not in _IMAGE_BRANDS
    return (
        head[4:8] in (b"moov", b"mdat", b"wide", b"free")
        or head[:4] == b"\x1a\x45\xdf\xa3"
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def is_clip(content_type: str | None, filename: str | None = None, head: bytes = b"") -> bool:
    """``video/*``; under a type that is not an image's (curl and some browsers label ``.mkv`` or ``.m4v`` as
    ``application/octet-stream``, and raw bodies are often sent so), a video file name or a video's first bytes."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.startswith(("video/", "image/")):
        return media.startswith("video/")
    return bool(filename) and is_video(filename) or looks_like_video(head)


@dataclass(frozen=True)
class ClipFaces:
    """What :func:`clip_faces` found: the model's input and where each crop came from."""

    info: VideoInfo
    video: VideoConfig  # how it was sampled and tracked
    frames: list[tuple[int, float, int]]  # per sampled frame: (frame index, timestamp_s, faces)
    faces: list[tuple[int, float, Box | None, int]]  # per crop: (frame index, timestamp_s, box, track id)
    crops: np.ndarray  # (N, S, S) uint8


def clip_faces(
    data: bytes,
    video: VideoConfig,
    detect: DetectConfig,
    preprocess: PreprocessConfig,
    whole_image: bool = False,
) -> ClipFaces:
    """The faces of ``video.fps`` sampled frames, tracked; ``whole_image``: each frame is one face (box None).

    The length (``video.max_duration_s``) and the number of frames to score (``video.max_frames``, which bounds
    the work of a clip sampled at every frame) are checked from the header, before a frame is decoded, and again
    as frames arrive (a header can understate them). Raises :class:`ClipTooLong` over either and
    :class:`~fer_ray.video.decode.VideoError` for bytes that are not a decodable video.
    """
    info = probe(data)
    limit, most = video.max_duration_s, video.max_frames
    if limit is not None and info.duration_s > limit:
        raise ClipTooLong(f"the clip is {info.duration_s:.1f} s long, over the limit of {limit:g} s; {CLIP_HINT}")
    many = video.samples_in(info.duration_s, info.fps)
    if most is not None and many > most:
        raise ClipTooLong(f"the clip has about {many} frames to score, over the limit of {most}; {_FEWER}")
    tracker = Tracker(video)
    frames, faces, crops = [], [], []
    for frame in sample_frames(data, Segment(0, 0.0, info.duration_s, last=True), video, pixel_format="gray"):
        if limit is not None and frame.timestamp_s > limit:
            raise ClipTooLong(f"the clip runs past {limit:g} s, its header said {info.duration_s:.1f} s; {CLIP_HINT}")
        if most is not None and len(frames) >= most:
            raise ClipTooLong(f"the clip has more than {most} frames to score, its header said fewer; {_FEWER}")
        h, w = frame.image.shape  # (H, W) gray
        boxes, found, marks = faces_in_frame(frame.image, detect, preprocess, whole_image)
        ids = tracker.update([b or (0, 0, w, h) for b in boxes], marks)
        frames.append((frame.index, frame.timestamp_s, len(boxes)))
        faces += [(frame.index, frame.timestamp_s, b, t) for b, t in zip(boxes, ids, strict=True)]
        crops += found
    s = preprocess.image_size
    return ClipFaces(info, video, frames, faces, np.stack(crops) if crops else np.zeros((0, s, s), np.uint8))


def clip_response(
    clip: ClipFaces,
    probs: np.ndarray,
    labels: Sequence[str],
    uncertain_below: float | None,
) -> dict[str, Any]:
    """``{status, video, tracks, frames}`` for the (N, K) probabilities of ``clip.crops``.

    ``tracks``: one per person, batch scoring's track summary plus ``mean_probabilities`` and a ``timeline``
    of every sampled frame the face is in (each point what the image endpoint says of a face); ``frames``:
    faces per sampled frame, so frames without a face show as gaps rather than vanish.
    """
    out = outputs(probs, uncertain_below)  # the emotion, confidence and flag batch scoring and images give
    points: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = []
    for (index, t, box, track), p, top, confidence, uncertain in zip(
        clip.faces, probs, out.top, out.confidence, out.uncertain, strict=True
    ):
        probabilities = {label: float(v) for label, v in zip(labels, p, strict=True)}
        point = {"timestamp_s": t, "frame_index": index, "box": None if box is None else [int(v) for v in box]}
        point.update(emotion=labels[int(top)], confidence=float(confidence), uncertain=bool(uncertain))
        points[track].append({**point, "probabilities": probabilities})
        rows.append({**point, "track_id": track, **{f"p_{label}": v for label, v in probabilities.items()}})
    tracks = [
        {
            **{k: s[k] for k in _SUMMARY},
            "mean_probabilities": {label: s[f"p_{label}"] for label in labels},
            "timeline": [x for _, track in s["segment_tracks"] for x in points[track]],
        }
        for s in track_summaries(rows, clip.video)
    ]
    info = clip.info
    return {
        "status": "ok" if clip.faces else "no_face",
        "video": {
            "duration_s": info.duration_s,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "sample_fps": clip.video.fps,
            "frames_sampled": len(clip.frames),
            "faces": len(clip.faces),
        },
        "tracks": tracks,
        "frames": [{"frame_index": i, "timestamp_s": t, "faces": n} for i, t, n in clip.frames],
    }


__all__ = [
    "CLIP_HINT",
    "ClipFaces",
    "ClipTooLong",
    "VideoError",
    "clip_faces",
    "clip_response",
    "is_clip",
    "looks_like_video",
]
