"""Ingest throughput: FER2013 Parquet -> normalized float tensors, Ray Data vs a single-process loop.

Both paths run the one preprocessing path (fer_ray.preprocess via fer_ray.data.decode) on the
same rows; the result is rows/s for each, their ratio, and the peak memory of each.

python benchmarks/ingest.py                    # full FER2013 (35,887 rows) -> benchmarks/results/ingest.json
python benchmarks/ingest.py --limit 2000 --out out/ingest_smoke.json   # smoke test

Peak memory is the summed PSS (proportional set size, so shared pages such as Ray's object
store are counted once) of this process and all its descendants, sampled every 0.2 s; a
locally started Ray (raylet, workers) descends from this process. When joining an existing
cluster (--address / RAY_ADDRESS) only the driver is measured, which the JSON records. Each
path runs twice: timed without the sampler, then sampled for memory (see common.timed_then_measured).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import fer2013_or_exit, machine_info, repo_relative, timed_then_measured, write_result  # noqa: E402

from fer_ray.cli import add_ray_args, setup  # noqa: E402
from fer_ray.preprocess import PreprocessConfig, normalize, preprocess_bytes  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "ingest.json"


# -- the two paths -------------------------------------------------------------------------------------


def run_plain(path: str, limit: int | None, batch_size: int, cfg: PreprocessConfig) -> dict:
    """pandas + Pillow in one process and one thread: read, decode, crop/resize, normalize."""
    import pyarrow.parquet as pq
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    df = pq.read_table(path, columns=["image", "label"]).to_pandas()
    if limit:
        df = df.iloc[:limit]
    rows = 0
    images = df["image"].tolist()
    for start in range(0, len(images), batch_size):
        faces = np.stack([preprocess_bytes(b, cfg) for b in images[start : start + batch_size]])
        x = normalize(faces, cfg)  # (B, 1, S, S) float32
        rows += x.shape[0]
    elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def _to_tensor(batch: dict, cfg: PreprocessConfig) -> dict:
    return {"x": normalize(batch["face"], cfg).numpy(), "label": batch["label"]}


def run_ray(path: str, limit: int | None, batch_size: int, cfg: PreprocessConfig) -> dict:
    """Ray Data: read_fer_parquet -> decode -> normalize in tasks, streamed to this process."""
    from fer_ray.data import decode
    from fer_ray.data.fer2013 import read_fer_parquet

    t0 = time.perf_counter()
    ds = read_fer_parquet(path)
    if limit:
        ds = ds.limit(limit)
    ds = decode(ds, cfg, batch_size=batch_size).map_batches(
        _to_tensor, fn_kwargs={"cfg": cfg}, batch_size=batch_size, batch_format="numpy"
    )
    rows = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        if batch["x"].dtype != np.float32 or batch["x"].shape[1:] != (1, cfg.image_size, cfg.image_size):
            raise RuntimeError(f"unexpected tensor batch {batch['x'].dtype} {batch['x'].shape}")
        rows += len(batch["x"])
    elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="FER2013 Parquet (default: the shared copy)")
    p.add_argument("--limit", type=int, default=None, help="first N rows only (smoke tests)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result path")
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    a = get_args_parser().parse_args(argv)
    data = fer2013_or_exit(a.data)
    if a.limit is not None and a.limit < 1:
        sys.exit(f"--limit must be >= 1, got {a.limit}")
    cfg = PreprocessConfig()

    # The plain loop runs first, before Ray exists, so its memory is this process alone.
    plain = timed_then_measured(lambda: run_plain(str(data), a.limit, a.batch_size, cfg))
    plain["maxrss_self_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"plain  : {plain['rows']:,} rows in {plain['seconds']:.1f} s = {plain['rows_per_s']:,.0f} rows/s")

    import ray

    from fer_ray.runtime import RayConfig, init_ray

    t0 = time.perf_counter()
    init_ray(RayConfig(address=a.address, num_cpus=a.ray_cpus))
    startup = time.perf_counter() - t0
    joined = bool(a.address or os.environ.get("RAY_ADDRESS"))
    ray.data.DataContext.get_current().enable_progress_bars = False
    rayd = timed_then_measured(lambda: run_ray(str(data), a.limit, a.batch_size, cfg))
    rayd["startup_s"] = round(startup, 1)
    print(f"ray    : {rayd['rows']:,} rows in {rayd['seconds']:.1f} s = {rayd['rows_per_s']:,.0f} rows/s")
    if rayd["rows"] != plain["rows"]:
        sys.exit(f"row counts differ: plain {plain['rows']} vs ray {rayd['rows']}")

    ratio = rayd["rows_per_s"] / plain["rows_per_s"]
    result = {
        "benchmark": "ingest: FER2013 Parquet -> normalized float tensors",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "data": repo_relative(data),
        "limit": a.limit,
        "batch_size": a.batch_size,
        "plain": plain,
        "ray": rayd,
        "ray_over_plain": round(ratio, 3),
        "memory_scope": "driver only (joined an existing cluster)" if joined else "process tree (PSS)",
        "machine": machine_info(),
    }
    print(
        f"ray/plain = {ratio:.2f}x; peak memory plain {plain['peak_memory_mb']:,.0f} MB, "
        f"ray {rayd['peak_memory_mb']:,.0f} MB ({result['memory_scope']}); Ray start-up {startup:.1f} s not counted"
    )
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
