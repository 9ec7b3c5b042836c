"""Score photo collections (local or S3) with a FER model: one Parquet row per face, summary.json, report.html.

    python jobs/score.py examples/images --out out/demo                      # the shipped model
    python jobs/score.py photos/ more/*.jpg list.txt --model runs/x/artifact --out out/photos
    python jobs/score.py s3://bucket/photos/ --out s3://bucket/reports/photos  # AWS_ENDPOINT_URL for MinIO etc.
    ray job submit --working-dir . -- python jobs/score.py s3://bucket/photos/ --out s3://bucket/reports/photos

    python jobs/score.py crops/ --whole-image --no-tta --out out/crops       # single pass: ~2x faster
    python jobs/score.py photos/ --engine torch --detector haar --out out/x  # the PyTorch model, Haar cascade
    python jobs/score.py --config score.yaml --out out/y                     # settings from a file, flags win

Exit status: 0 when every input has its rows, 1 when some have none (rerun to resume), 2 for a usage
mistake (one line says which; nothing is written), 3 when every input is an error row (none could be read).

Rerunning with the same --out scores only inputs not yet there (new, or changed size/mtime: their
old rows are replaced) and retries transient read errors; --overwrite starts over. A killed run is
resumed the same way. One run at a time writes to an --out (a second exits, or waits --lock-wait);
rows of another model or engine there stop the run unless --allow-mixed-models. The default engine is the
artifact's int8 ONNX model on CPU when its recorded accuracy matches the PyTorch model's
(else fp32 ONNX, else PyTorch; PyTorch on GPUs); every row records the engine it ran.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import (
    Parser,
    UserError,
    before_ray,
    check_input_path,
    check_model,
    check_output_dir,
    config_parser,
    parse_config,
    run_cli,
)
from fer_ray.score.config import ScoreConfig

INPUT_FIX = "pass existing files or folders, a glob in quotes, a list file, or s3://bucket/prefix"


def get_args_parser() -> Parser:
    return config_parser(ScoreConfig, __doc__)


@run_cli
def main(argv: list[str]) -> int:
    p = get_args_parser()
    cfg, ns = parse_config(p, argv, adjust=_require)
    check_all(cfg)
    before_ray(ns)
    from fer_ray.score.driver import MixedModelsError, NoInputsError, score
    from fer_ray.score.report import format_table
    from fer_ray.score.run_lock import OutputLocked
    from fer_ray.score.store import REPORT_FILE

    try:
        res = score(cfg)
    except (OutputLocked, MixedModelsError, NoInputsError) as e:  # their messages say what to do
        raise UserError(str(e)) from e
    print(format_table(res.summary))
    print(f"{'report':<10} {res.out}/{REPORT_FILE}")
    return exit_code(res.summary)


def exit_code(summary: dict) -> int:
    """0: every input has its rows; 1: some have none (incomplete: rerun to resume); 3: every input is an
    ``error`` row (nothing could be read: wrong files, credentials, a broken store)."""
    if not summary["complete"]:
        return 1
    images = summary.get("images_by_status") or {}
    inputs = summary.get("images_in", 0) + summary.get("video_segments_in", 0)
    if inputs and images.get("error", 0) + summary.get("video_segments_failed", 0) == inputs:
        return 3
    return 0


def _require(d: dict) -> None:
    if not d.get("inputs"):
        raise UserError("no INPUT given", f"name the photos to score: {INPUT_FIX}")
    if not d.get("out"):
        raise UserError("--out is required", "pass a local directory or s3://bucket/prefix for the report")


def check_all(cfg: ScoreConfig) -> None:
    """Everything that can be checked before Ray starts: inputs, outputs, the model."""
    for x in cfg.inputs:
        check_input_path(x, "INPUT", INPUT_FIX)
    check_output_dir(cfg.out, "--out")
    if cfg.save_crops:
        check_output_dir(cfg.save_crops, "--save-crops")
    check_model(cfg.model, engine=cfg.engine)


if __name__ == "__main__":
    sys.exit(main())
