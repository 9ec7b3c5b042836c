"""How one scoring run lays its stages out on Ray: decided once, by :func:`plan_stages`, and recorded in the run.

The four choices of a plan depend on each other; one function keeps their rules side by side.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from fer_ray.runtime import LOCAL, resolve_address
from fer_ray.score.config import ScoreConfig

MAX_BLOCK_ROWS = 1024  # listing rows per block: bounds the blocks a huge collection makes


@dataclass(frozen=True)
class StagePlan:
    block_rows: int  # listing rows per block (bounded, so the driver never puts millions of tiny objects)
    fused: bool  # decode/detect inside the inference actors
    actors: int  # inference actors
    cpu_tasks: int | None  # concurrent decode/detect tasks of split stages; None: Ray Data decides

    @property
    def stages(self) -> str:
        return "fused" if self.fused else "split"


def plan_stages(n: int, cfg: ScoreConfig, gpus: float, cpus: int | None = None) -> StagePlan:
    """The :class:`StagePlan` for scoring ``n`` inputs with ``gpus`` per actor on ``cpus`` cluster CPUs.

    ``cpus`` defaults to what the running Ray reports; it is only asked for when there is
    something to score, so a run with nothing new needs no Ray.

    - Blocks: a small collection is spread over every CPU, a large one gets about four blocks
      per CPU (so that work evens out) of at most :data:`MAX_BLOCK_ROWS` rows.
    - Stages (``cfg.stages``, see :class:`ScoreConfig`): ``auto`` fuses for CPU inference on a Ray the
      job starts itself, where the two stages would only take turns on the same cores.
    - Actors: ``cfg.actors``, else one single-threaded actor per core when fused on the job's own Ray,
      else one. Fused, never more than there are blocks: an actor without a block only costs its start-up.
    - CPU tasks: ``cfg.max_cpu_tasks``, else this machine's cores on the job's own Ray, which advertises
      twice the cores (:func:`fer_ray.runtime.default_logical_cpus`), so that tasks do not take turns with
      the actors; on a cluster Ray Data decides. Never more than the blocks (Ray Data warns about a cap
      it cannot reach).
    """
    local = resolve_address(cfg.ray) == LOCAL
    block_rows, blocks = 1, None
    if n:
        if cpus is None:
            import ray

            cpus = int(ray.cluster_resources().get("CPU", 1))
        cpus = max(1, cpus)
        spread = min(cfg.images_per_task, math.ceil(n / cpus))
        block_rows = max(1, min(MAX_BLOCK_ROWS, max(spread, math.ceil(n / (4 * cpus)))))
        blocks = math.ceil(n / block_rows)
    fused = cfg.stages == "fused" or (cfg.stages == "auto" and gpus == 0 and local)
    actors = cfg.actors or ((os.cpu_count() or 1) if fused and local else 1)
    if fused and blocks is not None:
        actors = max(1, min(actors, blocks))
    cpu_tasks = cfg.max_cpu_tasks
    if cpu_tasks is None and local:
        cpu_tasks = os.cpu_count() or 1
    if cpu_tasks is not None and blocks is not None:
        cpu_tasks = max(1, min(cpu_tasks, blocks))
    return StagePlan(block_rows=block_rows, fused=fused, actors=actors, cpu_tasks=cpu_tasks)
