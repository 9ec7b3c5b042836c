"""The report of a scoring output: ``report.html``, ``summary.json`` and a terminal table.

Both open with what an analyst asks first (what was scored, the emotions found, how many faces are guesses,
how accurate the model is per emotion) and keep what an engineer needs (engine, ids, throughput) at the end.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.labels import EMOTIONS
from fer_ray.score.aggregate import NOT_IN_SUMMARY_JSON, summarize
from fer_ray.score.schema import STATUSES
from fer_ray.score.store import REPORT_FILE, SUMMARY_FILE, OutputStore
from fer_ray.video.report import timeline_figures, videos_html, write_tracks

logger = logging.getLogger(__name__)

# Runs of fewer images than this are dominated by fixed start-up costs; the summary says so.
SMALL_RUN_IMAGES = 200
ACCURACY_CAUTION = (
    "Accuracy measured on FER2013 PrivateTest (small grey faces from web searches); "
    "photos from elsewhere read worse, so take these figures as an upper bound."
)
_UNCERTAIN = "below the model's calibrated confidence cut-off"
# One colour per emotion in every chart and table: a reader who learnt that sad is blue must not misread another.
EMOTION_COLORS = {
    "angry": "#d62728",
    "disgust": "#2ca02c",
    "fear": "#9467bd",
    "happy": "#f2b701",
    "sad": "#1f77b4",
    "surprise": "#ff7f0e",
    "neutral": "#7f7f7f",
}
_OTHER = "#555555"  # charts of something other than emotions (confidence, faces per image)


def _img(title: str, fig) -> str:
    """``fig`` as an ``<img>`` holding its PNG (base64); the figure is closed (a report draws many)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"<img alt='{html.escape(title)}' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def figures(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    """(title, matplotlib figure) for each chart of the report, in page order."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    figs: list[tuple[str, Any]] = []
    colors = [EMOTION_COLORS[e] for e in EMOTIONS]
    counts = [summary["emotions"][e] for e in EMOTIONS]
    total = max(1, sum(counts))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bars = ax.bar(range(len(EMOTIONS)), counts, color=colors, tick_label=list(EMOTIONS))
    for b, c in zip(bars, counts, strict=True):
        ax.annotate(f"{100 * c / total:.0f}%", (b.get_x() + b.get_width() / 2, c), ha="center", va="bottom", size=8)
    ax.set(ylabel="faces", title=f"Emotion of {summary['faces']:,} faces (top class)")
    figs.append(("Emotion distribution", fig))

    by_folder = summary["emotions_by_folder"]
    if by_folder:
        names = list(by_folder)[::-1]  # largest folder on top
        totals = np.array([max(1, sum(by_folder[f].values())) for f in names], dtype=float)
        labels = [f"{f} ({int(sum(by_folder[f].values())):,})" for f in names]
        fig, ax = plt.subplots(figsize=(7, 0.8 + 0.35 * len(names)))
        left = np.zeros(len(names))
        for e in EMOTIONS:
            share = np.array([by_folder[f].get(e, 0) for f in names], dtype=float) / totals
            ax.barh(labels, share, left=left, color=EMOTION_COLORS[e], label=e)
            left += share
        ax.set(xlim=(0, 1), xlabel="share of the folder's faces (faces in brackets)")
        ax.set_title("Emotion distribution per top-level folder")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figs.append(("Per folder", fig))

    ch = summary["confidence_histogram"]
    edges = np.array(ch["edges"])
    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.bar(edges[:-1], ch["counts"], width=np.diff(edges), align="edge", color=_OTHER, edgecolor="white")
    ax.set(xlabel="confidence (probability of the top class)", ylabel="faces", title="Confidence")
    figs.append(("Confidence histogram", fig))

    fpi = {int(k): v for k, v in summary["faces_per_image"].items()}
    if fpi:
        xs = list(range(0, max(fpi) + 1))
        fig, ax = plt.subplots(figsize=(7, 2.8))
        ax.bar(xs, [fpi.get(x, 0) for x in xs], color=_OTHER)
        ax.set(xticks=xs, xlabel="faces found in the image (0 = no face or error)", ylabel="images")
        ax.set_title("Faces per image")
        figs.append(("Faces per image", fig))
    return figs


