"""Sweep the paper's suggested hyperparameters with Ray Tune (ASHA early stopping).

    python jobs/tune.py --num-samples 8 --epochs 10 --name sweep1
    ray job submit --working-dir . -- python jobs/tune.py --data s3://bucket/fer2013.parquet --num-samples 32 \
        --storage-path s3://bucket/fer_ray/runs --name sweep2   # Tune's files, checkpoints, sweep.json there

Other training flags (model, batch size, workers, ...) are those of jobs/train.py and apply to every trial.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_ray.cli import add_train_args, setup, train_config_from_args


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    g = p.add_argument_group("sweep")
    g.add_argument("--name", default="sweep")
    g.add_argument("--num-samples", type=int, default=8)
    g.add_argument("--max-concurrent", type=int, default=1)
    g.add_argument("--grace-period", type=int, default=2, help="joint epochs before ASHA may stop a trial")
    g.add_argument("--latent-sizes", default="24,12,6")
    g.add_argument("--attentions", default="se,cbam")
    g.add_argument("--lr-range", default="5e-4,5e-3")
    g.add_argument("--recon-weights", default="0,0.1,0.5")
    g.add_argument("--optimizers", default="adamw,sgd")
    a = p.parse_args(argv)

    from fer_ray.tune import SweepConfig, sweep

    cfg = SweepConfig(
        base=train_config_from_args(a),
        name=a.name,
        num_samples=a.num_samples,
        max_concurrent=a.max_concurrent,
        grace_period=a.grace_period,
        latent_sizes=tuple(int(v) for v in a.latent_sizes.split(",")),
        attentions=tuple(a.attentions.split(",")),
        lr_range=tuple(float(v) for v in a.lr_range.split(",")),
        recon_weights=tuple(float(v) for v in a.recon_weights.split(",")),
        optimizers=tuple(a.optimizers.split(",")),
    )
    print(json.dumps(sweep(cfg), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
