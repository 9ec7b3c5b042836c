"""Where a Ray Train run lives (``<storage_path>/<run_name>``, local or ``s3://``) and the files it keeps
beside Ray Train's checkpoints.

Free of Ray imports, so the CLIs can find and read a run before Ray starts (or without Ray at all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from fer_ray import storage as run_storage
from fer_ray.data.s3 import S3Settings
from fer_ray.train.config import TrainConfig

# Files of a run dir besides Ray Train's checkpoints.
TRAIN_CONFIG, HISTORY, CRASH_MARKER = "train_config.json", "history.json", ".crashed_once"


def run_dirs(cfg: TrainConfig) -> tuple[str, Path | str]:
    """(Ray Train storage path, the run dir ``<storage_path>/<run_name>``, which holds all the run makes).

    On a cluster use storage all nodes share (``s3://`` or NFS): a submitted job's working dir is deleted
    with the job."""
    if run_storage.is_remote(cfg.storage_path):
        storage = cfg.storage_path.rstrip("/")
        return storage, f"{storage}/{cfg.run_name}"
    if "://" in cfg.storage_path:  # a URI of another scheme: no reader or writer here takes it
        raise ValueError(f"--storage-path {cfg.storage_path!r}: use a local directory or s3://bucket/prefix")
    storage = Path(cfg.storage_path).expanduser().resolve()
    return str(storage), storage / cfg.run_name


def ray_storage(storage: str) -> tuple[str, pafs.FileSystem | None]:
    """(``storage_path``, ``storage_filesystem``) for Ray Train and Tune: Ray would resolve ``s3://`` itself
    and ignore ``AWS_ENDPOINT_URL``."""
    if storage.startswith("s3://"):
        return storage[len("s3://") :], S3Settings.from_env().filesystem()
    return storage, None


def write_run_file(fs: pafs.FileSystem, path: str, text: str) -> None:
    """Write into the run's storage (local or s3://) through the filesystem Ray Train itself uses,
    so that a worker on any node reaches the bucket without AWS settings of its own."""
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def saved_run(run_dir: Path | str) -> tuple[dict[str, Any] | None, int]:
    """(the run's saved train_config.json record, epochs it has completed) or (None, 0) for a new run."""
    try:
        saved = json.loads(run_storage.read_text(run_storage.join(run_dir, TRAIN_CONFIG)))
        history = json.loads(run_storage.read_text(run_storage.join(run_dir, HISTORY)))
    except FileNotFoundError:
        return None, 0
    return saved, len(history)
