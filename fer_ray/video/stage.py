"""Videos in a scoring run: one listing row per video becomes one row per segment, and a segment
becomes face rows, one per face per sampled frame (or one ``no_face`` / ``error`` row per frame).

A segment is the unit of work and of resume: scoring spreads a long video over CPUs by segment, and
a killed run rescores only the segments without rows. A video that cannot be opened, or that breaks
a limit of :class:`~fer_ray.video.config.VideoConfig`, becomes one error row (``segment`` null); a
segment whose data cannot be decoded keeps the rows of the frames decoded before the damage and
ends with one error row, so every sampled frame that was decoded is accounted for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.data.s3 import S3Settings, resolve_filesystem
from fer_ray.preprocess import PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import faces_in_frame
from fer_ray.storage import is_remote
from fer_ray.video.config import VideoConfig, is_video
from fer_ray.video.decode import Segment, VideoError, probe, sample_frames, segments
from fer_ray.video.track import Tracker

logger = logging.getLogger(__name__)

# Columns a segment adds to a listing row; null on images.
SEGMENT_COLUMNS = ("segment", "start_s", "end_s", "last", "sample_fps", "segment_s")
# Probing reads a container's header, a few round trips on S3: threads hide the latency.
_PROBE_THREADS = 8


def open_source(path: str, settings: S3Settings | None):
    """A local path as it is; an ``s3://`` object as a seekable stream, so a long video is never held in memory."""
    if not is_remote(path):
        return path
    fs, inner = resolve_filesystem(path, settings)
    return fs.open_input_file(inner)


