"""Faces linked across sampled frames into tracks, and one summary per track.

A timeline is only readable per person: "the left face turned from neutral to happy" needs the
left face's rows together. Tracks come from geometry alone (box overlap, plus where YuNet's five
landmarks moved), not from who the person is: nothing identifies a face, no face pixels are kept,
and a person who leaves the picture and comes back gets a new track.

Matching is greedy on ``IoU + track_landmark_weight * landmark agreement``: with the sampling
rates used (a few frames per second) faces move little between samples, and greedy matching
gives the same answer as an optimal assignment unless two boxes overlap each other more than
their own moves, and needs no SciPy. A face that overlaps no live track (a new person, or any
face after a scene cut) starts a track; a track missing for more than ``track_max_gap`` sampled
frames ends. Ids are 0, 1, 2, ... in order of first appearance (left to right within a frame).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_ray.labels import EMOTIONS
from fer_ray.video.config import VideoConfig

Box = tuple[float, float, float, float]  # x, y, w, h in pixels, as fer_ray.score.faces returns them
# The probability columns of scoring's rows (fer_ray.score.schema.PROB_COLUMNS; tests check they agree),
# spelled here so that Serve's clip endpoint can summarise tracks without importing pyarrow.
PROB_COLUMNS = tuple(f"p_{e}" for e in EMOTIONS)
# Landmark agreement falls from 1 (same points) to 0 when the points moved half the face's size.
_LANDMARK_SCALE = 0.5


@dataclass
class _Track:
    id: int
    box: Box
    landmarks: np.ndarray | None  # (5, 2): eyes, nose tip, mouth corners; None without them (Haar)
    missed: int = 0  # sampled frames since the last match


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when they do not touch)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = min(ax + aw, bx + bw) - max(ax, bx)
    ih = min(ay + ah, by + bh) - max(ay, by)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return float(inter / (aw * ah + bw * bh - inter))


def landmark_agreement(a: np.ndarray | None, b: np.ndarray | None, box: Box) -> float:
    """1 when the landmarks did not move, down to 0 when they moved ``_LANDMARK_SCALE`` of the
    face's size; 0 when either face has none (the cue then simply does not help)."""
    if a is None or b is None:
        return 0.0
    size = max(1.0, float(np.sqrt(box[2] * box[3])))
    moved = float(np.linalg.norm(np.asarray(a, float) - np.asarray(b, float), axis=-1).mean()) / size
    return max(0.0, 1.0 - moved / _LANDMARK_SCALE)


class Tracker:
    """Streaming tracker: call :meth:`update` once per sampled frame, in time order, even for frames
    without faces (so gaps are counted). State is a few numbers per live track."""

    def __init__(self, cfg: VideoConfig | None = None, first_id: int = 0):
        self.cfg = cfg or VideoConfig()
        self.next_id = first_id
        self.tracks: list[_Track] = []

    def update(self, boxes: Sequence[Box], landmarks: Sequence[np.ndarray | None] | None = None) -> list[int]:
        """Track ids of this frame's faces, in the order of ``boxes``.

        ``landmarks``: per face a (5, 2) array of YuNet's landmarks in image pixels, or None.
        """
        boxes = [tuple(float(v) for v in b) for b in boxes]
        marks = list(landmarks) if landmarks is not None else [None] * len(boxes)
        if len(marks) != len(boxes):
            raise ValueError(f"got {len(boxes)} boxes but {len(marks)} landmark sets; pass one per face or None")
        pairs = []
        for t, track in enumerate(self.tracks):
            for d, box in enumerate(boxes):
                overlap = iou(track.box, box)
                if overlap >= self.cfg.track_iou:
                    cue = landmark_agreement(track.landmarks, marks[d], track.box)
                    pairs.append((-(overlap + self.cfg.track_landmark_weight * cue), track.id, d, t))
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, track_id, d, t in sorted(pairs):  # best score first; ties by older track, then face order
            if ids[d] is None and t not in taken:
                ids[d], taken = track_id, taken | {t}
                self.tracks[t].box, self.tracks[t].landmarks, self.tracks[t].missed = boxes[d], marks[d], 0
        for t, track in enumerate(self.tracks):
            if t not in taken:
                track.missed += 1
        self.tracks = [tr for tr in self.tracks if tr.missed <= self.cfg.track_max_gap]
        # New tracks left to right, top to bottom, so ids do not depend on the detector's output order.
        for d in sorted(range(len(boxes)), key=lambda i: (boxes[i][0], boxes[i][1])):
            if ids[d] is None:
                ids[d] = self.next_id
                self.tracks.append(_Track(self.next_id, boxes[d], marks[d]))
                self.next_id += 1
        return [int(i) for i in ids]


