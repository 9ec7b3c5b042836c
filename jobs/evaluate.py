"""The paper's evaluation tables for one or more model artifacts, side by side.

python jobs/evaluate.py runs/ae_cnn_attn/artifact runs/cnn_attn/artifact --out out/eval
python jobs/evaluate.py s3://bucket/fer_ray/runs/ae/artifact --out out/eval   # AWS_ENDPOINT_URL for MinIO etc.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fer_ray.cli import add_ray_args, setup


def main(argv: list[str] | None = None) -> int:
    setup()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="*", help="artifact dirs (default: the shipped model)")
    p.add_argument("--data", default=None, help="labelled FER2013 source (default: the data root's Parquet)")
    p.add_argument("--out", default="out/eval")
    p.add_argument("--photos", default=None, help="folder of external face photos for Table 5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--engine",
        choices=("torch", "onnx", "onnx-int8"),
        default=None,
        help="engine of the main tables (default: the artifact's, as scoring and Serve use it)",
    )
    p.add_argument(
        "--no-engines", dest="engines", action="store_false", help="skip the table of every engine on PrivateTest"
    )
    add_ray_args(p)
    a = p.parse_args(argv)

    from fer_ray.artifact import load_artifact
    from fer_ray.config import fer2013_parquet
    from fer_ray.evaluate import EvalConfig, engines_markdown, evaluate_all, external_photos, markdown_table
    from fer_ray.runtime import RayConfig, init_ray
    from fer_ray.storage import local_artifact

    source = a.data or fer2013_parquet()
    if source is None:
        p.error("no FER2013 data found: pass --data or set FER_RAY_DATA")
    init_ray(RayConfig(address=a.address, num_cpus=a.ray_cpus))
    arts = [load_artifact(local_artifact(x), engine=a.engine) for x in (a.artifacts or [None])]  # s3://: downloaded
    results = evaluate_all(arts, str(source), a.out, EvalConfig(seed=a.seed), engines=a.engines)
    print(markdown_table(results) + engines_markdown(results))
    if a.photos:
        for art in arts:
            rows = external_photos(art, a.photos)
            (Path(a.out) / f"{art.model_config.name}_photos.json").write_text(json.dumps(rows, indent=2))
            print(f"Table 5 ({art.model_config.name}):")
            for r in rows:
                print(" ", json.dumps(r))
    print(f"wrote {a.out}/evaluation.json and evaluation.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
