"""The paper's evaluation tables for one or more model artifacts, side by side.

python jobs/evaluate.py --model runs/ae_cnn_attn/artifact --model cnn_attn --out out/eval
python jobs/evaluate.py runs/ae_cnn_attn/artifact runs/cnn_attn/artifact --out out/eval     # the same, positionally
python jobs/evaluate.py s3://bucket/fer_ray/runs/ae/artifact --out out/eval   # AWS_ENDPOINT_URL for MinIO etc.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
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
from fer_ray.config import MODEL_HELP, RAY_FLAGS, setting
from fer_ray.inference.engine import ENGINES
from fer_ray.runtime import RayConfig


@dataclass(frozen=True)
class EvaluateJobConfig:
    model: tuple[str, ...] = setting(
        (),
        MODEL_HELP + "; repeat --model to compare several",
        positional=True,
        flag="--model",
        metavar="MODEL",
        default_text="the shipped default model",
    )
    data: str | None = setting(None, "labelled FER2013 source", default_text="the data root's FER2013 Parquet")
    out: str = setting("out/eval", "directory for evaluation.json and evaluation.md")
    photos: str | None = setting(None, "folder of external face photos for Table 5")
    seed: int = setting(0, "seed of the 15x100 random draws")
    engine: str | None = setting(
        None, "engine of the main tables", choices=ENGINES, default_text="the artifact's, as scoring and Serve use it"
    )
    engines: bool = setting(True, "the table of every engine on PrivateTest")
    ray: RayConfig = setting(
        help="how the job reaches Ray", default_factory=RayConfig, flatten=True, fields=RAY_FLAGS, group="ray"
    )


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

    from fer_ray.evaluate import EvalConfig, engines_markdown, evaluate_all, external_photos, markdown_table
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.runtime import init_ray
    from fer_ray.storage import local_artifact

    before_ray(ns)
    init_ray(cfg.ray)
    arts = [load_artifact(local_artifact(x), engine=cfg.engine) for x in (cfg.model or [None])]  # s3://: downloaded
    results = evaluate_all(arts, source, cfg.out, EvalConfig(seed=cfg.seed), engines=cfg.engines)
    print(markdown_table(results) + engines_markdown(results))
    if cfg.photos:
        for art in arts:
            rows = external_photos(art, cfg.photos)
            (Path(cfg.out) / f"{art.model_config.name}_photos.json").write_text(json.dumps(rows, indent=2))
            print(f"Table 5 ({art.model_config.name}):")
            for r in rows:
                print(" ", json.dumps(r))
    print(f"wrote {cfg.out}/evaluation.json and evaluation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
