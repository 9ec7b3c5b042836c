"""A run's files and record, for both back ends: where it lives (``<storage_path>/<run_name>``, local or ``s3://``),
what it learnt from, what a resume may change, which checkpoint is best, and its export as a model artifact.
Nothing here imports Ray, so the CLIs can find and read a run before Ray starts."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from fer_ray import storage as run_storage
from fer_ray.config import DATA_ROOT_ENV, DEFAULT_PARQUET, UserError, fer2013_parquet, fields_where
from fer_ray.data.s3 import S3Settings
from fer_ray.data.sources import fingerprint
from fer_ray.inference.artifact import SHIPPED_MODELS, Artifact, load_artifact, save_artifact
from fer_ray.models.registry import create_model
from fer_ray.train.config import TrainConfig
from fer_ray.train.distill import Teacher

STATE = "state.pt"  # one checkpoint = one torch.save'd dict {model, optimizer, scheduler, epoch, history, ...}
TRAIN_CONFIG, HISTORY, CRASH_MARKER = "train_config.json", "history.json", ".crashed_once"


@dataclass
class TrainResult:
    """What either back end returns: where the run and its artifact are (``str`` for s3://), its best epoch."""

    run_dir: Path | str
    artifact_dir: Path | str | None
    best_metrics: dict[str, Any] | None
    history: list[dict[str, Any]]
    counts: dict[str, Any]


class RunRefused(UserError):
    """A resume with another model, recipe, data or teachers, or a starting artifact of another architecture:
    a user's choice to change, so the CLI shows it as one line, not a traceback."""


def data_record(
    cfg: TrainConfig, source: str, shown: str, teacher: Teacher | None = None, initial: Artifact | None = None
) -> dict[str, Any]:
    """The head of a run's ``counts`` record: what it learnt from (data, labels, teachers and starting weights
    by ``model_id``); ``teacher`` / ``initial``: already loaded (else read for their ids, as on a Ray driver)."""
    record: dict[str, Any] = {"source": shown, "fingerprint": fingerprint(source), "labels": cfg.labels}
    if cfg.teachers:
        ids = teacher.ids if teacher else [load_artifact(t, engine=cfg.teacher_engine).model_id for t in cfg.teachers]
        record["teachers"] = list(ids)
    if cfg.init_from:
        record["init_from"] = (initial or initial_artifact(cfg)).model_id
    record["decode_errors"] = {}
    return record


def initial_artifact(cfg: TrainConfig) -> Artifact:
    """``cfg.init_from`` loaded, refused when its architecture (name and sizes) is not the run's: one
    clear line instead of a state-dict mismatch; dropout may differ, it holds no weights."""
    art = load_artifact(cfg.init_from, engine="torch")
    theirs, ours = art.model_config.to_dict(), cfg.model.to_dict()
    differ = sorted(k for k in theirs.keys() | ours.keys() if k != "dropout" and theirs.get(k) != ours.get(k))
    if differ:
        shown = ", ".join(f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in differ)
        raise RunRefused(
            f"--init-from {cfg.init_from}: its model differs from this run's ({shown})",
            "start from an artifact of this architecture, or give the flags its sizes (--arch, --widths, ...)",
        )
    return art


def select_checkpoint(candidates: list[tuple[Any, dict[str, Any]]]):
    """The kept checkpoint that ranks first by :func:`rank_key` (Ray's own ranking keeps the earliest tie)."""
    return max(candidates, key=lambda cm: rank_key(cm[1]))[0] if candidates else None


def rank_key(metrics: dict[str, Any]) -> tuple[float, float, int]:
    """Order of checkpoints: validation accuracy, then lower validation loss, then the later epoch."""
    return (metrics.get("val_acc", 0.0), -metrics.get("val_loss", math.inf), metrics.get("epoch", -1))


def resolve_source(cfg: TrainConfig) -> tuple[str, str]:
    """(where to read the training data, how artifacts name it: as given or relative to the data root, never this
    machine's absolute path, since artifacts ship)."""
    source = cfg.data or fer2013_parquet()
    if source is None:
        raise FileNotFoundError(
            "no training data: pass --data (FER2013 .parquet, fer2013.csv or train/<emotion>/ folders) "
            f"or set {DATA_ROOT_ENV} to a directory holding {DEFAULT_PARQUET}"
        )
    return str(source), str(cfg.data) if cfg.data else f"<data root>/{DEFAULT_PARQUET}"


def portable(train_config: dict[str, Any]) -> dict[str, Any]:
    """``train_config`` without this machine's facts; teachers by shipped or directory name (their weights are
    in ``counts["teachers"]``)."""
    machine = fields_where(TrainConfig, "machine")  # the run's own train_config.json keeps them
    out = {k: v for k, v in train_config.items() if k not in machine}
    if out.get("teachers"):
        out["teachers"] = [t if t in SHIPPED_MODELS else Path(t).name for t in out["teachers"]]
    if out.get("init_from") and out["init_from"] not in SHIPPED_MODELS:
        out["init_from"] = Path(out["init_from"]).name
    return out


def export_state(
    state: dict[str, Any],
    history: list[dict[str, Any]],
    cfg: TrainConfig,
    counts: dict[str, Any],
    run_dir: Path | str,
    segments: list[dict[str, Any]] | None = None,
) -> TrainResult:
    """Write a checkpoint's weights as the model artifact ``run_dir/artifact`` (uploaded when ``run_dir`` is
    ``s3://``); ``segments`` (each config change on resume) make its record reproduce the weights, not only the
    last command."""
    model = create_model(cfg.model)
    model.load_state_dict(state["ema"]["weights"] if "ema" in state else state["model"])  # what was validated
    remote = run_storage.is_remote(run_dir)
    with tempfile.TemporaryDirectory() if remote else contextlib.nullcontext(run_dir) as d:
        artifact = save_artifact(
            model,
            cfg.model,
            Path(d) / "artifact",
            preprocess=cfg.preprocess,
            metrics={
                "best": state["history"][-1],
                "history": history,
                "counts": counts,
                "segments": [{**g, "train_config": portable(g["train_config"])} for g in segments or []],
            },
            train_config=portable(cfg.to_dict()),
            # runs saved before counts carried the fingerprint hash their (then absolute) source
            data_fingerprint=counts.get("fingerprint") or fingerprint(counts["source"]),
            # mirror-image test-time augmentation only for models that trained on mirrored faces
            flip_tta=cfg.augment is not None and cfg.augment.flip,
        )
        if remote:
            artifact = run_storage.upload_dir(artifact, run_storage.join(run_dir, "artifact"))
    return TrainResult(run_dir, artifact, state["history"][-1], history, counts)


def resume_record(
    saved: dict[str, Any] | None, cfg: TrainConfig, counts: dict[str, Any], next_epoch: int, run_dir: Path | str
) -> dict[str, Any]:
    """Write the run's ``train_config.json`` and return its content: a resume may change only fields marked
    ``resumable`` (a segment from the epoch it takes effect); any other change raises :class:`RunRefused`
    naming the fields."""
    current = cfg.to_dict()
    segments = [{"start_epoch": 0, "train_config": current}]
    if saved:
        # Read back through TrainConfig: a setting added since the run started counts as its default, so
        # a new version of fer_ray resumes runs started by an older one.
        flat = (TrainConfig.from_dict(saved["train_config"]).to_dict(), current)
        before, after = (pd.json_normalize(d).to_dict("records")[0] for d in flat)  # keys like "model.widths"
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        resumable = fields_where(TrainConfig, "resumable")
        unsafe = [k for k in changed if k.split(".")[0] not in resumable]
        old_fp, new_fp = saved.get("counts", {}).get("fingerprint"), counts.get("fingerprint")
        if old_fp and new_fp and old_fp != new_fp:
            unsafe.append("data (its fingerprint changed)")
        if saved.get("counts", {}).get("teachers", []) != counts.get("teachers", []):
            unsafe.append("teachers (other weights)")
        if saved.get("counts", {}).get("init_from") != counts.get("init_from"):
            unsafe.append("init_from (other starting weights)")
        if after.get("epochs", 0) < before.get("epochs", 0):
            unsafe.append(f"epochs (shorter: {before['epochs']} -> {after['epochs']})")
        if unsafe:
            raise RunRefused(
                f"run {cfg.run_name!r} was trained with a different {', '.join(unsafe)}; a resume may change only "
                f"{', '.join(sorted(resumable))}",
                "use a new --run-name to train with these settings",
            )
        segments = saved.get("segments") or [{"start_epoch": 0, "train_config": saved["train_config"]}]
        if changed:
            segments = [*segments, {"start_epoch": next_epoch, "changed": changed, "train_config": current}]
    record = {"train_config": current, "counts": counts, "segments": segments}
    text = json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
    run_storage.write_text(run_storage.join(run_dir, TRAIN_CONFIG), text)
    return record


def run_dirs(cfg: TrainConfig) -> tuple[str, Path | str]:
    """(Ray Train storage path, the run dir ``<storage_path>/<run_name>``); on a cluster use storage all nodes
    share (``s3://`` or NFS): a submitted job's working dir is deleted with the job."""
    if run_storage.is_remote(cfg.storage_path):
        storage = cfg.storage_path.rstrip("/")
        return storage, f"{storage}/{cfg.run_name}"
    if "://" in cfg.storage_path:  # a URI of another scheme: no reader or writer here takes it
        raise ValueError(f"--storage-path {cfg.storage_path!r}: use a local directory or s3://bucket/prefix")
    storage = Path(cfg.storage_path).expanduser().resolve()
    return str(storage), storage / cfg.run_name


def ray_storage(storage: str) -> tuple[str, pafs.FileSystem | None]:
    """(``storage_path``, ``storage_filesystem``) for Ray Train and Tune: Ray would ignore ``AWS_ENDPOINT_URL``."""
    if storage.startswith("s3://"):
        return storage[len("s3://") :], S3Settings.from_env().filesystem()
    return storage, None


def write_run_file(fs: pafs.FileSystem, path: str, text: str) -> None:
    """Write through the filesystem Ray Train uses: a worker on any node reaches the bucket without AWS settings."""
    run_storage.write_bytes(path, text.encode(), fs)


def saved_run(run_dir: Path | str) -> tuple[dict[str, Any] | None, int]:
    """(the run's saved train_config.json record, epochs it has completed) or (None, 0) for a new run."""
    try:
        saved = json.loads(run_storage.read_text(run_storage.join(run_dir, TRAIN_CONFIG)))
        history = json.loads(run_storage.read_text(run_storage.join(run_dir, HISTORY)))
    except FileNotFoundError:
        return None, 0
    return saved, len(history)