def expand_segments(
    listing: pd.DataFrame, cfg: VideoConfig, settings: S3Settings | None, known: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The listing with each video's row replaced by one row per segment (columns :data:`SEGMENT_COLUMNS`).

    Each video is probed once, here: its duration decides its segments. A video that cannot be
    probed, or breaks ``max_duration_s`` / ``max_frames``, keeps one row with the reason in ``error``.
    ``known``: the segments a run over the same OUT listed (its stored inputs); a video listed there under the same
    path, size and mtime and cut at the same rate and length is not probed again, so a rerun over thousands of
    videos (on S3, a few round trips each) starts at once.
    Image rows pass through with null segment columns, in their order; without videos the listing is returned as is.
    """
    videos = listing["path"].map(is_video).to_numpy(dtype=bool) & listing["error"].isna().to_numpy()
    if not videos.any():
        return listing
    out = listing.assign(segment=pd.array([None] * len(listing), dtype="Int32"), start_s=np.nan, end_s=np.nan)
    out["last"] = pd.array([None] * len(listing), dtype="boolean")
    out["sample_fps"], out["segment_s"] = np.nan, np.nan
    rows = out[videos].to_dict("records")
    reuse = _known_segments(known, cfg)

    def expand(row: dict[str, Any]) -> list[dict[str, Any]]:
        same = reuse.get((row["path"], row["size"], row["mtime"]))
        return [{**row, **s} for s in same] if same else _segment_rows(row, cfg, settings)

    with ThreadPoolExecutor(min(_PROBE_THREADS, len(rows))) as pool:
        expanded = list(pool.map(expand, rows))
    reused = sum((r["path"], r["size"], r["mtime"]) in reuse for r in rows)
    logger.info("%d videos: %d probed, %d cut as OUT's inputs record", len(rows), len(rows) - reused, reused)
    parts = [out[~videos], pd.DataFrame([r for rs in expanded for r in rs], columns=out.columns)]
    result = pd.concat(parts, ignore_index=True)
    result["segment"] = result["segment"].astype("Int32")
    result["last"] = result["last"].astype("boolean")
    return result


def _known_segments(known: pd.DataFrame | None, cfg: VideoConfig) -> dict[tuple, list[dict[str, Any]]]:
    """(path, size, mtime) -> its segments' columns, for the videos ``known`` cut at ``cfg``'s rate and length
    without error. With ``max_frames`` set every video is probed: the check needs its frame rate, not recorded."""
    if known is None or cfg.max_frames is not None or "segment" not in known:
        return {}
    rows = known[known["segment"].notna() & known["error"].isna()]
    rows = rows[(rows["sample_fps"] == float(cfg.fps)) & (rows["segment_s"] == float(cfg.segment_s))]
    if cfg.max_duration_s is not None:
        rows = rows[rows.groupby("path")["end_s"].transform("max") <= cfg.max_duration_s]
    found = {}
    for (path, size, mtime), g in rows.groupby(["path", "size", "mtime"]):
        n = int(g["segment"].max()) + 1
        if len(g) != n or set(g["segment"].astype(int)) != set(range(n)):
            continue  # not a whole video: probe it
        found[(path, size, mtime)] = [
            {"segment": i, "start_s": i * cfg.segment_s, "end_s": float(e), "last": i == n - 1}
            | {"sample_fps": float(cfg.fps), "segment_s": float(cfg.segment_s)}
            for i, e in sorted(zip(g["segment"].astype(int), g["end_s"], strict=True))
        ]
    return found


def _segment_rows(row: dict[str, Any], cfg: VideoConfig, settings: S3Settings | None) -> list[dict[str, Any]]:
    try:
        source = open_source(row["path"], settings)
        try:
            info = probe(source)
        finally:
            if hasattr(source, "close"):
                source.close()
        _check_limits(info.duration_s, info.fps, cfg)
    except VideoError as e:
        return [{**row, "error": str(e)}]
    except Exception as e:  # one strange file must never fail the listing
        logger.warning("probing %s failed: %s", row["path"], e, exc_info=True)
        return [{**row, "error": f"cannot open the video: {type(e).__name__}: {e}"}]
    return [
        {**row, "segment": s.index, "start_s": s.start_s, "end_s": s.end_s, "last": s.last}
        | {"sample_fps": float(cfg.fps), "segment_s": float(cfg.segment_s)}
        for s in segments(info, cfg)
    ]


def _check_limits(duration_s: float, fps: float, cfg: VideoConfig) -> None:
    if cfg.max_duration_s is not None and duration_s > cfg.max_duration_s:
        raise VideoError(
            f"the video lasts {duration_s:.1f} s, over --max-duration-s {cfg.max_duration_s:g}; "
            "raise the limit or cut the video"
        )
    samples = cfg.samples_in(duration_s, fps)
    if cfg.max_frames is not None and samples > cfg.max_frames:
        raise VideoError(
            f"the video has about {samples} frames to sample, over --max-frames {cfg.max_frames}; "
            "lower --fps or raise the limit"
        )


def segment_of(row: dict[str, Any]) -> Segment:
    return Segment(int(row["segment"]), float(row["start_s"]), float(row["end_s"]), bool(row["last"]))


def prepare_segment(
    row: dict[str, Any],
    emit: Callable[..., None],
    settings: S3Settings | None,
    preprocess: PreprocessConfig,
    detect: DetectConfig,
    cfg: VideoConfig,
    whole_image: bool = False,
    on_crop: Callable[[np.ndarray, str], None] | None = None,
) -> None:
    """Emit the rows of one segment (a listing row with :data:`SEGMENT_COLUMNS`) through ``emit(base, **values)``.

    ``base`` carries the video's path, size, mtime and the segment; values add the frame, the face and its
    crop as scoring's image rows do. Tracks are found within the segment (ids from 0); the report joins
    them across segments. ``on_crop(crop, name)`` receives each crop when crops are saved.
    """
    segment = segment_of(row)
    base = {
        "path": str(row["path"]),
        "size": int(row["size"]),
        "mtime": None if pd.isna(row["mtime"]) else float(row["mtime"]),
        "segment": segment.index,
        "sample_fps": float(row["sample_fps"]),
        "segment_s": float(row["segment_s"]),
        "faces": 0,
    }
    tracker = Tracker(cfg)
    source = None
    try:
        source = open_source(base["path"], settings)
        for frame in sample_frames(source, segment, cfg, pixel_format="gray"):
            at = {"frame_index": frame.index, "timestamp_s": frame.timestamp_s}
            h, w = frame.image.shape[:2]
            try:
                boxes, crops, marks = faces_in_frame(frame.image, detect, preprocess, whole_image)
            except Exception as e:  # a frame the detector cannot take is that frame's error row
                logger.warning("scoring %s at %.2f s failed: %s", base["path"], frame.timestamp_s, e, exc_info=True)
                emit(base, **at, status="error", error=f"cannot process frame: {type(e).__name__}: {e}")
                tracker.update([])
                continue
            ids = tracker.update([b or (0, 0, w, h) for b in boxes], marks)
            frame_base = {**base, **at, "image_width": w, "image_height": h}
            if not boxes:
                emit(frame_base, status="no_face")
            for k, (box, crop, track) in enumerate(zip(boxes, crops, ids, strict=True)):
                x, y, bw, bh = box or (0, 0, w, h)
                emit(
                    frame_base,
                    faces=len(boxes),
                    face_index=k,
                    x=x,
                    y=y,
                    w=bw,
                    h=bh,
                    track_id=track,
                    status="ok",
                    face=crop.tobytes(),
                )
                if on_crop is not None:
                    on_crop(crop, f"s{segment.index}-f{frame.index}-face{k}")
    except VideoError as e:
        emit(base, status="error", error=str(e))
    except Exception as e:  # one strange file must never fail the task (and the job)
        logger.warning("scoring %s segment %d failed: %s", base["path"], segment.index, e, exc_info=True)
        emit(base, status="error", error=f"cannot process video: {type(e).__name__}: {e}")
    finally:
        if source is not None and hasattr(source, "close"):
            source.close()


__all__ = ["SEGMENT_COLUMNS", "expand_segments", "open_source", "prepare_segment", "segment_of"]
