"""Online scoring over HTTP with Ray Serve: ``POST /predict`` an image, get one emotion distribution per face.

Two deployments, composed with ``.bind()``::

    HTTP -> FERServer (FastAPI ingress: read body with a size limit, decode_image, detect_faces,
                       face_input crops, all on a thread so the event loop keeps accepting requests)
         -> FERModel  (load_artifact once per replica; @serve.batch stacks the uint8 crops of
                       concurrent requests into one (B, 48, 48) array for Artifact.predict_proba)

Preprocessing and face detection are the ones batch scoring uses (:mod:`fer_ray.preprocess`,
:mod:`fer_ray.score.faces`), so a photo gets the same probabilities online and in a batch report.

Entry points::

    serve run fer_ray.serve:app                                   # the model shipped in the package
    serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2 max_batch_size=64
    python jobs/serve.py --model runs/x/artifact --port 8000     # same, as a thin CLI

``serve run`` binds HTTP to 127.0.0.1:8000. To listen on other interfaces, deploy a config file
with ``http_options: {host: 0.0.0.0, port: 8000}`` and ``import_path: fer_ray.serve:build_app``
(``serve deploy serve.yaml``), or pass ``--host 0.0.0.0`` to ``jobs/serve.py``. The model
directory must be readable on every node that runs a ``FERModel`` replica.
"""

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from fer_ray.preprocess import ImageDecodeError, PreprocessConfig, decode_image
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import Box, find_faces

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.
# fer_ray.artifact (and with it torch) is imported only inside the model replica: importing this
# module, or running the ingress replica, loads no weights and starts no Ray.

logger = logging.getLogger(__name__)

APP_NAME = "fer"