def throughput_line(run: dict[str, Any]) -> str:
    """What a run did and how fast: the pipeline's images/s (what more CPUs or actors speed up), then wall time."""
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
        # A small run's rate sits far below the README's, which would look like a fault without a word.
        line += (
            "; a small run: starting the pipeline's actors takes most of it, so its rate says little "
            "(collections of thousands run at tens of photos/s per core: docs/BENCHMARKS.md)"
        )
    return line


def relative(path: str, root: str) -> str:
    """``path`` under the input root, as the analyst's own folders name it (the full path elsewhere)."""
    return path[len(root) + 1 :] if root and path.startswith(root + "/") else path


def _pct(n: int, total: int) -> str:
    return f"{100 * n / max(1, total):.0f}%"


def headline(s: dict[str, Any]) -> list[str]:
    """The report's opening, in plain sentences: what was scored, the dominant emotions, the guesses."""
    st, faces = s["images_by_status"], s["faces"]
    root = s.get("input_root") or "several locations"
    lines = [
        f"Scored {s['images_in']:,} images from {root}: {faces:,} faces found in {st['ok']:,} of them"
        + (f"; {st['no_face']:,} without a face" if st["no_face"] else "")
        + (f"; {st['error']:,} could not be read (see Errors)" if st["error"] else "")
        + "."
    ]
    top = sorted(((n, e) for e, n in s["emotions"].items() if n), reverse=True)[:3]
    if top:
        named = [f"{e} ({_pct(n, faces)})" for n, e in top]
        lines.append(
            "Most faces read as " + (", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]) + "."
        )
    uncertain = s.get("uncertain_faces", 0)
    if faces:
        lines.append(
            f"{uncertain:,} of {faces:,} faces ({_pct(uncertain, faces)}) are uncertain ({_UNCERTAIN}): "
            "read their emotion as a guess."
        )
    if not s["complete"]:
        lines.append(
            f"INCOMPLETE: {s['image_rows_out']:,} of {s['images_in']:,} images have rows"
            + (f", {s['duplicate_images']:,} more than once" if s["duplicate_images"] else "")
            + "; rerun the same command to finish."
        )
    return lines


def _accuracy(s: dict[str, Any]) -> dict[str, Any] | None:
    return (s.get("last_run") or {}).get("model_accuracy")


def _emotions_html(s: dict[str, Any]) -> str:
    """The emotions found here beside the model's test accuracy for each (when its artifact records it)."""
    acc = _accuracy(s)
    faces = s["faces"]
    head = ["emotion", "faces here", "share here"]
    if acc:
        head += ["found (recall)", "right (precision)"]
    rows = "".join(
        f"<tr><td><span class='swatch' style='background:{EMOTION_COLORS[e]}'></span>{e}</td>"
        f"<td>{s['emotions'][e]:,}</td><td>{_pct(s['emotions'][e], faces)}</td>"
        + (f"<td>{_fmt_share(acc['recall'].get(e))}</td><td>{_fmt_share(acc['precision'].get(e))}</td>" if acc else "")
        + "</tr>"
        for e in EMOTIONS
    )
    table = (
        f"<table class='emotions'><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    if not acc:
        return table + (
            "<p>This model's <code>artifact.json</code> records no per-emotion test accuracy "
            "(<code>metrics.test</code>), so none is shown: <code>python jobs/evaluate.py --model MODEL "
            "--out DIR</code> measures it.</p>"
        )
    how = ", ".join(x for x in (acc.get("engine"), "flip TTA" if acc.get("flip_tta") else None) if x)
    overall = ""
    if acc.get("accuracy") is not None:
        overall = (
            f"Overall {100 * acc['accuracy']:.1f}% of {acc.get('n', 0):,} {html.escape(acc.get('split', 'test'))} "
            f"faces right{f' ({html.escape(how)})' if how else ''}. "
        )
    return (
        f"<p class='caution'>{html.escape(ACCURACY_CAUTION)}</p><p>{overall}Per emotion: <i>found</i> is the "
        "share of test faces showing that emotion that the model names so; <i>right</i> is the share of test "
        f"faces it names so that show it.</p>{table}"
    )


def _fmt_share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...], types: tuple[str, ...] = ()) -> str:
    """``types``: ``num`` or ``text`` per column, to sort the table by a click on a header (:data:`_SORT_JS`)."""
    attrs = [f" data-type='{t}'" for t in types] or [""] * len(header)
    head = "".join(f"<th{a}>{html.escape(str(h))}</th>" for h, a in zip(header, attrs, strict=True))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    sortable = " class='sortable'" if types else ""
    return f"<table{sortable}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def _image_table(t: dict[str, Any], root: str) -> str:
    """report.html's per-image table: at most ``max_rows`` images, the least confident first, sortable."""
    rows, total = t["rows"], t["images_with_faces"]
    under = f"; paths are under {html.escape(root)}" if root else ""
    note = (
        f"<p>The {len(rows):,} least confident of {total:,} images with faces, least confident first (an "
        f"image's confidence is that of its least confident face){under}. Click a header to sort. The table "
        f"stops at {t['max_rows']:,} images so that the report stays the same size for any collection: "
        "<code>rows/*.parquet</code> holds every image and face, with all seven probabilities and the box.</p>"
    )
    if not rows:
        return note
    cells = [(relative(r["path"], root), r["faces"], r["emotions"], f"{r['confidence']:.4f}") for r in rows]
    header = ("path", "faces", "emotion and confidence per face", "confidence")
    return note + _table(cells, header, ("text", "num", "text", "num")) + _SORT_JS


