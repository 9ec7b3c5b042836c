"""A Ray Train run's best checkpoint as a model artifact: right after ``fit()``, or later from the run dir alone."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray.train.v2.api.result import Result as RunResult

from fer_ray import storage as run_storage
from fer_ray.train.checkpoints import STATE, TrainResult, export_state, select_checkpoint
from fer_ray.train.config import TrainConfig
from fer_ray.train.run_dir import HISTORY, TRAIN_CONFIG, ray_storage, run_dirs

logger = logging.getLogger(__name__)


def export_best(
    result, cfg: TrainConfig, counts: dict[str, Any], run_dir: Path | str, segments: list[dict[str, Any]] | None = None
) -> TrainResult:
    """Write the best checkpoint (by validation accuracy) as a model artifact under ``run_dir/artifact``
    (local, or uploaded to ``s3://``)."""
    best = select_checkpoint(result.best_checkpoints or []) or result.checkpoint
    if best is None:
        return TrainResult(run_dir, None, None, [], counts)
    with best.as_directory() as d:
        state = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)
    history = state["history"]
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            history = torch.load(Path(d) / STATE, map_location="cpu", weights_only=True)["history"] or history
    best_metrics = state["history"][-1]
    target = run_storage.join(run_dir, "artifact")
    if run_storage.is_remote(run_dir):
        with tempfile.TemporaryDirectory() as d:
            exported = export_state(state, cfg, counts, history, Path(d) / "a", segments)
            artifact_dir = run_storage.upload_dir(exported, target)
    else:
        artifact_dir = export_state(state, cfg, counts, history, target, segments)
    run_storage.write_text(run_storage.join(run_dir, HISTORY), json.dumps(history, indent=2) + "\n")
    epoch = best_metrics.get("epoch")
    logger.info("exported the best checkpoint (epoch %s) to %s", "?" if epoch is None else epoch + 1, artifact_dir)
    return TrainResult(run_dir, artifact_dir, best_metrics, history, counts)


def export_run(storage_path: str, run_name: str) -> TrainResult:
    """Export the best checkpoint of an existing run, finished or stopped midway, without Ray: the run's
    saved config rebuilds the model."""
    storage, run_dir = run_dirs(TrainConfig(storage_path=storage_path, run_name=run_name))
    try:
        saved = json.loads(run_storage.read_text(run_storage.join(run_dir, TRAIN_CONFIG)))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}: is {run_name!r} a run under {storage_path!r}?") from None
    storage, filesystem = ray_storage(storage)
    result = RunResult.from_path(f"{storage}/{run_name}", storage_filesystem=filesystem)
    return export_best(
        result, TrainConfig.from_dict(saved["train_config"]), saved["counts"], run_dir, saved.get("segments")
    )
