"""One evaluation from artifacts to files: each artifact over labelled data, every engine, FER+ labels.

A user's own labelled folders rarely have a PrivateTest: the tables are then computed on the best
labelled split there is (:func:`choose_split`), and every table heading says which.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.data import decode, read_labeled
from fer_ray.evaluate.config import EvalConfig
from fer_ray.evaluate.metrics import accuracy, calibration, digests, random_draws, split_metrics
from fer_ray.evaluate.writing import write_evaluation, write_plots
from fer_ray.inference.artifact import WEIGHTS, Artifact
from fer_ray.inference.calibration import ece
from fer_ray.inference.engine import ENGINES, ONNX_FILES
from fer_ray.inference.export import engine_accuracies, labeled_faces, proba_both
from fer_ray.inference.outputs import outputs
from fer_ray.labels import EMOTIONS
from fer_ray.models.registry import count_parameters, multiply_adds
from fer_ray.preprocess import ImageDecodeError, PreprocessConfig, preprocess_bytes
from fer_ray.progress import Progress, iterate, without_ray_data_bars
from fer_ray.storage import is_remote

logger = logging.getLogger(__name__)

SPLIT_NOTES = {
    "PrivateTest": "FER2013 PrivateTest: never used for training or checkpoint selection",
    "test": "the test split (no FER2013 PrivateTest rows in this data)",
    "val": "the validation split (no test split in this data; training chose its best checkpoint on it, "
    "so this is optimistic)",
    "train": "the training split (no test or validation split in this data; the model may have trained on "
    "these images, so this is optimistic: add a test/ folder for an honest figure)",
}


def evaluate_all(
    artifacts: list[Artifact],
    source: str,
    out_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    engines: bool = True,
    progress: bool | None = None,
    repeats: bool = True,
) -> list[dict]:
    """Evaluate each artifact on ``source`` (see :func:`evaluate_artifact`); write evaluation.json/.md and
    plots. ``progress``: as :class:`fer_ray.progress.Progress` takes it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, histories = [], []
    _training_digests.cache_clear()  # a cache for this call's models, never a stale one from an earlier call
    for art, label in zip(artifacts, labels_of(artifacts), strict=True):
        r = {"label": label, **evaluate_artifact(art, source, cfg, progress, repeats)}
        if engines:
            split = "test" if r["split"] == "PrivateTest" else r["split"]  # labeled_faces' name for it
            r["engines"] = engine_results(art, source, split, progress=progress)
        if r["split"] == "PrivateTest":
            r["ferplus_private_test"] = ferplus_metrics(art, source, cfg.batch_size)
        histories.append(art.meta.get("metrics", {}).get("history", []))
        write_plots(r, histories[-1], out, label)
        results.append(r)
    write_evaluation(results, histories, out)
    return results


def labels_of(artifacts: list[Artifact]) -> list[str]:
    """What tables and file names call each artifact: its architecture, or ``name@weights-id`` where two share one
    (a candidate beside the shipped model of its architecture would otherwise overwrite its plots)."""
    names = [a.model_config.name for a in artifacts]
    return [n if names.count(n) == 1 else a.model_id.split("+")[0] for n, a in zip(names, artifacts, strict=True)]


def photo_tables(artifacts: list[Artifact], folder: str | Path, out_dir: str | Path) -> list[tuple[str, list[dict]]]:
    """(model name, Table 5) of each artifact: per-class percentages for each image of a folder of external
    (whole-face) photos, written as ``<model>_photos.json``."""
    tables = []
    for art in artifacts:
        rows = []
        for p in sorted(Path(folder).iterdir()):
            if not p.is_file():
                continue
            try:
                face = preprocess_bytes(p.read_bytes(), art.preprocess)
            except ImageDecodeError as e:
                rows.append({"path": str(p), "error": str(e)})
                continue
            probs = art.predict_proba(face[None])  # (1, K)
            top = outputs(probs, art.uncertain_below).top[0]
            percent = {e: round(float(v) * 100, 1) for e, v in zip(EMOTIONS, probs[0], strict=True)}
            rows.append({"path": str(p), **percent, "top": EMOTIONS[int(top)]})
        (Path(out_dir) / f"{art.model_config.name}_photos.json").write_text(json.dumps(rows, indent=2))
        tables.append((art.model_config.name, rows))
    return tables


