"""The paper's evaluation tables for one or more model artifacts.

* Table 2/6: loss and accuracy on PrivateTest (3,589 images, the headline: never used
  for training or selection) and on the paper's 7,178-image test set (PublicTest +
  PrivateTest; its PublicTest half served for model selection, so it is optimistic);
* Table 4: 15 seeded draws of 100 test images, per draw and mean accuracy;
* per-class precision/recall/F1, confusion matrix (CSV + PNG), training curves (PNG),
  parameter count and size on disk;
* every inference engine the artifact holds (torch, onnx, onnx-int8) on PrivateTest, single
  pass and flip TTA side by side (:func:`engine_results`).

A user's own labelled folders rarely have a PrivateTest: the tables are then computed on the
best labelled split there is (:func:`choose_split`: test, else val, else train with a warning),
and ``split`` in evaluation.json (and every table heading) says which.
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

from fer_ray.data import decode, read_labeled
from fer_ray.inference.artifact import WEIGHTS, Artifact
from fer_ray.inference.calibration import ece
from fer_ray.labels import EMOTIONS, NUM_CLASSES
from fer_ray.models import count_parameters, multiply_adds
from fer_ray.progress import Progress, iterate, without_ray_data_bars

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalConfig:
    iterations: int = 15  # Table 4
    sample_size: int = 100
    seed: int = 0
    batch_size: int = 512


# Where each evaluated split's rows come from: FER2013's PrivateTest is the headline; a user's
# folders have test/, val/ or only train/ (see fer_ray.data.fer2013.read_image_folders).
ENGINE_SPLIT = {"PrivateTest": "test", "test": "test", "val": "val", "train": "train"}


def test_predictions(
    artifact: Artifact,
    source: str,
    batch_size: int = 512,
    splits: tuple[str, ...] = ("val", "test"),
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities, labels, split and usage for every row of ``splits`` of ``source`` (decoded with Ray Data)."""
    ds = without_ray_data_bars(decode(read_labeled(source, splits=splits), artifact.preprocess))
    probs, plain, raw, labels, usage, split, errors = [], [], [], [], [], [], 0
    # the same model without its temperature: calibration is measured as ECE before/after
    uncalibrated = dataclasses.replace(artifact, temperature=1.0)
    with Progress(
        f"evaluating {artifact.model_config.name} ({'+'.join(splits)})", unit="faces", progress=progress
    ) as bar:
        for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            ok = pd.isna(b["error"])  # an all-null column arrives as NaN, not None

            errors += int((~ok).sum())
            faces = b["face"][ok]
            if artifact.flip_tta:
                single, tta = artifact.predict_proba_both(faces)
            else:
                single = tta = artifact.predict_proba(faces)
            probs.append(tta)
            plain.append(single)
            raw.append(tta if artifact.temperature == 1.0 else uncalibrated.predict_proba(faces))
            labels.append(b["label"][ok].astype(np.int64))
            usage.append(np.asarray(b["usage"][ok], dtype=object))
            split.append(np.asarray(b["split"][ok], dtype=object))
            bar.update(int(ok.sum()), errors=errors)
    if errors:
        logger.warning("%d evaluation images failed to decode and are left out", errors)
    if not labels:
        k = len(EMOTIONS)
        return {
            "probs": np.zeros((0, k), np.float32),
            "probs_no_tta": np.zeros((0, k), np.float32),
            "probs_uncalibrated": np.zeros((0, k), np.float32),
            "labels": np.zeros(0, np.int64),
            "usage": np.zeros(0, object),
            "split": np.zeros(0, object),
        }
    return {
        "probs": np.concatenate(probs),  # as scoring and Serve compute them (the artifact's flip_tta)
        "probs_no_tta": np.concatenate(plain),
        "probs_uncalibrated": np.concatenate(raw),
        "labels": np.concatenate(labels),
        "usage": np.concatenate(usage),
        "split": np.concatenate(split),
    }


def choose_split(pred: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """(name, row mask) of the split the tables are computed on: PrivateTest, else test, else val; None if none.

    FER2013's PrivateTest is never used in training or selection. Folders without it may still
    have test/ (the same role) or val/ (used for checkpoint selection: slightly optimistic).
    """
    usage, split = pred["usage"], pred["split"]
    for name, mask in (
        ("PrivateTest", usage == "PrivateTest"),
        ("test", split == "test"),
        ("val", split == "val"),
    ):
        if mask.any():
            return name, mask
    return None


_SPLIT_NOTES = {
    "PrivateTest": "FER2013 PrivateTest: never used for training or checkpoint selection",
    "test": "the test split (no FER2013 PrivateTest rows in this data)",
    "val": "the validation split (no test split in this data; training chose its best checkpoint on it, "
    "so this is optimistic)",
    "train": "the training split (no test or validation split in this data; the model may have trained on "
    "these images, so this is optimistic: add a test/ folder for an honest figure)",
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
    size = min(cfg.sample_size, len(labels))
    return {"per_iteration": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)), "sample_size": size}


