"""The HTTP ingress deployment: checks the key, reads uploads within limits, decodes, detects and crops faces
on a thread pool, and sends the crops to :class:`~fer_ray.serve.model.FERModel`.

Faces are prepared exactly as batch scoring prepares them (:func:`fer_ray.score.faces.faces_from_bytes`),
and probabilities become emotion, confidence and ``uncertain`` through :func:`fer_ray.inference.outputs.outputs`,
so a photo gets the same answer online and in a batch report.
"""

import asyncio
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import ClientDisconnect

from fer_ray.inference.outputs import outputs
from fer_ray.preprocess import ImageDecodeError, PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import Box, faces_from_bytes
from fer_ray.serve.api import create_api
from fer_ray.serve.config import ServeConfig, is_loopback, resolve_api_key
from fer_ray.serve.http import RequestError, Upload, error_response, read_uploads_in_time, server_timing

logger = logging.getLogger(__name__)


def prepare_faces(
    data: bytes, whole_image: bool, preprocess: PreprocessConfig, detect: DetectConfig, lock: threading.Lock
) -> tuple[tuple[int, int], list[Box | None], np.ndarray]:
    """Encoded image -> ((width, height), boxes, uint8 crops (N, S, S)), exactly as batch scoring prepares
    images; ``box=None`` means the whole image is the face (``whole_image`` or a crop-sized image)."""
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
        loop, args = asyncio.get_running_loop(), (whole_image, preprocess, self.cfg.detect, self._detect_lock)
        prepared = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _prepare_or_error, u.data, *args) for u in uploads)
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
    out = outputs(probs, uncertain_below)  # the emotion, confidence and flag batch scoring gives the same face
    faces = [
        {
            "box": None if box is None else [int(v) for v in box],
            "probabilities": {label: float(p[k]) for k, label in enumerate(labels)},
            "emotion": labels[int(top)],
            "confidence": float(confidence),
            "uncertain": bool(uncertain),
        }
        for box, p, top, confidence, uncertain in zip(boxes, probs, out.top, out.confidence, out.uncertain, strict=True)
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
