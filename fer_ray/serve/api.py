"""The FastAPI app of one ingress replica, independent of Ray: routes, the key check, the upload page, offline
``/docs``, and reading uploads within limits. Every client mistake becomes ``{"error": reason}`` with a 4xx
status before any image work starts: 401 without the key, 415 for a body that is not an image or a video clip,
413 over the byte (a clip has its own) or file-count limit, 408 for a body that does not arrive in time (a
slow-drip client cannot hold a request open forever)."""

import hmac
import html
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Receive, Scope, Send

from fer_ray.video.clip import CLIP_HINT, is_clip

if TYPE_CHECKING:
    from fer_ray.serve.ingress import FERServer

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.

WEB_DIR = Path(__file__).resolve().parent.parent / "assets" / "web"
# Pages and files that hold no data and must load before a user can type the key.
PUBLIC_PATHS = ("/", "/healthz", "/docs", "/favicon.ico")
PUBLIC_PREFIX = "/static/"
_PAGE_HEADERS = {
    # Everything from this origin: a page that loads nothing from elsewhere works offline and leaks nothing.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_BINARY = {"type": "string", "format": "binary"}
_FILES = {"type": "object", "properties": {"file": {"type": "array", "items": _BINARY}}, "required": ["file"]}
_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image or one short video clip (`max_clip_s`, `max_clip_bytes`) as the raw body, or up "
        "to `max_files` images or one clip as multipart fields named `file`.",
        "content": {
            "multipart/form-data": {"schema": _FILES},
            "image/*": {"schema": _BINARY},
            "video/*": {"schema": _BINARY},
            "application/octet-stream": {"schema": _BINARY},
        },
    }
}


class RequestError(Exception):
    """A client error: becomes ``{"error": reason}`` with ``status`` (4xx)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=headers)


class BearerAuth:
    """ASGI middleware: every path but the public ones needs ``Authorization: Bearer <key>``. Pure ASGI rather than
    a route dependency, so it also covers FastAPI's own routes and unknown paths, and rejects before a byte of
    the body is read; ``hmac.compare_digest`` keeps response timing from leaking the key."""

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
            '(curl -H "Authorization: Bearer $FER_RAY_API_KEY" ...)',
            {"WWW-Authenticate": 'Bearer realm="fer_ray"'},
        )
        await response(scope, receive, send)

    @staticmethod
    def _is_public(scope: Scope) -> bool:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        if root and path.startswith(root):  # Serve mounts the app under its route_prefix
            path = path[len(root) :]
        return (path or "/") in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)

    def _authorized(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)


def _swagger_dir() -> Path | None:
    """Swagger UI's JS/CSS as shipped in the ``fastapi-offline`` wheel (None when it is not installed)."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    d = Path(fastapi_offline.__file__).resolve().parent / "static"
    return d if (d / "swagger-ui-bundle.js").is_file() else None


