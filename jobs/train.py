"""Train a FER model with Ray Train; rerun the same command to resume.

python jobs/train.py --model ae_cnn_attn --epochs 30 --workers 1 --run-name ae
python jobs/train.py --run-name ae --export-only      # artifact from the best checkpoint so far
python jobs/train.py --backend plain --use-gpu ...    # same recipe without Ray, on one device
python jobs/train.py --config runs/sweep1/best_config.json --epochs 30 --run-name best   # flags override the file
ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/fer2013.parquet ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import add_train_args, parse_train_args, setup, train_config_from_args


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_args(p)
    p.add_argument(
        "--export-only",
        action="store_true",
        help="export the best checkpoint of the existing run (--storage-path/--run-name), e.g. one stopped midway",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    args = parse_train_args(get_args_parser(), argv)
    cfg = train_config_from_args(args)
    if cfg.backend == "plain" or (args.export_only and _is_plain_run(cfg)):
        from fer_ray.train.plain import export_plain, run_dir_of, train_plain

        res = export_plain(run_dir_of(cfg)) if args.export_only else train_plain(cfg)
    else:
        from fer_ray.train.ray_train import export_run, train

        res = export_run(cfg.storage_path, cfg.run_name) if args.export_only else train(cfg)
    print(
        json.dumps({"run_dir": str(res.run_dir), "artifact": str(res.artifact_dir), "best": res.best_metrics}, indent=2)
    )
    return 0


def _is_plain_run(cfg) -> bool:
    from fer_ray.train.plain import is_plain_run, run_dir_of

    return "://" not in cfg.storage_path and is_plain_run(run_dir_of(cfg))


if __name__ == "__main__":
    sys.exit(main())
