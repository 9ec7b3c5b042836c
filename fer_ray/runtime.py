"""Starting or joining Ray the same way from every job, test and benchmark."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayConfig:
    """How a job reaches Ray.

    ``address=None`` joins the cluster a ``ray job submit`` runs in (``RAY_ADDRESS``)
    or else starts a local one. ``num_cpus`` is the number of *logical* CPUs a
    locally started Ray advertises: more than the physical cores leaves room for
    Ray Data tasks next to training workers that would otherwise take every CPU
    and hang the pipeline (seen on 2-core machines).
    """

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    include_dashboard: bool | None = None  # Ray decides; Ray Train V2 queries actor state through it

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ValueError(f"num_cpus must be >= 1, got {self.num_cpus}")


def default_logical_cpus() -> int:
    """Twice the physical cores (at least 4), so data tasks always find a slot."""
    return max(4, 2 * (os.cpu_count() or 1))


def init_ray(cfg: RayConfig | None = None) -> None:
    """Start or join Ray once per process; a no-op when Ray is already initialised."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        logger.info("joining Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    num_cpus = cfg.num_cpus or default_logical_cpus()
    logger.info("starting a local Ray with %d logical CPUs", num_cpus)
    ray.init(
        num_cpus=num_cpus,
        num_gpus=cfg.num_gpus,
        include_dashboard=cfg.include_dashboard,
        log_to_driver=True,
        configure_logging=False,
    )
