"""Starting or joining Ray the same way from every job, test and benchmark, and what Ray prints.
``--address X`` (or ``RAY_ADDRESS``, set by ``ray job submit``) joins that cluster, ``auto`` the one
``ray start --head`` runs here; otherwise the job starts its own private Ray (``address="local"``) with the
logical-CPU headroom training needs, even beside another cluster or a stale ``/tmp/ray/ray_current_cluster``
(plain ``ray.init()`` would join those, then refuse ``num_cpus``)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

from fer_ray.config import check_at_least

logger = logging.getLogger(__name__)

LOCAL = "local"  # Ray's own name for "start a new cluster in this process, join nothing"

# None until configure_logging() runs: a library user who never calls it keeps Ray's defaults.
_verbose: bool | None = None


def configure_logging(verbose: bool = False) -> None:
    """Keep Ray's internals off the user's terminal (``verbose=False``) or show all of it (``True``).

    Ray's start-up, plans, progress and forwarded worker lines tell a user nothing to act on and garble
    progress bars. Quiet: the ``ray`` loggers and Ray Data's console handler show warnings and errors only
    (``ray-data.log`` keeps everything) and workers' output is not forwarded (errors still arrive as
    exceptions; their logs stay in ``/tmp/ray/session_latest/logs``). Call it before :func:`init_ray`; it
    does not import Ray: levels apply now to what is imported and again in :func:`init_ray`.
    """
    global _verbose
    _verbose = verbose
    _apply_ray_log_levels()


def is_verbose() -> bool:
    """Whether ``configure_logging(verbose=True)`` asked for Ray's own output (e.g. Tune's trial tables)."""
    return _verbose is True


def _apply_ray_log_levels() -> None:
    """The ``ray`` logger's level (``import ray`` sets INFO) and Ray Data's console handler's, for whichever
    is imported; a no-op until :func:`configure_logging` has run."""
    if _verbose is None:
        return
    level = logging.INFO if _verbose else logging.WARNING
    if "ray" in sys.modules:
        logging.getLogger("ray").setLevel(level)
    if "ray.data" in sys.modules:  # its file handler (ray-data.log in the session dir) keeps everything
        for h in logging.getLogger("ray.data").handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                h.setLevel(level)


@dataclass(frozen=True)
class RayConfig:
    """How a job reaches Ray (see the module docstring). ``num_cpus``: the *logical* CPUs a local Ray
    advertises; more than the cores leaves Ray Data tasks room next to training workers that would
    otherwise take every CPU and hang the pipeline (seen on 2-core machines)."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    include_dashboard: bool | None = None  # Ray decides; Ray Train V2 queries actor state through it

    def __post_init__(self) -> None:
        check_at_least(self, num_cpus=1)
        if self.address is not None and not self.address.strip():
            raise ValueError("address must be a Ray address (host:port, ray://host:10001, auto or local), got ''")


def default_logical_cpus() -> int:
    """Twice the cores (at least 4), so data tasks always find a slot."""
    return max(4, 2 * (os.cpu_count() or 1))


def resolve_address(cfg: RayConfig, environ: dict[str, str] | None = None) -> str:
    """The address :func:`init_ray` uses: the config's, else ``RAY_ADDRESS``, else ``"local"``."""
    env = os.environ if environ is None else environ
    return (cfg.address or env.get("RAY_ADDRESS") or LOCAL).strip()


def init_ray(cfg: RayConfig | None = None) -> None:
    """Start or join Ray once per process (see the module docstring); a no-op when Ray is already up."""
    import ray

    cfg = cfg or RayConfig()
    if ray.is_initialized():
        return
    if _verbose is False:
        import ray.data  # noqa: F401  (so that its console logging is quieted before any dataset runs)
    _apply_ray_log_levels()
    log_to_driver = _verbose is not False  # Ray's default unless configure_logging() quieted it
    address = resolve_address(cfg)
    if address != LOCAL:
        if cfg.num_cpus is not None or cfg.num_gpus is not None:
            logger.warning("joining a cluster: --ray-cpus/num_gpus apply only to a local Ray and are ignored")
        logger.info("joining the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False)
        return
    num_cpus = cfg.num_cpus or default_logical_cpus()
    logger.info(
        "starting a private local Ray with %d logical CPUs (no --address or RAY_ADDRESS; "
        "--address auto joins a cluster running on this machine)",
        num_cpus,
    )
    ray.init(
        address=LOCAL,
        num_cpus=num_cpus,
        num_gpus=cfg.num_gpus,
        include_dashboard=cfg.include_dashboard,
        log_to_driver=log_to_driver,
        configure_logging=False,
    )