def _details(s: dict[str, Any]) -> list[tuple[str, Any]]:
    """Facts for whoever runs or debugs the job, kept out of the analyst's way at the bottom."""
    run = s.get("last_run") or {}
    return [
        ("output", s["out"]),
        ("input root", s.get("input_root") or "-"),
        ("model", s["model_id"]),
        ("engine / flip TTA / detector", " / ".join(str(run.get(k, "-")) for k in ("engine", "flip_tta", "detector"))),
        ("images in / image rows out", f"{s['images_in']:,} / {s['image_rows_out']:,}"),
        ("complete (every input exactly once)", "yes" if s["complete"] else "NO"),
        ("images: ok / no face / error", " / ".join(f"{s['images_by_status'][k]:,}" for k in STATUSES)),
        ("mean confidence", s["mean_confidence"] if s["mean_confidence"] is not None else "-"),
        ("last run", f"{run.get('run_id', '-')}: {throughput_line(run)}" if run else "-"),
        ("rows in OUT from inputs this run did not list (not counted above)", f"{s['rows_not_in_inputs']:,}"),
        ("part files / generated at", f"{s['part_files']:,} / {s['generated_at']}"),
    ]


_STYLE = (
    "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .6em;"
    "text-align:left;font-size:.9em}th{background:#f3f3f3}table.sortable th{cursor:pointer}"
    ".swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;vertical-align:middle}"
    ".caution{color:#8a4b00}p.lead{font-size:1.1em}img{max-width:100%}</style>"
)


def render_html(summary: dict[str, Any]) -> str:
    """A self-contained HTML page (plots embedded as base64 PNG); no face pixels, no external resources."""
    s, root = summary, summary.get("input_root") or ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>fer_ray scoring report</title>",
        _STYLE,
        "</head><body><h1>Facial emotion scoring report</h1>",
        *(f"<p class='lead'>{html.escape(line)}</p>" for line in headline(s)),
        "<h2>Emotions, and how accurate the model is for each</h2>",
        _emotions_html(s),
    ]
    parts += [f"<h2>{html.escape(title)}</h2>{_img(title, fig)}" for title, fig in figures(s)]
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
    if s.get("videos_in"):
        parts += ["<h2>Videos</h2>", videos_html(s, lambda p: relative(p, root))]
        parts += [_img(title, fig) for title, fig in timeline_figures(s, lambda p: relative(p, root))]
    if (s.get("least_confident") or {}).get("max_rows"):
        parts += ["<h2>Images, least confident first</h2>", _image_table(s["least_confident"], root)]
    parts.append("<h2>Errors</h2>")
    if s["errors_by_reason"]:
        shown = s["error_examples"]
        parts += [
            _table(list(s["errors_by_reason"].items()), ("reason", "images")),
            f"<p>First {len(shown)} error rows:</p>",
            _table([(relative(e["path"], root), e["error"]) for e in shown], ("path", "error")),
        ]
    else:
        parts.append("<p>No errors.</p>")
    parts += [
        "<h2>Details</h2><p>Boxes and scores only: this report holds no face pixels. Rows: "
        "<code>rows/*.parquet</code> (one per face, one per image without a face or with an error).</p>",
        _table(_details(s), ("", "")),
        "</body></html>\n",
    ]
    return "".join(parts)


