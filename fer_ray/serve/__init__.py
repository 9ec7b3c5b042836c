"""Online scoring over HTTP with Ray Serve: ``POST /v1/predict`` an image, get one emotion distribution per face.

The ingress ``FERServer`` (:mod:`~fer_ray.serve.ingress`, its FastAPI app in :mod:`~fer_ray.serve.api`) decodes,
detects and crops as batch scoring does, and sends the crops to ``FERModel`` (:mod:`~fer_ray.serve.model`)::

    serve run serve_config.yaml                                   # the repo's config (shipped model, 127.0.0.1:8000)
    serve run fer_ray.serve:app                                   # the model shipped in the package
    serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2 max_batch_size=64
    python jobs/serve.py --model runs/x/artifact --port 8000     # same, as a thin CLI

The API key comes from the Ray nodes' environment (:mod:`~fer_ray.serve.config`), never from args that Serve prints
back. The model directory must be readable on every node that runs a ``FERModel`` replica.
"""

import dataclasses
import logging
from typing import Any

from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

from fer_ray.serve.config import API_KEY_ENV, API_KEY_FILE_ENV, ServeConfig, ServeRun, is_loopback, resolve_api_key
from fer_ray.serve.ingress import FERServer
from fer_ray.serve.model import FERModel

logger = logging.getLogger(__name__)

APP_NAME = "fer"


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
    scale: dict[str, Any] = {"num_replicas": cfg.num_replicas}
    if cfg.autoscaling_config:
        scale = {"autoscaling_config": dict(cfg.autoscaling_config)}
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


# `serve run fer_ray.serve:app`: Serve calls a builder function with the command line's args (none: the
# shipped model), so the name needs neither an application built at import nor a module __getattr__.
app = build_app


def run(
    app: Application, host: str = ServeRun.host, port: int = ServeRun.port, name: str = APP_NAME
) -> DeploymentHandle:
    """Start Serve's HTTP proxy on ``host:port`` (Ray must be initialised) and deploy ``app`` at ``/``."""
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(app, name=name, route_prefix="/")
    logger.info("fer_ray serving at http://%s:%d/v1/predict", host, port)
    return handle


__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_ENV",
    "APP_NAME",
    "FERModel",
    "FERServer",
    "ServeConfig",
    "ServeRun",
    "app",
    "build",
    "build_app",
    "is_loopback",
    "resolve_api_key",
    "run",
]
