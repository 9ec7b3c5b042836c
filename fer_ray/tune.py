"""Ray Tune sweeps over what the paper suggests tuning: latent size, attention, learning rate,
reconstruction weight and optimizer.

Each trial is a small driver function that builds the same ``TorchTrainer`` as
``jobs/train.py`` and forwards its per-epoch reports to Tune (``TuneReportCallback``),
so ASHA can stop weak trials early. The data are decoded once and shared by all trials.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fer_ray.config import replace
from fer_ray.runtime import init_ray
from fer_ray.train.config import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepConfig:
    base: TrainConfig = field(default_factory=TrainConfig)
    name: str = "sweep"
    num_samples: int = 8
    max_concurrent: int = 1  # each trial's trainer needs its own worker CPUs
    grace_period: int = 2  # joint epochs before ASHA may stop a trial
    driver_cpus: float = 0.1  # a trial's driver only waits on its trainer, whose workers reserve their own CPUs
    latent_sizes: tuple[int, ...] = (24, 12, 6)
    attentions: tuple[str, ...] = ("se", "cbam")
    lr_range: tuple[float, float] = (5e-4, 5e-3)
    recon_weights: tuple[float, ...] = (0.0, 0.1, 0.5)
    optimizers: tuple[str, ...] = ("adamw", "sgd")

    def __post_init__(self) -> None:
        if self.driver_cpus <= 0:
            raise ValueError(f"driver_cpus must be > 0 (Ray needs a resource request), got {self.driver_cpus}")
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ValueError("num_samples and max_concurrent must be >= 1")
        lo, hi = self.lr_range
        if not 0 < lo <= hi:
            raise ValueError(f"lr_range must be 0 < low <= high, got {self.lr_range}")
        if not self.latent_sizes or not self.attentions or not self.recon_weights or not self.optimizers:
            raise ValueError("every searched dimension needs at least one value")


def search_space(cfg: SweepConfig) -> dict[str, Any]:
    from ray import tune

    return {
        "latent_size": tune.choice(list(cfg.latent_sizes)),
        "attention": tune.choice(list(cfg.attentions)),
        "lr": tune.loguniform(*cfg.lr_range),
        "recon_weight": tune.choice(list(cfg.recon_weights)),
        "optimizer": tune.choice(list(cfg.optimizers)),
    }


def trial_config(base: TrainConfig, params: dict[str, Any], run_name: str) -> TrainConfig:
    """The base config with one trial's sampled values (validated by the config classes)."""
    model = replace(base.model, latent_size=int(params["latent_size"]), attention=params["attention"])
    return replace(
        base,
        model=model,
        lr=float(params["lr"]),
        recon_weight=float(params["recon_weight"]),
        optimizer=params["optimizer"],
        run_name=run_name,
    )


def _trial(params: dict[str, Any], base: dict[str, Any], data, root: str, filesystem) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from fer_ray.train.ray_train import build_trainer

    name = tune.get_context().get_trial_name()
    cfg = trial_config(TrainConfig.from_dict(base), params, name)
    # checkpoints in <storage>/<sweep name>/<trial name>/
    build_trainer(cfg, data, root, callbacks=[TuneReportCallback()], filesystem=filesystem).fit()


def sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Run the sweep; returns (and writes to ``<storage>/<name>/sweep.json``) every trial's best epoch."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from fer_ray import storage as run_storage
    from fer_ray.train.ray_train import ray_storage, run_dirs, training_data

    init_ray(cfg.base.ray)
    # Everything of the sweep lands under <storage>/<name>/ (local or s3://): Tune's own files,
    # each trial's checkpoints and sweep.json.
    storage, root = run_dirs(replace(cfg.base, run_name=cfg.name))
    data = training_data(cfg.base)
    pre = cfg.base.total_epochs - cfg.base.epochs
    tune_storage, tune_fs = ray_storage(storage)
    trial_root, trial_fs = ray_storage(str(root))
    trainable = tune.with_parameters(_trial, base=cfg.base.to_dict(), data=data, root=trial_root, filesystem=trial_fs)
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": cfg.driver_cpus}),
        param_space=search_space(cfg),
        tune_config=tune.TuneConfig(
            metric="val_acc",
            mode="max",
            scheduler=ASHAScheduler(
                time_attr="training_iteration", max_t=cfg.base.total_epochs, grace_period=pre + cfg.grace_period
            ),
            num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent,
        ),
        run_config=tune.RunConfig(name=cfg.name, storage_path=tune_storage, storage_filesystem=tune_fs),
    )
    results = tuner.fit()
    trials = []
    for r in results:
        hist = r.metrics_dataframe
        best = hist.loc[hist["val_acc"].idxmax()].to_dict() if hist is not None and len(hist) else {}
        trials.append(
            {
                "trial": r.path.rsplit("/", 1)[-1] if r.path else None,
                "params": {k: r.config[k] for k in search_space(cfg)},
                "epochs_run": int(len(hist)) if hist is not None else 0,
                "best_val_acc": float(best.get("val_acc", float("nan"))),
                "best_epoch": int(best["epoch"]) if "epoch" in best else None,
                "error": str(r.error) if r.error else None,
            }
        )
    trials.sort(key=lambda t: -t["best_val_acc"] if t["best_val_acc"] == t["best_val_acc"] else 0)
    summary = {
        "name": cfg.name,
        "metric": "val_acc (PublicTest)",
        "trials": trials,
        "best": trials[0] if trials else None,
    }
    run_storage.write_text(run_storage.join(root, "sweep.json"), json.dumps(summary, indent=2) + "\n")
    return summary
