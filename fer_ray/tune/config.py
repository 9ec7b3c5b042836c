"""A sweep's settings: the one source of ``jobs/tune.py``'s flags and ``--config`` keys, and of what a rerun of
the same sweep may change; apart from :mod:`fer_ray.tune.sweep` so that the CLI's parser does not import Ray."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fer_ray.config import check_at_least, fields_where, read_config_file, replace, setting
from fer_ray.train.config import TrainConfig
from fer_ray.tune.spaces import apply_params, resolve_space

TRAIN_SUBDIR = "train"  # a trial's Ray Train run, inside its Tune trial dir


def _space_file(path: str) -> dict[str, Any]:
    return read_config_file(path, "--space")


@dataclass(frozen=True)
class SweepConfig:
    base: TrainConfig = setting(
        help="the training settings every trial starts from (the space's samples replace some)",
        default_factory=TrainConfig,
        flatten=True,
        fields={"run_name": {"flag": None}},  # a trial's run is named by Tune; --run-name names the sweep
    )
    name: str = setting(
        "sweep",
        "folder under --storage-path holding the whole sweep; the same name continues it",
        flag="--run-name",
        deprecated=("--name",),
        group="sweep",
    )
    space: dict[str, Any] | None = setting(
        None,
        "YAML/JSON overriding entries of the architecture's named search space (a config file: inline)",
        metavar="FILE",
        parse=_space_file,
        default_text="the architecture's named space",
        group="sweep",
    )
    num_samples: int = setting(12, "trials (times the size of any grid)", group="sweep")
    max_concurrent: int = setting(1, "trials at once (each needs its workers' CPUs)", group="sweep")
    grace_period: int = setting(1, "joint epochs before ASHA may stop a trial", group="sweep")
    reduction_factor: int = setting(2, "ASHA keeps the top 1/N at each rung", group="sweep")
    train_fraction: float = setting(
        1.0,
        "stratified, seeded share of the training split per class (validation is always all of PublicTest)",
        group="sweep",
    )
    restart: bool = setting(False, "delete the sweep's folder and start over", group="sweep")
    driver_cpus: float = setting(
        0.1, "CPUs of each trial's driver, which only waits on its trainer's workers", group="sweep"
    )

    def __post_init__(self) -> None:
        if self.driver_cpus <= 0:
            raise ValueError(f"driver_cpus must be > 0 (Ray needs a resource request), got {self.driver_cpus}")
        if self.num_samples < 1 or self.max_concurrent < 1:
            raise ValueError("num_samples and max_concurrent must be >= 1")
        if not 1 <= self.grace_period <= self.base.epochs:
            raise ValueError(
                f"grace_period must be 1..--epochs ({self.base.epochs}) joint epochs, got {self.grace_period}"
            )
        check_at_least(self, reduction_factor=2)
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        if not self.name or "/" in self.name:
            raise ValueError(f"sweep name must be a non-empty folder name, got {self.name!r}")
        resolve_space(self.base.model.name, self.space)  # fail before Ray starts

    @property
    def resolved_space(self) -> dict[str, Any]:
        return resolve_space(self.base.model.name, self.space)

    @property
    def num_trials(self) -> int:
        """num_samples times the size of every grid in the space (Tune's count)."""
        grids = [len(s["grid"]) for s in self.resolved_space.values() if isinstance(s, dict) and "grid" in s]
        return self.num_samples * math.prod(grids)

    def record(self) -> dict[str, Any]:
        """What identifies the sweep: a rerun that differs in any of it is refused (use --restart)."""
        # where and how fast trials run may change: the rerun still answers the same question
        how_it_runs = fields_where(TrainConfig, "resources")
        base = {k: v for k, v in self.base.to_dict().items() if k not in how_it_runs}
        asha = {k: getattr(self, k) for k in ("num_samples", "grace_period", "reduction_factor", "train_fraction")}
        return {"model": self.base.model.name, "base": base, "space": self.resolved_space, **asha}


def trial_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The base config with one trial's sampled values (validated by the config classes), its run in the trial's dir."""
    return replace(apply_params(base, params), run_name=TRAIN_SUBDIR)


@dataclass(frozen=True)
class SweepActions:
    """What ``jobs/tune.py`` does this time besides sweeping; not a setting of the sweep (no ``--config`` key)."""

    show_space: bool = setting(False, "print the resolved search space and exit")
