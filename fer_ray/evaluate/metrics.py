"""The tables' numbers from probabilities and labels: loss, accuracy, per-class precision/recall/F1, confusion,
Table 4's seeded draws and calibration. The top class and the ``uncertain`` flag come from
:func:`fer_ray.inference.outputs.outputs`, so a face gets the emotion and flag batch scoring and Serve give it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fer_ray.evaluate.config import EvalConfig
from fer_ray.inference.artifact import Artifact
from fer_ray.inference.calibration import ece
from fer_ray.inference.outputs import outputs
from fer_ray.labels import EMOTIONS, NUM_CLASSES


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


def digests(faces: Iterable[np.ndarray]) -> list[bytes]:
    """A 16-byte hash of each face's pixels: faces with equal pixels, and only those in practice, share one."""
    return [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in faces]


def repeated_in(faces: Iterable[np.ndarray], train: Iterable[np.ndarray]) -> np.ndarray:
    """(N,) whether each of N ``faces`` (H, W) has a pixel-identical twin in ``train``: a model can remember it."""
    seen = set(digests(train))
    return np.array([d in seen for d in digests(faces)], dtype=bool)


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
