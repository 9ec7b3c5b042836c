"""The paper's evaluation tables for one or more model artifacts.

* Table 2/6: loss and accuracy on PrivateTest (3,589 images, the headline: never used
  for training or selection) and on the paper's 7,178-image test set (PublicTest +
  PrivateTest; its PublicTest half served for model selection, so it is optimistic);
* Table 4: 15 seeded draws of 100 test images, per draw and mean accuracy;
* per-class precision/recall/F1, confusion matrix (CSV + PNG), training curves (PNG),
  parameter count and size on disk;
* every inference engine the artifact holds (torch, onnx, onnx-int8) on PrivateTest, single
  pass and flip TTA side by side (:func:`engine_results`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fer_ray.artifact import WEIGHTS, Artifact
from fer_ray.calibration import ece
from fer_ray.data import decode, read_labeled
from fer_ray.labels import EMOTIONS, NUM_CLASSES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    iterations: int = 15  # Table 4
    sample_size: int = 100
    seed: int = 0
    batch_size: int = 512


def test_predictions(artifact: Artifact, source: str, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Probabilities, labels and usage for every val+test row of ``source`` (decoded with Ray Data)."""
    ds = decode(read_labeled(source, splits=("val", "test")), artifact.preprocess)
    probs, plain, raw, labels, usage, errors = [], [], [], [], [], 0
    # the same model without its temperature: calibration is measured as ECE before/after
    uncalibrated = dataclasses.replace(artifact, temperature=1.0)
    for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        ok = pd.isna(b["error"])  # an all-null column arrives as NaN, not None

        errors += int((~ok).sum())
        faces = b["face"][ok]
        single, tta = artifact.predict_proba_both(faces) if artifact.flip_tta else (artifact.predict_proba(faces),) * 2
        probs.append(tta)
        plain.append(single)
        raw.append(tta if artifact.temperature == 1.0 else uncalibrated.predict_proba(faces))
        labels.append(b["label"][ok].astype(np.int64))
        usage.append(np.asarray(b["usage"][ok], dtype=object))
    if errors:
        logger.warning("%d evaluation images failed to decode and are left out", errors)
    return {
        "probs": np.concatenate(probs),  # as scoring and Serve compute them (the artifact's flip_tta)
        "probs_no_tta": np.concatenate(plain),
        "probs_uncalibrated": np.concatenate(raw),
        "labels": np.concatenate(labels),
        "usage": np.concatenate(usage),
    }


