"""What the video rows of a scoring output add up to: segments in and out, sampled frames, person tracks.

Counted part file by part file like the photos (:mod:`fer_ray.score.aggregate`): per segment a row count, per
sampled frame a hash, per segment-track a few numbers (:func:`fer_ray.video.track.segment_track_stats`), so
memory follows segments and tracks, not frames. Tracks are joined across segments at the end and written to
``OUT/tracks/tracks.parquet``, one row per person track, rebuilt with the report on every run.
"""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.labels import EMOTIONS
from fer_ray.score.schema import PROB_COLUMNS
from fer_ray.score.store import expected_rows, key_hash
from fer_ray.video.config import VideoConfig, is_video
from fer_ray.video.track import join_tracks, merge_stats, segment_track_stats

TRACKS_FILE = "tracks/tracks.parquet"
# Columns the counting reads beyond the photos': the segment's key and size, the frame, the track's box and scores.
VIDEO_COLUMNS = ["segment", "segment_s", "sample_fps", "segment_rows", "frame_index", "timestamp_s", "track_id"]
TRACK_COLUMNS = [*VIDEO_COLUMNS, "x", "y", "w", "h", *PROB_COLUMNS]
_MAX_VIDEOS = 200  # videos listed one by one in report.html (most tracks first); the rest are counted
# Videos drawn in full (a timeline per person track) in report.html: the busiest; a few PNGs keep the page small.
TIMELINE_VIDEOS = 12
_TIMELINE_TRACKS = 4  # the longest person tracks of a video get a timeline each
_SMOOTH = 5  # sampled frames in a timeline's centred moving average


def is_video_row(df: pd.DataFrame) -> np.ndarray:
    """Rows of videos: scored segments, and the error rows of videos that could not be opened."""
    segment = df["segment"].notna().to_numpy() if "segment" in df else np.zeros(len(df), dtype=bool)
    return segment | df["path"].map(is_video).to_numpy(dtype=bool)


class VideoCounts:
    """Counts of video rows, added part file by part file (:meth:`add`), summed up by :meth:`summary`."""

    def __init__(self) -> None:
        self.segments: list[pd.DataFrame] = []  # per part: key, rows, expected rows
        self.frames: list[np.ndarray] = []  # per part: a hash per sampled frame with rows
        self.failed: list[np.ndarray] = []  # per part: keys with an error row of no frame (unopenable, damaged)
        self.rows = 0
        self.emotions: Counter = Counter()
        self.faces = 0
        self.uncertain = 0
        self.stats: dict[tuple, dict[str, Any]] = {}

    def add(self, df: pd.DataFrame, keys: np.ndarray) -> None:
        """``df``: the video rows of one part file; ``keys``: their resume keys (one per segment)."""
        if df.empty:
            return
        self.rows += len(df)
        per_key = pd.DataFrame({"key": keys, "expected": expected_rows(df)}).groupby("key")
        self.segments.append(per_key["expected"].agg(["size", "max"]).reset_index())
        frame = df["frame_index"].to_numpy(dtype=np.float64, na_value=np.nan)
        sampled = pd.DataFrame({"k": keys, "f": frame})[~np.isnan(frame)]  # error rows of a segment have no frame
        self.failed.append(np.unique(keys[np.isnan(frame) & (df["status"].astype(str) == "error").to_numpy()]))
        self.frames.append(np.unique(pd.util.hash_pandas_object(sampled, index=False)))
        ok = df[df["status"].astype(str) == "ok"]
        self.faces += len(ok)
        self.uncertain += int(ok["uncertain"].fillna(False).astype(bool).sum()) if "uncertain" in ok else 0
        self.emotions.update(ok["emotion"].value_counts().to_dict())
        for key, s in segment_track_stats(ok.to_dict("records")).items():
            self.stats[key] = merge_stats(self.stats[key], s) if key in self.stats else s

    def summary(self, listing: pd.DataFrame | None, cfg: VideoConfig) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the summary's video entries, one dict per person track) for the videos of ``listing`` (None: as found)."""
        seg = pd.concat(self.segments) if self.segments else pd.DataFrame({"key": [], "size": [], "max": []})
        seg = seg.groupby("key").agg(rows=("size", "sum"), expected=("max", "max"))
        complete = seg.index[seg["rows"] == seg["expected"]].to_numpy()
        listed = np.unique(key_hash(listing)) if listing is not None else complete
        frames = np.unique(np.concatenate(self.frames)) if self.frames else np.zeros(0)
        tracks = join_tracks(self.stats, cfg)
        videos = listing["path"].nunique() if listing is not None else len({t["path"] for t in tracks})
        summary = {
            "videos_in": int(videos),
            "video_segments_in": int(len(listed)),
            "video_segments_out": int(np.isin(listed, complete).sum()),
            "duplicate_segments": int((seg["rows"] > seg["expected"]).sum()),
            # videos that could not be opened, and segments that broke off with an error
            "video_segments_failed": int(np.isin(listed, np.concatenate(self.failed)).sum()) if self.failed else 0,
            "frames_sampled": int(len(frames)),
            "video_rows": self.rows,
            "video_faces": self.faces,
            "video_uncertain_faces": self.uncertain,
            "video_emotions": {e: int(self.emotions.get(e, 0)) for e in EMOTIONS},
            "tracks": len(tracks),
            "videos": _per_video(tracks, listing),
        }
        return summary, tracks


