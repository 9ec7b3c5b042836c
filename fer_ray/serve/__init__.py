"""Online scoring over HTTP with Ray Serve: ``POST /v1/predict`` an image, get one emotion distribution per face.

Two deployments, composed with ``.bind()`` (:mod:`fer_ray.serve.application`)::

    HTTP -> FERServer (ingress: API key, upload page at /, offline /docs, body limits, decode + detect + crop;
                       :mod:`~fer_ray.serve.ingress`, routes in :mod:`~fer_ray.serve.api`)
         -> FERModel  (load_artifact once per replica; @serve.batch across concurrent requests;
                       :mod:`~fer_ray.serve.model`)

Preprocessing and face detection are the ones batch scoring uses (:mod:`fer_ray.preprocess`,
:mod:`fer_ray.score.faces`), so a photo gets the same probabilities online and in a batch report.
Settings: :class:`ServeConfig` (:mod:`fer_ray.serve.config`); HTTP details: :mod:`fer_ray.serve.http`.

Entry points::

    serve run serve_config.yaml                                   # the repo's config (shipped model, 127.0.0.1:8000)
    serve run fer_ray.serve:app                                   # the model shipped in the package
    serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2 max_batch_size=64
    python jobs/serve.py --model runs/x/artifact --port 8000     # same, as a thin CLI

The API key (optional) comes from ``$FER_RAY_API_KEY`` or a secret file (``$FER_RAY_API_KEY_FILE`` or the
``api_key_file`` arg) in the environment of the Ray nodes, never from args that Serve prints back.
The model directory must be readable on every node that runs a ``FERModel`` replica.
"""

from fer_ray.serve.api import create_api
from fer_ray.serve.application import APP_NAME, build, build_app, run
from fer_ray.serve.config import API_KEY_ENV, API_KEY_FILE_ENV, ServeConfig, ServeRun, is_loopback, resolve_api_key
from fer_ray.serve.http import RequestError
from fer_ray.serve.ingress import FERServer, prepare_faces
from fer_ray.serve.model import FERModel, model_info

# `serve run fer_ray.serve:app`: Serve calls a builder function with the command line's args (none: the
# shipped model), so the name needs neither an application built at import nor a module __getattr__.
app = build_app

__all__ = [
    "API_KEY_ENV",
    "API_KEY_FILE_ENV",
    "APP_NAME",
    "FERModel",
    "FERServer",
    "RequestError",
    "ServeConfig",
    "ServeRun",
    "app",
    "build",
    "build_app",
    "create_api",
    "is_loopback",
    "model_info",
    "prepare_faces",
    "resolve_api_key",
    "run",
]
