"""Calibrated confidence: temperature scaling, expected calibration error, and the ``uncertain`` cut-off.

"happy 0.93" reads as "93% sure", but networks trained with cross-entropy are over- or under-confident.
Temperature scaling (Guo et al., 2017) divides the logits by one scalar fitted on the validation split
(PublicTest), changing no prediction; below the ``uncertain`` cut-off, read off the same split, the top class
is right less often than not. PrivateTest only *measures* calibration (ECE before/after), never fits it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer_ray.inference.outputs import softmax


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, mirror_logits: np.ndarray | None = None, max_iter: int = 200
) -> float:
    """The temperature minimising validation NLL (over log T, so T stays positive); with ``mirror_logits``
    the NLL of the flip-TTA probabilities, which the artifact then reports."""
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on an empty validation split")
    x = torch.as_tensor(logits, dtype=torch.float64)
    xm = None if mirror_logits is None else torch.as_tensor(mirror_logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        p = torch.softmax(x / log_t.exp(), 1)
        if xm is not None:
            p = (p + torch.softmax(xm / log_t.exp(), 1)) / 2
        loss = torch.nn.functional.nll_loss(torch.log(p.clamp_min(1e-12)), y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: over ``bins`` equal-width confidence bins, the count-weighted gap between
    mean confidence and accuracy."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    idx = np.clip(np.digitize(conf, np.linspace(0, 1, bins + 1)[1:-1]), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    filled = count > 0
    mean_conf = np.bincount(idx, weights=conf, minlength=bins)[filled] / count[filled]
    acc = np.bincount(idx, weights=correct.astype(np.float64), minlength=bins)[filled] / count[filled]
    return float((np.abs(mean_conf - acc) * count[filled]).sum() / max(count.sum(), 1))


def ece_gain(
    before: np.ndarray, after: np.ndarray, labels: np.ndarray, resamples: int = 200, seed: int = 0
) -> tuple[float, float]:
    """(ECE(before) - ECE(after), its paired-bootstrap standard error) over the same faces: a gain inside
    that noise is as likely to worsen calibration on new faces as to improve it."""
    rng = np.random.default_rng(seed)
    resampled = [rng.integers(0, len(labels), len(labels)) for _ in range(resamples)]
    diffs = [ece(before[i], labels[i]) - ece(after[i], labels[i]) for i in resampled]
    return ece(before, labels) - ece(after, labels), float(np.std(diffs))


def uncertain_threshold(probs: np.ndarray, labels: np.ndarray, min_accuracy: float = 0.5, step: float = 0.05) -> float:
    """The lowest confidence ``t`` (on a ``step`` grid) above which every ``step``-wide band of predictions
    is right at least ``min_accuracy`` of the time; bands under 20 faces are too few to judge."""
    conf = probs.max(1)
    correct = probs.argmax(1) == labels
    threshold = 0.0
    for lo in np.arange(0, 1, step):
        band = (conf >= lo) & (conf < lo + step)
        if band.sum() >= 20 and correct[band].mean() < min_accuracy:
            threshold = float(round(lo + step, 6))
    return threshold


def calibrate_artifact(artifact_dir: str | Path, source: str | Path, batch_size: int = 512) -> dict[str, Any]:
    """Fit the temperature and the ``uncertain`` cut-off on ``source``'s validation split, for the
    probabilities the artifact reports (its flip-TTA setting), and record them in its ``artifact.json``."""
    from fer_ray.inference.artifact import load_artifact, resolve_model, write_meta
    from fer_ray.inference.export import validation_faces

    path = resolve_model(artifact_dir)  # a shipped name is upgraded where it ships
    art = load_artifact(path, engine="torch")
    faces, labels, split = validation_faces(source, art.preprocess, art.label_set)
    if len(labels) == 0:
        raise ValueError(f"{source} has no validation split to calibrate on")
    chunks = [faces[i : i + batch_size] for i in range(0, len(faces), batch_size)]
    z = np.concatenate([art.predict_logits(c) for c in chunks])
    zm = np.concatenate([art.predict_logits(np.ascontiguousarray(c[..., ::-1])) for c in chunks])

    def reported(t: float) -> np.ndarray:
        return (softmax(z, t) + softmax(zm, t)) / 2 if art.flip_tta else softmax(z, t)

    fitted = fit_temperature(z, labels, zm if art.flip_tta else None)
    # NLL-optimal is not always ECE-better (label smoothing already softens these models): keep
    # the temperature only when it lowers the validation ECE by more than twice the bootstrap
    # noise of that gain, so calibration does not make new faces worse by chance.
    gain, noise = ece_gain(reported(1.0), reported(fitted), labels)
    t = fitted if gain > 2 * noise else 1.0
    threshold = uncertain_threshold(reported(t), labels)
    record = {
        "temperature": round(t, 4),
        "fitted_temperature": round(fitted, 4),
        "uncertain_below": threshold,
        "fitted_on": split,
        "faces": int(len(labels)),
        "flip_tta": art.flip_tta,
        "val_ece_before": round(ece(reported(1.0), labels), 4),
        "val_ece_after": round(ece(reported(t), labels), 4),
        "val_ece_gain_of_fitted": round(gain, 4),
        "val_ece_gain_noise": round(noise, 4),
        "rule": "uncertain when the top probability is below the lowest 0.05-wide confidence band "
        "above which every band (>= 20 faces) of the validation split is right at least half the time",
    }
    art.meta.setdefault("inference", {}).update(temperature=record["temperature"], uncertain_below=threshold)
    art.meta.setdefault("metrics", {})["calibration"] = record
    write_meta(path, art.meta)
    return record
