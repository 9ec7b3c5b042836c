"""What a distillation teacher knows: each artifact alone and their average, on PublicTest and PrivateTest.

`--teachers A,B` (fer_ray.train.distill) trains a student on the mean of its teachers' softened
probabilities; this measures how good that mean is, single view (what the student is taught on
each augmented batch) and with flip TTA, beside each member. Torch engine, the shared
preprocessing (`labeled_faces`), no Ray.

python benchmarks/ensemble_accuracy.py ae_cnn_attn cnn_attn    # -> benchmarks/results/ensemble_accuracy.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, write_result  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ensemble_accuracy.json"
SPLITS = {"val": "PublicTest", "test": "PrivateTest"}


def main(argv: list[str] | None = None) -> int:
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.inference.export import labeled_faces

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="shipped names or artifact paths")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    parquet = str(fer2013_or_exit())
    arts = {m: load_artifact(m, engine="torch") for m in a.models}
    res: dict = {"models": {m: art.model_id for m, art in arts.items()}, "accuracy": {}}
    for split, name in SPLITS.items():
        faces, labels = labeled_faces(parquet, split, next(iter(arts.values())).preprocess)
        probs = {m: art.predict_proba_both(faces) for m, art in arts.items()}  # (single, flip TTA)
        rows = {m: probs[m] for m in arts}
        rows["mean"] = tuple(np.mean([probs[m][k] for m in arts], axis=0) for k in (0, 1))
        for who, (single, tta) in rows.items():
            acc = {
                "single": float((single.argmax(1) == labels).mean()),
                "flip_tta": float((tta.argmax(1) == labels).mean()),
            }
            res["accuracy"].setdefault(who, {})[name] = acc
            print(f"{who:>14} {name:<11} single {acc['single']:.2%}  flip TTA {acc['flip_tta']:.2%}")
    res["machine"] = machine_info()
    write_result(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
