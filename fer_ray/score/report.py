"""Summaries of a scoring job's output: ``summary.json``, a self-contained ``report.html`` and a terminal table.

The summary is aggregated part file by part file, reading only the small columns, so
the report costs the same memory for ten thousand images as for ten million rows
(apart from one 8-byte hash per image for the exactly-once check). The per-image table
in ``report.html`` is likewise bounded: a heap keeps the ``max_rows`` least confident
images seen so far while the part files stream by; the Parquet rows hold every image.
It holds counts, boxes and scores only, never face pixels.
"""

from __future__ import annotations

import base64
import datetime as dt
import heapq
import html
import io
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from fer_ray.data.sources import S3Settings, is_transient_error
from fer_ray.labels import EMOTIONS
from fer_ray.score.store import REPORT_FILE, SUMMARY_FILE, OutputStore, key_hash

logger = logging.getLogger(__name__)

_COLUMNS = ["path", "size", "mtime", "face_index", "faces", "status", "error", "emotion", "confidence", "model_id"]
_HIST_BINS = 20
_MAX_FOLDERS = 30
_MAX_ERROR_EXAMPLES = 100
REPORT_ROWS = 1000  # images in report.html's per-image table (the least confident first)
TOP_LEVEL = "(top level)"
TRANSIENT_REASON = "transient read error (retried by the next run)"

# Error messages carry per-file detail; these prefixes group them into reasons for the tables.
STATUSES = ("ok", "no_face", "error")
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


def _image_rows(df: pd.DataFrame) -> np.ndarray:
    fi = pd.to_numeric(df["face_index"])
    return (fi.isna() | (fi == 0)).to_numpy()


def _dirnames(paths: pd.Series) -> pd.Series:
    return paths.astype(str).map(lambda p: p.rpartition("/")[0])


def _folders(dir_counts: Counter) -> dict[str, str]:
    """Each directory -> its top-level folder below the deepest directory common to all."""
    parts = {d: d.split("/") for d in dir_counts}
    common: list[str] | None = None
    for p in parts.values():
        if common is None:
            common = list(p)
            continue
        n = 0
        while n < min(len(common), len(p)) and common[n] == p[n]:
            n += 1
        common = common[:n]
    depth = len(common or [])
    return {d: (p[depth] if len(p) > depth else TOP_LEVEL) for d, p in parts.items()}


class LeastConfident:
    """The ``max_rows`` images with faces whose least confident face scores lowest, fed part by part.

    An image's rows all sit in one part file (see :mod:`fer_ray.score.pipeline`), so each part's
    images are complete; only candidates that beat the current worst kept image are formatted.
    """

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