def track_faces(
    frames: Iterable[Sequence[Box]],
    cfg: VideoConfig | None = None,
    landmarks: Iterable[Sequence[np.ndarray | None] | None] | None = None,
) -> list[list[int]]:
    """Track ids for a whole sequence of frames (each a list of boxes): :class:`Tracker` in one call."""
    tracker = Tracker(cfg)
    marks = iter(landmarks) if landmarks is not None else None
    return [tracker.update(boxes, next(marks) if marks is not None else None) for boxes in frames]


def segment_track_stats(rows: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Mergeable statistics per (path, segment, track_id) of scored face rows: all the report keeps of them.

    Rows need ``track_id``, ``timestamp_s``, the probability columns, ``emotion`` and ``uncertain``;
    ``path``, ``segment`` and the box (``x, y, w, h``) when there are several videos or segments.
    Rows without a track (images, no_face and error rows) are skipped. Statistics of disjoint row
    sets (part files) merge with :func:`merge_stats`, so memory follows tracks, not frames.
    """
    stats: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if row.get("track_id") is None or row.get("status", "ok") != "ok" or _isnan(row["track_id"]):
            continue
        segment = row.get("segment")
        key = (row.get("path"), 0 if segment is None or _isnan(segment) else int(segment), int(row["track_id"]))
        t = float(row["timestamp_s"])
        box = tuple(float(row.get(c) or 0) for c in ("x", "y", "w", "h"))
        one = {
            "frames": 1,
            "start_s": t,
            "end_s": t,
            "first_box": box,
            "last_box": box,
            "step_s": math.inf,
            "probs": np.array([float(row[c]) for c in PROB_COLUMNS]),
            "counts": Counter([str(row["emotion"])]),
            "uncertain": int(bool(row["uncertain"])),
        }
        stats[key] = merge_stats(stats[key], one) if key in stats else one
    return stats


def merge_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Statistics of one segment-track from two disjoint sets of its rows."""
    first, last = (a, b) if a["start_s"] <= b["start_s"] else (b, a)
    # the smallest time between two of the track's samples: the video's sampling interval
    gap = max(b["start_s"] - a["end_s"], a["start_s"] - b["end_s"])
    return {
        "frames": a["frames"] + b["frames"],
        "start_s": first["start_s"],
        "end_s": max(a["end_s"], b["end_s"]),
        "first_box": first["first_box"],
        "last_box": (a if a["end_s"] >= b["end_s"] else b)["last_box"],
        "step_s": min(a["step_s"], b["step_s"], gap if gap > 0 else math.inf),
        "probs": a["probs"] + b["probs"],
        "counts": a["counts"] + b["counts"],
        "uncertain": a["uncertain"] + b["uncertain"],
    }


def join_tracks(stats: Mapping[tuple, dict[str, Any]], cfg: VideoConfig | None = None) -> list[dict[str, Any]]:
    """One summary per person track: segment-tracks of consecutive segments joined where the one ends as
    the other starts (within ``track_max_gap`` samples) and their boxes overlap by ``track_iou``.

    Segments are tracked on different workers, each from id 0; this links them as one pass would
    have. Ordered by path, then by first appearance. ``dominant_emotion`` is the emotion of most
    frames (ties: the higher mean probability), not of the mean probabilities: a face happy in
    half of a clip and neutral otherwise reads as the person saw it. ``duration_s`` is last minus
    first sample time, 0 for a face seen in one sampled frame.
    """
    cfg = cfg or VideoConfig()
    by_path: dict[Any, list[tuple]] = defaultdict(list)
    for key in stats:
        by_path[key[0]].append(key)
    summaries = []
    for path in sorted(by_path, key=lambda p: p or ""):
        keys = sorted(by_path[path], key=lambda k: (k[1], k[2]))
        person = _link_segments(keys, stats, cfg)
        members: dict[int, list[tuple]] = defaultdict(list)
        for key in keys:
            members[person[key]].append(key)
        for track_id, group in enumerate(members[p] for p in sorted(members)):
            merged = stats[group[0]]
            for key in group[1:]:
                merged = merge_stats(merged, stats[key])
            summaries.append(_summary(path, track_id, merged, group))
    return summaries


def _link_segments(keys: list[tuple], stats: Mapping[tuple, dict[str, Any]], cfg: VideoConfig) -> dict[tuple, int]:
    """Person number per segment-track (in order of the first segment-track of each person)."""
    step = min((stats[k]["step_s"] for k in keys), default=math.inf)
    step = step if math.isfinite(step) else (1 / cfg.fps if cfg.fps else math.inf)
    tolerance = (cfg.track_max_gap + 1) * step * (1 + 1e-6)
    by_segment: dict[int, list[tuple]] = defaultdict(list)
    for key in keys:
        by_segment[key[1]].append(key)
    person: dict[tuple, int] = {}
    for segment in sorted(by_segment):
        ending = [k for k in by_segment.get(segment - 1, []) if k in person]
        pairs = []
        for b in by_segment[segment]:
            for a in ending:
                overlap = iou(stats[a]["last_box"], stats[b]["first_box"])
                close = 0 <= stats[b]["start_s"] - stats[a]["end_s"] <= tolerance
                if close and overlap >= cfg.track_iou:
                    pairs.append((-overlap, a, b))
        taken: set[tuple] = set()
        for _, a, b in sorted(pairs):
            if b not in person and a not in taken:
                person[b] = person[a]
                taken.add(a)
        for b in by_segment[segment]:
            if b not in person:
                person[b] = len(set(person.values()))
    return person


def _summary(path: Any, track_id: int, s: dict[str, Any], members: list[tuple]) -> dict[str, Any]:
    mean = dict(zip(PROB_COLUMNS, (s["probs"] / s["frames"]).tolist(), strict=True))
    counts = s["counts"]
    dominant = max(counts, key=lambda e: (counts[e], mean.get(f"p_{e}", 0.0), e))
    summary: dict[str, Any] = {"path": path} if path is not None else {}
    summary.update(
        track_id=track_id,
        start_s=s["start_s"],
        end_s=s["end_s"],
        duration_s=s["end_s"] - s["start_s"],
        frames=s["frames"],
        dominant_emotion=dominant,
        **mean,
        uncertain_share=s["uncertain"] / s["frames"],
        # the rows' (segment, track_id) pairs this person track joins: rows are tracked per segment
        segment_tracks=[[int(k[1]), int(k[2])] for k in members],
    )
    return summary


def track_summaries(rows: Iterable[Mapping[str, Any]], cfg: VideoConfig | None = None) -> list[dict[str, Any]]:
    """One summary per person track from scored face rows: :func:`segment_track_stats` then :func:`join_tracks`."""
    return join_tracks(segment_track_stats(rows), cfg)


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


__all__ = [
    "Tracker",
    "iou",
    "join_tracks",
    "landmark_agreement",
    "merge_stats",
    "segment_track_stats",
    "track_faces",
    "track_summaries",
]
