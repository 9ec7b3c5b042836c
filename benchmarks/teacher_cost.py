"""What a distillation teacher costs per training step, by engine and TTA (`--teacher-engine`, `--teacher-tta`).

Times ``Teacher.probabilities`` (fer_ray.train.distill) on one batch of the training batch size,
exactly as the training loop calls it: the PyTorch teachers under the loop's autocast (fp32, or
bf16 with ``--cpu-bf16``), the ONNX ones on the CPU with torch's thread count. Random inputs:
cost does not depend on the pixels. Stop any training first: it shares the cores.

python benchmarks/teacher_cost.py                      # both shipped models -> benchmarks/results/teacher_cost.json
python benchmarks/teacher_cost.py --teachers cnn_attn --batch-size 64 --out out/teacher_cost.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine_info, write_result  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "teacher_cost.json"
# (label, engine, autocast to bf16 on CPU)
SETTINGS = (
    ("torch fp32", "torch", False),
    ("torch bf16", "torch", True),
    ("onnx", "onnx", False),
    ("onnx-int8", "onnx-int8", False),
)


def ms_per_batch(teacher, x: torch.Tensor, bf16: bool, repeats: int) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(2):  # warm-up: lazy allocations, ORT's first-run graph work
            teacher.probabilities(x, 2.0)
        t0 = time.perf_counter()
        for _ in range(repeats):
            teacher.probabilities(x, 2.0)
    return (time.perf_counter() - t0) / repeats * 1000


def main(argv: list[str] | None = None) -> int:
    from fer_ray.preprocess import PreprocessConfig
    from fer_ray.train.distill import load_teacher

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teachers", default="ae_cnn_attn,cnn_attn", help="shipped names or artifact paths")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="torch threads (and ONNX Runtime's)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = tuple(a.teachers.split(","))
    x = torch.randn(a.batch_size, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    rows = []
    for label, engine, bf16 in SETTINGS:
        for tta in (False, True):
            teacher = load_teacher(names, PreprocessConfig(), engine=engine, flip_tta=tta, threads=a.threads)
            ms = ms_per_batch(teacher, x, bf16, a.repeats)
            rows.append({"setting": label, "teacher_tta": tta, "ms_per_batch": round(ms, 1)})
            print(f"{label:11s} {'flip TTA' if tta else 'single  '} {ms:7.1f} ms per batch of {a.batch_size}")
    base = next(r["ms_per_batch"] for r in rows if r["setting"] == "torch bf16" and not r["teacher_tta"])
    for r in rows:
        r["vs_torch_bf16_single"] = round(r["ms_per_batch"] / base, 2)
    result = {
        "teachers": list(names),
        "batch_size": a.batch_size,
        "threads": a.threads,
        "rows": rows,
        "machine": machine_info(),
    }
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
