"""Tiny labelled FER-style datasets written by tests (same schema as the shared Parquet)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from fer_ray.labels import EMOTIONS


def synthetic_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A learnable stand-in for a face: class-specific bright bar position plus noise."""
    img = rng.normal(100, 20, (size, size))
    band = size // len(EMOTIONS)
    img[:, label * band : (label + 1) * band] += 100
    return np.clip(img, 0, 255).astype(np.uint8)


def write_tiny_fer_parquet(path: Path, n_per_class: int = 12, seed: int = 0, splits=("Training", "PublicTest")) -> Path:
    """Write ``n_per_class`` images per class and per usage to ``path`` with the shared schema."""
    rng = np.random.default_rng(seed)
    rows = {k: [] for k in ("image", "label", "emotion", "split", "usage", "source_name", "csv_index")}
    for usage in splits:
        for label, emotion in enumerate(EMOTIONS):
            for i in range(n_per_class):
                buf = io.BytesIO()
                Image.fromarray(synthetic_face(label, rng)).save(buf, format="JPEG", quality=95)
                split = "train" if usage == "Training" else "test"
                rows["image"].append(buf.getvalue())
                rows["label"].append(label)
                rows["emotion"].append(emotion)
                rows["split"].append(split)
                rows["usage"].append(usage)
                rows["source_name"].append(f"{split}/{emotion}/{usage}_{label}_{i}.jpg")
                rows["csv_index"].append(None)
    table = pa.table(
        {
            "image": pa.array(rows["image"], pa.binary()),
            "label": pa.array(rows["label"], pa.int8()),
            "emotion": pa.array(rows["emotion"], pa.string()),
            "split": pa.array(rows["split"], pa.string()),
            "usage": pa.array(rows["usage"], pa.string()),
            "source_name": pa.array(rows["source_name"], pa.string()),
            "csv_index": pa.array(rows["csv_index"], pa.int32()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def absolute_paths(obj) -> list[str]:
    """Strings anywhere in a JSON-like value that look like a machine's absolute path (POSIX, ``~`` or Windows):
    what a shipped artifact or a public API response must never contain."""
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in absolute_paths(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in absolute_paths(v)]
    if isinstance(obj, str) and (obj.startswith(("/", "~")) or re.match(r"^[A-Za-z]:\\", obj)):
        return [obj]
    return []
