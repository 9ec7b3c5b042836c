"""HTTP edges of the service, independent of Ray: errors as JSON, the API-key check, reading uploads within limits.

Every client mistake becomes ``{"error": reason}`` with a 4xx status, decided before any image work starts:
401 without the key, 415 for a body that is not an image, 413 over the byte or file-count limit,
408 for a body that does not arrive in time (a slow-drip client cannot hold a request open forever).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

ACCEPTED_TYPES = "image/*, application/octet-stream or multipart/form-data"


class RequestError(Exception):
    """A client error: becomes ``{"error": reason}`` with ``status`` (4xx)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def error_response(status: int, reason: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers=dict(headers) if headers else None)


class BearerAuth:
    """ASGI middleware: every path but the public ones needs ``Authorization: Bearer <key>``.

    Pure ASGI rather than a route dependency, so it also covers FastAPI's own routes (``/openapi.json``),
    unknown paths, and rejects before a byte of the body is read. ``hmac.compare_digest`` takes the
    same time wherever the first wrong byte is, so response timing does not leak the key.
    """

    def __init__(self, app: ASGIApp, key: str | None, public: Iterable[str] = (), public_prefixes: Iterable[str] = ()):
        self.app = app
        self.key = key.encode() if key else None
        self.public = frozenset(public)
        self.public_prefixes = tuple(public_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is None or scope["type"] != "http" or self._is_public(scope) or self._authorized(scope):
            await self.app(scope, receive, send)
            return
        response = error_response(
            401,
            "missing or wrong API key: send the header 'Authorization: Bearer <key>' "
            '(curl -H "Authorization: Bearer $FER_RAY_API_KEY" ...)',
            {"WWW-Authenticate": 'Bearer realm="fer_ray"'},
        )
        await response(scope, receive, send)

    def _is_public(self, scope: Scope) -> bool:
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # Serve mounts the app under its route_prefix
            path = path[len(root) :]
        path = path or "/"
        return path in self.public or path.startswith(self.public_prefixes)

    def _authorized(self, scope: Scope) -> bool:
        value = Headers(scope=scope).get("authorization", "")
        scheme, _, token = value.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)


@dataclass(frozen=True)
class Upload:
    """One image of a request: its bytes and the name the client gave it (None for a raw body)."""

    data: bytes
    filename: str | None = None


async def _limited(stream: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    n = 0
    async for chunk in stream:
        n += len(chunk)
        if n > limit:
            raise RequestError(413, f"request body is over the limit of {limit:,} bytes; send a smaller image")
        yield chunk


def check_content_type(content_type: str) -> str:
    """The media type of an acceptable body (lower case, no parameters), else a 415."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media.startswith("image/") or media in ("application/octet-stream", "multipart/form-data"):
        return media
    got = f"Content-Type {media!r}" if media else "no Content-Type"
    raise RequestError(
        415,
        f"{got} is not accepted; send {ACCEPTED_TYPES}: curl -F file=@photo.jpg URL, "
        "or curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' URL",
    )


async def read_uploads(request: Request, limit: int, max_files: int) -> list[Upload]:
    """The images of a request: every multipart field ``file`` (at most ``max_files``), or the raw body.

    ``limit`` bounds the whole body, counted while it streams in (a missing or lying Content-Length
    does not get around it).
    """
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise RequestError(413, f"request body is {int(length):,} bytes, over the limit of {limit:,}")
    media = check_content_type(request.headers.get("content-type", ""))
    if media == "multipart/form-data":
        parser = MultiPartParser(
            request.headers,
            _limited(request.stream(), limit),
            max_files=max_files,
            max_fields=16,
            max_part_size=64_000,
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
            uploads = [Upload(await f.read(), f.filename) for f in files]
        finally:
            await form.close()
        for u in uploads:
            if not u.data and len(uploads) == 1:
                raise RequestError(400, f"uploaded file {u.filename!r} is empty (0 bytes)")
        return uploads
    data = b"".join([chunk async for chunk in _limited(request.stream(), limit)])
    if not data:
        raise RequestError(
            400,
            "empty request body: send the image as the body (curl --data-binary @photo.jpg "
            "-H 'Content-Type: image/jpeg') or as multipart field 'file' (curl -F file=@photo.jpg)",
        )
    return [Upload(data)]


async def read_uploads_in_time(request: Request, limit: int, max_files: int, timeout_s: float) -> list[Upload]:
    """:func:`read_uploads`, or 408 when the body has not fully arrived within ``timeout_s``."""
    try:
        return await asyncio.wait_for(read_uploads(request, limit, max_files), timeout_s)
    except asyncio.TimeoutError:  # TimeoutError from 3.11 on
        raise RequestError(408, f"request body did not arrive within {timeout_s:g} s; send it at once") from None


def server_timing(stages: Mapping[str, float]) -> str:
    """A ``Server-Timing`` header (milliseconds per stage), read by browsers' dev tools and the latency benchmark."""
    return ", ".join(f"{name};dur={seconds * 1000:.2f}" for name, seconds in stages.items())
