"""Averaging the weights of a run's last epochs (issue #34): does the mean of the last K epochs' EMA weights read
PublicTest better than one epoch's? Stochastic weight averaging (Izmailov et al. 2018) finds flatter minima by
averaging along the end of a schedule; an EMA of decay 0.999 already averages about the last 1,000 steps (4-5
FER2013 epochs at batch 128), so what is left to gain is the averaging over tens of epochs. Batch-norm statistics of
an average are not the average of the statistics, so each average is also read after one pass over the training
faces (with the run's augmentation) recomputes them. Selection on PublicTest only: PrivateTest is read by
``jobs/evaluate.py`` once, for the variant chosen here. Snapshots are copies of the run's
``checkpoint_latest/state.pt`` taken after each epoch (``epoch_NNN.pt``, NNN the 1-based epoch), as
``benchmarks/snapshot_epochs.sh`` takes them beside the training.

bash benchmarks/snapshot_epochs.sh ~/.cache/fer_ray/runs/ae_v2_e300 170 &    # while the run trains
python benchmarks/weight_averaging.py ~/.cache/fer_ray/runs/ae_v2_e300 --k 1,5,10,20,40
python benchmarks/weight_averaging.py RUN_DIR --k 10 --bn --save RUN_DIR_AVG    # a run dir to export: jobs/train.py
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine_info, repo_relative, write_result  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "weight_averaging.json"


def snapshots(folder: Path) -> dict[int, Path]:
    """``{epoch: path}`` of ``epoch_NNN.pt`` files, 1-based epochs as the training log counts them."""
    found = {int(m.group(1)): p for p in folder.glob("epoch_*.pt") if (m := re.fullmatch(r"epoch_(\d+)\.pt", p.name))}
    if not found:
        raise SystemExit(f"no epoch_NNN.pt snapshots in {folder}")
    return dict(sorted(found.items()))


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of floating-point entries; counters (batch norm's ``num_batches_tracked``) from the last state."""
    return {
        k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in states[-1].items()
    }


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, faces: torch.Tensor, cfg, batch: int = 512) -> None:
    """Batch-norm running statistics as the cumulative mean over ``faces`` under the run's training augmentation
    (the statistics the EMA carries come from augmented faces, and the layers after each batch norm learned them);
    only batch-norm layers in train mode, so dropout stays off."""
    from fer_ray.train.loop import augment, normalize

    model.eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
            m.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    for part in faces.split(batch):
        x = normalize(part, cfg.preprocess)
        model(augment(x, cfg.augment, gen) if cfg.augment is not None else x)
    model.eval()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a plain run's directory (train_config.json, snapshots/)")
    p.add_argument("--snapshots", type=Path, help="folder of epoch_NNN.pt (default: RUN_DIR/snapshots)")
    p.add_argument("--k", default="1,5,10,20,40", help="comma-separated numbers of last epochs to average")
    p.add_argument("--bn", action="store_true", help="with --save: recompute batch-norm statistics of the average")
    p.add_argument(
        "--save",
        type=Path,
        help="write a copy of RUN_DIR whose checkpoint_best holds the average of "
        "the last max(--k) epochs, for `jobs/train.py --backend plain --export-only`",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="result JSON (default: %(default)s)")
    args = p.parse_args(argv)

    from fer_ray.models.registry import create_model
    from fer_ray.train.config import TrainConfig
    from fer_ray.train.loop import evaluate
    from fer_ray.train.plain import EVAL_BATCH, load_fer_parquet

    saved = json.loads((args.run_dir / "train_config.json").read_text())
    cfg = TrainConfig.from_dict(saved["train_config"])
    splits, _ = load_fer_parquet(cfg)  # Training and PublicTest, never PrivateTest
    train, val = splits["train"], splits["val"]
    found = snapshots(args.snapshots or args.run_dir / "snapshots")
    epochs = list(found)
    ks = sorted({min(int(k), len(epochs)) for k in args.k.split(",")})
    model = create_model(cfg.model)

    def val_acc(weights: dict[str, torch.Tensor], bn: bool = False) -> float:
        model.load_state_dict(weights)
        if bn:
            recompute_bn(model, train.faces, cfg)
        batches = zip(val.faces.split(EVAL_BATCH), val.labels.split(EVAL_BATCH), strict=True)
        stats = evaluate(model, batches, torch.device("cpu"), cfg.preprocess)
        return stats.correct / stats.n

    ema = {e: torch.load(found[e], map_location="cpu", weights_only=True)["ema"]["weights"] for e in epochs}
    history = json.loads((args.run_dir / "history.json").read_text())
    rows = []
    for k in ks:
        last = epochs[-k:]
        mean = average([ema[e] for e in last])
        row = {"k": k, "epochs": [last[0], last[-1]], "val_acc": val_acc(mean), "val_acc_bn": val_acc(mean, bn=True)}
        if k == ks[-1]:  # what --save writes: kept, so batch norm is not recomputed a second time
            saved_bn = {name: t.clone() for name, t in model.state_dict().items()}
        if k == 1:  # the same weights the training validated: the recorded figure, as a check of this script
            row["val_acc_recorded"] = history[last[0] - 1]["val_acc"]
        rows.append(row)
        print(
            f"last {k:>3} epochs ({last[0]}-{last[-1]}): PublicTest {100 * row['val_acc']:.2f}% "
            f"(batch norm recomputed {100 * row['val_acc_bn']:.2f}%)",
            flush=True,
        )
    best_single = max(history, key=lambda h: h["val_acc"])
    result = {
        **machine_info(),
        "command": "python benchmarks/weight_averaging.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "run": repo_relative(args.run_dir),
        "snapshot_epochs": [epochs[0], epochs[-1]],
        "best_single_epoch": {"epoch": best_single["epoch"] + 1, "val_acc": best_single["val_acc"]},
        "averages": rows,
    }
    write_result(result, args.out)
    if args.save:
        k = ks[-1]
        shutil.copytree(args.run_dir, args.save, ignore=shutil.ignore_patterns("snapshots", "artifact"))
        state = torch.load(found[epochs[-1]], map_location="cpu", weights_only=True)
        weights = saved_bn if args.bn else average([ema[e] for e in epochs[-k:]])
        acc = rows[-1]["val_acc_bn" if args.bn else "val_acc"]
        state["ema"]["weights"] = weights
        # the artifact records what it holds: the average and its PublicTest figure, not the last epoch's
        state["history"][-1] = {
            **state["history"][-1],
            "val_acc": acc,
            "averaged_epochs": [epochs[-k], epochs[-1]],
            "bn_recomputed": args.bn,
        }
        torch.save(state, args.save / "checkpoint_best" / "state.pt")
        print(f"wrote {args.save}: checkpoint_best = mean of the last {k} epochs' EMA weights")


if __name__ == "__main__":
    main()
