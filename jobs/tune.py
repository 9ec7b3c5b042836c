"""Sweep one model's hyperparameters with Ray Tune (ASHA early stopping on joint epochs).

    python jobs/tune.py --model cnn_attn --num-samples 12 --epochs 4 --train-fraction 0.25 --name cnn_sweep
    python jobs/tune.py ... --name cnn_sweep             # the same command again: continues after an interruption
    python jobs/tune.py ... --name cnn_sweep --restart   # starts that sweep over
    python jobs/tune.py --model ae_cnn_attn --space my_space.yaml ...   # override entries of the named space
    ray job submit --working-dir . -- python jobs/tune.py --data s3://bucket/fer2013.parquet \\
        --storage-path s3://bucket/fer_ray/runs --name sweep2   # everything under s3://.../runs/sweep2/

Everything lands under --storage-path/--name: sweep.csv, sweep.md, asha.png, best/artifact/ and
best_config.json (train it with `jobs/train.py --config .../best_config.json`). --epochs counts joint
epochs (ASHA's max); other training flags (batch size, workers, ...) apply to every trial unless the space
samples them. The named spaces are in fer_ray/search_spaces.py (--show-space prints the resolved one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_ray.cli import add_train_args, parse_train_args, setup, train_config_from_args


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.set_defaults(epochs=4)
    g = p.add_argument_group("sweep")
    g.add_argument("--name", default="sweep", help="folder under --storage-path holding the whole sweep")
    g.add_argument("--space", default=None, help="YAML/JSON overriding entries of the model's named search space")
    g.add_argument("--show-space", action="store_true", help="print the resolved search space and exit")
    g.add_argument("--num-samples", type=int, default=12, help="trials (times the size of any grid)")
    g.add_argument("--max-concurrent", type=int, default=1, help="trials at once (each needs its workers' CPUs)")
    g.add_argument("--grace-period", type=int, default=1, help="joint epochs before ASHA may stop a trial")
    g.add_argument("--reduction-factor", type=int, default=2, help="ASHA keeps the top 1/N at each rung")
    g.add_argument(
        "--train-fraction",
        type=float,
        default=1.0,
        help="stratified, seeded share of the training split per class (validation is always all of PublicTest)",
    )
    g.add_argument("--restart", action="store_true", help="delete the sweep's folder and start over")
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    a = parse_train_args(get_args_parser(), argv)
    from fer_ray.search_spaces import load_space_file
    from fer_ray.tune import SweepConfig, sweep

    try:
        cfg = SweepConfig(
            base=train_config_from_args(a),
            name=a.name,
            space=load_space_file(a.space) if a.space else None,
            num_samples=a.num_samples,
            max_concurrent=a.max_concurrent,
            grace_period=a.grace_period,
            reduction_factor=a.reduction_factor,
            train_fraction=a.train_fraction,
            restart=a.restart,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.show_space:
        print(json.dumps(cfg.resolved_space, indent=2))
        return 0
    res = sweep(cfg)
    print(f"\n{len(res.trials)} trials under {res.root}")
    for i, t in enumerate(res.trials[:5], 1):
        print(f"  {i}. {t['trial']}  val_acc {t['val_acc']:.4f}  {t['status']}, {t['epochs_run']} epochs")
    if not res.complete:
        print("interrupted: rerun the same command to continue the sweep")
        return 1
    if res.best_config is not None:
        print(f"best artifact: {res.artifact}\ntrain the best config on all the data:")
        print(f"  python jobs/train.py --config {res.best_config} --epochs 30 --run-name {a.name}_best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
