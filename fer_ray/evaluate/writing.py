"""What an evaluation leaves behind: ``evaluation.json`` (every number), ``evaluation.md`` (the paper's
tables side by side, as the README and model cards quote them) and per-model plots and CSVs.

* Table 2/6: loss and accuracy on the evaluated split, and FER2013's 7,178-image paper test set;
* Table 4: the seeded draws' mean; per-class F1; calibration;
* every inference engine the artifact holds, single pass and flip TTA side by side;
* the FER+ table (:mod:`fer_ray.evaluate.ferplus`) and each model's training history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.evaluate.ferplus import ferplus_markdown
from fer_ray.labels import EMOTIONS, NUM_CLASSES


def write_evaluation(results: list[dict[str, Any]], histories: list[list[dict[str, Any]]], out: Path) -> None:
    """``evaluation.json`` and ``evaluation.md`` of ``results``; ``histories``: each model's per-epoch log."""
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown_table(results) + engines_markdown(results) + ferplus_markdown(results)
    for r, history in zip(results, histories, strict=True):
        md += history_table(r["label"], history)
    (out / "evaluation.md").write_text(md)


def _split_of(results: list[dict[str, Any]]) -> str:
    return results[0]["split"] if results else "PrivateTest"


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Table 2/6 side by side, plus Table 4 mean and model size, on the split the results name."""
    split = _split_of(results)
    n = results[0]["test"]["n"] if results else 0
    paper = any("paper_test_7178" in r for r in results)
    t4 = results[0]["table4"] if results else {"per_iteration": []}
    size = f"{len(t4['per_iteration'])}x{t4.get('sample_size', '?')}"
    lines = [
        f"Evaluated on {split}: {results[0]['split_note'] if results else '-'}.\n",
        f"| model | params | multiply-adds | weights | {split} acc ({n:,}) | {split} loss "
        + ("| paper test acc (7,178)* " if paper else "")
        + f"| macro F1 ({split}) | Table 4 mean ({size}) | flip TTA | {split} acc without TTA |",
        "|---|---|---|---|---|---|" + ("---|" if paper else "") + "---|---|---|---|",
    ]
    for r in results:
        p = r["test"]
        no_tta = r.get("test_accuracy_no_tta")
        paper_cell = ""
        if paper:
            paper_cell = f" {r['paper_test_7178']['accuracy']:.2%} |" if "paper_test_7178" in r else " - |"
        lines.append(
            f"| {r['label']} | {r['parameters']:,} | {r['multiply_adds'] / 1e6:.1f}M "
            f"| {r['weights_bytes'] / 2**20:.2f} MB | {p['accuracy']:.2%} "
            f"| {p['loss']:.3f} |{paper_cell} {p['macro_f1']:.3f} | {r['table4']['mean']:.2%} "
            f"| {'yes' if r.get('flip_tta') else 'no'} | {'-' if no_tta is None else f'{no_tta:.2%}'} |"
        )
    if paper:
        lines.append("\n*PublicTest (half of the 7,178) served for model selection; PrivateTest is the headline.")
    lines.append(
        ("" if paper else "\n")  # a blank line ends the table
        + "Accuracies are as scoring and Serve compute them: with mirror-image test-time augmentation (flip TTA)"
        " when the artifact enables it; the last column is the single-pass figure."
    )
    lines.append(f"\nPer-class F1 on {split}:\n")
    lines.append("| model | " + " | ".join(EMOTIONS) + " |")
    lines.append("|---|" + "---|" * len(EMOTIONS))
    for r in results:
        pc = r["test"]["per_class"]
        lines.append(f"| {r['label']} | " + " | ".join(f"{pc[e]['f1']:.2f}" for e in EMOTIONS) + " |")
    fitted = "PublicTest" if split == "PrivateTest" else "the validation split by jobs/calibrate.py"
    lines.append(f"\nCalibration on {split} (temperature and cut-off fitted on {fitted}):\n")
    lines.append(
        "| model | temperature | ECE before | ECE after | uncertain below | uncertain share | acc. of the rest |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        c = r.get("calibration", {})
        cut, rest = c.get("uncertain_below"), c.get("accuracy_certain")
        lines.append(
            f"| {r['label']} | {c.get('temperature', 1.0):.3f} | {c.get('ece_before', 0):.4f} "
            f"| {c.get('ece_after', 0):.4f} | {'-' if cut is None else f'{cut:.2f}'} "
            f"| {c.get('uncertain_share', 0):.1%} | {'-' if rest is None else f'{rest:.2%}'} |"
        )
    return "\n".join(lines) + "\n"


def _split_slug(split: str) -> str:
    return "private" if split == "PrivateTest" else split


def write_plots(result: dict[str, Any], history: list[dict[str, Any]], out: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = result["split"]
    cm = np.array(result["test"]["confusion"])
    name = f"{tag}_confusion_{_split_slug(split)}"
    np.savetxt(out / f"{name}.csv", cm, fmt="%d", delimiter=",", header=",".join(EMOTIONS))
    fig, ax = plt.subplots(figsize=(6, 5))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(NUM_CLASSES):
        for j in range(NUM_CLASSES):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(NUM_CLASSES), EMOTIONS, rotation=45)
    ax.set_yticks(range(NUM_CLASSES), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{tag}: {split} confusion (row-normalized)")
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=120)
    plt.close(fig)
    if history:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ep = [h["epoch"] for h in history]
        for a, key, title in ((a1, "loss", "loss"), (a2, "acc", "accuracy")):
            a.plot(ep, [h[f"train_{key}"] for h in history], label="train")
            a.plot(ep, [h[f"val_{key}"] for h in history], label="val (PublicTest)")
            a.set_title(title)
            a.legend()
            a.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(out / f"{tag}_curves.png", dpi=120)
        plt.close(fig)


def engines_markdown(results: list[dict[str, Any]]) -> str:
    rows = [(r["label"], e) for r in results for e in r.get("engines", [])]
    if not rows:
        return ""
    lines = [
        f"\nInference engines on {_split_of(results)} (the same decoded faces through each engine):\n",
        "| model | engine | file | MB | single pass | flip TTA | same top-1 as torch |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, e in rows:
        mb = f"{e['bytes'] / 2**20:.2f}" if e["bytes"] else "-"
        lines.append(
            f"| {model} | {e['engine']} | {e['file']} | {mb} | {e['accuracy_single']:.2%} "
            f"| {e['accuracy_flip_tta']:.2%} | {e['top1_agreement_with_first']:.2%} |"
        )
    return "\n".join(lines) + "\n"


def history_table(name: str, history: list[dict[str, Any]]) -> str:
    """Per-epoch training log as recorded in the artifact: what the README and issue notes quote."""
    if not history:
        return ""
    lines = [
        f"\nTraining history of {name} (val = PublicTest):\n",
        "| epoch | phase | train loss | train acc | val loss | val acc | lr | seconds | images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for h in history:
        val_acc = "-" if h.get("phase") == "pretrain" else f"{h['val_acc']:.2%}"
        lines.append(
            f"| {h['epoch']} | {h.get('phase', '')} | {h['train_loss']:.3f} | {h['train_acc']:.2%} "
            f"| {h['val_loss']:.3f} | {val_acc} | {h['lr']:.2e} | {h['epoch_s']:.0f} | {h['images_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"
