"""Batch scoring with Ray Data: photo collections (local or S3) -> one Parquet row per face, then the report.

The dataset streams end to end; nothing but counts comes back to the driver::

    list_images (driver, metadata only; already-scored inputs dropped here)
      -> map_batches(prepare_images)   CPU tasks: fetch, decode, detect, crop (fer_ray.score.stages)
      -> map_batches(FacePredictor)    actor pool: the model on the run's engine
      -> write_parquet(OUT/rows)       part files named after the run (fer_ray.score.store)

Fused stages (:func:`fer_ray.score.plan.plan_stages`) make the middle two one ``FusedScorer`` actor per core.
All rows of an image come out of one ``prepare_images`` call and Ray Data hands whole blocks on, so they land in one
part file: that is what makes a killed run safe to resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import math
import posixpath
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fer_ray.data.listing import IMAGE_EXTENSIONS, list_images_and_settings
from fer_ray.data.s3 import S3Settings
from fer_ray.progress import Poller, Progress, ProgressCounter, progress_mode, without_ray_data_bars
from fer_ray.runtime import init_ray
from fer_ray.score.config import ScoreConfig
from fer_ray.score.plan import StagePlan, build_dataset, plan_stages
from fer_ray.score.report import write_report
from fer_ray.score.run_lock import RunLock
from fer_ray.score.stages import artifact_files
from fer_ray.score.store import CONFIG_FILE, PART_PREFIX, ROWS_DIR, RUNS_DIR, OutputStore, ScanResult, key_hash
from fer_ray.storage import is_remote
from fer_ray.video.config import VIDEO_EXTENSIONS, is_video
from fer_ray.video.stage import expand_segments

if TYPE_CHECKING:
    from fer_ray.inference.artifact import Artifact
    from fer_ray.preprocess import PreprocessConfig

logger = logging.getLogger(__name__)


class MixedModelsError(ValueError):
    """``OUT`` holds rows of another model (or engine) and ``allow_mixed_models`` is off."""


class NoInputsError(ValueError):
    """The inputs list no image at all: a user mistake, reported before OUT is created."""


@dataclass
class ScoreResult:
    out: str
    run: dict[str, Any]  # this run's record (also at OUT/runs/<run_id>.json)
    summary: dict[str, Any]  # OUT/summary.json


class _PartFilenames:
    """``part-<run_id>-<write_uuid>-<task>``: a run's files are recognisable and never overwrite another's."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"{PART_PREFIX}{self.run_id}-{write_uuid}-{task_index:06d}"


def model_accuracy(meta: dict[str, Any]) -> dict[str, Any] | None:
    """``artifact.json``'s test accuracy (or None), kept in the run so that a report rebuilt from OUT shows it."""
    test = (meta.get("metrics") or {}).get("test") or {}
    per_class = test.get("per_class") or {}
    if not per_class:
        return None
    keep = ("split", "engine", "flip_tta", "n", "accuracy", "source")
    return {
        **{k: test[k] for k in keep if k in test},
        "recall": {e: round(float(v["recall"]), 4) for e, v in per_class.items()},
        "precision": {e: round(float(v["precision"]), 4) for e, v in per_class.items()},
    }


@contextlib.contextmanager
def _scoring_progress(total: int, progress: bool | None, unit: str = "images"):
    """Yields the :class:`~fer_ray.progress.ProgressCounter` actor (or None) the actors count on; shows its counts."""
    if progress_mode(progress) == "off":
        yield None
        return
    import ray

    counter = ray.remote(num_cpus=0)(ProgressCounter).remote()
    bar = Progress("scoring", total=total, unit=unit, progress=progress)

    def poll() -> None:
        c = ray.get(counter.get.remote(), timeout=10)
        done = c.get("images", 0) + c.get("segments_milli", 0) // 1000  # video segments count as inputs
        bar.set(min(done, total), faces=c.get("faces", 0))

    try:
        with Poller(poll, every_s=0.5 if bar.mode == "bar" else 1.0):
            yield counter
        # Every input has its rows now; the actors' last counts may still be on their way.
        deadline = time.monotonic() + 2.0
        with contextlib.suppress(Exception):  # progress must never fail the job
            while bar.n < total and time.monotonic() < deadline:
                time.sleep(0.2)
                poll()
        bar.set(total)
    finally:
        bar.close()
        ray.kill(counter)


def _all_scored(scan: ScanResult, listing: pd.DataFrame, model_id: str) -> bool:
    """Every listed input has current rows of ``model_id`` alone in the scanned store: nothing to score or retry."""
    if not scan.rows or set(scan.models) - {model_id}:
        return False
    return bool(np.isin(key_hash(listing), scan.done).all()) and not len(scan.stale) and not len(scan.retry)