def summarize(
    store: OutputStore,
    listing: pd.DataFrame | None = None,
    run: dict[str, Any] | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Aggregate every part file of ``store``; counts cover the inputs of ``listing`` (default: the last run's).

    ``summary["least_confident"]`` holds report.html's per-image table: the ``max_rows``
    (default :data:`REPORT_ROWS`) least confident images with faces; it is not written to summary.json.
    """
    if listing is None:
        listing = store.read_inputs()
    if run is None:
        run = store.latest_run()
    listed = np.unique(key_hash(listing)) if listing is not None else None

    rows = faces = other_rows = 0
    rows_by_status: Counter = Counter()
    images_by_status: Counter = Counter()
    emotions: Counter = Counter()
    per_dir_emotions: Counter = Counter()
    per_dir_images: Counter = Counter()
    faces_per_image: Counter = Counter()
    reasons: Counter = Counter()
    models: Counter = Counter()
    per_model: dict[str, dict[str, Any]] = {}  # model_id -> images, faces, emotions, confidence sum
    examples: list[dict[str, str]] = []
    hist = np.zeros(_HIST_BINS, dtype=np.int64)
    conf_sum = 0.0
    image_hashes: list[np.ndarray] = []
    table = LeastConfident(REPORT_ROWS if max_rows is None else max_rows)
    parts = store.part_files()
    uncertain = 0
    for part in parts:
        try:
            df = store.read_part(part, [*_COLUMNS, "uncertain"]).to_pandas()
        except pa.ArrowInvalid:  # part files written before rows had the flag
            df = store.read_part(part, _COLUMNS).to_pandas()
        h = key_hash(df)
        if listed is not None:
            keep = np.isin(h, listed)
            other_rows += int((~keep).sum())
            df, h = df[keep], h[keep]
        if df.empty:
            continue
        rows += len(df)
        is_image = _image_rows(df)
        image_hashes.append(h[is_image])
        images = df[is_image]
        status = df["status"].astype(str)
        rows_by_status.update(status.value_counts().to_dict())
        img_status = images["status"].astype(str)
        images_by_status.update(img_status.value_counts().to_dict())
        faces_per_image.update(pd.to_numeric(images["faces"]).fillna(0).astype(int).value_counts().to_dict())
        dirs = _dirnames(images["path"])
        per_dir_images.update(dirs.value_counts().to_dict())
        ok = df[status == "ok"]
        table.add(ok, h[(status == "ok").to_numpy()])
        faces += len(ok)
        if "uncertain" in ok:
            uncertain += int(ok["uncertain"].fillna(False).astype(bool).sum())
        emotions.update(ok["emotion"].value_counts().to_dict())
        ok_dirs = _dirnames(ok["path"])
        per_dir_emotions.update(Counter(zip(ok_dirs, ok["emotion"], strict=True)))
        conf = pd.to_numeric(ok["confidence"]).dropna().to_numpy(dtype=np.float64)
        hist += np.histogram(conf, bins=_HIST_BINS, range=(0.0, 1.0))[0]
        conf_sum += float(conf.sum())
        models.update(df["model_id"].value_counts().to_dict())
        for model, g in df.groupby(df["model_id"].fillna("(none)").astype(str), sort=False):
            m = per_model.setdefault(
                model, {"images": 0, "faces": 0, "emotions": Counter(), "conf_sum": 0.0, "errors": 0}
            )
            g_ok = g[g["status"].astype(str) == "ok"]
            m["images"] += int(_image_rows(g).sum())
            m["faces"] += len(g_ok)
            m["emotions"].update(g_ok["emotion"].value_counts().to_dict())
            m["conf_sum"] += float(pd.to_numeric(g_ok["confidence"]).sum())
            m["errors"] += int((g["status"].astype(str) == "error").sum())
        errs = df[status == "error"]
        reasons.update(errs["error"].map(error_reason).value_counts().to_dict())
        for path, err in zip(errs["path"], errs["error"], strict=True):
            if len(examples) < _MAX_ERROR_EXAMPLES:
                examples.append({"path": str(path), "error": str(err), "reason": error_reason(err)})

    hashes = np.concatenate(image_hashes) if image_hashes else np.zeros(0, dtype=np.uint64)
    uniq, counts = np.unique(hashes, return_counts=True)
    duplicates = int((counts > 1).sum())
    images_in = int(len(listed)) if listed is not None else int(len(uniq))
    image_rows_out = int(len(uniq))

    folder_of = _folders(per_dir_images)
    by_folder_images: Counter = Counter()
    for d, n in per_dir_images.items():
        by_folder_images[folder_of[d]] += n
    top_folders = [f for f, _ in by_folder_images.most_common(_MAX_FOLDERS)]
    by_folder: dict[str, dict[str, int]] = {f: dict.fromkeys(EMOTIONS, 0) for f in top_folders}
    for (d, emotion), n in per_dir_emotions.items():
        f = folder_of.get(d, TOP_LEVEL)
        if f in by_folder:
            by_folder[f][emotion] = by_folder[f].get(emotion, 0) + int(n)
    by_folder = {f: counts for f, counts in by_folder.items() if sum(counts.values())}  # folders with faces

    run = run or {}
    summary: dict[str, Any] = {
        "out": store.uri,
        "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": bool(image_rows_out == images_in and duplicates == 0),
        "images_in": images_in,
        "image_rows_out": image_rows_out,
        "duplicate_images": duplicates,
        "rows": rows,
        "faces": faces,
        "images_by_status": {s: int(images_by_status.get(s, 0)) for s in ("ok", "no_face", "error")},
        "rows_by_status": {s: int(rows_by_status.get(s, 0)) for s in ("ok", "no_face", "error")},
        "emotions": {e: int(emotions.get(e, 0)) for e in EMOTIONS},
        # faces whose top probability is below the model's calibrated cut-off (artifact.json "uncertain_below")
        "uncertain_faces": uncertain,
        "emotions_by_folder": by_folder,
        "images_by_folder": {f: int(by_folder_images[f]) for f in top_folders},
        "mean_confidence": round(conf_sum / faces, 4) if faces else None,
        "confidence_histogram": {
            "edges": [round(float(e), 3) for e in np.linspace(0, 1, _HIST_BINS + 1)],
            "counts": hist.tolist(),
        },
        "faces_per_image": {str(k): int(v) for k, v in sorted(faces_per_image.items())},
        "errors_by_reason": dict(reasons.most_common()),
        "error_examples": examples,
        "models": dict(models),
        # Per model (model_id names the engine too): only when OUT mixes them (--allow-mixed-models).
        "by_model": {
            model: {
                "images": m["images"],
                "faces": m["faces"],
                "error_rows": m["errors"],
                "emotions": {e: int(m["emotions"].get(e, 0)) for e in EMOTIONS},
                "mean_confidence": round(m["conf_sum"] / m["faces"], 4) if m["faces"] else None,
            }
            for model, m in sorted(per_model.items())
        }
        if len(per_model) > 1
        else {},
        "model_id": next(iter(models)) if len(models) == 1 else sorted(models) or run.get("model_id"),
        "part_files": len(parts),
        "rows_not_in_inputs": other_rows,
        "elapsed_s": run.get("elapsed_s"),
        "images_per_s": run.get("images_per_s"),
        "last_run": run,
        "least_confident": {"max_rows": table.max_rows, "images_with_faces": table.images, "rows": table.rows()},
    }
    if not summary["complete"]:
        logger.warning(
            "report incomplete: %d inputs, %d with rows, %d scored more than once",
            images_in,
            image_rows_out,
            duplicates,
        )
    return summary


# -- rendering ----------------------------------------------------------------------------------
def throughput_line(run: dict[str, Any]) -> str:
    """What a run did and how fast, with one images/s figure and what it measures.

    The figure is the scoring pipeline's (listing done to the last row written: decode, detect,
    infer, write), which is what more CPUs or actors speed up; the job's wall time also counts
    loading the model, starting or joining Ray, listing the inputs and writing the report.
    """
    scored, skipped = run.get("images_scored", 0), run.get("images_skipped", 0)
    line = f"{scored:,} scored, {skipped:,} skipped (already in OUT)"
    pipeline_s, elapsed = run.get("pipeline_s"), run.get("elapsed_s", 0)
    if scored and pipeline_s:
        line += (
            f"; {scored / pipeline_s:,.2f} images/s through the pipeline "
            f"(decode, detect, infer, write: {pipeline_s:,.1f} s)"
        )
    line += f"; job wall time {elapsed:,.1f} s (incl. model load, Ray start-up, listing, report)"
    if scored and scored < SMALL_RUN_IMAGES:
        # The demo's 17 photos read 1.2 images/s beside the README's 66 photos/s: say why, where it shows.
        line += (
            "; a small run: starting the pipeline's actors takes most of it, so its rate says little "
            "(collections of thousands run at tens of photos/s per core: README, Benchmarks)"
        )
    return line


# Runs of fewer images than this are dominated by fixed start-up costs; the summary says so.
SMALL_RUN_IMAGES = 200


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(summary: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figs: list[tuple[str, str]] = []
    counts = [summary["emotions"][e] for e in EMOTIONS]
    total = max(1, sum(counts))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.bar(range(len(EMOTIONS)), counts, color="tab:blue", tick_label=list(EMOTIONS))
    for b, c in zip(bars, counts, strict=True):
        ax.annotate(f"{100 * c / total:.0f}%", (b.get_x() + b.get_width() / 2, c), ha="center", va="bottom", size=8)
    ax.set_ylabel("faces")
    ax.set_title(f"Emotion of {summary['faces']:,} faces (top class)")
    figs.append(("Emotion distribution", _png(fig)))

    by_folder = summary["emotions_by_folder"]
    if by_folder:
        names = list(by_folder)[::-1]  # largest folder on top
        totals = np.array([max(1, sum(by_folder[f].values())) for f in names], dtype=float)
        labels = [f"{f} ({int(sum(by_folder[f].values())):,})" for f in names]
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.35 * len(names)))
        left = np.zeros(len(names))
        cmap = plt.get_cmap("tab10")
        for k, e in enumerate(EMOTIONS):
            share = np.array([by_folder[f].get(e, 0) for f in names], dtype=float) / totals
            ax.barh(labels, share, left=left, color=cmap(k), label=e)
            left += share
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the folder's faces (faces in brackets)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.set_title("Emotion distribution per top-level folder")
        figs.append(("Per folder", _png(fig)))

    ch = summary["confidence_histogram"]
    edges = np.array(ch["edges"])
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(edges[:-1], ch["counts"], width=np.diff(edges), align="edge", color="tab:green", edgecolor="white")
    ax.set_xlabel("confidence (probability of the top class)")
    ax.set_ylabel("faces")
    ax.set_title("Confidence")
    figs.append(("Confidence histogram", _png(fig)))

    fpi = {int(k): v for k, v in summary["faces_per_image"].items()}
    if fpi:
        xs = list(range(0, max(fpi) + 1))
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.bar(xs, [fpi.get(x, 0) for x in xs], color="tab:orange")
        ax.set_xticks(xs)
        ax.set_xlabel("faces found in the image (0 = no face or error)")
        ax.set_ylabel("images")
        ax.set_title("Faces per image")
        figs.append(("Faces per image", _png(fig)))
    return figs


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# Click a header to sort by it (again: the other way). Numbers sort as numbers; no external script.
_SORT_JS = """<script>
document.querySelectorAll("table.sortable th").forEach((th, i) => th.addEventListener("click", () => {
  const body = th.closest("table").tBodies[0], up = th.dataset.dir !== "up", num = th.dataset.type === "num";
  th.dataset.dir = up ? "up" : "down";
  const key = r => num ? parseFloat(r.cells[i].textContent.replace(/,/g, "")) : r.cells[i].textContent.toLowerCase();
  [...body.rows].sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1))
    .forEach(r => body.appendChild(r));
}));
</script>"""


def _image_table(t: dict[str, Any]) -> str:
    """report.html's per-image table: at most ``max_rows`` images, the least confident first, sortable."""
    rows, total = t["rows"], t["images_with_faces"]
    note = (
        f"<p>The {len(rows):,} least confident of {total:,} images with faces (an image's confidence is that of "
        f"its least confident face), least confident first; click a header to sort. The table stops at "
        f"{t['max_rows']:,} images so that the report stays the same size for any collection: "
        "<code>rows/*.parquet</code> holds every image and face, with all seven probabilities and the box.</p>"
    )
    if not rows:
        return note
    header = (("path", "text"), ("faces", "num"), ("emotion and confidence per face", "text"), ("confidence", "num"))
    head = "".join(f"<th data-type='{k}'>{html.escape(h)}</th>" for h, k in header)
    body = "".join(
        f"<tr><td>{html.escape(r['path'])}</td><td>{r['faces']}</td><td>{html.escape(r['emotions'])}</td>"
        f"<td>{r['confidence']:.4f}</td></tr>"
        for r in rows
    )
    return f"{note}<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{_SORT_JS}"


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained HTML page (plots embedded as base64 PNG); no face pixels, no external resources."""
    s = summary
    run = s.get("last_run") or {}
    overview = [
        ("output", s["out"]),
        ("model", s["model_id"]),
        ("images in / image rows out", f"{s['images_in']:,} / {s['image_rows_out']:,}"),
        ("complete (every input exactly once)", "yes" if s["complete"] else "NO"),
        ("faces", f"{s['faces']:,}"),
        (
            "uncertain faces (below the model's calibrated confidence cut-off: read as a guess)",
            f"{s.get('uncertain_faces', 0):,} ({100 * s.get('uncertain_faces', 0) / max(1, s['faces']):.0f}%)",
        ),
        ("images: ok / no face / error", " / ".join(f"{s['images_by_status'][k]:,}" for k in STATUSES)),
        ("mean confidence", s["mean_confidence"] if s["mean_confidence"] is not None else "-"),
        ("last run", f"{run.get('run_id', '-')}: {throughput_line(run)}" if run else "-"),
        ("rows in OUT not among these inputs", f"{s['rows_not_in_inputs']:,}"),
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fer_ray scoring report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;"
        "text-align:left;font-size:.9em}th{background:#f3f3f3}table.sortable th{cursor:pointer}"
        "img{max-width:100%}</style></head><body>",
        "<h1>Facial emotion scoring report</h1>",
        "<p>Boxes and scores only: this report holds no face pixels. "
        "Rows: <code>rows/*.parquet</code> (one per face, one per image without a face or with an error).</p>",
        _table(overview, ("", "")),
        "<h2>Emotions</h2>",
        _table([(e, f"{n:,}") for e, n in s["emotions"].items()], ("emotion", "faces")),
    ]
    for title, png in _figures(s):
        parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    if s.get("by_model"):
        parts.append(
            "<h2>By model</h2><p>This output mixes models (scored with --allow-mixed-models); "
            "the totals above add them up, here they are apart.</p>"
        )
        rows = [
            (model, f"{m['images']:,}", f"{m['faces']:,}", m["mean_confidence"] if m["faces"] else "-")
            + tuple(f"{m['emotions'][e]:,}" for e in EMOTIONS)
            for model, m in s["by_model"].items()
        ]
        parts.append(_table(rows, ("model", "images", "faces", "mean confidence", *EMOTIONS)))
    if (s.get("least_confident") or {}).get("max_rows"):
        parts.append("<h2>Images, least confident first</h2>")
        parts.append(_image_table(s["least_confident"]))
    parts.append("<h2>Errors</h2>")
    if s["errors_by_reason"]:
        parts.append(_table(list(s["errors_by_reason"].items()), ("reason", "images")))
        shown = s["error_examples"]
        parts.append(f"<p>First {len(shown)} error rows:</p>")
        parts.append(_table([(e["path"], e["error"]) for e in shown], ("path", "error")))
    else:
        parts.append("<p>No errors.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def format_table(summary: dict[str, Any]) -> str:
    """A short plain-text summary for the terminal."""
    s = summary
    faces = max(1, s["faces"])
    emo = "  ".join(f"{e} {n} ({100 * n / faces:.0f}%)" for e, n in s["emotions"].items() if n)
    st = s["images_by_status"]
    lines = [
        f"{'output':<10} {s['out']}",
        f"{'model':<10} {s['model_id']}",
        f"{'images':<10} {s['images_in']:,} in, {s['image_rows_out']:,} with rows out  "
        f"complete: {'yes' if s['complete'] else 'NO'}",
        f"{'status':<10} ok {st['ok']:,}  no_face {st['no_face']:,}  error {st['error']:,}",
        f"{'faces':<10} {s['faces']:,}",
        f"{'emotions':<10} {emo or '-'}",
        *(
            [
                f"{'uncertain':<10} {s['uncertain_faces']:,} of {s['faces']:,} faces "
                f"({100 * s['uncertain_faces'] / faces:.0f}%) are below the model's calibrated confidence cut-off: "
                "read their emotion as a guess"
            ]
            if s.get("uncertain_faces")
            else []
        ),
    ]
    if s["errors_by_reason"]:
        lines.append(f"{'errors':<10} " + "  ".join(f"{r}: {n}" for r, n in s["errors_by_reason"].items()))
    for model, m in (s.get("by_model") or {}).items():
        emo = "  ".join(f"{e} {n}" for e, n in m["emotions"].items() if n)
        lines.append(f"{'by model':<10} {model}: {m['images']:,} images, {m['faces']:,} faces  {emo or '-'}")
    run = s.get("last_run") or {}
    if run:
        lines.append(f"{'this run':<10} {throughput_line(run)}")
    return "\n".join(lines)


def write_report(
    out: str | OutputStore,
    settings: S3Settings | None = None,
    listing: pd.DataFrame | None = None,
    run: dict[str, Any] | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """(Re)build ``summary.json`` and ``report.html`` in ``out`` from its part files; returns the summary.

    ``max_rows``: images in report.html's per-image table (default :data:`REPORT_ROWS`, 0: none).
    The table is in the returned summary (``least_confident``) but not in summary.json.
    """
    store = out if isinstance(out, OutputStore) else OutputStore(out, settings)
    if not store.part_files() and store.read_inputs() is None:
        raise FileNotFoundError(
            f"{store.uri} holds no fer_ray scoring output (no rows/part-*.parquet); "
            "run `python jobs/score.py INPUT... --out OUT` first"
        )
    summary = summarize(store, listing, run, max_rows)
    store.write_json(SUMMARY_FILE, {k: v for k, v in summary.items() if k != "least_confident"})
    store.write_bytes(REPORT_FILE, render_html(summary).encode())
    logger.info("wrote %s and %s", store.uri_of(SUMMARY_FILE), store.uri_of(REPORT_FILE))
    return summary
