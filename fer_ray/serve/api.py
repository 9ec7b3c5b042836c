"""The FastAPI app of one ingress replica: routes, the key check around them all, the upload page and
offline ``/docs``; every error in the same ``{"error": reason}`` shape.
"""

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from fer_ray.serve.http import BearerAuth, error_response

if TYPE_CHECKING:
    from fer_ray.serve.ingress import FERServer

# No `from __future__ import annotations`: FastAPI must see real classes (Request) in the route signatures.

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


def create_api(server: "FERServer") -> FastAPI:
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