def test_predictions(
    artifact: Artifact,
    source: str,
    batch_size: int = 512,
    splits: tuple[str, ...] = ("val", "test"),
    progress: bool | None = None,
) -> dict[str, np.ndarray]:
    """Probabilities, labels, split and usage for every row of ``splits`` of ``source`` (decoded with Ray Data)."""
    ds = without_ray_data_bars(decode(read_labeled(source, splits=splits), artifact.preprocess))
    probs, plain, raw, labels, usage, split, digest, errors = [], [], [], [], [], [], [], 0
    # the same model without its temperature: calibration is measured as ECE before/after
    uncalibrated = dataclasses.replace(artifact, temperature=1.0)
    with Progress(
        f"evaluating {artifact.model_config.name} ({'+'.join(splits)})", unit="faces", progress=progress
    ) as bar:
        for b in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
            ok = pd.isna(b["error"])  # an all-null column arrives as NaN, not None
            errors += int((~ok).sum())
            faces = b["face"][ok]
            single, tta = (
                artifact.predict_proba_both(faces) if artifact.flip_tta else [artifact.predict_proba(faces)] * 2
            )
            probs.append(tta)
            plain.append(single)
            raw.append(tta if artifact.temperature == 1.0 else uncalibrated.predict_proba(faces))
            labels.append(b["label"][ok].astype(np.int64))
            usage.append(np.asarray(b["usage"][ok], dtype=object))
            split.append(np.asarray(b["split"][ok], dtype=object))
            digest.append(np.array(digests(faces), dtype=object))
            bar.update(int(ok.sum()), errors=errors)
    if errors:
        logger.warning("%d evaluation images failed to decode and are left out", errors)
    # "probs": as scoring and Serve compute them (the artifact's flip_tta)
    keys = ("probs", "probs_no_tta", "probs_uncalibrated", "labels", "usage", "split", "digest")
    if not labels:
        empty = [np.zeros((0, len(EMOTIONS)), np.float32)] * 3
        return dict(zip(keys, empty + [np.zeros(0, t) for t in (np.int64, object, object, object)], strict=True))
    parts = (probs, plain, raw, labels, usage, split, digest)
    return {k: np.concatenate(v) for k, v in zip(keys, parts, strict=True)}


