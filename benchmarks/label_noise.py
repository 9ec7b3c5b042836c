"""Where a model's PrivateTest errors are: accuracy by how many of FER+'s ten annotators chose the FER2013 label.

FER+ (Barsoum et al. 2016, ``fer2013new.csv``) had every FER2013 face labelled again by ten people. A face whose
FER2013 label none of them chose can only be "right" by learning FER2013's own labelling quirks (or a duplicate of
the face in train), so accuracy there says little about reading faces. The split says what limits a model of this
size class (issue #34): errors on faces people agree on can be won back, errors on contested labels hardly.
FER2013 also repeats faces: PrivateTest faces with a pixel-identical twin in Training are counted apart, as a
model can remember them. Faces without a unique FER+ row (``csv_index`` missing or ambiguous) are left out of the
buckets, not of the total.
fp32 ONNX by default: int8 answers differ between CPUs.

python benchmarks/label_noise.py ae_cnn_attn cnn_attn    # -> benchmarks/results/label_noise.json
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, model_args, model_label, write_result  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "label_noise.json"
# Votes for the FER2013 label, of the votes for the seven FER2013 emotions (contempt, unknown, not-a-face aside).
BUCKETS = {"0 of 10": (0.0, 0.0), "1-2 of 10": (0.01, 0.29), "3-5 of 10": (0.3, 0.59), "6-10 of 10": (0.6, 1.0)}
TARGET = 0.725  # issue #34's single-pass target


def votes_for_label(parquet: str, usage: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FER2013 JPEG bytes, labels, the share of FER+ votes their label got (NaN: no unique FER+ row) and the
    FER+ crowd's most-voted of the seven emotions (-1 likewise), for one ``usage``, in the Parquet's order."""
    import pandas as pd
    import pyarrow.parquet as pq

    from fer_ray.data import ferplus
    from fer_ray.labels import label_of

    cols = ["image", "label", "usage", "csv_index", "csv_index_ambiguous"]
    t = pq.read_table(parquet, columns=cols, filters=[("usage", "=", usage)]).to_pandas()
    csv = pd.read_csv(ferplus.default_csv(parquet))
    emotions = list(ferplus.VOTE_COLUMNS[:7])
    order = np.argsort([label_of(e) for e in emotions])  # FER+ columns in FER2013 label order
    votes = csv[emotions].to_numpy(dtype=float)[:, order]
    labels = t["label"].to_numpy(dtype=np.int64)
    unique = (t["csv_index"].notna() & ~t["csv_index_ambiguous"].fillna(True)).to_numpy()
    share, crowd = np.full(len(t), np.nan), np.full(len(t), -1)
    v = votes[t["csv_index"][unique].astype(int).to_numpy()]
    counted = v.sum(1) > 0
    rows = np.flatnonzero(unique)[counted]
    share[rows] = v[counted][np.arange(counted.sum()), labels[rows]] / v[counted].sum(1)
    crowd[rows] = v[counted].argmax(1)
    return t["image"].to_numpy(), labels, share, crowd


def twins_in_training(parquet: str, images: np.ndarray) -> np.ndarray:
    """Whether each of ``images`` decodes to the very pixels of a Training image."""
    import pyarrow.parquet as pq

    from fer_ray.evaluate.metrics import repeated_in
    from fer_ray.preprocess import decode_image

    train = pq.read_table(parquet, columns=["image"], filters=[("usage", "=", "Training")]).column("image")
    return repeated_in([decode_image(b) for b in images], [decode_image(b) for b in train.to_pylist()])


def main(argv: list[str] | None = None) -> int:
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.preprocess import preprocess_bytes

    a = model_args(__doc__, DEFAULT_OUT, argv, data_help="FER2013 Parquet (fer2013new.csv beside it)")
    parquet = str(fer2013_or_exit(a.data))
    images, labels, share, crowd = votes_for_label(parquet, "PrivateTest")
    known = ~np.isnan(share)
    twins = twins_in_training(parquet, images)
    res: dict = {
        "split": "PrivateTest",
        "faces": len(labels),
        "faces_with_votes": int(known.sum()),
        "crowd_majority_is_label": round(float((crowd[known] == labels[known]).mean()), 4),
        "faces_with_a_twin_in_training": int(twins.sum()),
        "engine": a.engine,
        "single_pass": True,
        "models": {},
    }
    buckets = {name: known & (share >= lo) & (share <= hi + 1e-9) for name, (lo, hi) in BUCKETS.items()}
    print(f"PrivateTest: {len(labels):,} faces, {known.sum():,} with FER+ votes; the crowd's majority is the FER2013 "
          f"label on {res['crowd_majority_is_label']:.1%}")  # fmt: skip
    for m in a.models:
        art = load_artifact(m, engine=a.engine)
        faces = np.stack([preprocess_bytes(b, art.preprocess) for b in images])
        pred = art.predict_proba(faces, flip_tta=False).argmax(1)
        right = pred == labels
        wrong_contested = ~right & known & (share < 0.3)
        r = {
            "model_id": art.model_id,
            "accuracy": round(float(right.mean()), 4),
            "errors": int((~right).sum()),
            "errors_where_label_got_at_most_2_of_10": int(wrong_contested.sum()),
            "accuracy_on_twins": round(float(right[twins].mean()), 4),
            "accuracy_without_twins": round(float(right[~twins].mean()), 4),
            "faces_more_for_target": max(0, math.ceil(TARGET * len(labels)) - int(right.sum())),
            "buckets": {},
        }
        print(f"{m} ({art.model_id}, {a.engine}): {r['accuracy']:.2%}; {r['errors']:,} errors, "
              f"{r['errors_where_label_got_at_most_2_of_10']:,} of them where at most 2 of 10 annotators chose the "
              f"label; {TARGET:.1%} needs {r['faces_more_for_target']} more faces right")  # fmt: skip
        print(f"  {r['accuracy_on_twins']:.1%} right on the {twins.sum()} faces with a twin in Training, "
              f"{r['accuracy_without_twins']:.2%} on the others")  # fmt: skip
        for name, sel in buckets.items():
            b = {
                "faces": int(sel.sum()),
                "share_of_faces": round(float(sel.sum() / known.sum()), 4),
                "accuracy": round(float(right[sel].mean()), 4),
                "errors": int((~right[sel]).sum()),
                "predicts_crowd_majority": round(float((pred[sel] == crowd[sel]).mean()), 4),
            }
            r["buckets"][name] = b
            print(f"  label chosen by {name:<10} {b['faces']:>5} faces ({b['share_of_faces']:.1%}): accuracy "
                  f"{b['accuracy']:.1%}, names the crowd's majority {b['predicts_crowd_majority']:.1%}")  # fmt: skip
        res["models"][model_label(m)] = r
    res["machine"] = machine_info()
    write_result(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
