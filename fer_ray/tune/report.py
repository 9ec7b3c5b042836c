"""What a sweep leaves behind: one row per trial, ``sweep.csv``/``sweep.md``/``sweep.json``, the ASHA
plot, and the best trial exported with its config (see :mod:`fer_ray.tune.sweep` for the layout)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from fer_ray import storage as run_storage
from fer_ray.config import fields_where
from fer_ray.train.config import TrainConfig
from fer_ray.tune.config import TRAIN_SUBDIR, SweepConfig, trial_config

BEST_CONFIG = "best_config.json"


@dataclass
class SweepResult:
    root: Any  # <storage>/<name>: a Path, or an s3:// URI
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    artifact: Any
    best_config: Any
    complete: bool  # False when the sweep was interrupted: rerun the same command to continue


def summarize(results, cfg: SweepConfig) -> list[dict[str, Any]]:
    """One row per trial, best validation accuracy first."""
    names = list(cfg.resolved_space)
    rows = []
    for r in results:
        hist = r.metrics_dataframe
        joint = hist[hist["joint_epoch"].notna()] if hist is not None and "joint_epoch" in hist else None
        has = joint is not None and len(joint) > 0
        best = joint.loc[joint["val_acc"].idxmax()] if has else None
        epochs_run = int(joint["joint_epoch"].max()) if has else 0
        if r.error:
            status = "error"
        elif epochs_run < cfg.base.epochs:
            status = "stopped by ASHA" if has else "not run"
        else:
            status = "finished"
        rows.append(
            {
                "trial": r.path.rstrip("/").rsplit("/", 1)[-1] if r.path else None,
                "val_acc": float(best["val_acc"]) if has else float("nan"),
                "val_loss": float(best["val_loss"]) if has else float("nan"),
                # 1-based over all epochs (pretraining too), as the training log and the export line count
                "best_epoch": int(best["epoch"]) + 1 if has and "epoch" in best else None,
                "epochs_run": epochs_run,
                "status": status,
                "minutes": round(float(r.metrics.get("time_total_s", 0.0)) / 60, 2) if r.metrics else 0.0,
                "params": {k: r.config.get(k) for k in names},
                "curve": [[int(e), float(a)] for e, a in zip(joint["joint_epoch"], joint["val_acc"], strict=True)]
                if has
                else [],
                "error": str(r.error).splitlines()[0][:300] if r.error else None,
                "_path": r.path,
                "_fs": r.filesystem,
            }
        )
    rows.sort(key=lambda t: (-(t["val_acc"] if t["val_acc"] == t["val_acc"] else -1), t["trial"] or ""))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 0.01 or abs(v) >= 1000 else f"{v:.4g}"
    return str(v)


def _table(trials: list[dict[str, Any]], names: list[str]) -> tuple[str, str]:
    """(csv, markdown) of the trial rows."""
    import csv

    head = ["rank", "trial", "val_acc", "best_epoch", "epochs_run", "status", "minutes", *names]
    lines = [
        [
            i,
            t["trial"],
            f"{t['val_acc']:.4f}" if t["val_acc"] == t["val_acc"] else "",
            t["best_epoch"] if t["best_epoch"] is not None else "",
            t["epochs_run"],
            t["status"] if not t["error"] else f"error: {t['error']}",
            t["minutes"],
            *(_fmt(t["params"].get(n)) for n in names),
        ]
        for i, t in enumerate(trials, 1)
    ]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(lines)
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    md += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in lines]
    return buf.getvalue(), "\n".join(md) + "\n"


def plot_asha(trials: list[dict[str, Any]], max_t: int, grace: int, title: str) -> bytes:
    """PNG of validation accuracy per joint epoch per trial; ASHA-stopped trials dashed and marked."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for t in trials:
        if not t["curve"]:
            continue
        x, y = zip(*t["curve"], strict=True)
        stopped = t["status"] == "stopped by ASHA"
        (line,) = ax.plot(x, y, "--" if stopped else "-", marker="o", ms=3, lw=1.2, alpha=0.85, label=t["trial"])
        if stopped:
            ax.plot(x[-1], y[-1], "x", color=line.get_color(), ms=9, mew=2)
    ax.axvline(grace, color="grey", lw=0.8, ls=":", label=f"grace period ({grace})")
    x_label, y_label = "joint epoch (pretraining epochs not counted)", "validation accuracy (PublicTest)"
    ax.set(xlabel=x_label, ylabel=y_label, xlim=(0.8, max_t + 0.2))
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(title + "  (dashed + x: stopped by ASHA)", fontsize=9)
    ax.grid(alpha=0.3)
    if len(trials) <= 16:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def best_config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A ``jobs/train.py --config`` file of ``cfg`` without the fields marked ``bookkeeping`` (the trial's own)."""
    trial_only = fields_where(TrainConfig, "bookkeeping")
    return {k: v for k, v in json.loads(json.dumps(cfg.to_dict())).items() if k not in trial_only}


def write_outputs(
    cfg: SweepConfig, root, trials: list[dict[str, Any]], counts: dict[str, Any], complete: bool
) -> SweepResult:
    names = list(cfg.resolved_space)
    csv_text, md_table = _table(trials, names)
    run_storage.write_text(run_storage.join(root, "sweep.csv"), csv_text)
    stopped = sum(t["status"] == "stopped by ASHA" for t in trials)
    best = next((t for t in trials if t["val_acc"] == t["val_acc"]), None)
    artifact = best_config = None
    if best is not None and complete:  # the best trial's best checkpoint, as best/artifact
        from ray.train.v2.api.result import Result as RunResult

        from fer_ray.train.ray_train import export_best

        best_cfg = trial_config(cfg.base, best["params"])
        result = RunResult.from_path(f"{best['_path']}/{TRAIN_SUBDIR}", storage_filesystem=best["_fs"])
        artifact = export_best(result, best_cfg, counts, run_storage.join(root, "best")).artifact_dir
        best_config = run_storage.join(root, BEST_CONFIG)
        run_storage.write_text(best_config, json.dumps(best_config_dict(best_cfg), indent=2) + "\n")
    title = f"{cfg.name}: {cfg.base.model.name}, {len(trials)} trials, {stopped} stopped by ASHA"
    png = plot_asha(trials, cfg.base.epochs, cfg.grace_period, title)
    run_storage.write_bytes(run_storage.join(root, "asha.png"), png)
    b = cfg.base
    full = counts.get("train_full")
    subset = f" ({cfg.train_fraction:.0%} of {sum(full)}, stratified by class, seed {b.seed})" if full else ""
    md = [
        f"# Sweep `{cfg.name}`: {b.model.name}\n",
        f"- {len(trials)} trials of up to {b.epochs} joint epochs"
        + (" (+ pretraining epochs, not counted by ASHA)" if b.model.name == "ae_cnn_attn" else "")
        + f"; ASHA on validation (PublicTest) accuracy, grace period {cfg.grace_period} joint epoch(s), "
        f"reduction factor {cfg.reduction_factor}: {stopped} stopped early",
        f"- training images: {sum(counts['train'])}{subset}; validation: {sum(counts['val'])} (all of it)",
        "- minutes are wall-clock per trial, start-up and pretraining included; val_acc is the trial's best epoch",
        "" if complete else "\n**Interrupted**: rerun the same command to continue the sweep.\n",
        md_table,
        "![ASHA](asha.png)\n",
    ]
    if artifact is not None:
        md += [
            f"Best: `{best['trial']}`, val_acc {best['val_acc']:.4f} at epoch {best['best_epoch']}; "
            f"artifact `best/artifact/`, config `{BEST_CONFIG}`. Train it on all the data:\n",
            "```bash",
            f"python jobs/train.py --config {best_config} --epochs 30 --run-name {cfg.name}_best",
            "```",
        ]
    run_storage.write_text(run_storage.join(root, "sweep.md"), "\n".join(md) + "\n")
    public = [{k: v for k, v in t.items() if not k.startswith("_")} for t in trials]
    summary = {"name": cfg.name, "metric": "val_acc (PublicTest)", "complete": complete, "trials": public}
    run_storage.write_text(run_storage.join(root, "sweep.json"), json.dumps(summary, indent=2) + "\n")
    best_public = next((t for t in public if t["trial"] == best["trial"]), None) if best else None
    return SweepResult(root, public, best_public, artifact, best_config, complete)
