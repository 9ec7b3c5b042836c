"""Rebuild summary.json and report.html of a scoring output and print its summary.

python jobs/report.py out/demo
python jobs/report.py s3://bucket/reports/photos
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import setup


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", metavar="OUT", help="the --out of jobs/score.py (local directory or s3://bucket/prefix)")
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    a = get_args_parser().parse_args(argv)
    from fer_ray.score import format_table, write_report
    from fer_ray.score.store import REPORT_FILE

    summary = write_report(a.out)
    print(format_table(summary))
    print(f"{'report':<10} {summary['out']}/{REPORT_FILE}")
    return 0 if summary["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
