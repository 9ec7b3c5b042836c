"""Ray Train (V2) around the recipe of :mod:`fer_ray.train.recipe`: a run's decoded data, the ``TorchTrainer``
and ``fit()`` with epoch progress, the loop on each worker (:func:`train_loop_per_worker`: DDP, per-epoch
reports and checkpoints, resume, the fault drill) and the best checkpoint exported as an artifact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import ray.data
import ray.train.torch  # binds ray and ray.train too
import torch
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2.api.result import Result as RunResult

from fer_ray import storage as run_storage
from fer_ray.data import decode, read_labeled
from fer_ray.labels import NUM_CLASSES
from fer_ray.models.registry import create_model
from fer_ray.progress import Poller, Progress, progress_mode
from fer_ray.runtime import init_ray
from fer_ray.train import checkpoints
from fer_ray.train.config import TrainConfig
from fer_ray.train.loop import epoch_line
from fer_ray.train.recipe import Learner, epoch_seed, seed_everything, teacher_of

logger = logging.getLogger(__name__)


def _assign_val(batch: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Move a seeded, order-independent share of ``train`` to ``val`` (hash of the path)."""

    def is_val(path: str) -> bool:
        h = hashlib.sha256(f"{seed}:{path}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < fraction

    mask = (batch["split"] == "train") & batch["path"].map(is_val)
    batch.loc[mask, "split"] = "val"
    return batch


def _only(batch: pd.DataFrame, split: str) -> pd.DataFrame:
    return batch[(batch["split"] == split) & batch["error"].isna()][["face", "label"]]


@dataclass
class TrainingData:
    train: ray.data.Dataset
    val: ray.data.Dataset
    counts: dict[str, Any]  # per split/class counts and decode errors, saved with the run


def _decoded(source: str, split: str, cfg: TrainConfig) -> ray.data.Dataset:
    ds = read_labeled(source, splits=(split,), labels=cfg.labels, ferplus_csv=cfg.ferplus_csv)
    if cfg.limit:
        ds = ds.limit(cfg.limit)  # before decoding, so smoke runs do not decode the full data
    return decode(ds, cfg.preprocess).materialize()


def training_data(cfg: TrainConfig) -> TrainingData:
    """Decoded train and validation datasets, never test: validation is the source's own (FER2013 PublicTest) or
    a seeded ``val_fraction`` of train."""
    source, shown = checkpoints.resolve_source(cfg)
    train, val = _decoded(source, "train", cfg), _decoded(source, "val", cfg)
    if val.count() == 0:
        train = train.map_batches(
            _assign_val, fn_kwargs={"fraction": cfg.val_fraction, "seed": cfg.seed}, batch_format="pandas"
        ).materialize()
        val = train
    counts = checkpoints.data_record(cfg, source, shown)
    splits = {}
    for split, ds in (("train", train), ("val", val)):
        meta = ds.select_columns(["label", "split", "error"]).to_pandas()
        meta = meta[meta["split"] == split]
        bad = meta["error"].notna()
        if bad.any():
            top = meta.loc[bad, "error"].value_counts().head(5).to_dict()
            logger.warning("%d %s rows failed to decode and are left out: %s", bad.sum(), split, top)
        counts[split] = np.bincount(meta.loc[~bad, "label"], minlength=NUM_CLASSES).tolist()
        counts["decode_errors"][split] = int(bad.sum())
        splits[split] = ds.map_batches(_only, fn_kwargs={"split": split}, batch_format="pandas").materialize()
    if sum(counts["train"]) == 0 or sum(counts["val"]) == 0:
        raise ValueError(f"{source}: need decodable rows in both train and val, got {counts}")
    return TrainingData(splits["train"], splits["val"], counts)


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
            checkpoints.write_run_file(fs, marker, "crashed once\n")
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
    learner = Learner(cfg, model, device, config["counts"], teacher_of(cfg, device))

    start_epoch, history = 0, []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        start_epoch, history = learner.restore(_load(checkpoint, device))
        logger.info("resumed after epoch %d from %s", start_epoch, checkpoint.path)

    train_it, val_it = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(start_epoch, cfg.total_epochs):
        seed = epoch_seed(cfg, epoch, rank)
        batches = _torch_batches(train_it, per_worker, cfg.shuffle_buffer, seed)
        if cfg.crash_once_at_epoch == epoch and rank == 0:
            after = max(1, config["n_train"] // per_worker // world // 2)
            batches = _crash_midway(batches, after, run_fs, f"{run_path}/{checkpoints.CRASH_MARKER}")
        val_batches = _torch_batches(val_it, per_worker, 0, 0)
        gen = torch.Generator().manual_seed(seed)
        metrics = learner.run_epoch(epoch, batches, val_batches, generator=gen)
        history.append(metrics)
        if rank == 0:  # per-epoch history next to the checkpoints, readable while the run goes on
            checkpoints.write_run_file(
                run_fs, f"{run_path}/{checkpoints.HISTORY}", json.dumps(history, indent=2) + "\n"
            )
        with tempfile.TemporaryDirectory() as d:
            if rank == 0:
                torch.save(learner.state(epoch, history), Path(d) / checkpoints.STATE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


def build_trainer(
    cfg: TrainConfig,
    data: TrainingData,
    storage: str,
    callbacks: list | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> TorchTrainer:
    """The TorchTrainer for one run; Tune trials add ``TuneReportCallback`` through ``callbacks``. ``storage``:
    a local path or ``s3://`` URI, or a path inside ``filesystem`` (resolved once on the driver for all trials)."""
    if filesystem is None:
        storage, filesystem = checkpoints.ray_storage(storage)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": cfg.to_dict(), "n_train": sum(data.counts["train"]), "counts": data.counts},
        scaling_config=ScalingConfig(
            num_workers=cfg.workers,
            use_gpu=cfg.use_gpu,
            resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})},
            placement_strategy=cfg.placement_strategy,
        ),
        run_config=RunConfig(
            name=cfg.run_name,
            storage_path=storage,
            storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_checkpoints,
                checkpoint_score_attribute="val_acc",
                checkpoint_score_order="max",
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            callbacks=callbacks or None,
        ),
        datasets={"train": data.train, "val": data.val},
    )


