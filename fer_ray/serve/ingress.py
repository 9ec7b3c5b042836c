"""The HTTP ingress deployment: reads uploads within limits, decodes, detects and crops faces on a thread pool
as batch scoring does (:func:`fer_ray.score.faces.faces_from_bytes`, a video clip's through
:mod:`fer_ray.video.clip`), and sends the crops to ``FERModel``."""

import asyncio
import contextlib
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
from fer_ray.serve.api import RequestError, create_api, error_response, read_uploads
from fer_ray.serve.config import ServeConfig, is_loopback, resolve_api_key
from fer_ray.video.clip import ClipFaces, ClipTooLong, VideoError, clip_faces, clip_response
from fer_ray.video.config import VideoConfig

logger = logging.getLogger(__name__)

Prepared = tuple[tuple[int, int], list[Box | None], np.ndarray]  # (width, height), boxes, uint8 crops (N, S, S)


def _prepare(
    data: bytes,
    whole_image: bool,
    preprocess: PreprocessConfig,
    detect: DetectConfig,
    lock: threading.Lock,
    video: VideoConfig | None = None,
) -> Prepared | ClipFaces | RequestError:
    """One encoded image's faces, or with ``video`` a clip's; ``box=None`` means the whole image is the face
    (``whole_image`` or a crop-sized image). A bad file is returned as a 4xx, not raised: it may be one of several."""
    try:
        if video is not None:  # a clip holds the Haar cascade's lock throughout: one call per frame would cost more
            with lock if detect.detector == "haar" else contextlib.nullcontext():
                return clip_faces(data, video, detect, preprocess, whole_image)
        boxes, crops, size = faces_from_bytes(data, detect, preprocess, whole_image, lock)  # lock: Haar's cascade
    except (ImageDecodeError, VideoError) as e:
        return RequestError(413 if isinstance(e, ClipTooLong) else 422, str(e))
    except Exception as e:  # one strange file must never become a 500
        what = "image" if video is None else "video"
        logger.warning("cannot process an uploaded %s: %s", what, e, exc_info=True)
        return RequestError(422, f"cannot process {what}: {type(e).__name__}: {e}")
    s = preprocess.image_size
    return size, boxes, np.stack(crops) if crops else np.zeros((0, s, s), dtype=np.uint8)


def _unavailable(e: Exception) -> JSONResponse:
    return error_response(503, f"model unavailable: {type(e).__name__}; retry later", {"Retry-After": "1"})


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
            try:  # the host Serve's HTTP proxies bind, from a private API: never let it stop a replica
                from ray.serve.context import _get_global_client

                host = _get_global_client().http_config.host
            except Exception:
                host = None
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
            return _unavailable(e)
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
        limit, timeout_s = min(self.cfg.max_body_bytes, preprocess.max_bytes), self.cfg.body_timeout_s
        try:
            uploads = await asyncio.wait_for(
                read_uploads(request, limit, self.cfg.max_files, self.cfg.max_clip_bytes), timeout_s
            )
        except RequestError as e:
            return error_response(e.status, e.reason)
        except ClientDisconnect:
            return error_response(400, "client disconnected before the body was complete")
        except asyncio.TimeoutError:  # TimeoutError from 3.11 on
            return error_response(408, f"request body did not arrive within {timeout_s:g} s; send it at once")
        t_read = time.perf_counter()
        video = self.cfg.clip_video() if uploads[0].clip else None
        loop, args = asyncio.get_running_loop(), (whole_image, preprocess, self.cfg.detect, self._detect_lock, video)
        prepared = await asyncio.gather(*(loop.run_in_executor(self._pool, _prepare, u.data, *args) for u in uploads))
        t_prep = time.perf_counter()
        if len(uploads) == 1 and isinstance(prepared[0], RequestError):
            return error_response(prepared[0].status, prepared[0].reason)
        faces = [p.crops if video else p[2] for p in prepared if not isinstance(p, RequestError)]
        all_faces = np.concatenate(faces) if faces else np.zeros((0, 1, 1), np.uint8)  # (N, S, S)
        n = self.cfg.max_batch_size  # many faces go as several calls, each fits one batch
        try:
            parts = await asyncio.gather(
                *(self.model.predict.remote(all_faces[i : i + n]) for i in range(0, len(all_faces), n))
            )
        except Exception as e:
            logger.error("model deployment failed: %s", e, exc_info=True)
            return _unavailable(e)
        t_model = time.perf_counter()
        probs = np.concatenate(parts) if parts else np.zeros((0, len(info["labels"])), np.float32)  # (N, K)
        results, start = [], 0
        for upload, p in zip(uploads, prepared, strict=True):
            if isinstance(p, RequestError):
                results.append({"filename": upload.filename, "status": "error", "error": p.reason})
                continue
            if isinstance(p, ClipFaces):  # alone in its request: every face is the clip's
                results.append(clip_response(p, probs, info["labels"], info.get("uncertain_below")))
                continue
            results.append(_image_result(upload.filename, p, probs[start : start + len(p[1])], info))
            start += len(p[1])
        timing = {"read": t_read - t0, "prep": t_prep - t_read, "model": t_model - t_prep}
        timing["total"] = time.perf_counter() - t0
        # Server-Timing (ms per stage): read by browsers' dev tools and the latency benchmark.
        headers = {"Server-Timing": ", ".join(f"{k};dur={v * 1000:.2f}" for k, v in timing.items())}
        if len(uploads) == 1:
            results[0].pop("filename", None)
            return JSONResponse({"model_id": info["model_id"], **results[0]}, headers=headers)
        return JSONResponse({"model_id": info["model_id"], "results": results}, headers=headers)


def _image_result(filename: str | None, prepared: Prepared, probs: np.ndarray, info: dict[str, Any]) -> dict[str, Any]:
    (w, h), boxes, _ = prepared
    labels = info["labels"]
    out = outputs(probs, info.get("uncertain_below"))  # the emotion, confidence and flag batch scoring gives
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
    status = "ok" if faces else "no_face"
    return {"filename": filename, "image_width": w, "image_height": h, "faces": faces, "status": status}
