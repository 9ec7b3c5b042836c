"""Plain-PyTorch training, the recipe of :mod:`fer_ray.train.recipe` in one process on one device: a single GPU
finishes long schedules in minutes, a machine without Ray can run it, and a 2-core CPU skips Ray Train's per-epoch
start-up. Faces are decoded once and kept on the device as ``uint8``. A run dir holds ``train_config.json``,
``history.json``, ``checkpoint_latest/`` (rerun the same command to resume), ``checkpoint_best/`` and ``artifact/``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from fer_ray.config import UserError
from fer_ray.data.decode import decode_batch
from fer_ray.data.fer2013 import parquet_columns, parquet_rows
from fer_ray.data.ferplus import load as ferplus_load
from fer_ray.data.s3 import is_s3_uri, resolve_filesystem
from fer_ray.inference.artifact import Artifact
from fer_ray.labels import NUM_CLASSES
from fer_ray.models.registry import create_model
from fer_ray.progress import Progress, iterate, progress_mode
from fer_ray.train import checkpoints
from fer_ray.train.config import TrainConfig
from fer_ray.train.distill import Teacher
from fer_ray.train.loop import epoch_line
from fer_ray.train.recipe import Learner, epoch_seed, seed_everything, teacher_of

logger = logging.getLogger(__name__)
LATEST, BEST = "checkpoint_latest", "checkpoint_best"
EVAL_BATCH = 512


@dataclass
class Split:
    faces: torch.Tensor  # (N, S, S) uint8
    labels: torch.Tensor  # (N,) int64


def load_fer_parquet(
    cfg: TrainConfig, teacher: Teacher | None = None, initial: Artifact | None = None
) -> tuple[dict[str, Split], dict[str, Any]]:
    """Train (Training) and val (PublicTest) faces of a FER2013 Parquet, never PrivateTest, and the run's record."""
    source, shown = checkpoints.resolve_source(cfg)
    if not source.endswith(".parquet"):
        raise UserError(
            f"the plain back end reads FER2013 Parquet only, got {source!r} — "
            "leave out --backend plain (the Ray back end reads CSVs and image folders)"
        )
    fs, path = resolve_filesystem(source) if is_s3_uri(source) else (None, source)
    ferplus = ferplus_load(source, cfg.ferplus_csv) if cfg.labels == "ferplus" else None
    table = pq.read_table(path, columns=parquet_columns(path, fs, cfg.labels), filesystem=fs)
    df = parquet_rows(table.to_pandas(), ("train", "val"), ferplus)
    counts = checkpoints.data_record(cfg, source, shown, teacher, initial)
    splits: dict[str, Split] = {}
    for split in ("train", "val"):
        rows = df[df["split"] == split]
        if cfg.limit:
            rows = rows.head(cfg.limit)
        out = decode_batch({c: rows[c].to_numpy() for c in rows.columns}, cfg.preprocess)
        ok = np.array([e is None for e in out["error"]], dtype=bool)
        counts["decode_errors"][split] = int((~ok).sum())
        if (~ok).any():
            logger.warning("%d %s rows failed to decode and are left out", int((~ok).sum()), split)
        labels = np.asarray(out["label"], dtype=np.int64)[ok]
        counts[split] = np.bincount(labels, minlength=NUM_CLASSES).tolist()
        splits[split] = Split(torch.from_numpy(np.ascontiguousarray(out["face"][ok])), torch.from_numpy(labels))
    if min(len(s.labels) for s in splits.values()) == 0:
        raise ValueError(f"{source}: need decodable rows in both train and val, got {counts}")
    return splits, counts


