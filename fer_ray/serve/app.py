"""The two deployments, their HTTP routes and the application builder.

::

    HTTP -> FERServer (FastAPI ingress, built per replica: API key, upload page, /docs from the package;
                       read the body within limits, decode_image, detect faces, crop, on a thread pool)
         -> FERModel  (load_artifact once per replica; @serve.batch stacks the uint8 crops of
                       concurrent requests into one (B, 48, 48) array for Artifact.predict_proba)
"""

import asyncio
import dataclasses
import html
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from fer_ray.preprocess import ImageDecodeError, PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import Box, faces_from_bytes
from fer_ray.serve.config import ServeConfig, is_loopback, resolve_api_key
from fer_ray.serve.http import (
    BearerAuth,
    RequestError,
    Upload,
    error_response,
    read_uploads_in_time,
    server_timing,
)

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.
# fer_ray.inference.artifact (and with it torch) is imported only inside the model replica: importing this
# module, or running the ingress replica, loads no weights and starts no Ray.

logger = logging.getLogger(__name__)

APP_NAME = "fer"
WEB_DIR = Path(__file__).resolve().parent.parent / "assets" / "web"
# Pages and files that hold no data and must load before a user can type the key.
PUBLIC_PATHS = ("/", "/healthz", "/docs", "/favicon.ico")
PUBLIC_PREFIXES = ("/static/",)
_PAGE_HEADERS = {
    # Everything from this origin: a page that loads nothing from elsewhere works offline and leaks nothing.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _swagger_dir() -> Path | None:
    """Swagger UI's JS/CSS as shipped in the ``fastapi-offline`` wheel (None when it is not installed)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).resolve().parent / "static"
    return d if (d / "swagger-ui-bundle.js").is_file() else None


# -- model deployment ---------------------------------------------------------------------------
def _faces_in(chunks: list[np.ndarray]) -> int:
    """Batch size in faces, not requests: one request may carry several faces."""
    return sum(len(c) for c in chunks)


def model_info(artifact: Any) -> dict[str, Any]:
    """What ``GET /v1/model`` reports: id, config, labels, preprocessing and a metrics summary; no local paths."""
    meta = artifact.meta
    metrics = dict(meta.get("metrics") or {})
    history = metrics.pop("history", None)  # per-epoch rows: too long for a status endpoint
    if history is not None:
        metrics["epochs"] = len(history)
    return {
        "model_id": artifact.model_id,
        "engine": artifact.engine_name,
        "model_config": artifact.model_config.to_dict(),
        "labels": list(artifact.labels),
        "temperature": artifact.temperature,
        "uncertain_below": artifact.uncertain_below,
        "preprocess": artifact.preprocess.to_dict(),
        "metrics": metrics,
        "parameters": meta.get("parameters"),
        "weights_sha256": meta.get("weights_sha256"),
        "created_at": meta.get("created_at"),
        "data_fingerprint": meta.get("data_fingerprint"),
    }


@serve.deployment
class FERModel:
    """Loads the model artifact once per replica and scores stacked face crops in batches."""

    def __init__(self, cfg: ServeConfig):
        from fer_ray.inference.artifact import load_artifact

        self.device = "cpu"
        if cfg.gpus_per_replica > 0:  # torch only where it may run: an ONNX Runtime replica starts ~2 s sooner
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.artifact = load_artifact(cfg.model, self.device, engine=cfg.engine, threads=cfg.torch_threads)
        if self.artifact.engine_name == "torch":
            import torch

            torch.set_num_threads(cfg.torch_threads)
        self.engine_name = self.artifact.engine_name
        self.info_dict = model_info(self.artifact)
        self.predict.set_max_batch_size(cfg.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.counts = {"requests": 0, "faces": 0, "batches": 0, "largest_batch": 0}
        logger.info(
            "serving %s from %s on %s (%s)", self.artifact.model_id, self.artifact.path, self.device, self.engine_name
        )

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
def prepare_faces(
    data: bytes, whole_image: bool, preprocess: PreprocessConfig, detect: DetectConfig, lock: threading.Lock
) -> tuple[tuple[int, int], list[Box | None], np.ndarray]:
    """Encoded image -> ((width, height), boxes, uint8 crops (N, S, S)), exactly as batch scoring prepares images
    (:func:`fer_ray.score.faces.faces_from_bytes`: decode at the detection size, detect, crop).

    ``box=None`` means the whole image is the face (``whole_image`` or a crop-sized image).
    """
    boxes, crops, size = faces_from_bytes(data, detect, preprocess, whole_image, lock)  # lock: Haar's cascade
    s = preprocess.image_size
    faces = np.stack(crops) if crops else np.zeros((0, s, s), dtype=np.uint8)  # (N, S, S)
    return size, boxes, faces


def _prepare_or_error(*args: Any) -> tuple[tuple[int, int], list[Box | None], np.ndarray] | RequestError:
    """:func:`prepare_faces`, with a bad image returned as a 422 instead of raised (one bad file of several)."""
    try:
        return prepare_faces(*args)
    except ImageDecodeError as e:
        return RequestError(422, str(e))
    except Exception as e:  # one strange file must never become a 500
        logger.warning("cannot process an uploaded image: %s", e, exc_info=True)
        return RequestError(422, f"cannot process image: {type(e).__name__}: {e}")


_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, or up to `max_files` images as multipart fields named `file`.",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@serve.deployment
@serve.ingress()  # the FastAPI app is built per replica (__serve_build_asgi_app__), around this replica's key
class FERServer:
    """HTTP ingress: checks the key, validates and preprocesses uploads, sends face crops to :class:`FERModel`."""

    def __init__(self, model: DeploymentHandle, cfg: ServeConfig):
        self.model = model
        self.cfg = cfg
        self.api_key = resolve_api_key(cfg.api_key_file)  # from this replica's environment or a secret file
        self._info: dict[str, Any] | None = None
        self._pool = ThreadPoolExecutor(max_workers=cfg.prep_threads, thread_name_prefix="fer-prep")
        self._detect_lock = threading.Lock()
        if self.api_key is None:
            host = _http_host()
            if host is not None and not is_loopback(host):
                logger.warning(
                    "fer_ray is listening on %s with NO API key: anyone who can reach this address can use it. "
                    "Set FER_RAY_API_KEY (or api_key_file) on the Ray nodes and redeploy.",
                    host,
                )

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self)

    async def model_info(self) -> dict[str, Any]:
        if self._info is None:  # fetched once: a replica serves one artifact for its lifetime
            self._info = await self.model.info.remote()
        return self._info

    async def health(self) -> JSONResponse:
        try:  # every time: healthy means the model replica answers now
            info = await asyncio.wait_for(self.model.info.remote(), timeout=10)
        except Exception as e:
            return error_response(503, f"model unavailable: {type(e).__name__}; retry later", {"Retry-After": "1"})
        return JSONResponse({"status": "ok", "model_id": info["model_id"]})

    async def card(self) -> dict[str, Any]:
        info = await self.model_info()
        serving = {k: v for k, v in self.cfg.to_dict().items() if k not in ("model", "api_key_file")}
        serving["api_key_required"] = self.api_key is not None
        return {**info, "serving": serving}

    async def predict(self, request: Request, whole_image: bool) -> JSONResponse:
        t0 = time.perf_counter()
        info = await self.model_info()
        preprocess = PreprocessConfig.from_dict(info["preprocess"])
        if self.cfg.max_pixels is not None:
            preprocess = dataclasses.replace(preprocess, max_pixels=self.cfg.max_pixels)
        try:
            limit = min(self.cfg.max_body_bytes, preprocess.max_bytes)
            uploads = await read_uploads_in_time(request, limit, self.cfg.max_files, self.cfg.body_timeout_s)
        except RequestError as e:
            return error_response(e.status, e.reason)
        except ClientDisconnect:
            return error_response(400, "client disconnected before the body was complete")
        t_read = time.perf_counter()
        loop = asyncio.get_running_loop()
        prepared = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._pool, _prepare_or_error, u.data, whole_image, preprocess, self.cfg.detect, self._detect_lock
                )
                for u in uploads
            )
        )
        t_prep = time.perf_counter()
        if len(uploads) == 1 and isinstance(prepared[0], RequestError):
            return error_response(prepared[0].status, prepared[0].reason)
        faces = [p[2] for p in prepared if not isinstance(p, RequestError)]
        all_faces = np.concatenate(faces) if faces else np.zeros((0, 1, 1), np.uint8)  # (N, S, S)
        n = self.cfg.max_batch_size  # many faces go as several calls, each fits one batch
        try:
            parts = await asyncio.gather(
                *(self.model.predict.remote(all_faces[i : i + n]) for i in range(0, len(all_faces), n))
            )
        except Exception as e:
            logger.error("model deployment failed: %s", e, exc_info=True)
            return error_response(503, f"model unavailable: {type(e).__name__}; retry later", {"Retry-After": "1"})
        t_model = time.perf_counter()
        probs = np.concatenate(parts) if parts else np.zeros((0, len(info["labels"])), np.float32)  # (N, K)
        results, start = [], 0
        for upload, p in zip(uploads, prepared, strict=True):
            if isinstance(p, RequestError):
                results.append({"filename": upload.filename, "status": "error", "error": p.reason})
                continue
            (w, h), boxes, _ = p
            part = probs[start : start + len(boxes)]
            results.append(_image_result(upload, w, h, boxes, part, info["labels"], info.get("uncertain_below")))
            start += len(boxes)
        timing = {"read": t_read - t0, "prep": t_prep - t_read, "model": t_model - t_prep}
        timing["total"] = time.perf_counter() - t0
        headers = {"Server-Timing": server_timing(timing)}
        if len(uploads) == 1:
            results[0].pop("filename", None)
            return JSONResponse({"model_id": info["model_id"], **results[0]}, headers=headers)
        return JSONResponse({"model_id": info["model_id"], "results": results}, headers=headers)


def _image_result(
    upload: Upload,
    w: int,
    h: int,
    boxes: list[Box | None],
    probs: np.ndarray,
    labels: list[str],
    uncertain_below: float | None = None,
) -> dict[str, Any]:
    faces = [
        {
            "box": None if box is None else [int(v) for v in box],
            "probabilities": {label: float(p[k]) for k, label in enumerate(labels)},
            "emotion": labels[int(p.argmax())],
            "confidence": float(p.max()),
            # below the artifact's calibrated cut-off: the top class is right less often than not
            "uncertain": uncertain_below is not None and float(p.max()) < uncertain_below,
        }
        for box, p in zip(boxes, probs, strict=True)
    ]
    return {
        "filename": upload.filename,
        "image_width": w,
        "image_height": h,
        "faces": faces,
        "status": "ok" if faces else "no_face",
    }


def _http_host() -> str | None:
    """The host Serve's HTTP proxies bind, as the controller knows it (None when it cannot be asked)."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # a private API: never let it stop a replica
        return None


def create_api(server: FERServer) -> FastAPI:
    """The FastAPI app of one ingress replica: routes call ``server``; the key check wraps them all."""
    swagger = _swagger_dir() if server.cfg.docs else None
    api = FastAPI(
        title="fer_ray",
        version="1",
        description="Facial emotion recognition: POST an image to /v1/predict, get emotion probabilities per face.",
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours serves it from the package
        redoc_url=None,
        openapi_url="/openapi.json" if swagger else None,
    )
    api.add_middleware(BearerAuth, key=server.api_key, public=PUBLIC_PATHS, public_prefixes=PUBLIC_PREFIXES)
    if swagger:  # mounted before /static so its prefix wins
        api.mount("/static/swagger", StaticFiles(directory=swagger), name="swagger")
    api.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    index = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    docs_page = (WEB_DIR / "docs.html").read_text(encoding="utf-8")

    def page(template: str, request: Request) -> HTMLResponse:
        root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        return HTMLResponse(template.replace("__ROOT__", root), headers=_PAGE_HEADERS)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 404/405 in the same {"error": ...} shape as ours.
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, f"invalid request: {reasons}")

    @api.get("/", include_in_schema=False)
    async def upload_page(request: Request) -> HTMLResponse:
        return page(index, request)

    if swagger:

        @api.get("/docs", include_in_schema=False)
        async def docs(request: Request) -> HTMLResponse:
            return page(docs_page, request)

    @api.get("/healthz", tags=["status"])
    async def healthz() -> JSONResponse:
        """200 when the model replica answers now (no key needed: for load balancers and probes)."""
        return await server.health()

    @api.get("/v1/model", tags=["status"])
    async def model_card() -> dict[str, Any]:
        """Model id, config, labels, preprocessing, training metrics and serving settings (no local paths)."""
        return await server.card()

    @api.post("/v1/predict", tags=["predict"], openapi_extra=_PREDICT_BODY)
    async def predict(request: Request, whole_image: bool = False) -> JSONResponse:
        """Score images: multipart field(s) ``file`` or the raw body; ``?whole_image=true`` skips detection.

        One image: ``{model_id, image_width, image_height, faces: [{box, probabilities, emotion, confidence}],
        status}``. Several files: ``{model_id, results: [...]}``, one entry per file, a bad one with ``error``.
        """
        return await server.predict(request, whole_image)

    # Unversioned aliases of the first release.
    api.add_api_route("/model", model_card, methods=["GET"], tags=["aliases"], summary="Alias of /v1/model")
    api.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        tags=["aliases"],
        summary="Alias of /v1/predict",
        openapi_extra=_PREDICT_BODY,
    )
    return api


# -- building the application -------------------------------------------------------------------
def build(cfg: ServeConfig | None = None) -> Application:
    """The Serve application for ``cfg``: ``FERServer`` (ingress) bound to ``FERModel``. Loads nothing yet."""
    from fer_ray.inference.artifact import META, resolve_model

    cfg = cfg or ServeConfig()
    model_dir = resolve_model(cfg.model)
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


def build_app(args: dict[str, Any]) -> Application:
    """Serve app builder: ``serve run fer_ray.serve:build_app model=/path/to/artifact replicas=2``,
    or the ``args:`` of ``serve_config.yaml``."""
    return build(ServeConfig.from_args(args))


def run(app: Application, host: str = "127.0.0.1", port: int = 8000, name: str = APP_NAME) -> DeploymentHandle:
    """Start Serve's HTTP proxy on ``host:port`` (Ray must be initialised) and deploy ``app`` at ``/``."""
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(app, name=name, route_prefix="/")
    logger.info("fer_ray serving at http://%s:%d/v1/predict", host, port)
    return handle
