"""Calibrate a model artifact's confidence on the validation split (PublicTest for FER2013).

    python jobs/calibrate.py --model fer_ray/assets/ae_cnn_attn
    python jobs/calibrate.py --model runs/cnn/artifact --data ../shared/data/fer2013/fer2013.parquet

Fits the temperature (softmax(logits / T)) and the `uncertain` cut-off, and records both in
artifact.json, where scoring, Serve and evaluation apply them. Predictions do not change.
The artifact may also be given without --model (python jobs/calibrate.py ARTIFACT), as before.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import Parser, before_ray, check_data, config_parser, local_artifact_dir, parse_config, run_cli
from fer_ray.inference.config import CalibrateConfig


def get_args_parser() -> Parser:
    return config_parser(CalibrateConfig, __doc__)


@run_cli
def main(argv: list[str]) -> int:
    cfg, ns = parse_config(get_args_parser(), argv)
    artifact = local_artifact_dir(cfg.model, "calibrate")
    source = check_data(cfg.data, need="labelled data with a validation split (calibration is fitted on it)")
    from fer_ray.inference.calibration import calibrate_artifact

    before_ray(ns)

    print(json.dumps(calibrate_artifact(artifact, source), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