def _inputs(cfg: ScoreConfig, settings: S3Settings | None, store: OutputStore) -> pd.DataFrame:
    """The listing to score: images, and each video as one row per segment (the unit of work and resume).
    Listing reads metadata only and needs no Ray, nor OUT: inputs that hold no image leave nothing behind."""
    kept = IMAGE_EXTENSIONS | set(VIDEO_EXTENSIONS)
    listing, _ = list_images_and_settings(cfg.inputs, settings, cfg.allow_local, kept)
    if listing.empty:
        raise NoInputsError(
            f"no image or video files in {', '.join(map(str, cfg.inputs))} (nothing was written to {cfg.out}); "
            "name folders or files that hold photos"
        )
    # a rerun takes the segments of unchanged videos from OUT's inputs instead of probing them again
    known = None
    if not cfg.overwrite and listing["path"].map(is_video).any():
        try:
            known = store.read_inputs()
        except Exception as e:  # unreadable OUT: the lock says why; a damaged record only costs probing
            logger.info("videos are probed again: %s's inputs cannot be read (%s)", store.uri, e)
    return expand_segments(listing, cfg.video, settings, known)


def _place_model(cfg: ScoreConfig, artifact: Artifact, nothing_to_do: bool) -> tuple[Artifact, float]:
    """(the artifact as the actors run it, GPUs per actor); starts Ray unless ``nothing_to_do`` (a rerun with
    nothing new needs no Ray: its start-up is most of a small job)."""
    from fer_ray.inference.artifact import load_artifact

    if nothing_to_do:
        logger.info("every input is already scored by %s; Ray is not started", artifact.model_id)
        return artifact, 0.0
    init_ray(cfg.ray)
    gpus = cfg.gpus_per_actor
    if gpus is None:
        import ray

        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    if gpus > 0 and cfg.engine is None and artifact.engine_name != "torch":
        return load_artifact(cfg.model, "cpu", engine="torch"), gpus  # GPU actors run the PyTorch model
    if gpus > 0 and artifact.engine_name != "torch":
        logger.warning("engine %s runs on CPU: the inference actors get no GPU", artifact.engine_name)
        return artifact, 0.0
    return artifact, gpus


def _check_models(scan: ScanResult, model_id: str, cfg: ScoreConfig, uri: str) -> None:
    """OUT's rows must be of this run's model unless mixing was asked for: a report must not average models."""
    others = sorted(m for m in scan.models if m != model_id)
    if others and not cfg.allow_mixed_models:
        raise MixedModelsError(
            f"{uri} holds rows scored by {', '.join(others)}, this run would add rows of {model_id}; "
            "rerun with --overwrite to rescore everything with this model, pick another --out, "
            "or pass --allow-mixed-models (the report then groups rows by model)"
        )
    if others:
        logger.warning("%s mixes models (%s and %s): --allow-mixed-models", uri, ", ".join(others), model_id)


def _run_pipeline(
    todo: pd.DataFrame,
    cfg: ScoreConfig,
    plan: StagePlan,
    gpus: float,
    artifact: Artifact,
    store: OutputStore,
    preprocess: PreprocessConfig,
    run_id: str,
    progress: bool | None,
) -> float:
    """Score ``todo`` into ``OUT/rows`` through Ray Data; returns the pipeline's seconds."""
    t0 = time.time()
    prepare_kwargs = {
        "settings": store.settings,
        "preprocess": preprocess,
        "detect": cfg.detect,
        "whole_image": cfg.whole_image,
        "save_crops": cfg.save_crops,
        "video": cfg.video,
    }
    segments = int(todo["segment"].notna().sum()) if "segment" in todo else 0
    unit = "images" if not segments else "video segments" if segments == len(todo) else "inputs"
    with _scoring_progress(len(todo), progress, unit) as counter:
        predictor_kwargs = {
            "files": artifact_files(artifact.path, artifact.engine_name),
            "run_id": run_id,
            "device": "cuda" if gpus > 0 else "cpu",
            "threads": cfg.threads or max(1, math.ceil(cfg.cpus_per_actor)),  # else the CPUs it holds
            "engine": artifact.engine_name,
            "flip_tta": cfg.flip_tta,
            "batch_size": cfg.batch_size,
            "progress": counter,
        }
        ds = build_dataset(todo, cfg, plan, gpus, prepare_kwargs, predictor_kwargs)
        without_ray_data_bars(ds)
        ds.write_parquet(
            store.path(ROWS_DIR),
            filesystem=store.fs,
            filename_provider=_PartFilenames(run_id),
            min_rows_per_file=cfg.rows_per_file,
            ray_remote_args={"num_cpus": cfg.write_cpus},
        )
    pipeline_s = time.time() - t0
    logger.info("scored %d images in %.1f s (%.2f images/s)", len(todo), pipeline_s, len(todo) / pipeline_s)
    return pipeline_s