def evaluate_artifact(
    artifact: Artifact, source: str, cfg: EvalConfig = EvalConfig(), progress: bool | None = None
) -> dict[str, Any]:
    """The tables' numbers for one artifact on the split :func:`choose_split` picks (``split`` says which).

    ``test*`` keys hold that split's metrics; ``public_test`` and ``paper_test_7178`` appear only
    for FER2013 data (rows whose usage is PublicTest/PrivateTest).
    """
    pred = test_predictions(artifact, source, cfg.batch_size, progress=progress)
    chosen = choose_split(pred)
    if chosen is None:
        logger.warning(
            "%s has no test or validation rows: evaluating %s on its training split, which the model may "
            "have been trained on (optimistic); add a test/ folder of labelled images for an honest figure",
            source,
            artifact.model_config.name,
        )
        pred = test_predictions(artifact, source, cfg.batch_size, splits=("train",), progress=progress)
        chosen = ("train", np.ones(len(pred["labels"]), dtype=bool))
    name, mask = chosen
    if not mask.any():
        raise ValueError(
            f"{source} has no labelled images that decode in train, val or test: nothing to evaluate "
            "(expected <split>/<emotion>/<image> folders, a FER2013 Parquet or the Kaggle CSV)"
        )
    probs, labels = pred["probs"][mask], pred["labels"][mask]
    uncertain = artifact.uncertain(probs)
    weights = artifact.path / WEIGHTS if artifact.path else None
    result = {
        "model": artifact.model_config.name,
        "model_id": artifact.model_id,
        "trained_on": artifact.label_set,  # its calibration row is against FER2013 labels; FER+ table: ferplus_ece
        "engine": artifact.engine_name,
        "model_sha256": artifact.model_sha256,
        "parameters": count_parameters(artifact.model),
        "multiply_adds": multiply_adds(artifact.model),
        "weights_bytes": weights.stat().st_size if weights else None,
        "flip_tta": artifact.flip_tta,
        "split": name,
        "split_note": _SPLIT_NOTES[name],
        "test": split_metrics(probs, labels),
        "test_accuracy_no_tta": _accuracy(pred["probs_no_tta"][mask], labels),
        "table4": random_draws(probs, labels, cfg),
        "calibration": {
            "temperature": artifact.temperature,
            "uncertain_below": artifact.uncertain_below,
            "ece_before": ece(pred["probs_uncalibrated"][mask], labels),
            "ece_after": ece(probs, labels),
            "uncertain_share": float(uncertain.mean()),
            "accuracy_certain": _accuracy(probs[~uncertain], labels[~uncertain]),
        },
        "best_epoch": artifact.meta.get("metrics", {}).get("best", {}),
    }
    public = pred["usage"] == "PublicTest"
    if name == "PrivateTest" and public.any():  # FER2013: the paper's 7,178-image test set as well
        paper = public | (pred["usage"] == "PrivateTest")
        result["public_test"] = split_metrics(pred["probs"][public], pred["labels"][public])
        result["paper_test_7178"] = split_metrics(pred["probs"][paper], pred["labels"][paper])
    logger.info(
        "%s: %s accuracy %.2f%% on %d images", result["model"], name, 100 * result["test"]["accuracy"], len(labels)
    )
    return result


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


def engine_results(
    artifact: Artifact, source: str, split: str = "test", threads: int | None = None, progress: bool | None = None
) -> list[dict]:
    """Accuracy of every engine ``artifact`` holds on one split (FER2013's test: PrivateTest), single pass and TTA.

    The faces are decoded once and fed to each engine, so the rows differ only in the engine.
    """
    import os

    from fer_ray.inference.artifact import load_artifact
    from fer_ray.inference.engine import ENGINES, ONNX_FILES
    from fer_ray.inference.export import engine_accuracy, labeled_faces

    if artifact.path is None:
        return []
    faces, labels = labeled_faces(source, split, artifact.preprocess)
    if len(labels) == 0:
        return []
    rows, reference = [], None
    names = [n for n in ENGINES if n not in ONNX_FILES or (artifact.path / ONNX_FILES[n]).is_file()]
    for name in iterate(names, f"engines of {artifact.model_config.name}", len(names), "engines", progress):
        # verify=False: each engine measured as it runs on this CPU, even one the host check would replace
        art = load_artifact(artifact.path, engine=name, threads=threads or os.cpu_count(), verify=False)
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


