"""Batch scoring with Ray Data: photo collections (local or S3) -> one Parquet row per face.

Stages (the dataset is streamed end to end; nothing but counts comes back to the driver)::

    list_images (driver, metadata only; already-scored inputs dropped here)
      -> map_batches(prepare_images)   CPU tasks: fetch bytes, then faces_from_bytes (decode at the
                                       size detection needs, detect, crop uint8 48x48), one row per face
      -> map_batches(FacePredictor)    actor pool: load_artifact once with the run's engine (torch,
                                       onnx, onnx-int8), predict_proba in batches
      -> write_parquet(OUT/rows)       part files named after the run

With ``stages`` fused (the default for CPU inference on the job's own Ray, see :func:`stage_plan`)
the two middle stages are one: each :class:`FusedScorer` actor runs ``prepare_images`` and then
the model on its own blocks, one actor per core.

Every input yields at least one row (``ok``, ``no_face`` or ``error`` with a reason), so
images in == image rows out. All rows of one image come out of the same ``prepare_images``
call, and Ray Data hands whole blocks to the actors and the writer, so they land in the
same part file; that is what makes a killed run safe to resume (see :mod:`fer_ray.score.store`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import math
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from fer_ray.data.sources import S3Settings, fetch_bytes, is_s3_uri, list_images_and_settings, resolve_filesystem
from fer_ray.labels import EMOTIONS
from fer_ray.preprocess import ImageDecodeError, PreprocessConfig
from fer_ray.progress import Poller, Progress, ProgressCounter, progress_mode, without_ray_data_bars
from fer_ray.runtime import LOCAL, init_ray, resolve_address
from fer_ray.score.config import DetectConfig, ScoreConfig
from fer_ray.score.faces import faces_from_bytes
from fer_ray.score.store import CONFIG_FILE, ROWS_DIR, RUNS_DIR, OutputStore, RunLock, ScanResult, key_hash

if TYPE_CHECKING:
    from fer_ray.inference.artifact import Artifact

# fer_ray.inference.artifact (and with it torch) is imported only where a model is loaded, so that the
# CPU-stage workers, which unpickle this module, start without paying for torch.

logger = logging.getLogger(__name__)

PROB_COLUMNS = tuple(f"p_{e}" for e in EMOTIONS)
STATUSES = ("ok", "no_face", "error")
FETCH_BUDGET_BYTES = 64 << 20  # bytes of files one CPU task holds at a time

# Rows between the CPU stage and the actors: the report columns known before inference plus the crop.
_PREPARED_FIELDS = [
    ("path", pa.string()),
    ("size", pa.int64()),
    ("mtime", pa.float64()),
    ("face_index", pa.int32()),  # 0..faces-1; null on no_face/error rows
    ("faces", pa.int32()),  # faces found in the image (0 on no_face/error rows)
    ("x", pa.int32()),
    ("y", pa.int32()),
    ("w", pa.int32()),
    ("h", pa.int32()),
    ("image_width", pa.int32()),
    ("image_height", pa.int32()),
    ("status", pa.string()),
    ("error", pa.string()),
]
PREPARED_SCHEMA = pa.schema([*_PREPARED_FIELDS, ("face", pa.binary())])  # face: uint8 (S, S) bytes

# One schema for every part file, so files written by different runs always read back as one table.
OUTPUT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("face_index", pa.int32()),
        ("x", pa.int32()),
        ("y", pa.int32()),
        ("w", pa.int32()),
        ("h", pa.int32()),
        ("image_width", pa.int32()),
        ("image_height", pa.int32()),
        *[(c, pa.float32()) for c in PROB_COLUMNS],
        ("emotion", pa.string()),
        ("confidence", pa.float32()),
        # the top probability is below the artifact's calibrated cut-off (fer_ray.inference.calibration)
        ("uncertain", pa.bool_()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("faces", pa.int32()),
        ("model_name", pa.string()),
        ("model_id", pa.string()),
        ("weights_sha256", pa.string()),
        ("engine", pa.string()),  # torch, onnx or onnx-int8
        ("model_sha256", pa.string()),  # of the file the engine executed (weights.pt or an ONNX file)
        ("scored_at", pa.timestamp("ms", tz="UTC")),
        ("run_id", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
    ]
)


# -- CPU stage --------------------------------------------------------------------------------
def _crop_name(path: str, index: int) -> str:
    stem = os.path.splitext(path.rstrip("/").rpartition("/")[2])[0][:60] or "image"
    return f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}-face{index}.png"


def _save_crop(crop: np.ndarray, fs, root: str, name: str) -> None:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    with fs.open_output_stream(posixpath.join(root, name)) as f:
        f.write(buf.getvalue())


def prepare_images(
    batch: pd.DataFrame,
    settings: S3Settings | None = None,
    preprocess: PreprocessConfig | None = None,
    detect: DetectConfig | None = None,
    whole_image: bool = False,
    save_crops: str | None = None,
) -> pa.Table:
    """Listing rows (path, size, mtime, error) -> :data:`PREPARED_SCHEMA` rows, one per face.

    Runs inside Ray tasks. Files are read a few at a time (at most ``FETCH_BUDGET_BYTES``
    by their listed sizes, or one), so a task never holds a whole block of big photos.
    Any per-file failure becomes an ``error`` row.
    """
    pp = preprocess or PreprocessConfig()
    detect = detect or DetectConfig()
    cols: dict[str, list[Any]] = {name: [] for name in PREPARED_SCHEMA.names}

    def emit(base: dict[str, Any], **values: Any) -> None:
        row = {**base, **values}
        for name in cols:
            cols[name].append(row.get(name))

    if save_crops:
        crop_fs, crop_root = resolve_filesystem(save_crops, settings)
        crop_fs.create_dir(crop_root, recursive=True)
    listing = batch[["path", "size", "mtime", "error"]].reset_index(drop=True)
    for chunk in _fetch_chunks(listing["size"].tolist(), FETCH_BUDGET_BYTES):
        fetched = fetch_bytes(listing.iloc[chunk], settings, pp.max_bytes)
        records = zip(*(fetched[c].tolist() for c in ("path", "size", "mtime", "error", "image")), strict=True)
        del fetched
        for path, size, mtime, error, image in records:
            base = {"path": str(path), "size": int(size), "mtime": None if pd.isna(mtime) else float(mtime), "faces": 0}
            if error is not None:
                emit(base, status="error", error=str(error))
                continue
            crops_to = (crop_fs, crop_root) if save_crops else None
            _prepare_one(image, base, emit, pp, detect, whole_image, crops_to)
    return pa.table({f.name: pa.array(cols[f.name], f.type) for f in PREPARED_SCHEMA}, schema=PREPARED_SCHEMA)


def _fetch_chunks(sizes: list[int], budget: int) -> list[slice]:
    """Consecutive slices whose listed sizes add up to at most ``budget`` (a bigger file gets a slice alone)."""
    chunks, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > budget:
            chunks.append(slice(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        chunks.append(slice(start, len(sizes)))
    return chunks


def _prepare_one(
    image: bytes | None,
    base: dict[str, Any],
    emit: Callable[..., None],
    pp: PreprocessConfig,
    detect: DetectConfig,
    whole_image: bool,
    crops_to: tuple[Any, str] | None,
) -> None:
    """Decode one file, find its faces and emit its rows (an ``error`` row on any failure)."""
    try:
        boxes, crops, (w, h) = faces_from_bytes(image, detect, pp, whole_image)
        base.update(image_width=w, image_height=h)
    except ImageDecodeError as e:
        emit(base, status="error", error=str(e))
        return
    except Exception as e:  # one strange file must never fail the task (and the job)
        logger.warning("scoring %s failed: %s", base["path"], e, exc_info=True)
        emit(base, status="error", error=f"cannot process image: {type(e).__name__}: {e}")
        return
    if not boxes:
        emit(base, status="no_face")
        return
    for k, (box, crop) in enumerate(zip(boxes, crops, strict=True)):
        x, y, bw, bh = box if box is not None else (0, 0, w, h)  # whole image = the face
        emit(base, faces=len(boxes), face_index=k, x=x, y=y, w=bw, h=bh, status="ok", face=crop.tobytes())
        if crops_to:
            _save_crop(crop, *crops_to, _crop_name(base["path"], k))


# -- inference stage ------------------------------------------------------------------------------
def artifact_files(path: str | os.PathLike, engine: str = "torch") -> dict[str, bytes]:
    """The files :func:`load_artifact` reads for ``engine``, shipped to the actors so that they need no shared disk."""
    from fer_ray.inference.artifact import META, WEIGHTS
    from fer_ray.inference.engine import ONNX_FILES
    from fer_ray.inference.host_check import CHECK_FILE

    # An ONNX engine is checked on each actor's host, and int8 may fall back to fp32 there.
    onnx = {"onnx": [ONNX_FILES["onnx"]], "onnx-int8": [ONNX_FILES["onnx-int8"], ONNX_FILES["onnx"]]}
    names = (META, WEIGHTS, *([*onnx[engine], CHECK_FILE] if engine in onnx else []))
    return {name: (Path(path) / name).read_bytes() for name in names}


class FacePredictor:
    """Ray Data actor: loads the model artifact once, then scores batches of face rows.

    Input: :data:`PREPARED_SCHEMA` Arrow batches; output: :data:`OUTPUT_SCHEMA`.
    """

    def __init__(
        self,
        files: dict[str, bytes],
        run_id: str,
        device: str = "cpu",
        threads: int = 1,
        engine: str = "torch",
        flip_tta: bool | None = None,
        progress=None,
    ):
        from fer_ray.inference.artifact import load_artifact

        self.device = "cpu"
        if engine == "torch":  # torch is imported only for it: ONNX Runtime actors start ~2 s sooner without
            import torch

            torch.set_num_threads(threads)  # ONNX Runtime gets the same count through load_artifact
            self.device = "cuda" if device == "cuda" and torch.cuda.is_available() else "cpu"
        # The engines hold the model in memory once loaded: the files live only while loading, so
        # neither a finished, failed nor killed actor leaves a copy in /tmp.
        with tempfile.TemporaryDirectory(prefix="fer_ray_model_") as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            self.artifact: Artifact = load_artifact(tmp, self.device, engine=engine, threads=threads)
        self.flip_tta = flip_tta
        self.run_id = run_id
        self.progress = progress  # a ProgressCounter actor handle, or None

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        ok = np.asarray(batch.column("status").to_pylist(), dtype=object) == "ok"
        s = self.artifact.preprocess.image_size
        probs = np.zeros((n, len(EMOTIONS)), dtype=np.float32)
        if ok.any():
            crops = batch.column("face").filter(pa.array(ok)).to_pylist()
            # A writable copy: torch warns on (and must not alias) read-only buffers.
            faces = np.frombuffer(b"".join(crops), dtype=np.uint8).reshape(-1, s, s).copy()  # (B, S, S)
            probs[ok] = self.artifact.predict_proba(faces, self.device, flip_tta=self.flip_tta)
        top = probs.argmax(1)
        out = {name: batch.column(name) for name in PREPARED_SCHEMA.names if name != "face"}
        for k, name in enumerate(PROB_COLUMNS):
            out[name] = pa.array(probs[:, k], pa.float32(), mask=~ok)
        out["emotion"] = pa.array([EMOTIONS[j] if o else None for j, o in zip(top, ok, strict=True)], pa.string())
        out["confidence"] = pa.array(probs.max(1), pa.float32(), mask=~ok) if n else pa.array([], pa.float32())
        out["uncertain"] = (
            pa.array(self.artifact.uncertain(probs), pa.bool_(), mask=~ok) if n else pa.array([], pa.bool_())
        )
        meta = self.artifact.meta
        out["model_name"] = pa.array([self.artifact.model_config.name] * n, pa.string())
        out["model_id"] = pa.array([self.artifact.model_id] * n, pa.string())
        out["weights_sha256"] = pa.array([meta.get("weights_sha256")] * n, pa.string())
        out["engine"] = pa.array([self.artifact.engine_name] * n, pa.string())
        out["model_sha256"] = pa.array([self.artifact.model_sha256] * n, pa.string())
        now = dt.datetime.now(dt.timezone.utc)
        out["scored_at"] = pa.array([now] * n, pa.timestamp("ms", tz="UTC"))
        out["run_id"] = pa.array([self.run_id] * n, pa.string())
        if self.progress is not None and n:
            # an image's first row has face_index 0 (a face) or null (no_face / error): one per image
            face_index = batch.column("face_index").to_numpy(zero_copy_only=False)
            self.progress.add.remote(images=int((~(face_index > 0)).sum()), faces=int(ok.sum()))
        return pa.table({f.name: out[f.name] for f in OUTPUT_SCHEMA}, schema=OUTPUT_SCHEMA)


class FusedScorer(FacePredictor):
    """Ray Data actor doing both stages: :func:`prepare_images` on listing rows, then inference.

    On a few cores the split pipeline pays for every crop twice: a hop through the object store
    between the CPU tasks and the actor, and two kinds of processes taking turns on the same
    cores. Here each actor holds one core and does the whole path for its blocks (``stages="fused"``).
    """

    def __init__(self, prepare_kwargs: dict[str, Any], **predictor_kwargs: Any):
        super().__init__(**predictor_kwargs)
        self.prepare_kwargs = prepare_kwargs

    def __call__(self, batch: pd.DataFrame) -> pa.Table:  # type: ignore[override]
        return super().__call__(prepare_images(batch, **self.prepare_kwargs))


# -- driver ---------------------------------------------------------------------------------------
class _PartFilenames:
    """``part-<run_id>-<write_uuid>-<task>``: a run's files are recognisable and never overwrite another's."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"part-{self.run_id}-{write_uuid}-{task_index:06d}"