@dataclass(frozen=True)
class ServeConfig:
    """Everything the Serve application needs; ``build_app`` args and ``jobs/serve.py`` flags map onto it.

    ``num_replicas``/``autoscaling_config`` scale the model deployment (``autoscaling_config``
    wins when set); ``ingress_replicas`` scales the ingress, which does the CPU-heavy decoding
    and face detection. Fractional CPUs let both fit next to each other on a 2-core machine.
    """

    model: str | None = None  # artifact directory; None = the model shipped in the package
    num_replicas: int | str = 1  # model replicas, or "auto" for Serve's default autoscaling
    autoscaling_config: Mapping[str, Any] | None = None  # e.g. {"min_replicas": 1, "max_replicas": 4}
    ingress_replicas: int = 1
    cpus_per_replica: float = 0.5
    gpus_per_replica: float = 0.0
    ingress_cpus: float = 0.5
    torch_threads: int = 1  # per model replica
    prep_threads: int = 2  # decode/detect threads per ingress replica
    max_batch_size: int = 32  # faces per predict_proba call
    batch_wait_timeout_s: float = 0.005  # added to latency at low load: keep it small
    max_ongoing_requests: int = 64  # per model replica; must be >= max_batch_size for batches to fill
    ingress_max_ongoing_requests: int = 16  # per ingress replica
    max_body_bytes: int = 20_000_000  # HTTP bodies above this (or the model's max_bytes) get 413
    max_pixels: int | None = None  # None: the model artifact's preprocessing limit
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self) -> None:
        if isinstance(self.num_replicas, str):
            if self.num_replicas.isdigit():
                object.__setattr__(self, "num_replicas", int(self.num_replicas))
            elif self.num_replicas != "auto":
                raise ValueError(f"num_replicas must be a positive integer or 'auto', got {self.num_replicas!r}")
        if isinstance(self.num_replicas, int) and self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if self.autoscaling_config is not None and not isinstance(self.autoscaling_config, Mapping):
            raise ValueError(
                "autoscaling_config must be a mapping such as {'min_replicas': 1, 'max_replicas': 4}, "
                f"got {type(self.autoscaling_config).__name__}"
            )
        for name in ("ingress_replicas", "torch_threads", "prep_threads", "max_batch_size", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.cpus_per_replica < 0 or self.ingress_cpus < 0 or self.gpus_per_replica < 0:
            raise ValueError("cpus_per_replica, ingress_cpus and gpus_per_replica must be >= 0 (fractions allowed)")
        if not 0 <= self.batch_wait_timeout_s <= 1:
            raise ValueError(f"batch_wait_timeout_s must be in [0, 1] seconds, got {self.batch_wait_timeout_s}")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                f"({self.max_batch_size}), or batches can never fill"
            )
        if self.ingress_max_ongoing_requests < 1:
            raise ValueError(f"ingress_max_ongoing_requests must be >= 1, got {self.ingress_max_ongoing_requests}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive or None (the model's limit), got {self.max_pixels}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["autoscaling_config"] = dict(self.autoscaling_config) if self.autoscaling_config else None
        return d

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> "ServeConfig":
        """Build from ``serve run ... key=value`` strings (or typed YAML ``args:``).

        ``replicas`` is an alias of ``num_replicas``; ``autoscaling_config`` takes JSON;
        face-detection fields (``min_face``, ``min_neighbors``, ...) go to :class:`DetectConfig`.
        """
        own = {f.name: f for f in dataclasses.fields(cls) if f.name != "detect"}
        det = {f.name: f for f in dataclasses.fields(DetectConfig)}
        kw: dict[str, Any] = {}
        detect_kw: dict[str, Any] = {}
        for key, value in args.items():
            name = "num_replicas" if key == "replicas" else key
            try:
                if name in own:
                    kw[name] = _coerce(name, value, own[name].default)
                elif name in det:
                    detect_kw[name] = _coerce(name, value, det[name].default)
                else:
                    raise ValueError(
                        f"unknown argument {key!r}; expected one of {sorted([*own, 'replicas', *det])} "
                        "(e.g. `serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2`)"
                    )
            except (TypeError, json.JSONDecodeError) as e:
                raise ValueError(f"argument {key}={value!r}: {e}") from e
        return cls(**kw, detect=DetectConfig(**detect_kw))


def _coerce(name: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        return value
    if name == "autoscaling_config":
        return json.loads(value)
    if name in ("model", "num_replicas"):
        return value
    if value.lower() in ("none", "null", ""):
        return None
    if isinstance(default, bool):
        return value.lower() in ("1", "true", "yes")
    if isinstance(default, float):
        return float(value)
    if isinstance(default, int) or default is None:  # max_pixels: int | None
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"argument {name}={value!r} is not an integer") from None
    return value


# -- model deployment ---------------------------------------------------------------------------
def _faces_in(chunks: list[np.ndarray]) -> int:
    """Batch size in faces, not requests: one request may carry several faces."""
    return sum(len(c) for c in chunks)


def model_info(artifact: Any) -> dict[str, Any]:
    """What ``GET /model`` reports: config, labels, preprocessing and a metrics summary of an artifact."""
    meta = artifact.meta
    metrics = dict(meta.get("metrics") or {})
    history = metrics.pop("history", None)  # per-epoch rows: too long for a status endpoint
    if history is not None:
        metrics["epochs"] = len(history)
    return {
        "model_id": artifact.model_id,
        "model_config": artifact.model_config.to_dict(),
        "labels": list(artifact.labels),
        "preprocess": artifact.preprocess.to_dict(),
        "metrics": metrics,
        "parameters": meta.get("parameters"),
        "weights_sha256": meta.get("weights_sha256"),
        "created_at": meta.get("created_at"),
        "data_fingerprint": meta.get("data_fingerprint"),
        "path": str(artifact.path) if artifact.path else None,
    }


@serve.deployment
class FERModel:
    """Loads the model artifact once per replica and scores stacked face crops in batches."""

    def __init__(self, cfg: ServeConfig):
        import torch

        from fer_ray.artifact import load_artifact

        torch.set_num_threads(cfg.torch_threads)
        use_cuda = cfg.gpus_per_replica > 0 and torch.cuda.is_available()
        self.device = "cuda" if use_cuda else "cpu"
        self.artifact = load_artifact(cfg.model, self.device)
        self.info_dict = model_info(self.artifact)
        self.predict.set_max_batch_size(cfg.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.counts = {"requests": 0, "faces": 0, "batches": 0, "largest_batch": 0}
        logger.info("serving %s from %s on %s", self.artifact.model_id, self.artifact.path, self.device)

    async def info(self) -> dict[str, Any]:
        return self.info_dict

    async def stats(self) -> dict[str, int]:
        """Counters of this replica: requests and faces scored, batches run, most faces in one batch."""
        return dict(self.counts)

    # The decorator's sizes are replaced from ServeConfig in __init__.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, batch_size_fn=_faces_in)
    async def predict(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Per request a ``uint8`` (N, S, S) array of face crops -> per request (N, K) probabilities."""
        sizes = [len(c) for c in chunks]
        faces = np.concatenate(chunks)  # (B, S, S), B = sum(sizes) <= max_batch_size
        c = self.counts
        c["requests"] += len(chunks)
        c["faces"] += len(faces)
        c["batches"] += 1
        c["largest_batch"] = max(c["largest_batch"], len(faces))
        # On a thread, so the replica keeps queueing the next batch while this one runs.
        probs = await asyncio.to_thread(self.artifact.predict_proba, faces, self.device)  # (B, K)
        return np.split(probs, np.cumsum(sizes)[:-1])


# -- HTTP ingress -------------------------------------------------------------------------------
api = FastAPI(
    title="fer_ray",
    description="Facial emotion recognition: POST an image to /predict, get emotion probabilities per face.",
)


class RequestError(Exception):
    """A client error: becomes ``{"error": reason}`` with ``status`` (4xx)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=dict(headers) if headers else None)


@api.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI's own 404/405 in the same {"error": ...} shape as ours.
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return _error(422, f"invalid request: {reasons}")


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in stream:
        n += len(chunk)
        if n > limit:
            raise RequestError(413, f"request body is over the limit of {limit:,} bytes; send a smaller image")
        yield chunk


async def read_image_bytes(request: Request, limit: int) -> bytes:
    """The image bytes of a request: multipart field ``file``, or else the raw body (any content type)."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body is {int(length):,} bytes, over the limit of {limit:,}")
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        parser = MultiPartParser(
            request.headers, _limited(request.stream(), limit), max_files=1, max_fields=16, max_part_size=64_000
        )
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise RequestError(400, f"malformed multipart body: {e.message}") from e
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise RequestError(400, "multipart body has no file field 'file'; upload it as -F file=@photo.jpg")
            data = await upload.read()
        finally:
            await form.close()
        if not data:
            raise RequestError(400, f"uploaded file {upload.filename!r} is empty (0 bytes)")
        return data
    data = b"".join([chunk async for chunk in _limited(request.stream(), limit)])
    if not data:
        raise RequestError(
            400,
            "empty request body: send the image as the body (curl --data-binary @photo.jpg "
            "-H 'Content-Type: image/jpeg') or as multipart field 'file' (curl -F file=@photo.jpg)",
        )
    return data


def prepare_faces(
    data: bytes, whole_image: bool, preprocess: PreprocessConfig, detect: DetectConfig, lock: threading.Lock
) -> tuple[tuple[int, int], list[Box | None], np.ndarray]:
    """Encoded image -> ((width, height), boxes, uint8 crops (N, S, S)), as batch scoring prepares images.

    ``box=None`` means the whole image is the face (``whole_image`` or a crop-sized image).
    """
    gray = decode_image(data, preprocess.max_pixels)
    h, w = gray.shape
    boxes, crops = find_faces(gray, detect, preprocess, whole_image, lock)  # lock: one cascade per process
    s = preprocess.image_size
    faces = np.stack(crops) if crops else np.zeros((0, s, s), dtype=np.uint8)  # (N, S, S)
    return (w, h), boxes, faces


@serve.deployment
@serve.ingress(api)
class FERServer:
    """HTTP ingress: validates and preprocesses uploads, sends face crops to :class:`FERModel`."""

    def __init__(self, model: DeploymentHandle, cfg: ServeConfig):
        self.model = model
        self.cfg = cfg
        self._info: dict[str, Any] | None = None
        self._pool = ThreadPoolExecutor(max_workers=cfg.prep_threads, thread_name_prefix="fer-prep")
        self._detect_lock = threading.Lock()

    async def _model_info(self) -> dict[str, Any]:
        if self._info is None:  # fetched once: a replica serves one artifact for its lifetime
            self._info = await self.model.info.remote()
        return self._info

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        info = await self.model.info.remote()  # every time: healthy means the model replica answers
        return {"status": "ok", "model_id": info["model_id"]}

    @api.get("/model")
    async def model_card(self) -> dict[str, Any]:
        info = await self._model_info()
        serving = {k: v for k, v in self.cfg.to_dict().items() if k != "model"}
        return {**info, "serving": serving}

    @api.post("/predict")
    async def predict(self, request: Request, whole_image: bool = False) -> JSONResponse:
        """Score an image: multipart field ``file`` or the raw body; ``?whole_image=true`` skips detection."""
        info = await self._model_info()
        preprocess = PreprocessConfig.from_dict(info["preprocess"])
        if self.cfg.max_pixels is not None:
            preprocess = dataclasses.replace(preprocess, max_pixels=self.cfg.max_pixels)
        try:
            data = await read_image_bytes(request, min(self.cfg.max_body_bytes, preprocess.max_bytes))
            loop = asyncio.get_running_loop()
            (w, h), boxes, faces = await loop.run_in_executor(
                self._pool, prepare_faces, data, whole_image, preprocess, self.cfg.detect, self._detect_lock
            )
        except RequestError as e:
            return _error(e.status, e.reason)
        except ImageDecodeError as e:
            return _error(422, str(e))
        except Exception as e:  # one strange file must never become a 500
            logger.warning("cannot process an uploaded image: %s", e, exc_info=True)
            return _error(422, f"cannot process image: {type(e).__name__}: {e}")
        del data
        result: dict[str, Any] = {"model_id": info["model_id"], "image_width": w, "image_height": h}
        if not boxes:
            return JSONResponse({**result, "faces": [], "status": "no_face"})
        n = self.cfg.max_batch_size  # a photo with many faces goes as several calls, each fits one batch
        try:
            parts = await asyncio.gather(
                *(self.model.predict.remote(faces[i : i + n]) for i in range(0, len(faces), n))
            )
        except Exception as e:
            logger.error("model deployment failed: %s", e, exc_info=True)
            return _error(503, f"model unavailable: {type(e).__name__}; retry later")
        probs = np.concatenate(parts)  # (N, K)
        labels = info["labels"]
        result["faces"] = [
            {
                "box": None if box is None else [int(v) for v in box],
                "probabilities": {label: float(p[k]) for k, label in enumerate(labels)},
                "emotion": labels[int(p.argmax())],
                "confidence": float(p.max()),
            }
            for box, p in zip(boxes, probs, strict=True)
        ]
        result["status"] = "ok"
        return JSONResponse(result)


# -- building the application -------------------------------------------------------------------
def build(cfg: ServeConfig | None = None) -> Application:
    """The Serve application for ``cfg``: ``FERServer`` (ingress) bound to ``FERModel``. Loads nothing yet."""
    from fer_ray.artifact import DEFAULT_MODEL_DIR, META

    cfg = cfg or ServeConfig()
    model_dir = Path(cfg.model) if cfg.model else DEFAULT_MODEL_DIR
    if not (model_dir / META).is_file():
        hint = " (no model is shipped in this checkout)" if cfg.model is None else ""
        raise FileNotFoundError(
            f"{model_dir} is not a fer_ray model artifact{hint}: pass model=/path/to/artifact to build_app "
            "or --model to jobs/serve.py (python jobs/train.py writes runs/<name>/artifact)"
        )
    cfg = dataclasses.replace(cfg, model=str(model_dir.resolve()))
    actor = {"num_cpus": cfg.cpus_per_replica}
    if cfg.gpus_per_replica:
        actor["num_gpus"] = cfg.gpus_per_replica
    scale: dict[str, Any] = (
        {"autoscaling_config": dict(cfg.autoscaling_config)}
        if cfg.autoscaling_config
        else {"num_replicas": cfg.num_replicas}
    )
    model = FERModel.options(ray_actor_options=actor, max_ongoing_requests=cfg.max_ongoing_requests, **scale)
    server = FERServer.options(
        num_replicas=cfg.ingress_replicas,
        ray_actor_options={"num_cpus": cfg.ingress_cpus},
        max_ongoing_requests=cfg.ingress_max_ongoing_requests,
    )
    return server.bind(model.bind(cfg), cfg)


def build_app(args: dict[str, str]) -> Application:
    """Serve app builder: ``serve run fer_ray.serve:build_app model=/path/to/artifact replicas=2``."""
    return build(ServeConfig.from_args(args))


def run(app: Application, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME) -> DeploymentHandle:
    """Start Serve's HTTP proxy on ``host:port`` (Ray must be initialised) and deploy ``app`` at ``/``."""
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(app, name=name, route_prefix="/")
    logger.info("fer_ray serving at http://%s:%d/predict", host, port)
    return handle


def __getattr__(name: str) -> Any:
    # `serve run fer_ray.serve:app` reads this attribute; building on access keeps imports free of side effects.
    if name == "app":
        return build()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
