"""Shared helpers of the batch-scoring tests: the bundled samples, composed photos, row checks, made-up outputs."""

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


def write_scored(
    out: Path,
    images: list[list],
    files_per_part: int = 7,
    paths: list[str] | None = None,
    uncertain_below: float | None = None,
    errors: dict[int, str] | None = None,
) -> pd.DataFrame:
    """An OUT as a scoring run leaves it (part files of OUTPUT_SCHEMA rows, inputs.parquet), so that the
    report can be checked exactly without Ray or a model.

    ``images``: per image, its faces, each a confidence (the emotion cycles through EMOTIONS) or an
    ``(emotion, confidence)`` pair; an empty list is an image without a face. ``paths``: the images'
    paths (default ``/photos/img0000.jpg``, ...); ``errors``: image index -> error message (an error row).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fer_ray.labels import EMOTIONS
    from fer_ray.score.schema import OUTPUT_SCHEMA, PROB_COLUMNS
    from fer_ray.score.store import OutputStore

    errors = errors or {}
    rows = []
    for i, faces in enumerate(images):
        path = paths[i] if paths else f"/photos/img{i:04d}.jpg"
        base = {"path": path, "size": 1000 + i, "mtime": 1.0, "faces": len(faces), "model_id": "m"}
        if i in errors:
            rows.append({**base, "faces": 0, "status": "error", "error": errors[i]})
        elif not faces:
            rows.append({**base, "status": "no_face"})
        for k, face in enumerate(faces if i not in errors else []):
            emotion, c = face if isinstance(face, tuple) else (EMOTIONS[k % len(EMOTIONS)], face)
            top = EMOTIONS.index(emotion)
            rest = (1 - c) / (len(EMOTIONS) - 1)
            probs = {p: (c if j == top else rest) for j, p in enumerate(PROB_COLUMNS)}
            uncertain = None if uncertain_below is None else c < uncertain_below
            rows.append(
                {**base, **probs, "status": "ok", "face_index": k, "emotion": emotion, "confidence": c,
                 "uncertain": uncertain}
            )  # fmt: skip
    df = pd.DataFrame(rows)
    store = OutputStore(str(out))
    (out / "rows").mkdir(parents=True)
    names = df["path"].unique()
    for n, start in enumerate(range(0, len(names), files_per_part)):  # an image's rows share a part file
        part = df[df["path"].isin(names[start : start + files_per_part])]
        part = part.astype(object).where(part.notna(), None)  # NaN -> null, so int columns convert
        cols = {f.name: pa.array(part[f.name].tolist() if f.name in part else [None] * len(part), f.type)
                for f in OUTPUT_SCHEMA}  # fmt: skip
        pq.write_table(pa.table(cols, schema=OUTPUT_SCHEMA), out / "rows" / f"part-test-{n:04d}.parquet")
    listing = df.drop_duplicates("path")[["path", "size", "mtime"]].assign(error=None)
    store.write_inputs(listing)
    return df
