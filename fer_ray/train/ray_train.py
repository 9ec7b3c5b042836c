"""Ray Train (V2) around the plain recipe in :mod:`fer_ray.train.recipe`: the driver of one run.

One concern per module, in the order a run goes: :mod:`~fer_ray.train.run_dir` (where the run lives),
:mod:`~fer_ray.train.ray_data` (decoded shards), this module (the ``TorchTrainer``, ``fit()`` with epoch
progress), :mod:`~fer_ray.train.ray_worker` (the loop on each worker: DDP, per-epoch reports and
checkpoints, resume, the fault drill) and :mod:`~fer_ray.train.ray_export` (the best checkpoint as an
artifact). The names other code imports from here are re-exported.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import pyarrow.fs as pafs
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from fer_ray import storage as run_storage
from fer_ray.progress import Poller, Progress, progress_mode
from fer_ray.runtime import init_ray
from fer_ray.train.checkpoints import STATE, TrainResult, rank_key, resume_record
from fer_ray.train.config import TrainConfig
from fer_ray.train.loop import epoch_line
from fer_ray.train.ray_data import TrainingData, training_data
from fer_ray.train.ray_export import export_best, export_run
from fer_ray.train.ray_worker import train_loop_per_worker
from fer_ray.train.run_dir import HISTORY, TRAIN_CONFIG, ray_storage, run_dirs, saved_run

__all__ = ["STATE", "TrainingData", "build_trainer", "export_run", "train", "training_data"]

logger = logging.getLogger(__name__)


def build_trainer(
    cfg: TrainConfig,
    data: TrainingData,
    storage: str,
    callbacks: list | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> TorchTrainer:
    """The TorchTrainer for one run; Tune trials add ``TuneReportCallback`` through ``callbacks``.

    ``storage`` is a local path or ``s3://`` URI, or with ``filesystem`` a path inside that filesystem
    (resolved once on the driver, so trials on other nodes need no S3 settings of their own).
    """
    if filesystem is None:
        storage, filesystem = ray_storage(storage)
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


def train(cfg: TrainConfig, progress: bool | None = None) -> TrainResult:
    """Train (or resume) ``cfg.run_name`` under ``cfg.storage_path`` and export the best checkpoint.

    ``progress`` (a bar on a terminal, else log lines; ``False``: neither) is read on the driver from the
    ``history.json`` rank 0 rewrites every epoch: Train V2 reports go to its controller, not the driver.
    """
    init_ray(cfg.ray)
    storage, run_dir = run_dirs(cfg)
    data = training_data(cfg)
    saved, done = saved_run(run_dir)
    record = resume_record(saved if done else None, cfg, data.counts, done)
    run_storage.write_text(
        run_storage.join(run_dir, TRAIN_CONFIG), json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    )
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
            history = json.loads(run_storage.read_text(run_storage.join(run_dir, HISTORY)))
        except FileNotFoundError:
            return  # no epoch finished yet
        seen = min(seen, len(history))
        for k in range(seen, len(history)):
            best = max(history[: k + 1], key=rank_key)
            logger.info("%s", epoch_line(history[k], total, best, history[k]["epoch_s"]))  # above a bar
        if len(history) > seen:
            best = max(history, key=rank_key)
            bar.set(len(history), val_acc=history[-1]["val_acc"], best=best["val_acc"])
        seen = len(history)

    try:
        with Poller(poll, every_s=10.0 if run_storage.is_remote(run_dir) else 2.0):
            yield
    finally:
        bar.close()
