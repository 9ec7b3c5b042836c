"""The numbers of the tables: loss, accuracy, per-class precision/recall/F1, confusion, Table 4's seeded
draws and calibration, for one artifact on the split :func:`~fer_ray.evaluate.predictions.choose_split` picks.

The top class and the ``uncertain`` flag come from :func:`fer_ray.inference.outputs.outputs`, so an
evaluated face gets the emotion and flag batch scoring and Serve give it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fer_ray.evaluate.config import EvalConfig
from fer_ray.evaluate.predictions import SPLIT_NOTES, choose_split, test_predictions
from fer_ray.inference.artifact import WEIGHTS, Artifact
from fer_ray.inference.calibration import ece
from fer_ray.inference.outputs import outputs
from fer_ray.labels import EMOTIONS, NUM_CLASSES
from fer_ray.models.registry import count_parameters, multiply_adds

logger = logging.getLogger(__name__)


def top_class(probs: np.ndarray) -> np.ndarray:
    """(B,) predicted class per row, as scoring and Serve name it."""
    return outputs(probs, None).top


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
    preds = top_class(probs)
    cm = confusion(labels, preds)
    classes = per_class(cm)
    return {
        "n": int(len(labels)),
        "loss": float(F.nll_loss(logp, torch.from_numpy(labels))),
        "accuracy": float((preds == labels).mean()),
        "per_class": classes,
        "macro_f1": float(np.mean([v["f1"] for v in classes.values()])),
        "confusion": cm.tolist(),
    }


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float | None:
    return float((top_class(probs) == labels).mean()) if len(labels) else None


def random_draws(probs: np.ndarray, labels: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """Table 4: accuracy of ``iterations`` seeded samples of ``sample_size`` test images."""
    rng = np.random.default_rng(cfg.seed)
    hit = top_class(probs) == labels
    size = min(cfg.sample_size, len(labels))
    accs = [float(hit[rng.choice(len(labels), size=size, replace=False)].mean()) for _ in range(cfg.iterations)]
    return {"per_iteration": accs, "mean": float(np.mean(accs)), "std": float(np.std(accs)), "sample_size": size}


def calibration(artifact: Artifact, probs: np.ndarray, uncalibrated: np.ndarray, labels: np.ndarray) -> dict:
    """Whether the artifact's temperature made confidence honest (ECE before/after), and what its cut-off flags."""
    uncertain = outputs(probs, artifact.uncertain_below).uncertain
    return {
        "temperature": artifact.temperature,
        "uncertain_below": artifact.uncertain_below,
        "ece_before": ece(uncalibrated, labels),
        "ece_after": ece(probs, labels),
        "uncertain_share": float(uncertain.mean()),
        "accuracy_certain": accuracy(probs[~uncertain], labels[~uncertain]),
    }


def evaluate_artifact(
    artifact: Artifact, source: str, cfg: EvalConfig = EvalConfig(), progress: bool | None = None
) -> dict[str, Any]:
    """The tables' numbers for one artifact on the split :func:`choose_split` picks (``split`` says which).

    ``public_test`` and ``paper_test_7178`` appear only for FER2013 data: the paper's test set is
    PublicTest + PrivateTest, and its PublicTest half served for model selection (optimistic).
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
        "split_note": SPLIT_NOTES[name],
        "test": split_metrics(probs, labels),
        "test_accuracy_no_tta": accuracy(pred["probs_no_tta"][mask], labels),
        "table4": random_draws(probs, labels, cfg),
        "calibration": calibration(artifact, probs, pred["probs_uncalibrated"][mask], labels),
        "best_epoch": artifact.meta.get("metrics", {}).get("best", {}),
    }
    public = pred["usage"] == "PublicTest"
    if name == "PrivateTest" and public.any():
        paper = public | (pred["usage"] == "PrivateTest")
        result["public_test"] = split_metrics(pred["probs"][public], pred["labels"][public])
        result["paper_test_7178"] = split_metrics(pred["probs"][paper], pred["labels"][paper])
    logger.info(
        "%s: %s accuracy %.2f%% on %d images", result["model"], name, 100 * result["test"]["accuracy"], len(labels)
    )
    return result
