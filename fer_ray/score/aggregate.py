"""What a scoring output adds up to: the numbers behind ``summary.json``, report.html and the terminal table.

Each part file is counted on its own (small columns only) and the counts are added up, so memory grows only
by one 8-byte hash per image (the exactly-once check); the per-image table keeps the ``max_rows`` least
confident images seen so far.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.data.fetch import is_transient_error
from fer_ray.labels import EMOTIONS
from fer_ray.score.config import REPORT_ROWS
from fer_ray.score.schema import STATUSES
from fer_ray.score.store import OutputStore, key_hash
from fer_ray.video.report import TIMELINE_VIDEOS, TRACK_COLUMNS, VideoCounts, is_video_row, timeline_rows

logger = logging.getLogger(__name__)

_COLUMNS = ["path", "size", "mtime", "face_index", "faces", "status", "error", "emotion", "confidence", "model_id"]
_HIST_BINS = 20
_MAX_FOLDERS = 30
_MAX_ERROR_EXAMPLES = 100
TOP_LEVEL = "(top level)"
TRANSIENT_REASON = "transient read error (retried by the next run)"

# Error messages carry per-file detail; these prefixes group them into reasons for the tables.
_REASONS = (
    ("empty file", "empty file (0 bytes)"),
    ("not a recognised image format", "not an image / unsupported format"),
    ("corrupt or truncated", "corrupt or truncated image"),
    ("decompression bomb", "too many pixels (decompression bomb)"),
    ("pixels, over the limit", "too many pixels (decompression bomb)"),
    ("bytes, over the limit", "file too large (max_bytes)"),
    ("not found", "file not found"),
    ("permission denied", "permission denied"),
    ("S3 error", "S3 read error"),
    ("cannot read", "read error"),
    ("cannot list directory", "unreadable directory"),
    ("is a directory", "is a directory"),
    ("cannot process image", "processing failed"),
)


def error_reason(message: str | None) -> str:
    """Group an ``error`` message into a short reason (the file-specific detail stripped)."""
    msg = (message or "").strip()
    if is_transient_error(msg):
        return TRANSIENT_REASON
    for prefix, reason in _REASONS:
        if prefix in msg:
            return reason
    return msg.split(":")[0][:80] or "unknown"


def _dirnames(paths: pd.Series) -> pd.Series:
    return paths.astype(str).map(lambda p: p.rpartition("/")[0])


@dataclass
class Counts:
    """What the summary counts, added up part file by part file (:func:`count_part`)."""

    rows: int = 0
    faces: int = 0
    uncertain: int = 0  # faces below the model's calibrated cut-off
    other_rows: int = 0  # rows of inputs not listed by the run being summarized
    conf_sum: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(_HIST_BINS, dtype=np.int64))
    rows_by_status: Counter = field(default_factory=Counter)
    images_by_status: Counter = field(default_factory=Counter)
    emotions: Counter = field(default_factory=Counter)
    per_dir_emotions: Counter = field(default_factory=Counter)  # (directory, emotion) -> faces
    per_dir_images: Counter = field(default_factory=Counter)
    faces_per_image: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    models: Counter = field(default_factory=Counter)  # model_id -> rows
    # (model, "rows" | "images" | "faces" | "error_rows" | "conf_sum" | an emotion) -> count, for a mixed OUT
    per_model: Counter = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)  # the first error rows
    image_hashes: list[np.ndarray] = field(default_factory=list)  # one key hash per image row


def count_part(c: Counts, df: pd.DataFrame, h: np.ndarray) -> None:
    """Add one part file's rows ``df`` (their key hashes ``h``) to ``c``."""
    c.rows += len(df)
    face_index = pd.to_numeric(df["face_index"])
    is_image = (face_index.isna() | (face_index == 0)).to_numpy()  # an image's first (or only) row
    c.image_hashes.append(h[is_image])
    images = df[is_image]
    status = df["status"].astype(str)
    c.rows_by_status.update(status.value_counts().to_dict())
    c.images_by_status.update(images["status"].astype(str).value_counts().to_dict())
    c.faces_per_image.update(pd.to_numeric(images["faces"]).fillna(0).astype(int).value_counts().to_dict())
    c.per_dir_images.update(_dirnames(images["path"]).value_counts().to_dict())
    ok = df[status == "ok"]
    c.faces += len(ok)
    if "uncertain" in ok:
        c.uncertain += int(ok["uncertain"].fillna(False).astype(bool).sum())
    c.emotions.update(ok["emotion"].value_counts().to_dict())
    c.per_dir_emotions.update(Counter(zip(_dirnames(ok["path"]), ok["emotion"], strict=True)))
    conf = pd.to_numeric(ok["confidence"]).dropna().to_numpy(dtype=np.float64)
    c.hist += np.histogram(conf, bins=_HIST_BINS, range=(0.0, 1.0))[0]
    c.conf_sum += float(conf.sum())
    c.models.update(df["model_id"].value_counts().to_dict())
    model = df["model_id"].fillna("(none)").astype(str)
    ok_model = model[status == "ok"]
    groups = {"rows": model, "images": model[is_image], "faces": ok_model, "error_rows": model[status == "error"]}
    for name, m in groups.items():
        c.per_model.update({(k, name): n for k, n in m.value_counts().items()})
    conf_sums = pd.to_numeric(ok["confidence"]).groupby(ok_model).sum()
    c.per_model.update({(k, "conf_sum"): v for k, v in conf_sums.items()})
    c.per_model.update(Counter(zip(ok_model, ok["emotion"], strict=True)))
    errs = df[status == "error"]
    c.reasons.update(errs["error"].map(error_reason).value_counts().to_dict())
    for path, err in list(zip(errs["path"], errs["error"], strict=True))[: _MAX_ERROR_EXAMPLES - len(c.examples)]:
        c.examples.append({"path": str(path), "error": str(err), "reason": error_reason(err)})


class LeastConfident:
    """The ``max_rows`` images with faces whose least confident face scores lowest, fed part by part (an image's
    rows share a part file); only candidates that beat the worst kept image are formatted."""

    def __init__(self, max_rows: int):
        self.max_rows = max(0, int(max_rows))
        self.images = 0  # images with faces seen
        self._heap: list[tuple[float, str, int, dict[str, Any]]] = []  # (-confidence, path, seq, row)
        self._seq = 0

    def add(self, ok: pd.DataFrame, keys: np.ndarray) -> None:
        """``ok``: the ``status == "ok"`` rows (one per face) of one part file; ``keys``: their image keys."""
        if ok.empty:
            return
        conf = pd.to_numeric(ok["confidence"]).to_numpy(dtype=np.float64)
        per_image = pd.Series(conf).groupby(keys, sort=False).min()
        self.images += len(per_image)
        if not self.max_rows:
            return
        if len(self._heap) >= self.max_rows:
            per_image = per_image[per_image < -self._heap[0][0]]
        per_image = per_image.nsmallest(self.max_rows)
        if per_image.empty:
            return
        rows = ok.assign(_key=keys, _conf=conf)
        rows = rows[rows["_key"].isin(per_image.index)].sort_values(["_key", "face_index"])
        for key, g in rows.groupby("_key", sort=False):
            row = {
                "path": str(g["path"].iloc[0]),
                "faces": int(pd.to_numeric(g["faces"]).max()),
                "emotions": ", ".join(f"{e} {c:.2f}" for e, c in zip(g["emotion"], g["_conf"], strict=True)),
                "confidence": round(float(per_image[key]), 4),
            }
            self._seq += 1
            item = (-row["confidence"], row["path"], self._seq, row)  # the most confident kept is on top
            if len(self._heap) < self.max_rows:
                heapq.heappush(self._heap, item)
            elif item > self._heap[0]:
                heapq.heapreplace(self._heap, item)

    def rows(self) -> list[dict[str, Any]]:
        """The kept images, least confident first (ties by path)."""
        return [t[3] for t in sorted(self._heap, key=lambda t: (-t[0], t[1], t[2]))]


def _read_part(store: OutputStore, part: str) -> pd.DataFrame:
    names = set(store.read_schema(part).names)  # part files written before rows had the flag or video columns
    return store.read_part(part, [c for c in [*_COLUMNS, "uncertain", *TRACK_COLUMNS] if c in names]).to_pandas()


