"""The paper's evaluation tables for one or more model artifacts, side by side.

python jobs/evaluate.py --model runs/ae_cnn_attn/artifact --model cnn_attn --out out/eval
python jobs/evaluate.py runs/ae_cnn_attn/artifact runs/cnn_attn/artifact --out out/eval     # the same, positionally
python jobs/evaluate.py s3://bucket/fer_ray/runs/ae/artifact --out out/eval   # AWS_ENDPOINT_URL for MinIO etc.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_ray.cli import (
    Parser,
    before_ray,
    check_data,
    check_input_path,
    check_model,
    check_output_dir,
    config_parser,
    parse_config,
    run_cli,
)
from fer_ray.evaluate.config import EvalConfig, EvaluateJobConfig


def get_args_parser() -> Parser:
    return config_parser(EvaluateJobConfig, __doc__)


@run_cli
def main(argv: list[str]) -> int:
    cfg, ns = parse_config(get_args_parser(), argv)
    for m in cfg.model:
        check_model(m, engine=cfg.engine)
    source = check_data(cfg.data)
    check_output_dir(cfg.out, "--out")
    if cfg.photos:
        check_input_path(cfg.photos, "--photos", "pass a folder of face photos")

    from fer_ray.evaluate.driver import evaluate_all, photo_tables
    from fer_ray.evaluate.writing import engines_markdown, markdown_table
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.runtime import init_ray
    from fer_ray.storage import local_artifact

    before_ray(ns)
    init_ray(cfg.ray)
    arts = [load_artifact(local_artifact(x), engine=cfg.engine) for x in (cfg.model or [None])]  # s3://: downloaded
    results = evaluate_all(arts, source, cfg.out, EvalConfig(seed=cfg.seed), engines=cfg.engines, repeats=cfg.repeats)
    print(markdown_table(results) + engines_markdown(results))
    if cfg.photos:
        for name, rows in photo_tables(arts, cfg.photos, cfg.out):
            print(f"Table 5 ({name}):")
            for r in rows:
                print(" ", json.dumps(r))
    print(f"wrote {cfg.out}/evaluation.json and evaluation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
