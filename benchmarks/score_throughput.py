"""Batch-scoring throughput: the Ray Data job vs a plain loop vs the model alone, and its memory at scale.

Inputs are generated from the FER2013 Parquet into --work: 48x48 face crops (scored whole)
and "photos": JPEGs of 1-3 MP (1200x900 to 2000x1500) with 1-3 upscaled FER faces each
(faces detected). On the same machine, cores, model, engine and detector it measures

(a) the Ray Data job (fer_ray.score.score: list -> decode/detect/crop tasks -> actor-pool inference -> Parquet),
(b) a plain single-process loop doing the same read -> faces_from_bytes (decode, detect, crop) -> forward,
    with --threads threads for OpenCV and the engine,
(c) the PyTorch model forward alone on pre-decoded uint8 crops (the torch engine),
(d) the forward alone with the engine the job uses (default: the artifact's, int8 ONNX on CPU),

each crops figure in the artifact's own TTA mode and single pass (--no-tta in the job),
and prints images/s with the ratios (a)/(b) on photos and (a)/(d) on crops. --memory then
scores --memory-sizes images (a list file of symlinks that repeat the crops) and records the
peak summed PSS of the process tree (driver, raylet, workers; shared pages counted once; see common.py),
which should not grow with the collection, and scores the largest size once more in the other TTA mode:
both modes at scale against the forward pass (``crops_at_scale*`` in the JSON).

python benchmarks/score_throughput.py --n 2000 --memory                 # -> benchmarks/results/score_throughput.json
python benchmarks/score_throughput.py --n 12 --memory --memory-sizes 40,80 --out out/score_smoke.json  # smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import PeakMemory, fer2013_or_exit, machine_info, tree_memory, write_result  # noqa: E402

from fer_ray.cli import add_ray_args, setup  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "score_throughput.json"
PHOTO_SIZES = ((1200, 900), (1600, 1200), (2000, 1500))  # 1.1, 1.9 and 3.0 MP


# -- inputs --------------------------------------------------------------------------------------------
def _samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "examples" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_inputs(work: Path, fer: Path, n_crops: int, n_photos: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``n_crops`` FER crops and ``n_photos`` composed photos under ``work`` (kept for reruns)."""
    import pyarrow.parquet as pq
    from PIL import Image

    crops_dir, photos_dir = work / "crops", work / "photos"
    manifest = work / "inputs.json"
    want = {"crops": n_crops, "photos": n_photos, "seed": seed}
    if manifest.exists() and json.loads(manifest.read_text()) == want:
        return crops_dir, photos_dir
    for d in (crops_dir, photos_dir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
    n_faces = n_crops + 3 * n_photos
    images = pq.read_table(fer, columns=["image"]).column("image").slice(0, n_faces).to_pylist()
    if len(images) < n_crops + 3 * n_photos:
        raise SystemExit(f"{fer} has {len(images)} images; ask for fewer (--n)")
    for i in range(n_crops):
        (crops_dir / f"{i:06d}.jpg").write_bytes(images[i])

    samples, rng = _samples_module(), np.random.default_rng(seed)
    backgrounds = [samples.background(*PHOTO_SIZES[k % len(PHOTO_SIZES)], seed=k) for k in range(6)]
    faces = iter(images[n_crops:])
    for i in range(n_photos):
        canvas = backgrounds[i % len(backgrounds)].copy()
        w, h = canvas.size
        k = int(rng.integers(1, 4))
        side = int(rng.integers(w // 8, w // 5))  # 150-400 px: found at the default detection size
        for j in range(k):  # k faces side by side, at random heights
            x, y = 30 + j * (w - 60) // k, int(rng.integers(40, h - side - 40))
            samples.paste_face(canvas, Image.open(io.BytesIO(next(faces))), (x, y, side, side))
        canvas.save(photos_dir / f"{i:06d}.jpg", quality=85)
    manifest.write_text(json.dumps(want))
    return crops_dir, photos_dir


# -- (a) the Ray Data job, (b) the plain loop, (c) the forward pass alone ---------------------------
def run_ray_job(
    inputs: list[str], out: Path, a: argparse.Namespace, ray_cfg, flip_tta: bool | None = None, whole_image=False
) -> dict:
    from fer_ray.score.config import ScoreConfig
    from fer_ray.score.driver import score

    cfg = ScoreConfig(
        inputs=tuple(inputs), out=str(out), model=a.model, overwrite=True, actors=a.actors,
        batch_size=a.batch_size, threads=a.actor_threads, ray=ray_cfg, engine=a.engine,
        flip_tta=flip_tta, whole_image=whole_image, stages=a.stages,
    )  # fmt: skip
    res = score(cfg)
    if not res.summary["complete"]:
        raise SystemExit(f"scoring {inputs} was incomplete: {res.summary}")
    n = res.run["images_scored"]
    return {
        "images": n,
        "faces": res.summary["faces"],
        "seconds": res.run["pipeline_s"],
        "end_to_end_s": res.run["elapsed_s"],
        "images_per_s": round(n / res.run["pipeline_s"], 2),
    }


def run_plain_loop(files: list[Path], art, batch_size: int) -> dict:
    """One process: the scoring job's own functions in a for loop, forward passes in batches."""
    from fer_ray.score.config import DetectConfig
    from fer_ray.score.faces import faces_from_bytes

    detect, pending, faces = DetectConfig(), [], 0
    t0 = time.perf_counter()
    for f in files:
        _, crops, _ = faces_from_bytes(f.read_bytes(), detect, art.preprocess)
        pending.extend(crops)
        if len(pending) >= batch_size:
            faces += len(art.predict_proba(np.stack(pending)))
            pending = []
    if pending:
        faces += len(art.predict_proba(np.stack(pending)))
    seconds = time.perf_counter() - t0
    ips = round(len(files) / seconds, 2)
    return {"images": len(files), "faces": faces, "seconds": round(seconds, 3), "images_per_s": ips}


def run_forward_only(files: list[Path], art, batch_size: int, flip_tta: bool | None = None) -> dict:
    """The model alone: crops decoded beforehand (not timed), then predict_proba in batches."""
    from fer_ray.preprocess import decode_image, face_input

    crops = np.stack([face_input(decode_image(f.read_bytes()), None, art.preprocess) for f in files])  # (N, S, S)
    art.predict_proba(crops[:batch_size], flip_tta=flip_tta)  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(crops), batch_size):
        art.predict_proba(crops[start : start + batch_size], flip_tta=flip_tta)
    seconds = time.perf_counter() - t0
    ips = round(len(files) / seconds, 2)
    return {"images": len(files), "seconds": round(seconds, 3), "images_per_s": ips, "engine": art.engine_name}


def run_memory(work: Path, crops: list[Path], sizes: list[int], a: argparse.Namespace, ray_cfg) -> list[dict]:
    """Score ``sizes`` images each (symlinks repeating the crops, named in a list file); peak PSS per run."""
    out = []
    links = (work / "links").resolve()  # list files resolve relative entries against their own folder
    links.mkdir(exist_ok=True)
    for i in range(max(sizes)):
        link = links / f"{i:07d}.jpg"
        if link.is_symlink() and not link.exists():  # dangling: made from a relative target
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(crops[i % len(crops)].resolve())
    for size in sizes:
        listing = work / f"list_{size}.txt"
        listing.write_text("".join(f"{links / f'{i:07d}.jpg'}\n" for i in range(size)))
        before = tree_memory()
        with PeakMemory() as mem:
            r = run_ray_job([str(listing)], work / f"out_memory_{size}", a, ray_cfg)
        r.update(peak_tree_pss_mb=round(mem.peak / 2**20, 1), tree_pss_before_mb=round(before / 2**20, 1))
        print(f"memory : {size:,} images, peak {r['peak_tree_pss_mb']:,.0f} MB (before {r['tree_pss_before_mb']:,.0f})")
        out.append(r)
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="images per comparison, half crops and half photos")
    p.add_argument("--data", default=None, help="FER2013 Parquet (default: the shared copy)")
    p.add_argument("--model", default=None, help="artifact directory (default: the shipped model)")
    p.add_argument("--work", default="out/bench_score", help="generated inputs and outputs go here")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--actors", type=int, default=None, help="the job's --actors (default: its own)")
    p.add_argument("--stages", default="auto", choices=("auto", "fused", "split"), help="the job's --stages")
    p.add_argument(
        "--actor-threads", type=int, default=None, help="engine threads per actor in (a) (default: its CPUs)"
    )
    p.add_argument("--threads", type=int, default=2, help="threads of the plain loop and forward-only runs")
    p.add_argument("--engine", default=None, help="torch, onnx or onnx-int8 (default: the artifact's)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory at --memory-sizes")
    p.add_argument("--memory-sizes", default="10000,50000")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result path")
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    a = get_args_parser().parse_args(argv)
    data = fer2013_or_exit(a.data)
    if a.n < 2:
        sys.exit(f"--n must be >= 2, got {a.n}")
    import ray
    import torch

    from fer_ray.inference.artifact import load_artifact
    from fer_ray.runtime import RayConfig, init_ray

    work = Path(a.work)
    n_crops, n_photos = a.n // 2, a.n - a.n // 2
    t0 = time.perf_counter()
    crops_dir, photos_dir = make_inputs(work, Path(data), n_crops, n_photos)
    print(f"inputs : {n_crops:,} crops + {n_photos:,} photos in {work} ({time.perf_counter() - t0:.0f} s)")
    crops, photos = sorted(crops_dir.glob("*.jpg")), sorted(photos_dir.glob("*.jpg"))
    art = load_artifact(a.model, engine=a.engine, threads=a.threads)
    torch_art = load_artifact(a.model, engine="torch")
    tta = art.flip_tta

    # (b), (c) and (d) first, before Ray's processes compete for the cores; they use --threads.
    import cv2

    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    plain_photos = run_plain_loop(photos, art, a.batch_size)
    print(f"plain  : photos {plain_photos['images_per_s']:,.1f} images/s ({art.engine_name}, TTA {tta})")
    forward_torch = run_forward_only(crops, torch_art, a.batch_size)
    print(f"forward: crops {forward_torch['images_per_s']:,.0f} images/s (torch, TTA {tta})")
    forward = {m: run_forward_only(crops, art, a.batch_size, flip_tta=m == "flip_tta") for m in ("flip_tta", "single")}
    for m, r in forward.items():
        print(f"forward: crops {r['images_per_s']:,.0f} images/s ({art.engine_name}, {m})")

    ray_cfg = RayConfig(address=a.address, num_cpus=a.ray_cpus)
    t0 = time.perf_counter()
    init_ray(ray_cfg)
    startup = time.perf_counter() - t0
    ray.data.DataContext.get_current().enable_progress_bars = False
    job_photos = run_ray_job([str(photos_dir)], work / "out_photos", a, ray_cfg)
    print(f"ray    : photos {job_photos['images_per_s']:,.1f} images/s")
    job_crops = {
        m: run_ray_job([str(crops_dir)], work / f"out_crops_{m}", a, ray_cfg, flip_tta=m == "flip_tta")
        for m in ("flip_tta", "single")
    }
    for m, r in job_crops.items():
        print(f"ray    : crops {r['images_per_s']:,.1f} images/s ({m})")
    memory = run_memory(work, crops, [int(s) for s in a.memory_sizes.split(",")], a, ray_cfg) if a.memory else []
    # The largest collection once more in the other TTA mode (no memory sampling): both modes at scale.
    other = "single" if tta else "flip_tta"
    at_scale_other = None
    if memory:
        size = max(r["images"] for r in memory)
        listing, out = str(work / f"list_{size}.txt"), work / f"out_scale_{other}"
        run = run_ray_job([listing], out, a, ray_cfg, flip_tta=other == "flip_tta")
        at_scale_other = _at_scale([run], forward[other], other)
        print(f"ray    : {size:,} crops {run['images_per_s']:,.1f} images/s ({other})")

    result = {
        "benchmark": "batch scoring: Ray Data job vs plain loop vs model forward",
        "command": " ".join(["python benchmarks/score_throughput.py", *(argv if argv is not None else sys.argv[1:])]),
        "valid_for_comparison": a.n >= 2000,  # smaller runs only check that the benchmark works
        "model_id": art.model_id,
        "engine": art.engine_name,
        "model_sha256": art.model_sha256,
        "artifact_flip_tta": tta,
        "n": {"crops": len(crops), "photos": len(photos)},
        "photos": {
            "sizes": [list(s) for s in PHOTO_SIZES],
            "ray_data_job": job_photos,
            "plain_loop": plain_photos,
            "job_over_plain": round(job_photos["images_per_s"] / plain_photos["images_per_s"], 3),
        },
        "crops": {
            "forward_only_torch": forward_torch,
            **{f"forward_only_{m}": r for m, r in forward.items()},
            **{f"ray_data_job_{m}": r for m, r in job_crops.items()},
            **{f"job_over_forward_{m}": round(job_crops[m]["images_per_s"] / forward[m]["images_per_s"], 3)
               for m in forward},
        },
        "memory": memory,
        # The 1,000-crop runs above are dominated by start-up; the largest memory run (the artifact's
        # own TTA mode) is the crops job at scale.
        "crops_at_scale": _at_scale(memory, forward["flip_tta" if tta else "single"], "flip_tta" if tta else "single"),
        f"crops_at_scale_{other}": at_scale_other,
        "settings": {"batch_size": a.batch_size, "actors": a.actors, "stages": a.stages,
                     "threads_per_actor": a.actor_threads,
                     "threads_plain_and_forward": a.threads, "detector": "yunet (DetectConfig defaults)",
                     "ray_startup_s_not_counted": round(startup, 1)},
        "machine": machine_info(torch=torch.__version__),
    }  # fmt: skip
    print(
        f"photos: job/plain = {result['photos']['job_over_plain']:.2f}x; crops: job/forward = "
        f"{result['crops']['job_over_forward_flip_tta']:.3f}x (flip TTA), "
        f"{result['crops']['job_over_forward_single']:.3f}x (single pass)"
    )
    for r in (result["crops_at_scale"], at_scale_other):
        if r:
            print(
                f"crops at scale: {r['images']:,} crops {r['images_per_s']:,.0f}/s = "
                f"{r['job_over_forward']:.2f}x forward ({r['mode']})"
            )
    write_result(result, a.out)
    return 0


def _at_scale(runs: list[dict], forward: dict, mode: str) -> dict | None:
    """The largest of ``runs`` against the forward pass of the same TTA ``mode``."""
    if not runs:
        return None
    big = max(runs, key=lambda r: r["images"])
    return {
        "images": big["images"],
        "mode": mode,
        "images_per_s": big["images_per_s"],
        "forward_images_per_s": forward["images_per_s"],
        "job_over_forward": round(big["images_per_s"] / forward["images_per_s"], 3),
    }


if __name__ == "__main__":
    sys.exit(main())
