"""Describe data sources: counts per split and class, per file format, and errors per reason.

python jobs/describe_data.py ../shared/data/fer2013/fer2013.parquet
python jobs/describe_data.py fer2013.csv photos/ s3://bucket/prefix --limit 1000 --json out/describe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import add_ray_args, setup
from fer_ray.runtime import RayConfig, init_ray


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="FER .parquet, Kaggle fer2013.csv, train/<emotion>/ folders, image dirs/files/globs, "
        "list files (.txt/.csv/.parquet with a path column) or s3://bucket/prefix",
    )
    p.add_argument("--limit", type=int, default=None, help="read only the first N rows of each source")
    p.add_argument("--json", default=None, help="also write the full report as JSON to this path")
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    a = get_args_parser().parse_args(argv)
    init_ray(RayConfig(address=a.address, num_cpus=a.ray_cpus))
    from fer_ray.data.describe import describe, format_report

    result = describe(a.sources, limit=a.limit)
    print(format_report(result))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