class MixedModelsError(ValueError):
    """``OUT`` holds rows of another model (or engine) and ``allow_mixed_models`` is off."""


@dataclass
class ScoreResult:
    out: str
    run: dict[str, Any]  # this run's record (also at OUT/runs/<run_id>.json)
    summary: dict[str, Any]  # OUT/summary.json


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _uses_s3(cfg: ScoreConfig) -> bool:
    return any(is_s3_uri(p) for p in (*cfg.inputs, cfg.out, cfg.save_crops or ""))


def _gpus_per_actor(cfg: ScoreConfig) -> float:
    if cfg.gpus_per_actor is not None:
        return cfg.gpus_per_actor
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0


def build_dataset(
    todo: pd.DataFrame,
    cfg: ScoreConfig,
    preprocess: PreprocessConfig,
    files: dict[str, bytes],
    run_id: str,
    settings: S3Settings | None,
    engine: str = "torch",
    gpus: float | None = None,
    counter=None,
    plan: StagePlan | None = None,
):
    """The lazy Ray Dataset of output rows for the listing rows in ``todo`` (nothing runs until written).

    ``counter``: a :class:`~fer_ray.progress.ProgressCounter` actor the inference actors report
    their images and faces to, for the driver's progress display. ``plan``: the
    :func:`plan_stages` result the caller already recorded (computed here when not given).
    """
    import ray.data

    gpus = _gpus_per_actor(cfg) if gpus is None else gpus
    plan = plan or plan_stages(len(todo), cfg, gpus)
    # The listing becomes blocks of metadata (path, size, mtime, error), sized by block_rows so the
    # driver does not put millions of tiny objects; each CPU task (split) calls prepare_images on
    # images_per_task rows at a time, each fused actor on batch_size rows.
    step = plan.block_rows
    blocks = [pa.Table.from_pandas(todo.iloc[i : i + step], preserve_index=False) for i in range(0, len(todo), step)]
    ds = ray.data.from_arrow(blocks)
    prepare_kwargs = {
        "settings": settings,
        "preprocess": preprocess,
        "detect": cfg.detect,
        "whole_image": cfg.whole_image,
        "save_crops": cfg.save_crops,
    }
    predictor_kwargs = {
        "files": files,
        "run_id": run_id,
        "device": "cuda" if gpus > 0 else "cpu",
        "threads": cfg.actor_threads,
        "engine": engine,
        "flip_tta": cfg.flip_tta,
        "progress": counter,
    }
    # On the job's own local Ray no node is lost, and an actor that dies (out of memory, say) would die again:
    # the run fails instead and a rerun resumes where it stopped. Restartable actors would also make Ray
    # log an error-level line in every run (ray#53727: Ray Data keeps its map transformer in the object
    # store). On a cluster, Ray Data's default stays: actors on a lost node are restarted elsewhere.
    actor_args = {"max_restarts": 0} if resolve_address(cfg.ray) == LOCAL else {}
    if plan.fused:
        return ds.map_batches(
            FusedScorer,
            batch_format="pandas",
            # batch_size images per call (one face each when pre-cropped): the model then runs on
            # as many faces as in the split stages; 256 vs 32 images gave 1,430 vs 860-1,260 crops/s.
            batch_size=cfg.batch_size if step > cfg.batch_size else None,
            compute=ray.data.ActorPoolStrategy(size=plan.actors),
            fn_constructor_kwargs={"prepare_kwargs": prepare_kwargs, **predictor_kwargs},
            num_cpus=cfg.cpus_per_actor,
            num_gpus=gpus,
            **actor_args,
        )
    ds = ds.map_batches(
        prepare_images,
        batch_format="pandas",
        # An int batch size also bundles blocks up to it: use it only when blocks are larger.
        batch_size=cfg.images_per_task if step > cfg.images_per_task else None,
        fn_kwargs=prepare_kwargs,
        compute=ray.data.TaskPoolStrategy(size=cpu_tasks_cap(cfg, len(blocks))),
        num_cpus=cfg.cpus_per_task,
        # Retrying a task whose worker died also makes these remote args differ from the
        # actors', which keeps Ray Data from fusing this stage into the (small) actor pool.
        max_retries=cfg.task_retries,
    )
    return ds.map_batches(
        FacePredictor,
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
        compute=ray.data.ActorPoolStrategy(size=plan.actors),
        fn_constructor_kwargs=predictor_kwargs,
        num_cpus=cfg.cpus_per_actor,
        num_gpus=gpus,
        **actor_args,
    )


