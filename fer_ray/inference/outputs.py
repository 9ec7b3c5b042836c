"""Logits -> probabilities -> the top emotion, its confidence and the ``uncertain`` flag: one place for scoring's
rows, Serve's JSON, evaluation, calibration and the host check, so a face gets the same answer everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(B, K) logits -> float32 probabilities, softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float32) / np.float32(temperature)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


@dataclass(frozen=True)
class Outputs:
    """Per face (B rows): ``top`` class index, ``confidence`` (its probability), ``uncertain``."""

    top: np.ndarray
    confidence: np.ndarray
    uncertain: np.ndarray


def outputs(probs: np.ndarray, uncertain_below: float | None) -> Outputs:
    """``uncertain``: the top probability is under the artifact's calibrated cut-off, where the top
    class is right less often than not (never set for an artifact without a cut-off)."""
    probs = np.asarray(probs, dtype=np.float32)  # (B, K); B may be 0
    confidence, top = probs.max(1), probs.argmax(1)
    uncertain = confidence < uncertain_below if uncertain_below is not None else np.zeros(len(probs), bool)
    return Outputs(top, confidence, uncertain)
