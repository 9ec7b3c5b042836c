"""Score photo collections (local or S3) with a FER model: one Parquet row per face, summary.json, report.html.

    python jobs/score.py examples/images --out out/demo                      # the shipped model
    python jobs/score.py photos/ more/*.jpg list.txt --model runs/x/artifact --out out/photos
    python jobs/score.py s3://bucket/photos/ --out s3://bucket/reports/photos  # AWS_ENDPOINT_URL for MinIO etc.
    ray job submit --working-dir . -- python jobs/score.py s3://bucket/photos/ --out s3://bucket/reports/photos

    python jobs/score.py crops/ --whole-image --no-tta --out out/crops       # single pass: ~2x faster
    python jobs/score.py photos/ --engine torch --detector haar --out out/x  # the PyTorch model, Haar cascade

Rerunning with the same --out scores only inputs not yet there (new, or changed size/mtime: their
old rows are replaced) and retries transient read errors; --overwrite starts over. A killed run is
resumed the same way. One run at a time writes to an --out (a second exits, or waits --lock-wait);
rows of another model or engine there stop the run unless --allow-mixed-models. The default engine is the
artifact's int8 ONNX model on CPU when its recorded accuracy matches the PyTorch model's
(else fp32 ONNX, else PyTorch; PyTorch on GPUs); every row records the engine it ran.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import add_ray_args, setup
from fer_ray.engine import ENGINES
from fer_ray.runtime import RayConfig
from fer_ray.score.config import DETECTORS, DetectConfig, ScoreConfig


def get_args_parser() -> argparse.ArgumentParser:
    d, dd = ScoreConfig(inputs=("-",), out="-"), DetectConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="dirs, files, globs, s3://bucket/prefix, list files")
    p.add_argument("--out", required=True, help="local directory or s3://bucket/prefix for the report")
    p.add_argument("--model", default=None, help="model artifact directory (default: the model shipped in fer_ray)")
    p.add_argument("--whole-image", action="store_true", help="inputs are face crops: skip face detection")
    p.add_argument("--overwrite", action="store_true", help="delete earlier results in --out and score everything")
    p.add_argument("--save-crops", default=None, metavar="DIR", help="also write each 48x48 face crop as PNG (opt-in)")
    g = p.add_argument_group("integrity")
    g.add_argument(
        "--allow-mixed-models",
        action="store_true",
        help="add rows of this model/engine to an --out scored with another (the report groups by model)",
    )
    g.add_argument("--allow-local", action="store_true", help="let a list file on S3 name local paths")
    g.add_argument(
        "--lock-wait", type=float, default=d.lock_wait_s, metavar="S", help="wait this long for a run holding --out"
    )
    g.add_argument(
        "--lock-stale",
        type=float,
        default=d.lock_stale_s,
        metavar="S",
        help="take over a lock whose heartbeat is older than this",
    )
    g = p.add_argument_group("model")
    g.add_argument("--engine", choices=ENGINES, default=None, help="default: the artifact's fastest accurate engine")
    g.add_argument(
        "--no-tta",
        dest="flip_tta",
        action="store_false",
        default=None,
        help="single pass even if the artifact enables flip TTA (about 2x faster)",
    )
    g = p.add_argument_group("face detection")
    g.add_argument("--detector", choices=DETECTORS, default=dd.detector)
    g.add_argument("--min-face", type=int, default=dd.min_face, help="smallest face side in pixels")
    g.add_argument("--detect-max-side", type=int, default=dd.max_side, help="detect on a copy at most this large")
    g.add_argument(
        "--detect-face-px",
        type=int,
        default=dd.detect_face_px,
        help="yunet: shrink so that a --min-face face is this many pixels",
    )
    g.add_argument("--score-threshold", type=float, default=dd.score_threshold, help="yunet: box score to keep")
    g.add_argument("--nms-threshold", type=float, default=dd.nms_threshold, help="yunet: IoU that merges boxes")
    g.add_argument("--scale-factor", type=float, default=dd.scale_factor, help="haar")
    g.add_argument("--min-neighbors", type=int, default=dd.min_neighbors, help="haar")
    g.add_argument("--crop-max-side", type=int, default=dd.crop_max_side, help="smaller images are taken as crops")
    g = p.add_argument_group("scale")
    g.add_argument("--images-per-task", type=int, default=d.images_per_task)
    g.add_argument("--max-cpu-tasks", type=int, default=d.max_cpu_tasks)
    g.add_argument("--actors", type=int, default=d.actors, help="inference actors")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="faces per inference call")
    g.add_argument("--cpus-per-actor", type=float, default=d.cpus_per_actor)
    g.add_argument("--gpus-per-actor", type=float, default=None, help="default: 1 when the cluster has GPUs")
    g.add_argument(
        "--threads",
        "--torch-threads",
        type=int,
        default=d.threads,
        help="engine threads per actor (default: the CPUs it holds)",
    )
    g.add_argument("--rows-per-file", type=int, default=None, help="fewer, larger Parquet files")
    add_ray_args(p)
    return p


def config_from_args(a: argparse.Namespace) -> ScoreConfig:
    detect = DetectConfig(
        detector=a.detector, min_face=a.min_face, max_side=a.detect_max_side, detect_face_px=a.detect_face_px,
        score_threshold=a.score_threshold, nms_threshold=a.nms_threshold, scale_factor=a.scale_factor,
        min_neighbors=a.min_neighbors, crop_max_side=a.crop_max_side,
    )  # fmt: skip
    return ScoreConfig(
        inputs=tuple(a.inputs), out=a.out, model=a.model, whole_image=a.whole_image, detect=detect,
        engine=a.engine, flip_tta=a.flip_tta,
        images_per_task=a.images_per_task, max_cpu_tasks=a.max_cpu_tasks, actors=a.actors, batch_size=a.batch_size,
        cpus_per_actor=a.cpus_per_actor, gpus_per_actor=a.gpus_per_actor, threads=a.threads,
        rows_per_file=a.rows_per_file, overwrite=a.overwrite, save_crops=a.save_crops,
        allow_mixed_models=a.allow_mixed_models, allow_local=a.allow_local, lock_wait_s=a.lock_wait,
        lock_stale_s=a.lock_stale,
        ray=RayConfig(address=a.address, num_cpus=a.ray_cpus),
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    setup()
    p = get_args_parser()
    a = p.parse_args(argv)
    try:
        cfg = config_from_args(a)
    except ValueError as e:
        p.error(str(e))
    from fer_ray.score import format_table, score
    from fer_ray.score.pipeline import MixedModelsError
    from fer_ray.score.store import REPORT_FILE, OutputLocked

    try:
        res = score(cfg)
    except (OutputLocked, MixedModelsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(res.summary))
    print(f"{'report':<10} {res.out}/{REPORT_FILE}")
    return 0 if res.summary["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