def ferplus_metrics(artifact: Artifact, source: str, batch_size: int = 512) -> dict[str, Any] | None:
    """The model on FER+ labels: PrivateTest faces with a FER+ majority, scored against FER+ and FER2013 labels.

    FER2013's own labels are noisy (the two label sets agree on 67% of these faces), so a
    model's accuracy against the re-voted labels says how much of its "error" is label noise.
    ``None`` unless ``source`` is our FER2013 Parquet with ``fer2013new.csv`` beside it.
    """
    from fer_ray.data import ferplus

    csv = ferplus.default_csv(str(source))
    if not str(source).endswith(".parquet") or "://" in str(source) or not Path(csv).is_file():
        return None
    faces, original, plus, left_out = ferplus.labelled_faces(str(source), "PrivateTest", artifact.preprocess, csv)
    single, tta = [], []
    for i in range(0, len(faces), batch_size):
        s, t = artifact.predict_proba_both(faces[i : i + batch_size])
        single.append(s)
        tta.append(t)
    probs_single, probs_tta = np.concatenate(single), np.concatenate(tta)
    probs = probs_tta if artifact.flip_tta else probs_single  # as scoring and Serve report them
    return {
        "split": "PrivateTest",
        "left_out": left_out,
        "ferplus": split_metrics(probs, plus),
        "ferplus_accuracy_no_tta": _accuracy(probs_single, plus),
        "fer2013_accuracy_same_faces": _accuracy(probs, original),
        "fer2013_accuracy_same_faces_no_tta": _accuracy(probs_single, original),
        "labels_agree": float((original == plus).mean()),
        # a FER+-trained model's confidence is judged against the labels it learnt (its own temperature applied)
        "ferplus_ece": ece(probs, plus),
    }


def ferplus_markdown(results: list[dict[str, Any]]) -> str:
    rows = [r for r in results if r.get("ferplus_private_test")]
    if not rows:
        return ""
    n = rows[0]["ferplus_private_test"]["ferplus"]["n"]
    agree = rows[0]["ferplus_private_test"]["labels_agree"]
    lines = [
        f"\nFER+ labels: the {n:,} PrivateTest faces with a FER+ majority label (FER2013's own label agrees on "
        f"{agree:.1%} of them), scored against each label set:\n",
        "| model | trained on | FER+ labels | FER+ single pass | FER2013 labels, same faces | FER2013 single pass "
        "| FER+ macro F1 | ECE against FER+ |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["ferplus_private_test"]
        ece_plus = f.get("ferplus_ece")
        lines.append(
            f"| {r['label']} | {r.get('trained_on', 'fer2013')} | {f['ferplus']['accuracy']:.2%} "
            f"| {f['ferplus_accuracy_no_tta']:.2%} | {f['fer2013_accuracy_same_faces']:.2%} "
            f"| {f['fer2013_accuracy_same_faces_no_tta']:.2%} | {f['ferplus']['macro_f1']:.3f} "
            f"| {'-' if ece_plus is None else f'{ece_plus:.4f}'} |"
        )
    return "\n".join(lines) + "\n"


def evaluate_all(
    artifacts: list[Artifact],
    source: str,
    out_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    engines: bool = True,
    progress: bool | None = None,
) -> list[dict]:
    """Evaluate each artifact on ``source`` (see :func:`evaluate_artifact`); write evaluation.json/.md and plots.

    ``progress``: faces evaluated as a bar on a terminal, log lines elsewhere (``None``), always a
    bar (``True``) or nothing (``False``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for art, label in zip(artifacts, labels_of(artifacts), strict=True):
        r = {"label": label, **evaluate_artifact(art, source, cfg, progress)}
        if engines:
            r["engines"] = engine_results(art, source, ENGINE_SPLIT[r["split"]], progress=progress)
        if r["split"] == "PrivateTest":
            r["ferplus_private_test"] = ferplus_metrics(art, source, cfg.batch_size)
        write_plots(r, art.meta.get("metrics", {}).get("history", []), out, label)
        results.append(r)
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    md = markdown_table(results) + engines_markdown(results) + ferplus_markdown(results)
    for art, r in zip(artifacts, results, strict=True):
        md += history_table(r["label"], art.meta.get("metrics", {}).get("history", []))
    (out / "evaluation.md").write_text(md)
    return results


def labels_of(artifacts: list[Artifact]) -> list[str]:
    """What tables and file names call each artifact: its architecture, or ``name@weights-id`` where two share one.

    A candidate is usually evaluated beside the shipped model of its own architecture; by name alone
    their rows read the same and the second one's plots overwrite the first's.
    """
    names = [a.model_config.name for a in artifacts]
    return [n if names.count(n) == 1 else a.model_id.split("+")[0] for n, a in zip(names, artifacts, strict=True)]


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
