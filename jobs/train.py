"""Train a FER model with Ray Train; rerun the same command to resume.

python jobs/train.py --arch ae_cnn_attn --epochs 30 --workers 1 --run-name ae
python jobs/train.py --run-name ae --export-only      # artifact from the best checkpoint so far
python jobs/train.py --backend plain --use-gpu ...    # same recipe without Ray, on one device
python jobs/train.py --config runs/sweep1/best_config.json --epochs 30 --run-name best   # flags override the file
python jobs/train.py --arch cnn_attn --epochs 2 --print-config > my.yaml   # every setting, as a --config file
ray job submit --working-dir . -- python jobs/train.py --data s3://bucket/fer2013.parquet \
    --storage-path s3://bucket/fer_ray/runs ...   # a relative path there is refused: it would vanish at `ray stop`

--arch picks the architecture (--model, its old spelling here, still works with a warning).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import (
    Parser,
    before_ray,
    check_train,
    default_run_name,
    parse_config,
    run_cli,
    train_parser,
)


def get_args_parser() -> Parser:
    return train_parser(__doc__)


@run_cli
def main(argv: list[str]) -> int:
    cfg, args = parse_config(get_args_parser(), argv, adjust=default_run_name)
    check_train(cfg, args.export_only)
    before_ray(args)
    from fer_ray.train import plain

    if cfg.backend == "plain" or (args.export_only and plain.is_plain_run(cfg)):
        res = plain.export_plain(plain.run_dir_of(cfg)) if args.export_only else plain.train_plain(cfg)
    else:
        from fer_ray.train.ray_train import export_run, train

        res = export_run(cfg.storage_path, cfg.run_name) if args.export_only else train(cfg)
    print(
        json.dumps({"run_dir": str(res.run_dir), "artifact": str(res.artifact_dir), "best": res.best_metrics}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
