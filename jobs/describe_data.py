"""Describe data sources: counts per split and class, per file format, and errors per reason.

python jobs/describe_data.py ../shared/data/fer2013/fer2013.parquet
python jobs/describe_data.py fer2013.csv photos/ s3://bucket/prefix --limit 1000 --json out/describe.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import (
    Parser,
    UserError,
    before_ray,
    check_input_path,
    check_output_dir,
    config_parser,
    parse_config,
    run_cli,
)
from fer_ray.data.describe import DescribeConfig, describe, format_report


def get_args_parser() -> Parser:
    return config_parser(DescribeConfig, __doc__)


@run_cli
def main(argv: list[str]) -> int:
    cfg, ns = parse_config(get_args_parser(), argv)
    if not cfg.sources:
        raise UserError("no SOURCE given", "name at least one data source (see --help)")
    for s in cfg.sources:
        check_input_path(s, "SOURCE", "pass an existing file or folder, a glob in quotes, or s3://bucket/prefix")
    if cfg.json:
        check_output_dir(Path(cfg.json).parent, "--json's folder")
    from fer_ray.runtime import init_ray

    before_ray(ns)
    init_ray(cfg.ray)
    result = describe(list(cfg.sources), limit=cfg.limit)
    print(format_report(result))
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