def confusion(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    return np.bincount(labels * NUM_CLASSES + preds, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def per_class(cm: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for i, name in enumerate(EMOTIONS):
        tp = cm[i, i]
        prec = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        rec = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out[name] = {"precision": float(prec), "recall": float(rec), "f1": float(f1), "support": int(cm[i].sum())}
    return out


def split_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    if len(labels) == 0:
        return {"n": 0}
    logp = torch.log(torch.from_numpy(probs).clamp_min(1e-12))
    preds = probs.argmax(1)
    cm = confusion(labels, preds)
    return {
        "n": int(len(labels)),
        "loss": float(F.nll_loss(logp, torch.from_numpy(labels))),
        "accuracy": float((preds == labels).mean()),
        "per_class": per_class(cm),
        "macro_f1": float(np.mean([v["f1"] for v in per_class(cm).values()])),
        "confusion": cm.tolist(),
    }


def _accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    return float((probs.argmax(1) == labels).mean()) if len(labels) else None


def random_draws(probs: np.ndarray, labels: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """Table 4: accuracy of ``iterations`` seeded samples of ``sample_size`` test images."""
    rng = np.random.default_rng(cfg.seed)
    accs = []
    for _ in range(cfg.iterations):
        idx = rng.choice(len(labels), size=min(cfg.sample_size, len(labels)), replace=False)
        accs.append(float((probs[idx].argmax(1) == labels[idx]).mean()))
    return {"per_iteration": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs))}


def evaluate_artifact(artifact: Artifact, source: str, cfg: EvalConfig = EvalConfig()) -> dict[str, Any]:
    pred = test_predictions(artifact, source, cfg.batch_size)
    private = pred["usage"] == "PrivateTest"
    paper = np.isin(pred["usage"], ["PublicTest", "PrivateTest"])
    weights = artifact.path / WEIGHTS if artifact.path else None
    return {
        "model": artifact.model_config.name,
        "model_id": artifact.model_id,
        "engine": artifact.engine_name,
        "model_sha256": artifact.model_sha256,
        "parameters": int(sum(p.numel() for p in artifact.model.parameters())),
        "weights_bytes": weights.stat().st_size if weights else None,
        "flip_tta": artifact.flip_tta,
        "private_test": split_metrics(pred["probs"][private], pred["labels"][private]),
        "private_test_accuracy_no_tta": _accuracy(pred["probs_no_tta"][private], pred["labels"][private]),
        "paper_test_7178": split_metrics(pred["probs"][paper], pred["labels"][paper]),
        "public_test": split_metrics(
            pred["probs"][pred["usage"] == "PublicTest"], pred["labels"][pred["usage"] == "PublicTest"]
        ),
        "table4_private": random_draws(pred["probs"][private], pred["labels"][private], cfg),
        "calibration": {
            "temperature": artifact.temperature,
            "uncertain_below": artifact.uncertain_below,
            "private_ece_before": ece(pred["probs_uncalibrated"][private], pred["labels"][private]),
            "private_ece_after": ece(pred["probs"][private], pred["labels"][private]),
            "private_uncertain_share": float(artifact.uncertain(pred["probs"][private]).mean()),
            "private_accuracy_certain": _accuracy(
                pred["probs"][private][~artifact.uncertain(pred["probs"][private])],
                pred["labels"][private][~artifact.uncertain(pred["probs"][private])],
            ),
        },
        "best_epoch": artifact.meta.get("metrics", {}).get("best", {}),
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    """Table 2/6 side by side, plus Table 4 mean and model size."""
    lines = [
        "| model | params | weights | PrivateTest acc (3,589) | PrivateTest loss | paper test acc (7,178)* "
        "| macro F1 (Private) | Table 4 mean (15x100) | flip TTA | PrivateTest acc without TTA |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p, t = r["private_test"], r["paper_test_7178"]
        no_tta = r.get("private_test_accuracy_no_tta")
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['weights_bytes'] / 2**20:.2f} MB | {p['accuracy']:.2%} "
            f"| {p['loss']:.3f} | {t['accuracy']:.2%} | {p['macro_f1']:.3f} | {r['table4_private']['mean']:.2%} "
            f"| {'yes' if r.get('flip_tta') else 'no'} | {'-' if no_tta is None else f'{no_tta:.2%}'} |"
        )
    lines.append("\n*PublicTest (half of the 7,178) served for model selection; PrivateTest is the headline.")
    lines.append(
        "Accuracies are as scoring and Serve compute them: with mirror-image test-time augmentation (flip TTA)"
        " when the artifact enables it; the last column is the single-pass figure."
    )
    lines.append("\nPer-class F1 on PrivateTest:\n")
    lines.append("| model | " + " | ".join(EMOTIONS) + " |")
    lines.append("|---|" + "---|" * len(EMOTIONS))
    for r in results:
        pc = r["private_test"]["per_class"]
        lines.append(f"| {r['model']} | " + " | ".join(f"{pc[e]['f1']:.2f}" for e in EMOTIONS) + " |")
    lines.append("\nCalibration on PrivateTest (temperature and cut-off fitted on PublicTest):\n")
    lines.append(
        "| model | temperature | ECE before | ECE after | uncertain below | uncertain share | acc. of the rest |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for r in results:
        c = r.get("calibration", {})
        cut, rest = c.get("uncertain_below"), c.get("private_accuracy_certain")
        lines.append(
            f"| {r['model']} | {c.get('temperature', 1.0):.3f} | {c.get('private_ece_before', 0):.4f} "
            f"| {c.get('private_ece_after', 0):.4f} | {'-' if cut is None else f'{cut:.2f}'} "
            f"| {c.get('private_uncertain_share', 0):.1%} | {'-' if rest is None else f'{rest:.2%}'} |"
        )
    return "\n".join(lines) + "\n"


def write_plots(result: dict[str, Any], history: list[dict[str, Any]], out: Path, tag: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(result["private_test"]["confusion"])
    np.savetxt(out / f"{tag}_confusion_private.csv", cm, fmt="%d", delimiter=",", header=",".join(EMOTIONS))
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
    ax.set_title(f"{tag}: PrivateTest confusion (row-normalized)")
    fig.tight_layout()
    fig.savefig(out / f"{tag}_confusion_private.png", dpi=120)
    plt.close(fig)
    if history:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        ep = [h["epoch"] for h in history]
        a1.plot(ep, [h["train_loss"] for h in history], label="train")
        a1.plot(ep, [h["val_loss"] for h in history], label="val (PublicTest)")
        a1.set_title("loss")
        a1.legend()
        a2.plot(ep, [h["train_acc"] for h in history], label="train")
        a2.plot(ep, [h["val_acc"] for h in history], label="val (PublicTest)")
        a2.set_title("accuracy")
        a2.legend()
        for a in (a1, a2):
            a.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(out / f"{tag}_curves.png", dpi=120)
        plt.close(fig)


def engine_results(artifact: Artifact, source: str, split: str = "test", threads: int | None = None) -> list[dict]:
    """Accuracy of every engine ``artifact`` holds on one split (PrivateTest), single pass and flip TTA.

    The faces are decoded once and fed to each engine, so the rows differ only in the engine.
    """
    import os

    from fer_ray.artifact import load_artifact
    from fer_ray.engine import ENGINES, ONNX_FILES
    from fer_ray.onnx_export import engine_accuracy, labeled_faces

    if artifact.path is None:
        return []
    faces, labels = labeled_faces(source, split, artifact.preprocess)
    if len(labels) == 0:
        return []
    rows, reference = [], None
    for name in ENGINES:
        if name in ONNX_FILES and not (artifact.path / ONNX_FILES[name]).is_file():
            continue
        art = load_artifact(artifact.path, engine=name, threads=threads or os.cpu_count())
        acc = engine_accuracy(art, faces, labels)
        top = acc.pop("_top")
        reference = top if reference is None else reference
        rows.append(
            {
                "engine": name,
                "model_id": art.model_id,
                "sha256": art.model_sha256,
                "file": art.engine.file.name if art.engine.file else None,
                "bytes": art.engine.file.stat().st_size if art.engine.file else None,
                "split": split,
                "n": int(len(labels)),
                "accuracy_single": acc["val_accuracy_single"],
                "accuracy_flip_tta": acc["val_accuracy_flip_tta"],
                "top1_agreement_with_first": float((top == reference).mean()),
            }
        )
    return rows


def engines_markdown(results: list[dict[str, Any]]) -> str:
    rows = [(r["model"], e) for r in results for e in r.get("engines", [])]
    if not rows:
        return ""
    lines = [
        "\nInference engines on PrivateTest (the same decoded faces through each engine):\n",
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


def evaluate_all(
    artifacts: list[Artifact],
    source: str,
    out_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    engines: bool = True,
) -> list[dict]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for art in artifacts:
        r = evaluate_artifact(art, source, cfg)
        if engines:
            r["engines"] = engine_results(art, source)
        tag = art.model_config.name
        write_plots(r, art.meta.get("metrics", {}).get("history", []), out, tag)
        results.append(r)
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown_table(results) + engines_markdown(results)
    for art in artifacts:
        md += history_table(art.model_config.name, art.meta.get("metrics", {}).get("history", []))
    (out / "evaluation.md").write_text(md)
    return results


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


def external_photos(artifact: Artifact, folder: str | Path) -> list[dict[str, Any]]:
    """Table 5: per-class percentages for each image of a folder of external (whole-face) photos."""
    from fer_ray.preprocess import ImageDecodeError, preprocess_bytes

    rows = []
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file():
            continue
        try:
            face = preprocess_bytes(p.read_bytes(), artifact.preprocess)
        except ImageDecodeError as e:
            rows.append({"path": str(p), "error": str(e)})
            continue
        probs = artifact.predict_proba(face[None])[0]
        rows.append(
            {
                "path": str(p),
                **{e: round(float(v) * 100, 1) for e, v in zip(EMOTIONS, probs, strict=True)},
                "top": EMOTIONS[int(probs.argmax())],
            }
        )
    return rows
