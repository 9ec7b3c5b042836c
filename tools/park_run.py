"""Park a plain training run in the repository, or lay a parked one out again (fer_ray.train.parking says why).

    python tools/park_run.py park ~/.cache/fer_ray/runs/ae_v2r2_e300 results/ae_v2r2_e300/parked.pt
    python tools/park_run.py unpark results/ae_v2r2_e300/parked.pt --storage-path ~/.cache/fer_ray/runs
    # then rerun the run's own command (its recipe's header) to resume

Pause the run first (pkill -STOP -f "run-name ..."): a checkpoint written while parking would be missed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import run_cli


@run_cli
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = parser.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("park", help="write RUN_DIR's resume state to FILE")
    p.add_argument("run_dir")
    p.add_argument("file")
    u = verbs.add_parser("unpark", help="lay FILE out as <storage-path>/<run name>")
    u.add_argument("file")
    u.add_argument("--storage-path", required=True)
    ns = parser.parse_args(argv)
    from fer_ray.train.parking import park, unpark

    if ns.verb == "park":
        done = park(ns.run_dir, ns.file)
        best = done["best"] or {}
        print(
            f"parked {ns.run_dir} after {done['epochs_done']} epochs (best val {best.get('val_acc', float('nan')):.4f}"
            f" @ epoch {best.get('epoch', -1) + 1}) as {ns.file}: {done['bytes'] / 2**20:.1f} MiB"
        )
    else:
        print(f"unparked {ns.file} as {unpark(ns.file, ns.storage_path)}; rerun the run's command to resume")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
