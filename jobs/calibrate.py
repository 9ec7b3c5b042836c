"""Calibrate a model artifact's confidence on the validation split (PublicTest for FER2013).

    python jobs/calibrate.py fer_ray/assets/default_model
    python jobs/calibrate.py runs/cnn/artifact --data ../shared/data/fer2013/fer2013.parquet

Fits the temperature (softmax(logits / T)) and the `uncertain` cut-off, and records both in
artifact.json, where scoring, Serve and evaluation apply them. Predictions do not change.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import artifact_and_data_or_exit, setup


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", metavar="ARTIFACT", help="model artifact directory (updated in place)")
    p.add_argument("--data", default=None, help="labelled source with a validation split (default: FER2013)")
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    p = get_args_parser()
    a = p.parse_args(argv)
    from fer_ray.calibration import calibrate_artifact

    source = artifact_and_data_or_exit(p, a.artifact, a.data, "calibration needs a validation split")
    print(json.dumps(calibrate_artifact(a.artifact, source), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
