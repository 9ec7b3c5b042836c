"""Rebuild summary.json and report.html of a scoring output and print its summary.

python jobs/report.py out/photos
python jobs/report.py s3://bucket/reports/photos
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import Parser, UserError, check_bucket, config_parser, is_remote, parse_config, run_cli
from fer_ray.score.config import ReportJobConfig


def get_args_parser() -> Parser:
    return config_parser(ReportJobConfig, __doc__)


@run_cli
def main(argv: list[str]) -> int:
    cfg, _ = parse_config(get_args_parser(), argv)
    if not cfg.out:
        raise UserError("no OUT given", "name the --out directory of a jobs/score.py run")
    if is_remote(cfg.out):
        check_bucket(cfg.out, "OUT")
    elif not Path(cfg.out).expanduser().is_dir():
        raise UserError(f"OUT {cfg.out}: no such directory", "name the --out directory of a jobs/score.py run")
    from fer_ray.score.report import format_table, write_report
    from fer_ray.score.store import REPORT_FILE

    try:
        summary = write_report(cfg.out, max_rows=cfg.max_rows)
    except FileNotFoundError as e:  # no scoring output there: its message says what to run
        raise UserError(str(e)) from None
    print(format_table(summary))
    print(f"{'report':<10} {summary['out']}/{REPORT_FILE}")
    return 0 if summary["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