def format_table(summary: dict[str, Any]) -> str:
    """A short plain-text summary for the terminal: the analyst's lines first, the run's details last."""
    s = summary
    emo = "  ".join(f"{e} {n} ({_pct(n, s['faces'])})" for e, n in s["emotions"].items() if n)
    st = s["images_by_status"]
    lines = [f"{'scored':<10} {headline(s)[0].removeprefix('Scored ')}", f"{'emotions':<10} {emo or '-'}"]
    if s.get("uncertain_faces"):
        lines.append(
            f"{'uncertain':<10} {s['uncertain_faces']:,} of {s['faces']:,} faces "
            f"({_pct(s['uncertain_faces'], s['faces'])}) are {_UNCERTAIN}: read their emotion as a guess"
        )
    acc = _accuracy(s)
    if acc:
        found = ", ".join(f"{e} {_fmt_share(acc['recall'].get(e))}" for e in EMOTIONS)
        lines.append(f"{'accuracy':<10} per emotion (found when shown): {found}")
        lines.append(f"{'':<10} {ACCURACY_CAUTION}")
    if s["errors_by_reason"]:
        lines.append(f"{'errors':<10} " + "  ".join(f"{r}: {n}" for r, n in s["errors_by_reason"].items()))
    for model, m in (s.get("by_model") or {}).items():
        emo = "  ".join(f"{e} {n}" for e, n in m["emotions"].items() if n)
        lines.append(f"{'by model':<10} {model}: {m['images']:,} images, {m['faces']:,} faces  {emo or '-'}")
    lines += [
        f"{'output':<10} {s['out']}",
        f"{'model':<10} {s['model_id']}",
        f"{'images':<10} {s['images_in']:,} in, {s['image_rows_out']:,} with rows out  "
        f"complete: {'yes' if s['complete'] else 'NO'}",
        f"{'status':<10} ok {st['ok']:,}  no_face {st['no_face']:,}  error {st['error']:,}",
    ]
    if s.get("videos_in"):
        lines.append(
            f"{'videos':<10} {s['videos_in']:,} ({s['video_segments_out']:,}/{s['video_segments_in']:,} segments, "
            f"{s['frames_sampled']:,} frames, {s['video_faces']:,} faces, {s['tracks']:,} person tracks)"
        )
    run = s.get("last_run") or {}
    if run:
        lines.append(f"{'this run':<10} {throughput_line(run)}")
    return "\n".join(lines)


def write_report(
    out: str | OutputStore,
    listing: pd.DataFrame | None = None,
    run: dict[str, Any] | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """(Re)build ``summary.json``, ``report.html`` (``max_rows`` images in its table) and, with videos,
    ``tracks/tracks.parquet`` in ``out``; returns the summary."""
    store = out if isinstance(out, OutputStore) else OutputStore(out)
    if not store.part_files() and store.read_inputs() is None:
        raise FileNotFoundError(
            f"{store.uri} holds no fer_ray scoring output (no rows/part-*.parquet); "
            "run `python jobs/score.py INPUT... --out OUT` first"
        )
    summary = summarize(store, listing, run, max_rows)
    write_tracks(store, summary["person_tracks"])
    store.write_json(SUMMARY_FILE, {k: v for k, v in summary.items() if k not in NOT_IN_SUMMARY_JSON})
    store.write_bytes(REPORT_FILE, render_html(summary).encode())
    logger.info("wrote %s and %s", store.uri_of(SUMMARY_FILE), store.uri_of(REPORT_FILE))
    return summary
