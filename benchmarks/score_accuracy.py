"""Accuracy through the user's command: every PrivateTest crop written as a file, scored by `jobs/score.py`.

`jobs/evaluate.py` measures a model on decoded arrays; this checks that the scoring job (file
listing, decoding, preprocessing, engine, TTA, Parquet rows) gives the same accuracy when the
3,589 PrivateTest faces arrive as ordinary image files, scored whole (`--whole-image`), once
with the artifact's own setting and once single pass (`--no-tta`). The crops are FER2013's own
JPEG bytes, unchanged, named ``<row>_<label>.jpg``; the run compares each row's emotion with the
label in its file name. The jobs run as subprocesses, exactly as a user types them.

python benchmarks/score_accuracy.py --model ae_cnn_attn --out benchmarks/results/score_accuracy_ae_cnn_attn.json
python benchmarks/score_accuracy.py --model cnn_attn --engine torch
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fer2013_or_exit, machine_info, write_result  # noqa: E402

from fer_ray.labels import EMOTIONS  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "score_accuracy.json"


def write_crops(parquet: Path, folder: Path, usage: str = "PrivateTest") -> int:
    """FER2013's ``usage`` rows as ``<row>_<label>.jpg`` (original bytes); reused when already complete."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(parquet, columns=["image", "label", "usage"])
    t = t.filter(pc.equal(t["usage"], usage))
    marker = folder / ".complete"
    if marker.exists() and marker.read_text() == str(t.num_rows):
        return t.num_rows
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(t["image"].to_pylist(), t["label"].to_pylist(), strict=True)):
        (folder / f"{i:05d}_{label}.jpg").write_bytes(img)
    marker.write_text(str(t.num_rows))
    return t.num_rows


def score_and_check(folder: Path, out: Path, model: str, engine: str | None, extra: list[str]) -> dict:
    """Run ``jobs/score.py`` on ``folder`` and compare each row's emotion with its file's label."""
    import pandas as pd

    cmd = [sys.executable, str(ROOT / "jobs" / "score.py"), str(folder), "--whole-image", "--model", model]
    cmd += ["--out", str(out), "--overwrite", *(["--engine", engine] if engine else []), *extra]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    rows = pd.read_parquet(out / "rows")
    truth = rows["path"].map(lambda p: EMOTIONS[int(Path(p).stem.rsplit("_", 1)[1])])
    scored = rows["status"] == "ok"
    return {
        "command": " ".join(["python", "jobs/score.py", "<crops>", *cmd[3:]]),
        "rows": int(len(rows)),
        "scored": int(scored.sum()),
        "correct": int((rows["emotion"] == truth)[scored].sum()),
        "accuracy": float((rows["emotion"] == truth)[scored].mean()),
        "engines": sorted(rows["engine"].dropna().unique().tolist()) if "engine" in rows else None,
        "seconds_incl_ray_start": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="artifact path or shipped name (default, cnn_attn)")
    p.add_argument("--engine", default=None, help="torch, onnx or onnx-int8 (default: the artifact's)")
    p.add_argument("--data", default=None, help="FER2013 Parquet (default: the shared copy)")
    p.add_argument("--work", default="out/score_accuracy", help="crops and reports go here")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result path")
    a = p.parse_args(argv)
    parquet = fer2013_or_exit(a.data)
    work = Path(a.work)
    n = write_crops(parquet, work / "crops")
    result = {"model": a.model, "engine": a.engine, "private_test_files": n, "machine": machine_info()}
    for name, extra in (("artifact_setting", []), ("single_pass", ["--no-tta"])):
        result[name] = score_and_check(work / "crops", work / f"out_{name}", a.model, a.engine, extra)
        print(f"{name:17s} {result[name]['correct']}/{result[name]['scored']} = {result[name]['accuracy']:.2%}")
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
