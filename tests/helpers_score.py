"""Shared helpers of the batch-scoring tests: the bundled samples, composed photos, row checks."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "images"


@lru_cache(maxsize=1)
def samples():
    """``examples/make_samples.py`` as a module (compose_photo, encode, matches, ...)."""
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "examples" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=1)
def expected() -> dict[str, dict]:
    """``examples/images/expected.json``: faces (and pasted boxes) per bundled sample."""
    return json.loads((EXAMPLES / "expected.json").read_text())


def bundled_crops() -> list[Image.Image]:
    return [Image.open(p).convert("L") for p in sorted((EXAMPLES / "crops").glob("*.jpg"))]


def photo_bytes(
    size: tuple[int, int], boxes: list[tuple[int, int, int, int]], fmt: str = "JPEG", seed: int = 0
) -> bytes:
    """A composed photo with the bundled face crops pasted at ``boxes`` (all detected at 130 px and up)."""
    m = samples()
    crops = bundled_crops()
    faces = [crops[i % len(crops)] for i in range(len(boxes))]
    kw = {"quality": 85} if fmt == "JPEG" else {}
    return m.encode(m.compose_photo(faces, size, boxes, seed=seed), fmt, **kw)


def blank_photo(size=(640, 480), seed: int = 0) -> bytes:
    buf = io.BytesIO()
    samples().background(*size, seed=seed).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def copy_samples(dest: Path, names: list[str]) -> list[Path]:
    """Copy bundled samples (paths relative to examples/images) into ``dest``, keeping sub-folders."""
    out = []
    for name in names:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(EXAMPLES / name, target)
        out.append(target)
    return out


def assert_exactly_once(df: pd.DataFrame) -> None:
    """Every image has one row per face (face_index 0..faces-1), or one row when it has none."""
    for path, g in df.groupby("path"):
        faces = int(g["faces"].iloc[0])
        assert (g["faces"] == faces).all(), path
        if faces == 0:
            assert len(g) == 1 and g["face_index"].isna().all(), (path, len(g))
        else:
            assert sorted(g["face_index"].astype(int)) == list(range(faces)), (path, g["face_index"].tolist())


def prob_columns_sum_to_one(df: pd.DataFrame) -> bool:
    ok = df[df["status"] == "ok"]
    probs = ok[[c for c in df.columns if c.startswith("p_")]].to_numpy(dtype=np.float64)
    return bool(np.allclose(probs.sum(1), 1.0, atol=1e-4))