def _per_video(tracks: list[dict[str, Any]], listing: pd.DataFrame | None) -> list[dict[str, Any]]:
    """One entry per video (most tracks first, at most :data:`_MAX_VIDEOS`): duration, segments, tracks."""
    by_path: dict[str, list[dict[str, Any]]] = {}
    for t in tracks:
        by_path.setdefault(t["path"], []).append(t)
    info: dict[str, dict[str, Any]] = {p: {} for p in by_path}
    if listing is not None:
        for path, g in listing.groupby("path"):
            info[str(path)] = {
                "duration_s": round(float(g["end_s"].max()), 2) if g["end_s"].notna().any() else None,
                "segments": int(g["segment"].notna().sum()),
                "error": next((str(e) for e in g["error"] if isinstance(e, str) and e), None),
            }
    entries = []
    for path, extra in info.items():
        ts = by_path.get(path, [])
        people = [
            f"#{t['track_id']} {t['dominant_emotion']} {t['start_s']:.1f}-{t['end_s']:.1f} s"
            for t in sorted(ts, key=lambda t: -t["frames"])[:5]
        ]
        entries.append({"path": path, **extra, "tracks": len(ts), "top_tracks": people})
    return sorted(entries, key=lambda e: (-e["tracks"], e["path"]))[:_MAX_VIDEOS]


