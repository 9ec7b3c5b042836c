"""What an evaluation leaves behind: ``evaluation.json`` (every number), ``evaluation.md`` (the paper's
tables side by side, as the README and model cards quote them: Tables 2/4/6, per-class F1, calibration,
every engine, FER+ labels, training history) and per-model plots and CSVs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.labels import EMOTIONS, NUM_CLASSES


def write_evaluation(results: list[dict[str, Any]], histories: list[list[dict[str, Any]]], out: Path) -> None:
    """``evaluation.json`` and ``evaluation.md`` of ``results``; ``histories``: each model's per-epoch log."""
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown_table(results) + engines_markdown(results) + ferplus_markdown(results) + repeats_markdown(results)
    for r, history in zip(results, histories, strict=True):
        md += history_table(r["label"], history)
    (out / "evaluation.md").write_text(md)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: header, separator, one line per row of cells."""
    return ["| " + " | ".join(head) + " |", "|---" * len(head) + "|", *("| " + " | ".join(r) + " |" for r in rows)]


def _pct(v: float | None, fmt: str = ".2%") -> str:
    return "-" if v is None else format(v, fmt)


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Table 2/6 side by side, plus Table 4 mean and model size, on the split the results (one or more) name."""
    split, n, t4 = results[0]["split"], results[0]["test"]["n"], results[0]["table4"]
    paper = any("paper_test_7178" in r for r in results)
    size = f"{len(t4['per_iteration'])}x{t4.get('sample_size', '?')}"
    head = ["model", "params", "multiply-adds", "weights", f"{split} acc ({n:,})", f"{split} loss"]
    head += ["paper test acc (7,178)*"] * paper
    head += [f"macro F1 ({split})", f"Table 4 mean ({size})", "flip TTA", f"{split} acc without TTA"]
    rows = []
    for r in results:
        p = r["test"]
        cells = [r["label"], f"{r['parameters']:,}", f"{r['multiply_adds'] / 1e6:.1f}M"]
        cells += [f"{r['weights_bytes'] / 2**20:.2f} MB", f"{p['accuracy']:.2%}", f"{p['loss']:.3f}"]
        cells += [_pct(r.get("paper_test_7178", {}).get("accuracy"))] * paper
        cells += [f"{p['macro_f1']:.3f}", f"{r['table4']['mean']:.2%}", "yes" if r.get("flip_tta") else "no"]
        rows.append([*cells, _pct(r.get("test_accuracy_no_tta"))])
    lines = [f"Evaluated on {split}: {results[0]['split_note']}.\n", *_table(head, rows)]
    if paper:
        lines.append("\n*PublicTest (half of the 7,178) served for model selection; PrivateTest is the headline.")
    lines.append(
        ("" if paper else "\n")  # a blank line ends the table
        + "Accuracies are as scoring and Serve compute them: with mirror-image test-time augmentation (flip TTA)"
        " when the artifact enables it; the last column is the single-pass figure."
    )
    lines.append(f"\nPer-class F1 on {split}:\n")
    f1 = [[r["label"], *(f"{r['test']['per_class'][e]['f1']:.2f}" for e in EMOTIONS)] for r in results]
    lines += _table(["model", *EMOTIONS], f1)
    fitted = "PublicTest" if split == "PrivateTest" else "the validation split by jobs/calibrate.py"
    lines.append(f"\nCalibration on {split} (temperature and cut-off fitted on {fitted}):\n")
    rows = []
    for r in results:
        c = r.get("calibration", {})
        cells = [r["label"], f"{c.get('temperature', 1.0):.3f}", f"{c.get('ece_before', 0):.4f}"]
        cells += [f"{c.get('ece_after', 0):.4f}", _pct(c.get("uncertain_below"), ".2f")]
        rows.append([*cells, f"{c.get('uncertain_share', 0):.1%}", _pct(c.get("accuracy_certain"))])
    head = ["model", "temperature", "ECE before", "ECE after", "uncertain below", "uncertain share", "acc. of the rest"]
    return "\n".join(lines + _table(head, rows)) + "\n"


