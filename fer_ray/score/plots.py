"""The charts of report.html, as PNG images embedded in the page (no external resources).

One colour per emotion (:data:`EMOTION_COLORS`) in every chart and table, so that a reader who
learnt that sad is blue in one chart does not misread another.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from fer_ray.labels import EMOTIONS

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


def png(fig) -> str:
    """``fig`` as base64 PNG text; the figure is closed (a report draws many)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


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