def score(cfg: ScoreConfig, progress: bool | None = None, report_rows: int | None = None) -> ScoreResult:
    """Score every input of ``cfg`` not yet in ``cfg.out``; write the Parquet rows, summary.json and report.html.

    Holds ``OUT``'s :class:`~fer_ray.score.run_lock.RunLock` from before it reads ``OUT`` until the report is
    written. ``progress``: a bar on a terminal, log lines elsewhere (``None``), always a bar (``True``) or
    nothing (``False``). ``report_rows``: images in report.html's per-image table.
    """
    from fer_ray.inference.artifact import load_artifact

    started = time.time()
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
    artifact = load_artifact(cfg.model, engine=cfg.engine)  # fails fast, before Ray starts, on a wrong --model
    # Endpoint and region only: the driver and every worker take credentials from the AWS chain.
    uses_s3 = any(is_remote(p) for p in (*cfg.inputs, cfg.out, cfg.save_crops or ""))
    settings = cfg.s3 or (S3Settings.from_env(credentials=False) if uses_s3 else None)
    store = OutputStore(cfg.out, settings)
    listing = _inputs(cfg, settings, store)
    with RunLock(store, run_id, stale_s=cfg.lock_stale_s).acquire(cfg.lock_wait_s) as lock:
        preprocess = dataclasses.replace(
            artifact.preprocess,
            max_pixels=cfg.max_pixels or artifact.preprocess.max_pixels,
            max_bytes=cfg.max_bytes or artifact.preprocess.max_bytes,
        )
        n_list_errors = int(listing["error"].notna().sum())
        logger.info("listed %d inputs (%d could not be listed and become error rows)", len(listing), n_list_errors)
        # One scan of OUT per run (it also deletes part files a killed run left half-written, and records them).
        scan = None if cfg.overwrite else store.scan(listing)
        nothing_to_do = scan is not None and _all_scored(scan, listing, artifact.model_id)
        artifact, gpus = _place_model(cfg, artifact, nothing_to_do)
        flip_tta = artifact.flip_tta if cfg.flip_tta is None else cfg.flip_tta
        logger.info("model %s, engine %s, flip TTA %s", artifact.model_id, artifact.engine_name, flip_tta)

        if cfg.overwrite:
            store.clear()
            scan = store.scan(listing)
        _check_models(scan, artifact.model_id, cfg, store.uri)
        # Rows of inputs that changed since they were scored, and transient errors retried now, go
        # before this run writes theirs: rows/ never holds two versions of an input.
        lock.check()
        dropped = store.drop_rows(
            np.union1d(scan.stale, scan.retry), run_id, "superseded: input changed or transient error retried"
        )
        todo = listing[~np.isin(key_hash(listing), scan.done)].reset_index(drop=True)
        skipped = len(listing) - len(todo)
        logger.info(
            "%s: %d rows in %d part files; %d of %d inputs already scored, %d to score with %s "
            "(%d changed since scored, %d transient errors retried)",
            store.uri,
            scan.rows,
            scan.files,
            skipped,
            len(listing),
            len(todo),
            artifact.model_id,
            len(scan.stale),
            len(scan.retry),
        )

        plan = plan_stages(len(todo), cfg, gpus)
        pipeline_s = (
            _run_pipeline(todo, cfg, plan, gpus, artifact, store, preprocess, run_id, progress) if len(todo) else 0.0
        )

        lock.check()
        elapsed = time.time() - started
        run = {
            "run_id": run_id,
            "started_at": dt.datetime.fromtimestamp(started, dt.timezone.utc).isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 3),
            "pipeline_s": round(pipeline_s, 3),
            "images_listed": len(listing),
            "images_skipped": skipped,
            "images_scored": len(todo),
            "images_changed": len(scan.stale),
            "transient_retried": len(scan.retry),
            "rows_superseded": dropped,
            "images_per_s": round(len(todo) / elapsed, 3) if len(todo) else 0.0,  # whole job (elapsed_s)
            "pipeline_images_per_s": round(len(todo) / pipeline_s, 3) if len(todo) and pipeline_s > 0 else 0.0,
            "removed_part_files": [{"file": f, "reason": r} for f, r in scan.removed],
            "lock_taken_over": lock.taken_over,
            "model_id": artifact.model_id,
            "model_path": str(artifact.path),
            "engine": artifact.engine_name,
            "model_sha256": artifact.model_sha256,
            "model_accuracy": model_accuracy(artifact.meta),
            "flip_tta": flip_tta,
            "detector": cfg.detect.detector,
            "stages": plan.stages,
            "actors": plan.actors,
        }
        store.write_json(posixpath.join(RUNS_DIR, f"{run_id}.json"), run)
        store.write_json(CONFIG_FILE, {"run_id": run_id, "score": cfg.to_dict(), "preprocess": preprocess.to_dict()})
        store.write_inputs(listing)
        summary = write_report(store, listing=listing, run=run, max_rows=report_rows)
        return ScoreResult(out=store.uri, run=run, summary=summary)
