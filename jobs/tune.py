"""Sweep one model's hyperparameters with Ray Tune (ASHA early stopping on joint epochs).

    python jobs/tune.py --arch cnn_attn --num-samples 12 --epochs 4 --train-fraction 0.25 --run-name cnn_sweep
    python jobs/tune.py ... --run-name cnn_sweep             # the same command again: continues after an interruption
    python jobs/tune.py ... --run-name cnn_sweep --restart   # starts that sweep over
    python jobs/tune.py --arch ae_cnn_attn --space my_space.yaml ...   # override entries of the named space
    ray job submit --working-dir . -- python jobs/tune.py --data s3://bucket/fer2013.parquet \\
        --storage-path s3://bucket/fer_ray/runs --run-name sweep2   # everything under s3://.../runs/sweep2/

Everything lands under --storage-path/--run-name: sweep.csv, sweep.md, asha.png, best/artifact/ and
best_config.json (train it with `jobs/train.py --config .../best_config.json`). --epochs counts joint
epochs (ASHA's max); other training flags (batch size, workers, ...) apply to every trial unless the space
samples them. The named spaces are in fer_ray/tune/spaces.py (--show-space prints the resolved one).
A --config file holds the sweep's settings with the training ones under `base:` (see --print-config).
--model and --name, the old spellings of --arch and --run-name, still work with a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_ray.cli import (
    Parser,
    before_ray,
    check_data,
    check_output_dir,
    default_run_name,
    parse_config,
    run_cli,
    tune_parser,
)
from fer_ray.config import read_config_file


def get_args_parser() -> Parser:
    return tune_parser(__doc__)


def _adjust(d: dict[str, Any]) -> None:
    d.setdefault("base", {})
    default_run_name(d["base"])  # what a sweep records as its base: as before --run-name named the sweep
    if isinstance(d.get("space"), str):  # a config file may name the space file instead of inlining it
        d["space"] = read_config_file(d["space"], "space")


@run_cli
def main(argv: list[str]) -> int:
    cfg, a = parse_config(get_args_parser(), argv, adjust=_adjust)
    if a.show_space:
        print(json.dumps(cfg.resolved_space, indent=2))
        return 0
    check_data(cfg.base.data, need="training data")
    check_output_dir(cfg.base.storage_path, "--storage-path")
    from fer_ray.tune.sweep import check_rerun, sweep

    check_rerun(cfg)  # a changed rerun of a sweep is one line, before Ray starts
    before_ray(a)

    res = sweep(cfg)
    print(f"\n{len(res.trials)} trials under {res.root}")
    for i, t in enumerate(res.trials[:5], 1):
        print(f"  {i}. {t['trial']}  val_acc {t['val_acc']:.4f}  {t['status']}, {t['epochs_run']} epochs")
    if not res.complete:
        print("interrupted: rerun the same command to continue the sweep")
        return 1
    if res.best_config is not None:
        print(f"best artifact: {res.artifact}\ntrain the best config on all the data:")
        print(f"  python jobs/train.py --config {res.best_config} --epochs 30 --run-name {cfg.name}_best")
    return 0


if __name__ == "__main__":
    sys.exit(main())
