"""Add ONNX Runtime engines to a model artifact: model.onnx (fp32) and model.int8.onnx (static int8).

    python jobs/export_onnx.py --model runs/ae_cnn_attn/artifact              # FER2013 from the data root
    python jobs/export_onnx.py --model fer_ray/assets/ae_cnn_attn --data ../shared/data/fer2013/fer2013.parquet

The int8 model is calibrated on --calib training faces; every engine's accuracy on the
validation split (PublicTest for FER2013) is recorded in artifact.json, where scoring,
Serve and evaluation read it to choose their default engine. weights.pt is not changed.
The artifact may also be given without --model (python jobs/export_onnx.py ARTIFACT), as before.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import Parser, before_ray, check_data, config_parser, local_artifact_dir, parse_config, run_cli
from fer_ray.inference.config import ExportConfig


def get_args_parser() -> Parser:
    return config_parser(ExportConfig, __doc__)


@run_cli
def main(argv: list[str]) -> int:
    cfg, ns = parse_config(get_args_parser(), argv)
    artifact = local_artifact_dir(cfg.model, "export")
    source = check_data(cfg.data, need="labelled data (the int8 model is calibrated on its training faces)")
    from fer_ray.inference.export import export_engines_from_source

    before_ray(ns)

    engines = export_engines_from_source(artifact, source, calib_size=cfg.calib, seed=cfg.seed, threads=cfg.threads)
    print(f"{'engine':<10} {'file':<16} {'MB':>5} {'val acc':>8} {'single':>7} {'flip TTA':>8}  sha256")
    for name, e in engines.items():
        size = Path(artifact, e["file"]).stat().st_size / 2**20
        accs = [e.get(k) for k in ("val_accuracy", "val_accuracy_single", "val_accuracy_flip_tta")]
        accs_s = " ".join(f"{'-' if v is None else f'{v:.2%}':>8}" for v in accs)
        print(f"{name:<10} {e['file']:<16} {size:>5.2f} {accs_s}  {e['sha256'][:16]}")
    from fer_ray.inference.artifact import load_artifact

    for name in ("onnx-int8", "onnx"):  # checked here as on every host that loads them
        print(load_artifact(artifact, engine=name).host_check.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
