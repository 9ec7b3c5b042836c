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


def track_summaries(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One dict per (video ``path``, ``track_id``) from scored face rows, ordered by path and track.

    Rows need ``track_id``, ``timestamp_s``, the probability columns, ``emotion`` and ``uncertain``;
    rows without a track (images, no_face and error rows) are skipped. ``dominant_emotion`` is the
    emotion of most frames (ties: the higher mean probability), not of the mean probabilities: a
    face happy in half of a clip and neutral otherwise reads as the person saw it. ``duration_s``
    is last minus first sample time, 0 for a face seen in one sampled frame.
    """
    groups: dict[tuple[str | None, int], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row.get("track_id") is None or row.get("status", "ok") != "ok":
            continue
        groups[(row.get("path"), int(row["track_id"]))].append(row)
    summaries = []
    for (path, track_id), members in sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        times = [float(r["timestamp_s"]) for r in members]
        probs = np.array([[float(r[c]) for c in PROB_COLUMNS] for r in members]).mean(axis=0)  # (7,)
        mean = dict(zip(PROB_COLUMNS, probs.tolist(), strict=True))
        counts = Counter(str(r["emotion"]) for r in members)
        dominant = max(counts, key=lambda e: (counts[e], mean.get(f"p_{e}", 0.0), e))
        summary: dict[str, Any] = {"path": path} if path is not None else {}
        summary.update(
            track_id=track_id,
            start_s=min(times),
            end_s=max(times),
            duration_s=max(times) - min(times),
            frames=len(members),
            dominant_emotion=dominant,
            **mean,
            uncertain_share=sum(bool(r["uncertain"]) for r in members) / len(members),
        )
        summaries.append(summary)
    return summaries


__all__ = ["Tracker", "iou", "landmark_agreement", "track_faces", "track_summaries"]
