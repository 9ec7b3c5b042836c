"""Running an artifact over labelled data: probabilities per face, the split the tables use, every engine.

A user's own labelled folders rarely have a PrivateTest: the tables are then computed on the best
labelled split there is (:func:`choose_split`), and every table heading says which.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.data import decode, read_labeled
from fer_ray.inference.artifact import Artifact
from fer_ray.inference.outputs import outputs
from fer_ray.labels import EMOTIONS
from fer_ray.progress import Progress, iterate, without_ray_data_bars

logger = logging.getLogger(__name__)

# Where each evaluated split's rows come from: FER2013's PrivateTest is the headline; a user's
# folders have test/, val/ or only train/ (see fer_ray.data.fer2013.read_image_folders).
ENGINE_SPLIT = {"PrivateTest": "test", "test": "test", "val": "val", "train": "train"}

SPLIT_NOTES = {
    "PrivateTest": "FER2013 PrivateTest: never used for training or checkpoint selection",
    "test": "the test split (no FER2013 PrivateTest rows in this data)",
    "val": "the validation split (no test split in this data; training chose its best checkpoint on it, "
    "so this is optimistic)",
    "train": "the training split (no test or validation split in this data; the model may have trained on "
    "these images, so this is optimistic: add a test/ folder for an honest figure)",
}


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
    # "probs": as scoring and Serve compute them (the artifact's flip_tta)
    keys = ("probs", "probs_no_tta", "probs_uncalibrated", "labels", "usage", "split")
    if not labels:
        empty = [np.zeros((0, len(EMOTIONS)), np.float32)] * 3 + [np.zeros(0, t) for t in (np.int64, object, object)]
        return dict(zip(keys, empty, strict=True))
    return {k: np.concatenate(v) for k, v in zip(keys, (probs, plain, raw, labels, usage, split), strict=True)}


def choose_split(pred: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """(name, row mask) of the split the tables are computed on: PrivateTest, else test/ (the same role),
    else val/ (used for checkpoint selection: optimistic); None if none."""
    usage, split = pred["usage"], pred["split"]
    for name, mask in (("PrivateTest", usage == "PrivateTest"), ("test", split == "test"), ("val", split == "val")):
        if mask.any():
            return name, mask
    return None


def engine_results(
    artifact: Artifact, source: str, split: str = "test", threads: int | None = None, progress: bool | None = None
) -> list[dict]:
    """Accuracy of every engine ``artifact`` holds on one split, single pass and TTA; the faces are decoded
    once, so the rows differ only in the engine."""
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
        probs = artifact.predict_proba(face[None])  # (1, K)
        top = outputs(probs, artifact.uncertain_below).top[0]
        rows.append(
            {
                "path": str(p),
                **{e: round(float(v) * 100, 1) for e, v in zip(EMOTIONS, probs[0], strict=True)},
                "top": EMOTIONS[int(top)],
            }
        )
    return rows