def create_api(server: "FERServer") -> FastAPI:
    """The FastAPI app of one ingress replica: routes call ``server``; the key check wraps them all."""
    swagger = _swagger_dir() if server.cfg.docs else None
    api = FastAPI(
        title="fer_ray",
        version="1",
        description="Facial emotion recognition: POST an image or a short video clip to /v1/predict, get emotion "
        "probabilities per face, or per person track over time.",
        docs_url=None,  # FastAPI's own /docs loads Swagger UI from a CDN; ours serves it from the package
        redoc_url=None,
        openapi_url="/openapi.json" if swagger else None,
    )
    if server.api_key is not None:
        api.add_middleware(BearerAuth, key=server.api_key)
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
        A video clip (``video/*`` or a video file name): ``{model_id, status, video, tracks: [{track_id, ...,
        timeline}], frames}``; longer or larger ones get 413 (score them with ``jobs/score.py``).
        """
        return await server.predict(request, whole_image)

    # Unversioned aliases of the first release.
    for path, route, body in (("/model", model_card, None), ("/predict", predict, _PREDICT_BODY)):
        methods = ["GET"] if body is None else ["POST"]
        summary = f"Alias of /v1{path}"
        api.add_api_route(path, route, methods=methods, tags=["aliases"], summary=summary, openapi_extra=body)
    return api


@dataclass(frozen=True)
class Upload:
    """One image of a request: its bytes and the name the client gave it (None for a raw body)."""

    data: bytes
    filename: str | None = None
    clip: bool = False  # a video clip (it comes alone)


def _too_big(limit: int, clip: bool, size: int | None = None) -> RequestError:
    what, fix = ("the clip", CLIP_HINT) if clip else ("request body", "send a smaller image")
    return RequestError(413, f"{what} is {f'{size:,} bytes, ' if size else ''}over the limit of {limit:,} bytes; {fix}")


async def _limited(stream: AsyncIterator[bytes], limit: int, clip: bool = False) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in stream:
        n += len(chunk)
        if n > limit:
            raise _too_big(limit, clip)
        yield chunk


async def read_uploads(request: Request, limit: int, max_files: int, clip_limit: int) -> list[Upload]:
    """The images or the one video clip of a request: every multipart field ``file`` (at most ``max_files``), or
    the raw body. ``limit`` bounds images, ``clip_limit`` a clip, counted while the body streams in (a missing or
    lying Content-Length does not get around it); a multipart body's parts are typed only once it is parsed.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    clip, multipart, untyped = is_clip(media), media == "multipart/form-data", media == "application/octet-stream"
    cap = max(limit, clip_limit) if multipart or untyped else clip_limit if clip else limit
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap:
        raise _too_big(cap, clip, int(length))
    if multipart:
        parser = MultiPartParser(
            request.headers, _limited(request.stream(), cap), max_files=max_files, max_fields=16, max_part_size=64_000
        )
        try:
            form = await parser.parse()
        except MultiPartException as e:
            if e.message.startswith("Too many files"):
                raise RequestError(413, f"too many files: at most {max_files} per request") from e
            raise RequestError(400, f"malformed multipart body: {e.message}") from e
        try:
            files = [f for f in form.getlist("file") if isinstance(f, UploadFile)]
            if not files:
                raise RequestError(400, "multipart body has no file field 'file'; upload it as -F file=@photo.jpg")
            uploads = []
            for f in files:
                data = await f.read()
                uploads.append(Upload(data, f.filename, is_clip(f.content_type, f.filename, data[:16])))
        finally:
            await form.close()
        clips = any(u.clip for u in uploads)
        if clips and len(uploads) > 1:
            raise RequestError(400, "send a video clip alone: one clip per request, without other files")
        if (size := sum(len(u.data) for u in uploads)) > (cap := clip_limit if clips else limit):
            raise _too_big(cap, clips, size)
        if len(uploads) == 1 and not uploads[0].data:
            raise RequestError(400, f"uploaded file {uploads[0].filename!r} is empty (0 bytes)")
        return uploads
    if not (clip or media.startswith("image/") or media == "application/octet-stream"):
        got = f"Content-Type {media!r}" if media else "no Content-Type"
        raise RequestError(
            415,
            f"{got} is not accepted; send image/*, video/*, application/octet-stream or multipart/form-data: "
            "curl -F file=@photo.jpg URL, or curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' URL",
        )
    data = b"".join([chunk async for chunk in _limited(request.stream(), cap, clip)])
    if not data:
        raise RequestError(
            400,
            "empty request body: send the image as the body (curl --data-binary @photo.jpg "
            "-H 'Content-Type: image/jpeg') or as multipart field 'file' (curl -F file=@photo.jpg)",
        )
    if untyped:  # a raw body without a type: a clip by its first bytes, held to the limit of what it is
        clip = is_clip(media, None, data[:16])
        if len(data) > (cap := clip_limit if clip else limit):
            raise _too_big(cap, clip, len(data))
    return [Upload(data, clip=clip)]