def choose_split(pred: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """(name, row mask) of the split the tables are computed on: PrivateTest, else test/ (the same role),
    else val/ (used for checkpoint selection: optimistic); None if none."""
    usage, split = pred["usage"], pred["split"]
    for name, mask in (("PrivateTest", usage == "PrivateTest"), ("test", split == "test"), ("val", split == "val")):
        if mask.any():
            return name, mask
    return None


def evaluate_artifact(
    artifact: Artifact,
    source: str,
    cfg: EvalConfig = EvalConfig(),
    progress: bool | None = None,
    repeats: bool = True,
) -> dict[str, Any]:
    """The tables' numbers for one artifact on the split :func:`choose_split` picks (``split`` says which);
    ``public_test`` and ``paper_test_7178`` (the paper's test set: PublicTest + PrivateTest) only for FER2013."""
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
    result = {
        "model": artifact.model_config.name,
        "model_id": artifact.model_id,
        "trained_on": artifact.label_set,  # its calibration row is against FER2013 labels; FER+ table: ferplus_ece
        "engine": artifact.engine_name,
        "model_sha256": artifact.model_sha256,
        "parameters": count_parameters(artifact.model),
        "multiply_adds": multiply_adds(artifact.model),
        "weights_bytes": (artifact.path / WEIGHTS).stat().st_size,
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
    if repeats and name != "train":
        result["repeats"] = repeat_metrics(artifact, source, pred, mask)
    logger.info(
        "%s: %s accuracy %.2f%% on %d images", result["model"], name, 100 * result["test"]["accuracy"], len(labels)
    )
    return result


def engine_results(artifact: Artifact, source: str, split: str = "test", progress: bool | None = None) -> list[dict]:
    """Accuracy of every engine ``artifact`` holds on one split, single pass and TTA; the faces are decoded
    once, so the rows differ only in the engine."""
    faces, labels = labeled_faces(source, split, artifact.preprocess)
    if len(labels) == 0:
        return []
    rows = []
    names = [n for n in ENGINES if n not in ONNX_FILES or (artifact.path / ONNX_FILES[n]).is_file()]
    measured = engine_accuracies(artifact.path, names, faces, labels, os.cpu_count())
    for art, acc, agree in iterate(
        measured, f"engines of {artifact.model_config.name}", len(names), "engines", progress
    ):
        rows.append(
            {
                "engine": art.engine_name,
                "model_id": art.model_id,
                "sha256": art.model_sha256,
                "file": art.engine.file.name,
                "bytes": art.engine.file.stat().st_size,
                "split": split,
                "n": int(len(labels)),
                "accuracy_single": acc["val_accuracy_single"],
                "accuracy_flip_tta": acc["val_accuracy_flip_tta"],
                "top1_agreement_with_first": agree,
            }
        )
    return rows


def repeat_metrics(
    artifact: Artifact, source: str, pred: dict[str, np.ndarray], mask: np.ndarray
) -> dict[str, Any] | None:
    """Accuracy on the rows ``mask`` of :func:`test_predictions` whose pixels (as the model reads them) also occur in
    the training split, and on the rest. FER2013 repeats about 8% of PrivateTest in Training and every published
    figure includes them; a model can remember those, so the rest is the figure for faces it never saw. ``None``
    without training rows."""
    seen = _training_digests(source, artifact.preprocess)
    if not seen:
        return None
    repeat = np.array([d in seen for d in pred["digest"][mask]], dtype=bool)
    probs, single, labels = pred["probs"][mask], pred["probs_no_tta"][mask], pred["labels"][mask]
    return {
        "faces": int(len(labels)),
        "repeats": int(repeat.sum()),
        "accuracy_repeats": accuracy(probs[repeat], labels[repeat]),
        "accuracy_rest": accuracy(probs[~repeat], labels[~repeat]),
        "accuracy_rest_no_tta": accuracy(single[~repeat], labels[~repeat]),
    }


@functools.lru_cache(maxsize=2)
def _training_digests(source: str, preprocess: PreprocessConfig) -> frozenset[bytes]:
    """The training split's face digests, decoded once per preprocessing: models that read faces alike (the usual
    comparison) share them, and decoding the training split is most of the table's cost."""
    train, _ = labeled_faces(source, "train", preprocess)
    return frozenset(digests(train))


def ferplus_metrics(artifact: Artifact, source: str, batch_size: int = 512) -> dict[str, Any] | None:
    """PrivateTest faces with a FER+ majority (re-voted by ten annotators, ``fer2013new.csv``), scored against
    FER+ and FER2013 labels from the same predictions: FER2013's own labels are noisy (the two disagree on a
    third of these faces), so this says how much of a model's "error" is label noise. ``None`` unless
    ``source`` is our FER2013 Parquet with ``fer2013new.csv`` beside it."""
    from fer_ray.data import ferplus

    csv = ferplus.default_csv(str(source))
    if not str(source).endswith(".parquet") or is_remote(source) or not Path(csv).is_file():
        return None
    faces, original, plus, left_out = ferplus.labelled_faces(str(source), "PrivateTest", artifact.preprocess, csv)
    probs_single, probs_tta = proba_both(artifact, faces, batch_size)
    probs = probs_tta if artifact.flip_tta else probs_single  # as scoring and Serve report them
    return {
        "split": "PrivateTest",
        "left_out": left_out,
        "ferplus": split_metrics(probs, plus),
        "ferplus_accuracy_no_tta": accuracy(probs_single, plus),
        "fer2013_accuracy_same_faces": accuracy(probs, original),
        "fer2013_accuracy_same_faces_no_tta": accuracy(probs_single, original),
        "labels_agree": float((original == plus).mean()),
        # a FER+-trained model's confidence is judged against the labels it learnt (its own temperature applied)
        "ferplus_ece": ece(probs, plus),
    }