def _batches(split: Split, batch_size: int, order: torch.Tensor | None = None):
    n = len(split.labels)
    idx = order if order is not None else torch.arange(n, device=split.labels.device)
    for part in idx.split(batch_size):
        yield split.faces[part], split.labels[part]


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """A kill mid-write must not destroy the checkpoint a resume needs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def run_dir_of(cfg: TrainConfig) -> Path:
    if "://" in cfg.storage_path:
        raise ValueError("the plain back end writes to a local --storage-path; use --backend ray for s3://")
    return checkpoints.run_dirs(cfg)[1]


def train_plain(cfg: TrainConfig, progress: bool | None = None) -> checkpoints.TrainResult:
    """Train (or resume) ``cfg.run_name`` under ``cfg.storage_path`` and export its best checkpoint; ``progress``:
    bars of epochs and steps on a terminal (``None``) or always (``True``), per-epoch log lines in every case."""
    if cfg.workers != 1:
        raise ValueError("the plain back end trains on one device; use --backend ray for --workers > 1")
    if cfg.use_gpu and not torch.cuda.is_available():
        raise RuntimeError("--use-gpu was given but torch sees no CUDA device")
    run_dir, device = run_dir_of(cfg), torch.device("cuda" if cfg.use_gpu else "cpu")
    torch.set_num_threads(cfg.torch_threads or os.cpu_count() or 1)
    teacher, initial = teacher_of(cfg, device), checkpoints.initial_artifact(cfg) if cfg.init_from else None
    splits, counts = load_fer_parquet(cfg, teacher, initial)
    run_dir.mkdir(parents=True, exist_ok=True)
    train, val = (Split(s.faces.to(device), s.labels.to(device)) for s in (splits["train"], splits["val"]))
    logger.info("plain training on %s: train %s, val %s", device, counts["train"], counts["val"])

    seed_everything(cfg.seed)
    learner = Learner(cfg, create_model(cfg.model).to(device), device, counts, teacher, initial)

    start_epoch, history, best = 0, [], None
    latest = run_dir / LATEST / checkpoints.STATE
    saved_path = run_dir / checkpoints.TRAIN_CONFIG
    saved = json.loads(saved_path.read_text()) if saved_path.exists() and latest.exists() else None
    state = torch.load(latest, map_location=device, weights_only=True) if latest.exists() else None
    # check the resume before touching the model: a changed config is one clear error, not a shape mismatch
    checkpoints.resume_record(saved, cfg, counts, state["epoch"] + 1 if state else 0, run_dir)
    if state is not None:
        start_epoch, history = learner.restore(state)
        best = state.get("best")
        logger.info("resumed after epoch %d from %s", start_epoch, latest)

    on_tty = progress_mode(progress) == "bar"
    bar = Progress("training", total=cfg.total_epochs, unit="epochs", initial=start_epoch, progress=on_tty)
    try:
        for epoch in range(start_epoch, cfg.total_epochs):
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(epoch_seed(cfg, epoch))
            order = torch.randperm(len(train.labels), generator=gen).to(device)
            batches = _batches(train, cfg.batch_size, order)
            if on_tty:  # a bar of the epoch's steps under the epochs' bar
                steps = {"total": learner.steps_per_epoch, "unit": "steps", "progress": True, "leave": False}
                batches = iterate(batches, f"epoch {epoch + 1}", **steps)
            metrics = learner.run_epoch(epoch, batches, _batches(val, EVAL_BATCH), generator=gen)
            history.append(metrics)
            state = learner.state(epoch, history)
            if best is None or checkpoints.rank_key(metrics) > checkpoints.rank_key(best):
                best = metrics
                save_atomic(state, run_dir / BEST / checkpoints.STATE)
            state["best"] = best
            save_atomic(state, latest)
            (run_dir / checkpoints.HISTORY).write_text(json.dumps(history, indent=2) + "\n")
            # one line per epoch: the progress where there is no bar, above the bar where there is one
            logger.info("%s", epoch_line(metrics, cfg.total_epochs, best, time.perf_counter() - t0))
            bar.update(1, val_acc=metrics["val_acc"], best=best["val_acc"])
    finally:
        bar.close()
    return export_plain(run_dir)


def is_plain_run(cfg: TrainConfig) -> bool:
    return not is_s3_uri(cfg.storage_path) and (run_dir_of(cfg) / LATEST / checkpoints.STATE).exists()


def export_plain(run_dir: Path) -> checkpoints.TrainResult:
    """Export the best checkpoint of a plain run (finished or stopped) as ``run_dir/artifact``."""
    saved = json.loads((run_dir / checkpoints.TRAIN_CONFIG).read_text())
    best = run_dir / BEST / checkpoints.STATE
    if not best.exists():
        return checkpoints.TrainResult(run_dir, None, None, [], saved["counts"])
    state = torch.load(best, map_location="cpu", weights_only=True)
    history = torch.load(run_dir / LATEST / checkpoints.STATE, map_location="cpu", weights_only=True)["history"]
    cfg = TrainConfig.from_dict(saved["train_config"])
    return checkpoints.export_state(state, history, cfg, saved["counts"], run_dir, saved.get("segments"))
