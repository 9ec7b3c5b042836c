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
samples them. The named spaces are in fer_ray/search_spaces.py (--show-space prints the resolved one).
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
    config_parser,
    default_run_name,
    parse_config,
    run_cli,
    train_overlay,
)
from fer_ray.config import read_config_file
from fer_ray.tune import SweepConfig

# SweepConfig (fer_ray/tune.py) carries no CLI metadata of its own: its flags' help lives here.
SWEEP_FLAGS: dict[str, dict[str, Any]] = {
    "base": {"flatten": True, "fields": {**train_overlay(), "run_name": {"flag": None}}},
    "name": {
        "flag": "--run-name",
        "deprecated": ("--name",),
        "help": "folder under --storage-path holding the whole sweep; the same name continues it",
    },
    "space": {
        "metavar": "FILE",
        "parse": lambda path: read_config_file(path, "--space"),
        "default_text": "the architecture's named space",
        "help": "YAML/JSON overriding entries of the architecture's named search space (a config file: inline)",
    },
    "num_samples": {"help": "trials (times the size of any grid)"},
    "max_concurrent": {"help": "trials at once (each needs its workers' CPUs)"},
    "grace_period": {"help": "joint epochs before ASHA may stop a trial"},
    "reduction_factor": {"help": "ASHA keeps the top 1/N at each rung"},
    "train_fraction": {
        "help": "stratified, seeded share of the training split per class (validation is always all of PublicTest)"
    },
    "restart": {"help": "delete the sweep's folder and start over"},
    "driver_cpus": {"help": "CPUs of each trial's driver, which only waits on its trainer's workers"},
}
SWEEP_FLAGS = {k: {"group": "sweep", **v} if k != "base" else v for k, v in SWEEP_FLAGS.items()}


def get_args_parser() -> Parser:
    p = config_parser(
        SweepConfig,
        __doc__,
        overlay=SWEEP_FLAGS,
        defaults={"base": {"epochs": 4}},
        config_help="YAML or JSON file of the sweep's settings, training ones under base: (the keys of "
        "--print-config); flags given override it",
    )
    p.add_argument("--show-space", action="store_true", help="print the resolved search space and exit")
    return p


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
    from fer_ray.tune import sweep

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
