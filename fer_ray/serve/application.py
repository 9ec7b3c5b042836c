"""The Serve application: the ingress (:mod:`fer_ray.serve.ingress`) bound to the model deployment
(:mod:`fer_ray.serve.model`), built from one :class:`ServeConfig` for ``serve run`` (:func:`build_app`)
and ``jobs/serve.py`` (:func:`build`, :func:`run`).
"""

import dataclasses
import logging
from typing import Any

from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle

from fer_ray.serve.config import ServeConfig, ServeRun
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


def run(
    app: Application, host: str = ServeRun.host, port: int = ServeRun.port, name: str = APP_NAME
) -> DeploymentHandle:
    """Start Serve's HTTP proxy on ``host:port`` (Ray must be initialised) and deploy ``app`` at ``/``."""
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(app, name=name, route_prefix="/")
    logger.info("fer_ray serving at http://%s:%d/v1/predict", host, port)
    return handle