def summarize(
    store: OutputStore,
    listing: pd.DataFrame | None = None,
    run: dict[str, Any] | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Aggregate every part file of ``store``; counts cover the inputs of ``listing`` (default: the last run's).
    Video rows are counted apart (:class:`~fer_ray.video.report.VideoCounts`), their tracks joined as the run
    that scored them says (``config.json``).

    :data:`NOT_IN_SUMMARY_JSON`: ``least_confident`` (report.html's per-image table, ``max_rows`` images)
    and ``input_root`` (the deepest directory holding every image, which the report shows paths under).
    """
    if listing is None:
        listing = store.read_inputs()
    if run is None:
        run = store.latest_run() or {}
    listed = video_listing = None
    if listing is not None:
        listed, in_video = key_hash(listing), is_video_row(listing)
        video_listing = listing[in_video]

    c = Counts()
    videos = VideoCounts()
    table = LeastConfident(REPORT_ROWS if max_rows is None else max_rows)
    parts = store.part_files()
    for part in parts:
        df = _read_part(store, part)
        h = key_hash(df)
        if listed is not None:
            keep = np.isin(h, listed)
            c.other_rows += int((~keep).sum())
            df, h = df[keep], h[keep]
        video_rows = is_video_row(df)
        videos.add(df[video_rows], h[video_rows])
        df, h = df[~video_rows], h[~video_rows]
        if len(df):
            count_part(c, df, h)
        ok = (df["status"].astype(str) == "ok").to_numpy()
        table.add(df[ok], h[ok])

    hashes = np.concatenate(c.image_hashes) if c.image_hashes else np.zeros(0, dtype=np.uint64)
    uniq, counts = np.unique(hashes, return_counts=True)
    duplicates = int((counts > 1).sum())
    images_in = int(len(np.unique(listed[~in_video]))) if listed is not None else int(len(uniq))
    image_rows_out = int(len(uniq))

    video_summary, tracks = videos.summary(video_listing, store.video_config())
    has_videos = bool(video_summary["video_segments_in"] or video_summary["video_rows"])
    videos_complete = (
        video_summary["video_segments_out"] == video_summary["video_segments_in"]
        and not video_summary["duplicate_segments"]
    )
    dirs = list(c.per_dir_images) or [v["path"].rpartition("/")[0] for v in video_summary["videos"]]
    common = os.path.commonprefix([d.split("/") for d in dirs]) or []  # the input root's parts
    # each directory -> its top-level folder: the first part below the input root
    folder_of = {d: (d.split("/")[len(common) :] or [TOP_LEVEL])[0] for d in c.per_dir_images}
    by_folder_images: Counter = Counter()
    for d, n in c.per_dir_images.items():
        by_folder_images[folder_of[d]] += n
    top_folders = [f for f, _ in by_folder_images.most_common(_MAX_FOLDERS)]
    by_folder: dict[str, dict[str, int]] = {f: dict.fromkeys(EMOTIONS, 0) for f in top_folders}
    for (d, emotion), n in c.per_dir_emotions.items():
        f = folder_of.get(d, TOP_LEVEL)
        if f in by_folder:
            by_folder[f][emotion] = by_folder[f].get(emotion, 0) + int(n)
    by_folder = {f: counts for f, counts in by_folder.items() if sum(counts.values())}  # folders with faces

    pm = c.per_model
    models = sorted({m for m, _ in pm})
    summary: dict[str, Any] = {
        "out": store.uri,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": bool(image_rows_out == images_in and duplicates == 0 and videos_complete),
        "images_in": images_in,
        "image_rows_out": image_rows_out,
        "duplicate_images": duplicates,
        "rows": c.rows,
        "faces": c.faces,
        "images_by_status": {s: int(c.images_by_status.get(s, 0)) for s in STATUSES},
        "rows_by_status": {s: int(c.rows_by_status.get(s, 0)) for s in STATUSES},
        "emotions": {e: int(c.emotions.get(e, 0)) for e in EMOTIONS},
        # faces whose top probability is below the model's calibrated cut-off (artifact.json "uncertain_below")
        "uncertain_faces": c.uncertain,
        "emotions_by_folder": by_folder,
        "images_by_folder": {f: int(by_folder_images[f]) for f in top_folders},
        "mean_confidence": round(c.conf_sum / c.faces, 4) if c.faces else None,
        "confidence_histogram": {
            "edges": [round(float(e), 3) for e in np.linspace(0, 1, _HIST_BINS + 1)],
            "counts": c.hist.tolist(),
        },
        "faces_per_image": {str(k): int(v) for k, v in sorted(c.faces_per_image.items())},
        "errors_by_reason": dict(c.reasons.most_common()),
        "error_examples": c.examples,
        "models": dict(c.models),
        # Per model (model_id names the engine too): only when OUT mixes them (--allow-mixed-models).
        "by_model": {
            m: {
                "images": int(pm[m, "images"]),
                "faces": int(pm[m, "faces"]),
                "error_rows": int(pm[m, "error_rows"]),
                "emotions": {e: int(pm[m, e]) for e in EMOTIONS},
                "mean_confidence": round(pm[m, "conf_sum"] / pm[m, "faces"], 4) if pm[m, "faces"] else None,
            }
            for m in models
        }
        if len(models) > 1
        else {},
        "model_id": next(iter(c.models)) if len(c.models) == 1 else sorted(c.models) or run.get("model_id"),
        "part_files": len(parts),
        "rows_not_in_inputs": c.other_rows,
        "elapsed_s": run.get("elapsed_s"),
        "images_per_s": run.get("images_per_s"),
        "last_run": run,
        "least_confident": {"max_rows": table.max_rows, "images_with_faces": table.images, "rows": table.rows()},
        "input_root": "/".join(common),
        **(video_summary if has_videos else {}),
        "person_tracks": tracks,
        "timeline_rows": timeline_rows(
            store, parts, [v["path"] for v in video_summary["videos"] if v["tracks"]][:TIMELINE_VIDEOS]
        ),
    }
    if not summary["complete"]:
        logger.warning(
            "report incomplete: %d inputs, %d with rows, %d scored more than once",
            images_in,
            image_rows_out,
            duplicates,
        )
    return summary


# Entries of the summary that report.html and the terminal use but summary.json leaves out.
NOT_IN_SUMMARY_JSON = ("least_confident", "input_root", "person_tracks", "timeline_rows")
