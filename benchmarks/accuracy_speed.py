"""Accuracy against speed: every shipped model x engine x TTA setting on the same PrivateTest faces.

For each combination it measures PrivateTest accuracy (all 3,589 faces) and the forward rate
(faces/s, batches of --batch-size, --threads threads, one warm-up batch) on the same decoded
faces, in one process, one after another, so the rates are comparable within the run. Writes
JSON and a scatter plot (accuracy vs faces/s, log x). Face detection and decoding are not in
these rates: `benchmarks/score_throughput.py` measures the whole job.

python benchmarks/accuracy_speed.py     # -> benchmarks/results/accuracy_speed.{json,png}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, write_result  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "accuracy_speed.json"


def measure(art, faces: np.ndarray, labels: np.ndarray, flip_tta: bool, batch_size: int) -> dict:
    art.predict_proba(faces[:batch_size], flip_tta=flip_tta)  # warm-up (ONNX Runtime allocates on first run)
    preds, t0 = [], time.perf_counter()
    for i in range(0, len(faces), batch_size):
        preds.append(art.predict_proba(faces[i : i + batch_size], flip_tta=flip_tta).argmax(1))
    seconds = time.perf_counter() - t0
    return {
        "accuracy": float((np.concatenate(preds) == labels).mean()),
        "faces_per_s": round(len(faces) / seconds, 1),
        "seconds": round(seconds, 3),
    }


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        ax.scatter([r["faces_per_s"] for r in mine], [100 * r["accuracy"] for r in mine], label=model, s=36)
        for r in mine:
            tag = f"{r['engine']}{' +TTA' if r['flip_tta'] else ''}"
            ax.annotate(tag, (r["faces_per_s"], 100 * r["accuracy"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.axhline(65.8, color="grey", ls="--", lw=1)
    ax.text(
        0.01, 65.9, "pip install fer: 65.8% (issue #9)", fontsize=7, color="grey", transform=ax.get_yaxis_transform()
    )
    ax.set_xlabel("faces/s, model forward only (2 threads, batch 256)")
    ax.set_ylabel("PrivateTest accuracy (%)")
    ax.set_title("Accuracy vs speed, PrivateTest 3,589 faces")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn_attn,ae_cnn_attn", help="artifact paths or shipped names, comma separated")
    p.add_argument("--engines", default="torch,onnx,onnx-int8")
    p.add_argument("--data", default=None, help="FER2013 Parquet (default: the shared copy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result path (the plot goes beside it)")
    a = p.parse_args(argv)

    import torch

    from fer_ray.inference.artifact import load_artifact
    from fer_ray.inference.export import labeled_faces

    torch.set_num_threads(a.threads)
    parquet = fer2013_or_exit(a.data)
    rows = []
    for model in a.models.split(","):
        faces, labels = labeled_faces(str(parquet), "test", load_artifact(model, engine="torch").preprocess)
        for engine in a.engines.split(","):
            art = load_artifact(model, engine=engine, threads=a.threads)
            for flip_tta in (False, True):
                r = {"model": model, "arch": art.model_config.name, "engine": engine, "flip_tta": flip_tta}
                r.update(measure(art, faces, labels, flip_tta, a.batch_size))
                print(
                    f"{model:10s} {engine:10s} tta={flip_tta!s:5s} {r['accuracy']:.2%} {r['faces_per_s']:9,.0f} faces/s"
                )
                rows.append(r)
    out = Path(a.out)
    write_result({"faces": int(len(labels)), "batch_size": a.batch_size, "threads": a.threads, "rows": rows,
                  "machine": machine_info()}, out)  # fmt: skip
    plot(rows, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