def write_plots(result: dict[str, Any], history: list[dict[str, Any]], out: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = result["split"]
    cm = np.array(result["test"]["confusion"])
    name = f"{tag}_confusion_{'private' if split == 'PrivateTest' else split}"
    np.savetxt(out / f"{name}.csv", cm, fmt="%d", delimiter=",", header=",".join(EMOTIONS))
    fig, ax = plt.subplots(figsize=(6, 5))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(NUM_CLASSES), EMOTIONS, rotation=45)
    ax.set_yticks(range(NUM_CLASSES), EMOTIONS)
    ax.set(xlabel="predicted", ylabel="true", title=f"{tag}: {split} confusion (row-normalized)")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
    if history:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ep = [h["epoch"] for h in history]
        for a, key, title in ((a1, "loss", "loss"), (a2, "acc", "accuracy")):
            a.plot(ep, [h[f"train_{key}"] for h in history], label="train")
            a.plot(ep, [h[f"val_{key}"] for h in history], label="val (PublicTest)")
            a.set(title=title, xlabel="epoch")
            a.legend()
        fig.tight_layout()
        fig.savefig(out / f"{tag}_curves.png", dpi=120)
        plt.close(fig)


def engines_markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        [r["label"], e["engine"], e["file"], f"{e['bytes'] / 2**20:.2f}" if e["bytes"] else "-"]
        + [f"{e['accuracy_single']:.2%}", f"{e['accuracy_flip_tta']:.2%}", f"{e['top1_agreement_with_first']:.2%}"]
        for r in results
        for e in r.get("engines", [])
    ]
    if not rows:
        return ""
    head = ["model", "engine", "file", "MB", "single pass", "flip TTA", "same top-1 as torch"]
    title = f"\nInference engines on {results[0]['split']} (the same decoded faces through each engine):\n"
    return "\n".join([title, *_table(head, rows)]) + "\n"


def history_table(name: str, history: list[dict[str, Any]]) -> str:
    """Per-epoch training log as recorded in the artifact: what the README and issue notes quote."""
    if not history:
        return ""
    rows = [
        [str(h["epoch"]), h.get("phase", ""), f"{h['train_loss']:.3f}", f"{h['train_acc']:.2%}", f"{h['val_loss']:.3f}"]
        + ["-" if h.get("phase") == "pretrain" else f"{h['val_acc']:.2%}", f"{h['lr']:.2e}"]
        + [f"{h['epoch_s']:.0f}", f"{h['images_per_s']:.0f}"]
        for h in history
    ]
    head = ["epoch", "phase", "train loss", "train acc", "val loss", "val acc", "lr", "seconds", "images/s"]
    return "\n".join([f"\nTraining history of {name} (val = PublicTest):\n", *_table(head, rows)]) + "\n"


def ferplus_markdown(results: list[dict[str, Any]]) -> str:
    rows = [r for r in results if r.get("ferplus_private_test")]
    if not rows:
        return ""
    first = rows[0]["ferplus_private_test"]
    head = ["model", "trained on", "FER+ labels", "FER+ single pass", "FER2013 labels, same faces"]
    head += ["FER2013 single pass", "FER+ macro F1", "ECE against FER+"]
    cells = []
    for r in rows:
        f = r["ferplus_private_test"]
        accs = (f["ferplus"]["accuracy"], f["ferplus_accuracy_no_tta"], f["fer2013_accuracy_same_faces"])
        cells.append([r["label"], r.get("trained_on", "fer2013"), *(f"{a:.2%}" for a in accs)])
        cells[-1] += [f"{f['fer2013_accuracy_same_faces_no_tta']:.2%}", f"{f['ferplus']['macro_f1']:.3f}"]
        cells[-1].append(_pct(f.get("ferplus_ece"), ".4f"))
    title = (
        f"\nFER+ labels: the {first['ferplus']['n']:,} PrivateTest faces with a FER+ majority label (FER2013's own "
        f"label agrees on {first['labels_agree']:.1%} of them), scored against each label set:\n"
    )
    return "\n".join([title, *_table(head, cells)]) + "\n"


def repeats_markdown(results: list[dict[str, Any]]) -> str:
    rows = [r for r in results if r.get("repeats")]
    if not rows:
        return ""
    first = rows[0]["repeats"]
    head = ["model", "repeated faces", "the rest", "the rest, single pass"]
    cells = [
        [r["label"], *(_pct(r["repeats"][k]) for k in ("accuracy_repeats", "accuracy_rest", "accuracy_rest_no_tta"))]
        for r in rows
    ]
    title = (
        f"\nFaces seen in training: {first['repeats']:,} of the {first['faces']:,} {results[0]['split']} faces are "
        "pixel-identical to a training face, which a model can remember; the rest is the figure for unseen faces:\n"
    )
    return "\n".join([title, *_table(head, cells)]) + "\n"
