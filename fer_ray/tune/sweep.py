"""Ray Tune sweeps per model: ASHA over joint epochs, resumable, with a table, a plot and the winner exported.

Each trial builds the same ``TorchTrainer`` as ``jobs/train.py`` and forwards its per-epoch reports to Tune, so
ASHA stops weak trials early on PublicTest accuracy. Pretraining epochs are not forwarded (ASHA's time axis is
``joint_epoch``): an untrained classifier's 0.0 at an early rung would stop every trial that pretrains.

Everything of a sweep lives under ``<storage>/<name>/`` (local or ``s3://``): ``sweep_config.json`` (what was
asked, checked on a rerun), Tune's state (a rerun continues from it), ``trial_<id>/`` (with ``train/``, the
trial's Ray Train run), ``sweep.csv``/``.md``/``.json`` (best first), ``asha.png``, ``best/artifact/`` and
``best_config.json`` (for ``jobs/train.py --config``).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
from typing import Any

import numpy as np

from fer_ray import storage as run_storage
from fer_ray.config import UserError, replace
from fer_ray.labels import NUM_CLASSES
from fer_ray.progress import Progress, progress_mode
from fer_ray.runtime import init_ray, is_verbose
from fer_ray.train import checkpoints
from fer_ray.train.config import TrainConfig
from fer_ray.tune.config import TRAIN_SUBDIR, SweepConfig, trial_config
from fer_ray.tune.report import SweepResult, summarize, write_outputs
from fer_ray.tune.spaces import to_tune

logger = logging.getLogger(__name__)

SWEEP_CONFIG = "sweep_config.json"


def tune_metrics(metrics: dict[str, Any], pretrain_epochs: int) -> dict[str, Any] | None:
    """The report Tune gets for one training epoch: ``None`` for pretraining, else ``joint_epoch`` (1-based) added."""
    if metrics.get("phase") == "pretrain":
        return None
    return {**metrics, "joint_epoch": int(metrics["epoch"]) - pretrain_epochs + 1}


def _joint_epoch_callback(pretrain_epochs: int):
    from ray.tune.integration.ray_train import TuneReportCallback

    class JointEpochReport(TuneReportCallback):
        """TuneReportCallback that forwards joint epochs only (see :func:`tune_metrics`)."""

        def after_report(self, run_context, metrics, checkpoint):
            forwarded = tune_metrics(metrics[0], pretrain_epochs)
            if forwarded is not None:
                super().after_report(run_context, [forwarded, *metrics[1:]], checkpoint)

    return JointEpochReport()


def _trial_progress(num_trials: int, progress: bool | None):
    """A Tune callback (in the driver): trials finished of ``num_trials``, the best validation accuracy so far,
    and one line per finished trial."""
    from ray.tune import Callback

    class TrialProgress(Callback):
        def __init__(self) -> None:
            self._bar: Progress | None = None
            self._best: float | None = None

        def __getstate__(self) -> dict[str, Any]:  # Tune saves its run config (with us) in tuner.pkl
            return {**self.__dict__, "_bar": None}

        def _update(self, trials) -> Progress:
            if self._bar is None:
                self._bar = Progress("sweep", total=num_trials, unit="trials", progress=progress)
            status = collections.Counter(t.status for t in trials)
            best = {} if self._best is None else {"best_val_acc": self._best}
            errors = {"errors": status["ERROR"]} if status["ERROR"] else {}
            self._bar.set(status["TERMINATED"] + status["ERROR"], running=status["RUNNING"], **best, **errors)
            return self._bar

        def on_trial_result(self, iteration, trials, trial, result, **info):
            acc = result.get("val_acc")
            if acc is not None and (self._best is None or acc > self._best):
                self._best = float(acc)
            self._update(trials)

        def _finished(self, trials, trial, how: str) -> None:
            last = trial.last_result or {}
            acc, epoch = last.get("val_acc"), last.get("joint_epoch")
            detail = f": val acc {acc:.4f} after {epoch} joint epochs" if acc is not None else ""
            self._update(trials).write(f"trial {trial.trial_id} {how}{detail}")

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._finished(trials, trial, "finished")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._finished(trials, trial, "failed")

        def on_experiment_end(self, trials, **info):
            self._update(trials).close()

    return TrialProgress()


def _row_keys(batch: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    key = seed.to_bytes(8, "little", signed=False)
    h = [
        int.from_bytes(hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=8, key=key).digest(), "little")
        for f in batch["face"]
    ]
    return {**batch, "_key": np.array(h, dtype=np.uint64)}


def _keep_below(batch: dict[str, np.ndarray], thresholds: list[int]) -> dict[str, np.ndarray]:
    thr = np.array(thresholds, dtype=np.uint64)
    keep = batch["_key"] <= thr[batch["label"].astype(np.int64)]
    return {k: v[keep] for k, v in batch.items() if k != "_key"}


def stratified_subset(data, fraction: float, seed: int):
    """``data`` (:class:`fer_ray.train.ray_train.TrainingData`) with ``fraction`` of each training class, ranked
    by a seeded hash of the face pixels, so the same on every run and node whatever the row order."""
    from fer_ray.train.ray_train import TrainingData

    if fraction >= 1:
        return data
    keyed = data.train.map_batches(_row_keys, fn_kwargs={"seed": seed}, batch_format="numpy").materialize()
    meta = keyed.select_columns(["label", "_key"]).to_pandas()
    thresholds, counts = [0] * NUM_CLASSES, [0] * NUM_CLASSES
    for label, keys in meta.groupby("label")["_key"]:
        ordered = np.sort(keys.to_numpy(dtype=np.uint64))
        k = max(1, round(fraction * len(ordered)))
        thresholds[int(label)] = int(ordered[k - 1])
        counts[int(label)] = int((ordered <= ordered[k - 1]).sum())  # identical faces share a key
    train = keyed.map_batches(_keep_below, fn_kwargs={"thresholds": thresholds}, batch_format="numpy").materialize()
    new_counts = {**data.counts, "train": counts, "train_full": data.counts["train"], "train_fraction": fraction}
    logger.info(
        "training on %d of %d images (%.0f%% per class)", sum(counts), sum(data.counts["train"]), 100 * fraction
    )
    return TrainingData(train, data.val, new_counts)


def trial(params: dict[str, Any], base: dict[str, Any], data, root: str, filesystem) -> None:
    """One Tune trial: a TorchTrainer run in ``<root>/trial_<id>/train`` reporting joint epochs to Tune."""
    import pyarrow.fs as pafs
    from ray import tune

    from fer_ray.train.ray_train import build_trainer

    cfg = trial_config(TrainConfig.from_dict(base), params)
    trial_dir = f"{root}/trial_{tune.get_context().get_trial_id()}"
    # train_config.json beside the checkpoints: `jobs/train.py --export-only` works on any trial
    saved = {"train_config": cfg.to_dict(), "counts": data.counts}
    path = f"{trial_dir}/{TRAIN_SUBDIR}/{checkpoints.TRAIN_CONFIG}"
    checkpoints.write_run_file(filesystem or pafs.LocalFileSystem(), path, json.dumps(saved) + "\n")
    pretrain = cfg.total_epochs - cfg.epochs
    build_trainer(cfg, data, trial_dir, callbacks=[_joint_epoch_callback(pretrain)], filesystem=filesystem).fit()


def check_rerun(cfg: SweepConfig) -> None:
    """Refuse (before Ray starts) to continue a sweep of the same name started with other settings: a
    :class:`~fer_ray.config.UserError` naming what changed. Nothing to check on a new sweep or with ``restart``."""
    if cfg.restart:
        return
    root = checkpoints.run_dirs(replace(cfg.base, run_name=cfg.name))[1]
    try:
        saved = json.loads(run_storage.read_text(run_storage.join(root, SWEEP_CONFIG)))
    except FileNotFoundError:
        return
    now = json.loads(json.dumps(cfg.record()))
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if "base" in changed:
        b0, b1 = saved.get("base", {}), now["base"]
        changed = [k for k in changed if k != "base"] + [
            f"base.{k}" for k in sorted(b0.keys() | b1.keys()) if b0.get(k) != b1.get(k)
        ]
    if changed:
        raise UserError(
            f"sweep {cfg.name!r} under {root} was started with different {', '.join(changed)}",
            "rerun with --restart to start it over, or pick another --run-name",
        )


def sweep(cfg: SweepConfig, progress: bool | None = None) -> SweepResult:
    """Run (or continue) the sweep and write its table, plot, best artifact and best config. ``progress`` (a bar
    on a terminal, else log lines; ``False``: nothing) replaces Tune's tables unless logging is verbose; a
    continued sweep keeps the one it started with (Tune restores its callbacks)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from fer_ray.train.ray_train import training_data

    init_ray(cfg.base.ray)
    storage, root = checkpoints.run_dirs(replace(cfg.base, run_name=cfg.name))
    tune_storage, tune_fs = checkpoints.ray_storage(storage)
    exp_path = f"{tune_storage}/{cfg.name}"
    if cfg.restart:
        logger.info("--restart: deleting %s", root)
        run_storage.delete_dir(root)
    restoring = tune.Tuner.can_restore(exp_path, storage_filesystem=tune_fs)
    if restoring:
        check_rerun(cfg)
    run_storage.write_text(run_storage.join(root, SWEEP_CONFIG), json.dumps(cfg.record(), indent=2) + "\n")

    data = stratified_subset(training_data(cfg.base), cfg.train_fraction, cfg.base.seed)
    trial_root, trial_fs = checkpoints.ray_storage(str(root))
    trainable = tune.with_resources(
        tune.with_parameters(trial, base=cfg.base.to_dict(), data=data, root=trial_root, filesystem=trial_fs),
        {"CPU": cfg.driver_cpus},
    )
    if restoring:
        logger.info("continuing sweep %s from %s (finished trials are kept, errored ones retried)", cfg.name, root)
        tuner = tune.Tuner.restore(exp_path, trainable, resume_errored=True, storage_filesystem=tune_fs)
    else:
        np.random.seed(cfg.base.seed)  # Tune samples with numpy's global generator: a seeded sweep
        tuner = tune.Tuner(
            trainable,
            param_space=to_tune(cfg.resolved_space),
            tune_config=tune.TuneConfig(
                metric="val_acc",
                mode="max",
                scheduler=ASHAScheduler(
                    time_attr="joint_epoch",
                    max_t=cfg.base.epochs,
                    grace_period=cfg.grace_period,
                    reduction_factor=cfg.reduction_factor,
                ),
                num_samples=cfg.num_samples,
                max_concurrent_trials=cfg.max_concurrent,
                trial_name_creator=lambda t: f"trial_{t.trial_id}",
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=cfg.name,
                storage_path=tune_storage,
                storage_filesystem=tune_fs,
                callbacks=[_trial_progress(cfg.num_trials, progress)] if progress_mode(progress) != "off" else None,
                verbose=None if is_verbose() else 0,  # our progress replaces Tune's tables
            ),
        )
    with _tune_output(is_verbose()):
        results = tuner.fit()
    finished = results.num_terminated + results.num_errors
    complete = finished == len(results) == cfg.num_trials  # a SIGINT leaves trials pending (Tune saved them)
    trials = summarize(results, cfg)
    return write_outputs(cfg, root, trials, data.counts, complete)


@contextlib.contextmanager
def _tune_output(verbose: bool):
    """Tune's new console output prints a banner and a TensorBoard hint even at ``verbose=0``; the legacy one not."""
    saved = os.environ.get("RAY_AIR_NEW_OUTPUT")
    if not verbose:
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved
