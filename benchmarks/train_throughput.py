"""Training throughput: Ray Train (1 and 2 workers) vs a bare single-process PyTorch loop, and the
bare loop in fp32 vs bf16 autocast on CPU (``--cpu-bf16``).

Same model, same images, same augmentation, same cores, in one run. images/s counts the
training phase of each epoch only (the first epoch of each path is a warm-up and dropped);
the Ray figures also report wall time including cluster and worker start-up. Peak memory
comes from a second, sampled run of each path, so sampling does not slow the timed one.

python benchmarks/train_throughput.py                       # 4096 FER2013 train images, 3 epochs
python benchmarks/train_throughput.py --images 1024 --epochs 2 --out out/train_smoke.json   # smoke test
python benchmarks/train_throughput.py --bare-only --model cnn_attn --out out/bf16.json       # fp32 vs bf16 only
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from common import fer2013_or_exit, machine_info, timed_then_measured, write_result  # noqa: E402

from fer_ray.cli import setup  # noqa: E402
from fer_ray.models.config import ModelConfig  # noqa: E402
from fer_ray.models.registry import create_model
from fer_ray.preprocess import PreprocessConfig, preprocess_bytes  # noqa: E402
from fer_ray.runtime import RayConfig  # noqa: E402
from fer_ray.train.config import TrainConfig  # noqa: E402
from fer_ray.train.loop import train_one_epoch  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_throughput.json"


def subset(src: Path, n: int, dst: Path) -> Path:
    """The first ``n`` Training rows plus 512 PublicTest rows (Ray's validation pass), as a Parquet."""
    t = pq.read_table(src).to_pandas()
    train = t[t["usage"] == "Training"].head(n)
    val = t[t["usage"] == "PublicTest"].head(512)
    pq.write_table(pa.Table.from_pandas(pd.concat([train, val]), preserve_index=False), dst)
    return dst


def bare(data: Path, cfg: TrainConfig) -> dict:
    t = pq.read_table(data, columns=["image", "label", "usage"]).to_pandas()
    t = t[t["usage"] == "Training"]
    faces = torch.from_numpy(np.stack([preprocess_bytes(b, cfg.preprocess) for b in t["image"]]))
    labels = torch.from_numpy(t["label"].to_numpy().astype(np.int64))
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ips = []
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(labels))
        batches = [
            (faces[order[i : i + cfg.batch_size]], labels[order[i : i + cfg.batch_size]])
            for i in range(0, len(labels), cfg.batch_size)
        ]
        st = train_one_epoch(
            model,
            batches,
            opt,
            torch.device("cpu"),
            aug_cfg=cfg.augment,
            generator=torch.Generator().manual_seed(epoch),
            cpu_bf16=cfg.cpu_bf16,
        )
        ips.append(st.n / st.seconds)
    return {"images_per_s_by_epoch": ips, "images_per_s": float(np.mean(ips[1:] or ips))}


def with_ray(data: Path, cfg: TrainConfig, workers: int, storage: Path) -> dict:
    from fer_ray.train.ray_train import train

    t0 = time.perf_counter()
    res = train(
        TrainConfig(
            **{
                **cfg.__dict__,
                "workers": workers,
                "torch_threads": 0,
                "run_name": f"w{workers}",
                "storage_path": str(storage),
                "data": str(data),
            }
        )
    )
    ips = [h["images_per_s"] for h in res.history]
    return {
        "images_per_s_by_epoch": ips,
        "images_per_s": float(np.mean(ips[1:] or ips)),
        "wall_s_incl_startup": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--model", default="ae_cnn_attn")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--bare-only", action="store_true", help="only the bare loop, fp32 and bf16 (no Ray)")
    a = p.parse_args(argv)
    src = fer2013_or_exit()
    cfg = TrainConfig(
        model=ModelConfig(name=a.model),
        epochs=a.epochs,
        pretrain_epochs=0,
        batch_size=a.batch_size,
        preprocess=PreprocessConfig(),
        ray=RayConfig(),
    )
    with tempfile.TemporaryDirectory() as d:
        data = subset(src, a.images, Path(d) / "subset.parquet")
        # Each path runs twice, timed unobserved and then with the memory sampler (see timed_then_measured);
        # every Ray run gets a fresh storage dir so the second one trains rather than resumes.
        res = {"bare": timed_then_measured(lambda: bare(data, cfg))}
        res["bare_cpu_bf16"] = timed_then_measured(lambda: bare(data, dataclasses.replace(cfg, cpu_bf16=True)))
        for w in () if a.bare_only else (1, 2):
            res[f"ray_{w}w"] = timed_then_measured(
                lambda w=w: with_ray(data, cfg, w, Path(tempfile.mkdtemp(dir=d, prefix="runs")))
            )
    bare_ips = res["bare"]["images_per_s"]
    res["ratio_cpu_bf16_vs_fp32"] = res["bare_cpu_bf16"]["images_per_s"] / bare_ips
    for w in () if a.bare_only else (1, 2):
        res[f"ratio_ray_{w}w_vs_bare"] = res[f"ray_{w}w"]["images_per_s"] / bare_ips
    res["machine"] = machine_info(torch=torch.__version__)
    res["config"] = {
        "images": a.images,
        "epochs": a.epochs,
        "model": a.model,
        "batch_size": a.batch_size,
        "native_cpu_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
    }
    print(f"bare loop      {bare_ips:8.1f} images/s  peak {res['bare']['peak_memory_mb']:.0f} MB")
    b = res["bare_cpu_bf16"]
    print(f"bare cpu bf16  {b['images_per_s']:8.1f} images/s  peak {b['peak_memory_mb']:.0f} MB")
    print(f"ratio bf16 / fp32 (bare) = {res['ratio_cpu_bf16_vs_fp32']:.2f}")
    if a.bare_only:
        write_result(res, a.out)
        return 0
    for w in (1, 2):
        r = res[f"ray_{w}w"]
        print(
            f"Ray Train {w}w   {r['images_per_s']:8.1f} images/s  peak {r['peak_memory_mb']:.0f} MB "
            f"(wall incl. start-up {r['wall_s_incl_startup']:.0f} s)"
        )
    print(
        f"ratio Ray 1 worker / bare = {res['ratio_ray_1w_vs_bare']:.2f}; "
        f"2 workers / bare = {res['ratio_ray_2w_vs_bare']:.2f}"
    )
    write_result(res, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
