"""Add ONNX Runtime engines to a model artifact: model.onnx (fp32) and model.int8.onnx (static int8).

    python jobs/export_onnx.py runs/ae_cnn_attn/artifact                  # FER2013 from the data root
    python jobs/export_onnx.py fer_ray/assets/default_model --data ../shared/data/fer2013/fer2013.parquet

The int8 model is calibrated on --calib training faces; every engine's accuracy on the
validation split (PublicTest for FER2013) is recorded in artifact.json, where scoring,
Serve and evaluation read it to choose their default engine. weights.pt is not changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import artifact_and_data_or_exit, setup


def get_args_parser() -> argparse.ArgumentParser:
    from fer_ray.onnx_export import CALIBRATION_FACES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact", metavar="ARTIFACT", help="model artifact directory (upgraded in place)")
    p.add_argument("--data", default=None, help="labelled source: FER2013 .parquet/.csv or image folders")
    p.add_argument("--calib", type=int, default=CALIBRATION_FACES, help="training faces to calibrate int8 on")
    p.add_argument("--seed", type=int, default=0, help="which training faces calibrate")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads while measuring accuracy")
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    p = get_args_parser()
    a = p.parse_args(argv)
    from fer_ray.onnx_export import export_engines_from_source

    source = artifact_and_data_or_exit(p, a.artifact, a.data, "the int8 model is calibrated on its training faces")
    engines = export_engines_from_source(a.artifact, source, calib_size=a.calib, seed=a.seed, threads=a.threads)
    print(f"{'engine':<10} {'file':<16} {'MB':>5} {'val acc':>8} {'single':>7} {'flip TTA':>8}  sha256")
    for name, e in engines.items():
        size = Path(a.artifact, e["file"]).stat().st_size / 2**20
        accs = [e.get(k) for k in ("val_accuracy", "val_accuracy_single", "val_accuracy_flip_tta")]
        accs_s = " ".join(f"{'-' if v is None else f'{v:.2%}':>8}" for v in accs)
        print(f"{name:<10} {e['file']:<16} {size:>5.2f} {accs_s}  {e['sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
