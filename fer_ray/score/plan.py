"""How a scoring run is laid out on the cluster at hand (:func:`plan_stages`) and the lazy Ray Dataset that plan
builds (:func:`build_dataset`): listing rows -> ``prepare_images`` tasks -> ``FacePredictor`` actors, or both in
one :class:`~fer_ray.score.stages.FusedScorer` actor per core. Separate from the driver so the plan can be read
(and tested) without a run around it."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from fer_ray.runtime import LOCAL, resolve_address
from fer_ray.score.config import ScoreConfig
from fer_ray.score.stages import FacePredictor, FusedScorer, prepare_images

MAX_BLOCK_ROWS = 1024  # listing rows per block: bounds the blocks a huge collection makes


@dataclass(frozen=True)
class StagePlan:
    block_rows: int  # listing rows per block (bounded, so the driver never puts millions of tiny objects)
    stages: str  # fused (decode/detect inside the inference actors) or split
    actors: int  # inference actors
    cpu_tasks: int | None  # concurrent decode/detect tasks of split stages; None: Ray Data decides


def plan_stages(n: int, cfg: ScoreConfig, gpus: float, cpus: int | None = None) -> StagePlan:
    """The :class:`StagePlan` for ``n`` inputs with ``gpus`` per actor on ``cpus`` cluster CPUs (default: Ray's,
    asked only when there is something to score, so a run with nothing new needs no Ray).

    - Blocks: a small collection spread over every CPU, a large one about four blocks per CPU (so that work
      evens out) of at most :data:`MAX_BLOCK_ROWS` rows.
    - Stages: ``auto`` fuses for CPU inference on the job's own Ray, where the two would take turns on the cores.
    - Actors: ``cfg.actors``, else one single-threaded actor per core when fused on the job's own Ray, else
      one; fused, no more than the blocks (an actor without a block only costs its start-up).
    - CPU tasks: ``cfg.max_cpu_tasks``, else the machine's cores on the job's own Ray (which advertises twice
      the cores, :func:`fer_ray.runtime.default_logical_cpus`, so that tasks do not take turns with the
      actors); on a cluster Ray Data decides. Never more than the blocks (Ray Data warns of a cap it cannot reach).
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
    cpu_tasks = cfg.max_cpu_tasks or ((os.cpu_count() or 1) if local else None)
    if cpu_tasks is not None and blocks is not None:
        cpu_tasks = max(1, min(cpu_tasks, blocks))
    return StagePlan(block_rows, "fused" if fused else "split", actors, cpu_tasks)


def build_dataset(
    todo: pd.DataFrame, cfg: ScoreConfig, plan: StagePlan, gpus: float, prepare_kwargs: dict, predictor_kwargs: dict
):
    """The lazy Ray Dataset of output rows for the listing rows in ``todo`` (nothing runs until written);
    ``prepare_kwargs`` go to :func:`prepare_images`, ``predictor_kwargs`` to :class:`FacePredictor`."""
    import ray.data

    step = plan.block_rows
    segments = todo["segment"].notna().to_numpy() if "segment" in todo else np.zeros(len(todo), dtype=bool)
    if segments.any():  # a video segment is a task of its own; blocks stay whole (no batch_size bundles them)
        step = min(step, cfg.batch_size if plan.stages == "fused" else cfg.images_per_task)
    images, videos = todo[~segments], todo[segments]
    cuts = [(images, i, i + step) for i in range(0, len(images), step)]
    cuts += [(videos, i, i + 1) for i in range(len(videos))]
    blocks = [pa.Table.from_pandas(df.iloc[a:b], preserve_index=False) for df, a, b in cuts]
    ds = ray.data.from_arrow(blocks)
    # On the job's own local Ray no node is lost, and an actor that dies (out of memory, say) would die again:
    # the run fails instead and a rerun resumes where it stopped. Restartable actors would also make Ray
    # log an error-level line in every run (ray#53727: Ray Data keeps its map transformer in the object
    # store). On a cluster, Ray Data's default stays: actors on a lost node are restarted elsewhere.
    actors = {
        "compute": ray.data.ActorPoolStrategy(size=plan.actors),
        "num_cpus": cfg.cpus_per_actor,
        "num_gpus": gpus,
        **({"max_restarts": 0} if resolve_address(cfg.ray) == LOCAL else {}),
    }
    if plan.stages == "fused":
        return ds.map_batches(
            FusedScorer,
            batch_format="pandas",
            # batch_size images per call, so the model sees batches as large as in split stages.
            batch_size=cfg.batch_size if step > cfg.batch_size else None,
            fn_constructor_kwargs={"prepare_kwargs": prepare_kwargs, **predictor_kwargs},
            **actors,
        )
    ds = ds.map_batches(
        prepare_images,
        batch_format="pandas",
        # An int batch size also bundles blocks up to it: use it only when blocks are larger.
        batch_size=cfg.images_per_task if step > cfg.images_per_task else None,
        fn_kwargs=prepare_kwargs,
        compute=ray.data.TaskPoolStrategy(size=plan.cpu_tasks),
        num_cpus=cfg.cpus_per_task,
        # Retrying a task whose worker died also makes these remote args differ from the
        # actors', which keeps Ray Data from fusing this stage into the (small) actor pool.
        max_retries=cfg.task_retries,
    )
    return ds.map_batches(
        FacePredictor,
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        fn_constructor_kwargs=predictor_kwargs,
        **actors,
    )
