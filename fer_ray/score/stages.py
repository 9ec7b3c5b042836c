"""The two stages of a scoring run: :func:`prepare_images` (CPU tasks) and :class:`FacePredictor` (actor pool),
or both in one :class:`FusedScorer` actor.

Every input yields at least one row (``ok``, ``no_face`` or ``error`` with a reason), so images in == image
rows out. Nothing here needs Ray (the tests run the stages directly), and torch is imported only where a
model is loaded, so the CPU-stage workers that unpickle this module start without it.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import os
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fer_ray.data.fetch import fetch_bytes
from fer_ray.data.s3 import S3Settings, resolve_filesystem
from fer_ray.inference.outputs import outputs
from fer_ray.labels import EMOTIONS
from fer_ray.preprocess import ImageDecodeError, PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import faces_from_bytes
from fer_ray.score.schema import OUTPUT_SCHEMA, PREPARED_SCHEMA, PROB_COLUMNS
from fer_ray.video.config import VideoConfig
from fer_ray.video.stage import prepare_segment

if TYPE_CHECKING:
    from fer_ray.inference.artifact import Artifact

logger = logging.getLogger(__name__)

FETCH_BUDGET_BYTES = 64 << 20  # bytes of files one CPU task holds at a time


# -- CPU stage --------------------------------------------------------------------------------
def _save_crop(fs, root: str, path: str, crop: np.ndarray, name: str) -> None:
    from PIL import Image

    stem = os.path.splitext(path.rstrip("/").rpartition("/")[2])[0][:60] or "image"
    file = f"{stem}-{hashlib.sha1(path.encode()).hexdigest()[:8]}-{name}.png"
    with fs.open_output_stream(posixpath.join(root, file)) as f:
        Image.fromarray(crop).save(f, format="PNG")


def prepare_images(
    batch: pd.DataFrame,
    settings: S3Settings | None = None,
    preprocess: PreprocessConfig | None = None,
    detect: DetectConfig | None = None,
    whole_image: bool = False,
    save_crops: str | None = None,
    video: VideoConfig | None = None,
) -> pa.Table:
    """Listing rows (path, size, mtime, error) -> :data:`PREPARED_SCHEMA` rows, one per face. Files are read a few
    at a time (``FETCH_BUDGET_BYTES`` by their listed sizes, or one): a task never holds a block of big photos.
    Rows with a ``segment`` are video segments (:func:`fer_ray.video.stage.expand_segments`), streamed from the file."""
    pp = preprocess or PreprocessConfig()
    detect = detect or DetectConfig()
    rows: list[dict[str, Any]] = []

    def emit(base: dict[str, Any], **values: Any) -> None:
        rows.append({**base, **values})

    crops_to = None
    if save_crops:
        crops_to = resolve_filesystem(save_crops, settings)
        crops_to[0].create_dir(crops_to[1], recursive=True)
    segments = batch["segment"].notna().to_numpy() if "segment" in batch else np.zeros(len(batch), dtype=bool)
    for row in batch[segments].to_dict("records"):
        first = len(rows)
        on_crop = functools.partial(_save_crop, *crops_to, str(row["path"])) if crops_to else None
        prepare_segment(row, emit, settings, pp, detect, video or VideoConfig(), whole_image, on_crop)
        for r in rows[first:]:
            r["segment_rows"] = len(rows) - first
    listing = batch.loc[~segments, ["path", "size", "mtime", "error"]].reset_index(drop=True)
    for chunk in _fetch_chunks(listing["size"].tolist(), FETCH_BUDGET_BYTES):
        fetched = fetch_bytes(listing.iloc[chunk], settings, pp.max_bytes)
        records = zip(*(fetched[c].tolist() for c in ("path", "size", "mtime", "error", "image")), strict=True)
        del fetched
        for path, size, mtime, error, image in records:
            base = {"path": str(path), "size": int(size), "mtime": None if pd.isna(mtime) else float(mtime), "faces": 0}
            on_crop = functools.partial(_save_crop, *crops_to, base["path"]) if crops_to else None
            image_rows(base, image, error, emit, pp, detect, whole_image, on_crop)
    return pa.Table.from_pylist(rows, schema=PREPARED_SCHEMA)


def image_rows(
    base: dict[str, Any],
    data: bytes | None,
    error: str | None,
    emit: Callable[..., None],
    preprocess: PreprocessConfig,
    detect: DetectConfig,
    whole_image: bool = False,
    on_crop: Callable[[np.ndarray, str], None] | None = None,
) -> None:
    """Emit one input image's rows through ``emit(base, **values)``: one per face, else one ``no_face`` or ``error``
    row (any failure: one strange file must not fail the task, and the job). ``on_crop(crop, name)`` saves crops."""
    if error is None:
        try:
            boxes, crops, (w, h) = faces_from_bytes(data, detect, preprocess, whole_image)
        except ImageDecodeError as e:
            error = str(e)
        except Exception as e:
            logger.warning("scoring %s failed: %s", base["path"], e, exc_info=True)
            error = f"cannot process image: {type(e).__name__}: {e}"
    if error is not None:
        emit(base, status="error", error=str(error))
        return
    base = {**base, "image_width": w, "image_height": h}
    if not boxes:
        emit(base, status="no_face")
    for k, (box, crop) in enumerate(zip(boxes, crops, strict=True)):
        x, y, bw, bh = box if box is not None else (0, 0, w, h)  # whole image = the face
        emit(base, faces=len(boxes), face_index=k, x=x, y=y, w=bw, h=bh, status="ok", face=crop.tobytes())
        if on_crop is not None:
            on_crop(crop, f"face{k}")


def _fetch_chunks(sizes: list[int], budget: int) -> Iterator[slice]:
    """Consecutive slices whose listed sizes add up to at most ``budget`` (a bigger file gets a slice alone)."""
    start, total = 0, 0
    for i, size in enumerate(sizes):
        if i > start and total + size > budget:
            yield slice(start, i)
            start, total = i, 0
        total += size
    if start < len(sizes):
        yield slice(start, len(sizes))


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
    """Ray Data actor: loads the model once, then scores :data:`PREPARED_SCHEMA` batches into :data:`OUTPUT_SCHEMA`.

    Each row names the engine that really ran (int8 may fall back to fp32 on a host that fails its check).
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
        batch_size: int = 256,
    ):
        from fer_ray.inference.artifact import load_artifact

        self.device = "cpu"
        if engine == "torch":  # imported only for it: ONNX Runtime actors start sooner without torch
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
        # Faces per forward pass: a fused actor's batch is a whole video segment (thousands of faces at every
        # frame), and the engine's activations grow with the pass, so memory would grow with the segment.
        self.batch_size = batch_size
        self.run_id = run_id
        self.progress = progress  # a ProgressCounter actor handle, or None

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        ok = pc.equal(batch.column("status"), "ok").fill_null(False).to_numpy(zero_copy_only=False)
        s = self.artifact.preprocess.image_size
        probs = np.zeros((n, len(EMOTIONS)), dtype=np.float32)
        if ok.any():
            crops = batch.column("face").filter(pa.array(ok)).to_pylist()
            # A writable copy: torch warns on (and must not alias) read-only buffers.
            faces = np.frombuffer(b"".join(crops), dtype=np.uint8).reshape(-1, s, s).copy()  # (B, S, S)
            bs = self.batch_size
            parts = [faces[i : i + bs] for i in range(0, len(faces), bs)]
            probs[ok] = np.concatenate([self.artifact.predict_proba(f, self.device, self.flip_tta) for f in parts])
        res = outputs(probs, self.artifact.uncertain_below)
        out = {name: batch.column(name) for name in PREPARED_SCHEMA.names if name != "face"}
        for k, name in enumerate(PROB_COLUMNS):
            out[name] = pa.array(probs[:, k], pa.float32(), mask=~ok)
        out["emotion"] = pa.array(np.asarray(EMOTIONS, dtype=object)[res.top], pa.string(), mask=~ok)
        out["confidence"] = pa.array(res.confidence, pa.float32(), mask=~ok)
        out["uncertain"] = pa.array(res.uncertain, pa.bool_(), mask=~ok)
        constant = {
            "model_name": self.artifact.model_config.name,
            "model_id": self.artifact.model_id,
            "weights_sha256": self.artifact.meta.get("weights_sha256"),
            "engine": self.artifact.engine_name,
            "model_sha256": self.artifact.model_sha256,
            "scored_at": dt.datetime.now(dt.timezone.utc),
            "run_id": self.run_id,
        }
        for name, value in constant.items():
            out[name] = pa.array([value] * n, OUTPUT_SCHEMA.field(name).type)
        if self.progress is not None and n:
            # an image's first row has face_index 0 (a face) or null (no_face / error): one per image; a video
            # segment's rows count 1/segment_rows each (in thousandths: the counter adds integers)
            face_index = batch.column("face_index").to_numpy(zero_copy_only=False)
            segment_rows = batch.column("segment_rows").to_numpy(zero_copy_only=False).astype(np.float64)
            video = ~np.isnan(segment_rows)
            images = int((~(face_index > 0) & ~video).sum())
            milli = int(round(1000 * (1 / segment_rows[video]).sum()))
            self.progress.add.remote(images=images, segments_milli=milli, faces=int(ok.sum()))
        return pa.table({f.name: out[f.name] for f in OUTPUT_SCHEMA}, schema=OUTPUT_SCHEMA)


class FusedScorer(FacePredictor):
    """Ray Data actor doing both stages (``stages="fused"``; see :class:`~fer_ray.score.config.ScoreConfig`)."""

    def __init__(self, prepare_kwargs: dict[str, Any], **predictor_kwargs: Any):
        super().__init__(**predictor_kwargs)
        self.prepare_kwargs = prepare_kwargs

    def __call__(self, batch: pd.DataFrame) -> pa.Table:  # type: ignore[override]
        return super().__call__(prepare_images(batch, **self.prepare_kwargs))
