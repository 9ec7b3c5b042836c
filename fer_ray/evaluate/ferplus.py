"""The model on FER+ labels: FER2013's PrivateTest faces re-voted by ten annotators (``fer2013new.csv``).

FER2013's own labels are noisy (the two label sets disagree on a third of these faces), so a model's
accuracy against the re-voted labels says how much of its "error" is label noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.evaluate.metrics import accuracy, split_metrics
from fer_ray.inference.artifact import Artifact
from fer_ray.inference.calibration import ece
from fer_ray.storage import is_remote


def ferplus_metrics(artifact: Artifact, source: str, batch_size: int = 512) -> dict[str, Any] | None:
    """PrivateTest faces with a FER+ majority, scored against FER+ and FER2013 labels from the same predictions;
    ``None`` unless ``source`` is our FER2013 Parquet with ``fer2013new.csv`` beside it."""
    from fer_ray.data import ferplus

    csv = ferplus.default_csv(str(source))
    if not str(source).endswith(".parquet") or is_remote(source) or not Path(csv).is_file():
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
        "ferplus_accuracy_no_tta": accuracy(probs_single, plus),
        "fer2013_accuracy_same_faces": accuracy(probs, original),
        "fer2013_accuracy_same_faces_no_tta": accuracy(probs_single, original),
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
