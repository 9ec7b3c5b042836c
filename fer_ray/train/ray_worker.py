"""What runs on every Ray Train worker: the plain recipe of :mod:`fer_ray.train.recipe` over this worker's
data shard, under DDP, reporting and checkpointing each epoch, resuming from Ray Train's latest checkpoint."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray
import ray.train
import ray.train.torch
import torch

from fer_ray.models.registry import create_model
from fer_ray.train.checkpoints import STATE
from fer_ray.train.config import TrainConfig
from fer_ray.train.recipe import Learner, epoch_seed, seed_everything, teacher_of
from fer_ray.train.run_dir import CRASH_MARKER, HISTORY, write_run_file

logger = logging.getLogger(__name__)


def _torch_batches(it, batch_size: int, shuffle: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for b in it.iter_torch_batches(
        batch_size=batch_size,
        local_shuffle_buffer_size=shuffle or None,
        local_shuffle_seed=seed if shuffle else None,
        dtypes={"face": torch.uint8, "label": torch.int64},
    ):
        yield b["face"], b["label"]


def _crash_midway(batches, after: int, fs, marker: str):
    """Fault drill: exit the worker process abruptly once, after ``after`` batches."""
    for i, b in enumerate(batches):
        if i == after and fs.get_file_info(marker).type == pafs.FileType.NotFound:
            write_run_file(fs, marker, "crashed once\n")
            os._exit(1)
        yield b


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; resumes from ``ray.train.get_checkpoint()`` when present."""
    cfg = TrainConfig.from_dict(config["train"])
    ctx = ray.train.get_context()
    rank, world, local_world = ctx.get_world_rank(), ctx.get_world_size(), ctx.get_local_world_size()
    logger.info("worker rank %d of %d on node %s", rank, world, ray.get_runtime_context().get_node_id())
    # The run's storage as Ray Train resolved it (DeveloperAPI, stable within our pinned Ray).
    run_fs, run_path = ctx.get_storage().storage_filesystem, ctx.get_storage().experiment_fs_path
    # Ray pins OMP_NUM_THREADS to the worker's (possibly fractional) CPU share; use the cores instead.
    torch.set_num_threads(cfg.torch_threads or max(1, (os.cpu_count() or 1) // local_world))
    device = ray.train.torch.get_device()
    seed_everything(cfg.seed)

    # Only reconstruction pre-training leaves parameters (the classifier) without gradients;
    # DDP's search for them costs a graph traversal per step, so ask for it only then.
    pretraining = cfg.total_epochs > cfg.epochs
    model = ray.train.torch.prepare_model(
        create_model(cfg.model), parallel_strategy_kwargs={"find_unused_parameters": pretraining}
    )
    per_worker = max(1, cfg.batch_size // world)
    steps_per_epoch = max(1, math.ceil(config["n_train"] / cfg.batch_size))
    learner = Learner.build(cfg, model, device, steps_per_epoch, config["counts"], teacher_of(cfg, device))

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE, map_location=device, weights_only=True)
        start_epoch, history = learner.restore(state)
        logger.info("resumed after epoch %d from %s", start_epoch, checkpoint.path)

    reducer = None
    if world > 1:
        import torch.distributed as dist

        def reducer(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device)
            dist.all_reduce(t)
            return t.cpu()

    train_it, val_it = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg.total_epochs):
        seed = epoch_seed(cfg, epoch, rank)
        batches = _torch_batches(train_it, per_worker, cfg.shuffle_buffer, seed)
        if cfg.crash_once_at_epoch == epoch and rank == 0:
            after = max(1, config["n_train"] // per_worker // world // 2)
            batches = _crash_midway(batches, after, run_fs, f"{run_path}/{CRASH_MARKER}")
        val_batches = _torch_batches(val_it, per_worker, 0, 0)
        gen = torch.Generator().manual_seed(seed)
        metrics = learner.run_epoch(epoch, batches, val_batches, generator=gen, reducer=reducer)
        history.append(metrics)
        if rank == 0:  # per-epoch history next to the checkpoints, readable while the run goes on
            write_run_file(run_fs, f"{run_path}/{HISTORY}", json.dumps(history, indent=2) + "\n")
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save(learner.state(epoch, history), Path(d) / STATE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)