def timeline_rows(store, parts: list[str], paths: list[str]) -> pd.DataFrame:
    """The rows of a few videos (``paths``), read back from the part files: what their timelines are drawn from.

    A second pass over the part files, reading only these videos' rows: memory follows the videos drawn, not
    the collection.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = ["path", "segment", "segment_s", "frame_index", "timestamp_s", "track_id", "status", "emotion", "faces"]
    columns += list(PROB_COLUMNS)
    frames = []
    for part in parts if paths else []:
        names = set(store.read_schema(part).names)
        if "segment" not in names:
            continue
        table = store.read_part(part, [c for c in columns if c in names])
        table = table.filter(pc.is_in(table["path"], value_set=pa.array(paths, pa.string())))
        if table.num_rows:
            frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def timeline_figures(summary: dict[str, Any], relative) -> list[tuple[str, Any]]:
    """(title, figure) per drawn video: the smoothed probabilities of each of its longest person tracks over
    time, and below them the faces per sampled frame, shaded by each segment's dominant emotion."""
    from fer_ray.score.report import EMOTION_COLORS

    rows: pd.DataFrame = summary.get("timeline_rows")
    if rows is None or rows.empty:
        return []
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    by_path: dict[str, list[dict[str, Any]]] = {}
    for t in summary["person_tracks"]:
        by_path.setdefault(t["path"], []).append(t)
    figs = []
    for path, video in rows.groupby("path", sort=False):
        people = sorted(by_path.get(path, []), key=lambda t: -t["frames"])[:_TIMELINE_TRACKS]
        person = {(s, k): t["track_id"] for t in people for s, k in t["segment_tracks"]}
        ok = video[video["status"] == "ok"].sort_values("timestamp_s")
        owner = [person.get((int(s), int(k))) for s, k in zip(ok["segment"], ok["track_id"], strict=True)]
        fig, axes = plt.subplots(len(people) + 1, 1, figsize=(7, 1.4 * len(people) + 1.4), sharex=True, squeeze=False)
        for ax, t in zip(axes[:-1, 0], people, strict=False):
            mine = ok[[o == t["track_id"] for o in owner]]
            for e in EMOTIONS:
                smooth = mine[f"p_{e}"].astype(float).rolling(_SMOOTH, center=True, min_periods=1).mean()
                ax.plot(mine["timestamp_s"], smooth, color=EMOTION_COLORS[e], lw=1.2, label=e)
            ax.set(ylim=(0, 1), ylabel=f"track {t['track_id']}")
        frames = video.dropna(subset=["frame_index"]).groupby("frame_index")
        per_frame = frames.agg(t=("timestamp_s", "first"), faces=("faces", "max")).sort_values("t")
        ax = axes[-1, 0]
        faces = per_frame["faces"].fillna(0)
        ax.step(per_frame["t"], faces, where="post", color="#555555")
        end = float(per_frame["t"].max()) if len(per_frame) else 0.0
        for segment, seg in ok.groupby("segment"):
            start = float(segment) * float(seg["segment_s"].iloc[0])
            span = (start, min(end, start + float(seg["segment_s"].iloc[0])))
            ax.axvspan(*span, color=EMOTION_COLORS[seg["emotion"].mode().iloc[0]], alpha=0.2)
        ax.set(ylim=(0, max(1, faces.max()) + 0.5), ylabel="faces")
        ax.set_xlabel("time (s); shading: each segment's dominant emotion")
        axes[0, 0].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        axes[0, 0].set_title(f"{relative(path)}: probabilities per person track (moving average of {_SMOOTH} samples)")
        figs.append((f"Timeline of {relative(path)}", fig))
    return figs


def write_tracks(store, tracks: list[dict[str, Any]]) -> None:
    """``OUT/tracks/tracks.parquet``: one row per person track (rebuilt every run, like the report)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not tracks:
        return
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(tracks), buf)
    store.write_bytes(TRACKS_FILE, buf.getvalue().to_pybytes())


def videos_html(s: dict[str, Any], relative) -> str:
    """report.html's video section: per video its person tracks (dominant emotion and time span)."""
    head = (
        f"<p>{s['videos_in']:,} videos, {s['video_segments_out']:,} of {s['video_segments_in']:,} segments scored, "
        f"{s['frames_sampled']:,} sampled frames, {s['video_faces']:,} faces in {s['tracks']:,} person tracks "
        "(<code>tracks/tracks.parquet</code>; rows carry <code>segment</code> and <code>track_id</code>).</p>"
    )
    rows = "".join(
        f"<tr><td>{html.escape(relative(v['path']))}</td><td>{v.get('duration_s') or '-'}</td>"
        f"<td>{v['tracks']}</td><td>{html.escape('; '.join(v['top_tracks']) or (v.get('error') or '-'))}</td></tr>"
        for v in s["videos"]
    )
    table = (
        "<table><thead><tr><th>video</th><th>duration (s)</th><th>person tracks</th>"
        f"<th>longest tracks: dominant emotion, time span</th></tr></thead><tbody>{rows}</tbody></table>"
    )
    return head + table


__all__ = [
    "TIMELINE_VIDEOS",
    "TRACKS_FILE",
    "VIDEO_COLUMNS",
    "VideoCounts",
    "is_video_row",
    "timeline_figures",
    "timeline_rows",
    "videos_html",
    "write_tracks",
]