def train(cfg: TrainConfig, progress: bool | None = None) -> checkpoints.TrainResult:
    """Train (or resume) ``cfg.run_name`` under ``cfg.storage_path`` and export the best checkpoint; ``progress``
    (a bar on a terminal, else log lines; ``False``: neither) reads the ``history.json`` rank 0 rewrites."""
    init_ray(cfg.ray)
    storage, run_dir = checkpoints.run_dirs(cfg)
    data = training_data(cfg)
    saved, done = checkpoints.saved_run(run_dir)
    record = checkpoints.resume_record(saved if done else None, cfg, data.counts, done, run_dir)
    logger.info("train/val class counts: %s", {k: data.counts[k] for k in ("train", "val")})
    trainer = build_trainer(cfg, data, storage)
    with _epoch_progress(run_dir, cfg.total_epochs, done, progress):
        result = trainer.fit()
    return export_best(result, cfg, data.counts, run_dir, record["segments"])


@contextlib.contextmanager
def _epoch_progress(run_dir: Path | str, total: int, done: int, progress: bool | None):
    """Epochs finished, from the run's ``history.json``, while ``fit()`` blocks the main thread."""
    mode = progress_mode(progress)
    if mode == "off":
        yield
        return
    bar = Progress("training", total=total, unit="epochs", initial=done, progress=mode == "bar")
    seen = done

    def poll() -> None:
        nonlocal seen
        try:
            history = json.loads(run_storage.read_text(run_storage.join(run_dir, checkpoints.HISTORY)))
        except FileNotFoundError:
            return  # no epoch finished yet
        for k in range(min(seen, len(history)), len(history)):
            best = max(history[: k + 1], key=checkpoints.rank_key)
            logger.info("%s", epoch_line(history[k], total, best, history[k]["epoch_s"]))  # above a bar
            bar.set(k + 1, val_acc=history[k]["val_acc"], best=best["val_acc"])
        seen = len(history)

    try:
        with Poller(poll, every_s=10.0 if run_storage.is_remote(run_dir) else 2.0):
            yield
    finally:
        bar.close()


def _load(checkpoint: ray.train.Checkpoint, device: torch.device | str = "cpu") -> dict[str, Any]:
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / checkpoints.STATE, map_location=device, weights_only=True)


def export_best(
    result, cfg: TrainConfig, counts: dict[str, Any], run_dir: Path | str, segments: list[dict[str, Any]] | None = None
) -> checkpoints.TrainResult:
    """Write the best checkpoint as a model artifact under ``run_dir/artifact`` (local, or uploaded to ``s3://``)."""
    best = checkpoints.select_checkpoint(result.best_checkpoints or []) or result.checkpoint
    if best is None:
        return checkpoints.TrainResult(run_dir, None, None, [], counts)
    state = _load(best)
    history = (_load(result.checkpoint)["history"] if result.checkpoint is not None else None) or state["history"]
    exported = checkpoints.export_state(state, history, cfg, counts, run_dir, segments)
    run_storage.write_text(run_storage.join(run_dir, checkpoints.HISTORY), json.dumps(history, indent=2) + "\n")
    best_epoch = exported.best_metrics["epoch"] + 1
    logger.info("exported the best checkpoint (epoch %d) to %s", best_epoch, exported.artifact_dir)
    return exported


def export_run(storage_path: str, run_name: str) -> checkpoints.TrainResult:
    """Export the best checkpoint of an existing run, finished or stopped midway, without Ray."""
    storage, run_dir = checkpoints.run_dirs(TrainConfig(storage_path=storage_path, run_name=run_name))
    try:
        saved = json.loads(run_storage.read_text(run_storage.join(run_dir, checkpoints.TRAIN_CONFIG)))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}: is {run_name!r} a run under {storage_path!r}?") from None
    storage, filesystem = checkpoints.ray_storage(storage)
    result = RunResult.from_path(f"{storage}/{run_name}", storage_filesystem=filesystem)
    return export_best(
        result, TrainConfig.from_dict(saved["train_config"]), saved["counts"], run_dir, saved.get("segments")
    )