class StagePlan(NamedTuple):
    """How one scoring run lays out its pipeline; computed once, recorded in the run record."""

    block_rows: int
    fused: bool
    actors: int


def plan_stages(n: int, cfg: ScoreConfig, gpus: float) -> StagePlan:
    """The :class:`StagePlan` for ``n`` inputs (needs Ray up: :func:`block_rows` asks it for CPUs)."""
    step = block_rows(n, cfg) if n else 1
    fused, actors = stage_plan(cfg, gpus, math.ceil(n / step) if n else None)
    return StagePlan(step, fused, actors)


def block_rows(n: int, cfg: ScoreConfig) -> int:
    """Listing rows per block for ``n`` inputs: a small collection is spread over every CPU, a large
    one gets ~4 blocks per CPU of at most 1,024 rows (needs Ray up)."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return max(1, min(1024, max(min(cfg.images_per_task, math.ceil(n / cpus)), math.ceil(n / (4 * cpus)))))


def stage_plan(cfg: ScoreConfig, gpus: float, blocks: int | None = None) -> tuple[bool, int]:
    """(fused, inference actors) for ``cfg.stages``/``cfg.actors`` (see :class:`ScoreConfig`): ``auto``
    fuses for CPU inference on a Ray the job starts itself, with one single-threaded actor per core
    unless ``actors`` says otherwise. Fused, never more actors than ``blocks``: one without a block
    would only cost its start-up (and a Ray Data warning)."""
    local = resolve_address(cfg.ray) == LOCAL
    fused = cfg.stages == "fused" or (cfg.stages == "auto" and gpus == 0 and local)
    actors = cfg.actors or ((os.cpu_count() or 1) if fused and local else 1)
    if fused and blocks is not None:
        actors = max(1, min(actors, blocks))
    return fused, actors


def cpu_tasks_cap(cfg: ScoreConfig, blocks: int) -> int | None:
    """Concurrent decode/detect tasks: ``max_cpu_tasks``, else the cores of this machine when the job
    starts its own Ray, which advertises twice the cores (see :func:`fer_ray.runtime.default_logical_cpus`):
    more tasks than cores only take turns with the inference actor. On a cluster Ray Data decides.
    Never more than the ``blocks`` there are (Ray Data warns about a cap it cannot reach)."""
    cap = cfg.max_cpu_tasks
    if cap is None and resolve_address(cfg.ray) == LOCAL:
        cap = os.cpu_count() or 1
    return None if cap is None else max(1, min(cap, blocks))


def _new_counter():
    import ray

    return ray.remote(num_cpus=0)(ProgressCounter).remote()


@contextlib.contextmanager
def _scoring_progress(counter, total: int, progress: bool | None):
    """Images (of ``total``) and faces scored so far, read from ``counter`` while the pipeline runs."""
    if counter is None:
        yield
        return
    import ray

    bar = Progress("scoring", total=total, unit="images", progress=progress)

    def poll() -> None:
        c = ray.get(counter.get.remote(), timeout=10)
        bar.set(min(c.get("images", 0), total), faces=c.get("faces", 0))

    try:
        with Poller(poll, every_s=0.5 if bar.mode == "bar" else 1.0):
            yield
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


def score(cfg: ScoreConfig, progress: bool | None = None, report_rows: int | None = None) -> ScoreResult:
    """Score every input of ``cfg`` not yet in ``cfg.out``; write the Parquet rows, summary.json and report.html.

    Holds ``OUT``'s :class:`~fer_ray.score.store.RunLock` from before it reads ``OUT`` until
    the report is written (:class:`~fer_ray.score.store.OutputLocked` when another run has it).
    ``progress``: images and faces scored, rate and ETA as a bar on a terminal, log lines
    elsewhere (``None``), always a bar (``True``) or nothing (``False``); it replaces Ray Data's
    own progress bars. ``report_rows``: images in report.html's per-image table (default
    :data:`fer_ray.score.report.REPORT_ROWS`).
    """
    from fer_ray.inference.artifact import load_artifact

    started = time.time()
    run_id = new_run_id()
    artifact = load_artifact(cfg.model, engine=cfg.engine)  # fails fast, before Ray starts, on a wrong --model
    # Endpoint and region only: the driver and every worker take credentials from the AWS chain.
    settings = cfg.s3 or (S3Settings.from_env(credentials=False) if _uses_s3(cfg) else None)
    # Listing reads metadata only and needs no Ray, nor OUT: inputs that hold no image leave nothing behind.
    listing, _ = list_images_and_settings(cfg.inputs, settings, allow_local=cfg.allow_local)
    if listing.empty:
        raise NoInputsError(
            f"no image files in {', '.join(map(str, cfg.inputs))} (nothing was written to {cfg.out}); "
            "name folders or files that hold photos"
        )
    store = OutputStore(cfg.out, settings)
    lock = RunLock(store, run_id, stale_s=cfg.lock_stale_s).acquire(cfg.lock_wait_s)
    try:
        return _score_locked(cfg, artifact, settings, store, lock, run_id, started, listing, progress, report_rows)
    finally:
        lock.release()


def _all_scored(scan: ScanResult, listing: pd.DataFrame, model_id: str) -> bool:
    """Every listed input has current rows of ``model_id`` alone in the scanned store: nothing to score or retry."""
    if not scan.rows or set(scan.models) - {model_id}:
        return False
    listed = key_hash(listing)
    retry = np.isin(scan.transient, listed).any()
    return bool(np.isin(listed, scan.done).all()) and not len(scan.stale(listing)) and not retry


class NoInputsError(ValueError):
    """The inputs list no image at all: a user mistake, reported before OUT is created."""


def _score_locked(
    cfg: ScoreConfig,
    artifact: Artifact,
    settings: S3Settings | None,
    store: OutputStore,
    lock: RunLock,
    run_id: str,
    started: float,
    listing: pd.DataFrame,
    progress: bool | None = None,
    report_rows: int | None = None,
) -> ScoreResult:
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.score.report import write_report

    preprocess = dataclasses.replace(
        artifact.preprocess,
        max_pixels=cfg.max_pixels or artifact.preprocess.max_pixels,
        max_bytes=cfg.max_bytes or artifact.preprocess.max_bytes,
    )
    n_list_errors = int(listing["error"].notna().sum())
    logger.info("listed %d inputs (%d could not be listed and become error rows)", len(listing), n_list_errors)
    # One scan of OUT per run (it also deletes part files a killed run left half-written, and records them).
    scan = None if cfg.overwrite else store.scan()
    if scan is not None and _all_scored(scan, listing, artifact.model_id):
        # A rerun with nothing new needs no Ray (its start-up is most of a small job): the report is rewritten.
        logger.info("every input is already scored by %s; Ray is not started", artifact.model_id)
        gpus = 0.0
    else:
        init_ray(cfg.ray)
        gpus = _gpus_per_actor(cfg)
    if gpus > 0 and cfg.engine is None and artifact.engine_name != "torch":
        artifact = load_artifact(cfg.model, "cpu", engine="torch")  # GPU actors run the PyTorch model
    elif gpus > 0 and artifact.engine_name != "torch":
        logger.warning("engine %s runs on CPU: the inference actors get no GPU", artifact.engine_name)
        gpus = 0.0
    flip_tta = artifact.flip_tta if cfg.flip_tta is None else cfg.flip_tta
    logger.info("model %s, engine %s, flip TTA %s", artifact.model_id, artifact.engine_name, flip_tta)

    if cfg.overwrite:
        store.clear()
        scan = store.scan()
    others = sorted(m for m in scan.models if m != artifact.model_id)
    if others and not cfg.allow_mixed_models:
        raise MixedModelsError(
            f"{store.uri} holds rows scored by {', '.join(others)}, this run would add rows of {artifact.model_id}; "
            "rerun with --overwrite to rescore everything with this model, pick another --out, "
            "or pass --allow-mixed-models (the report then groups rows by model)"
        )
    if others:
        logger.warning(
            "%s mixes models (%s and %s): --allow-mixed-models", store.uri, ", ".join(others), artifact.model_id
        )
    # Rows of inputs that changed since they were scored, and transient errors retried now, go
    # before this run writes theirs: rows/ never holds two versions of an input.
    listed = key_hash(listing)
    stale = scan.stale(listing)
    retry = scan.transient[np.isin(scan.transient, listed)]
    lock.check()
    dropped = store.drop_rows(np.union1d(stale, retry), run_id, "superseded: input changed or transient error retried")
    todo = listing[~np.isin(listed, scan.done)].reset_index(drop=True)
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
        len(stale),
        len(retry),
    )

    pipeline_s = 0.0
    plan = plan_stages(len(todo), cfg, gpus)
    if len(todo):
        t0 = time.time()
        files = artifact_files(artifact.path, artifact.engine_name)
        counter = _new_counter() if progress_mode(progress) != "off" else None
        ds = build_dataset(todo, cfg, preprocess, files, run_id, settings, artifact.engine_name, gpus, counter, plan)
        without_ray_data_bars(ds)
        with _scoring_progress(counter, len(todo), progress):
            ds.write_parquet(
                store.path(ROWS_DIR),
                filesystem=store.fs,
                filename_provider=_PartFilenames(run_id),
                min_rows_per_file=cfg.rows_per_file,
                ray_remote_args={"num_cpus": cfg.write_cpus},
            )
        pipeline_s = time.time() - t0
        logger.info("scored %d images in %.1f s (%.2f images/s)", len(todo), pipeline_s, len(todo) / pipeline_s)

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
        "images_changed": len(stale),
        "transient_retried": len(retry),
        "rows_superseded": dropped,
        "images_per_s": round(len(todo) / elapsed, 3) if len(todo) else 0.0,  # whole job (elapsed_s)
        "pipeline_images_per_s": round(len(todo) / pipeline_s, 3) if len(todo) and pipeline_s > 0 else 0.0,
        "removed_part_files": [{"file": f, "reason": r} for f, r in scan.removed],
        "lock_taken_over": lock.taken_over,
        "model_id": artifact.model_id,
        "model_path": str(artifact.path),
        "engine": artifact.engine_name,
        "model_sha256": artifact.model_sha256,
        "flip_tta": flip_tta,
        "detector": cfg.detect.detector,
        "stages": "fused" if plan.fused else "split",
        "actors": plan.actors,
    }
    store.write_json(posixpath.join(RUNS_DIR, f"{run_id}.json"), run)
    store.write_json(CONFIG_FILE, {"run_id": run_id, "score": cfg.to_dict(), "preprocess": preprocess.to_dict()})
    store.write_inputs(listing)
    summary = write_report(store, listing=listing, run=run, max_rows=report_rows)
    return ScoreResult(out=store.uri, run=run, summary=summary)
