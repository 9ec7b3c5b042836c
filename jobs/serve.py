"""Serve a FER model over HTTP with Ray Serve until Ctrl-C (local Ray, or RAY_ADDRESS / --address).

    python jobs/serve.py                                          # shipped model, http://127.0.0.1:8000
    python jobs/serve.py --model runs/x/artifact --replicas 2 --port 8080
    FER_RAY_API_KEY=$(cat key.txt) python jobs/serve.py --host 0.0.0.0   # every interface, key required
    curl -H "Authorization: Bearer $FER_RAY_API_KEY" -F file=@examples/images/photos/group_of_three.jpg \
         http://127.0.0.1:8000/v1/predict
    open http://127.0.0.1:8000/  (upload page)   http://127.0.0.1:8000/docs  (API docs, served offline)

The API key is read from $FER_RAY_API_KEY or a file ($FER_RAY_API_KEY_FILE, --api-key-file), never from a flag
holding the key itself. The same application without this script (``serve run`` binds 127.0.0.1:8000)::

    serve run serve_config.yaml
    serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2 max_batch_size=64
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import add_ray_args, setup
from fer_ray.engine import ENGINES
from fer_ray.runtime import RayConfig, init_ray
from fer_ray.serve import APP_NAME, ServeConfig, build, is_loopback, resolve_api_key, run


def get_args_parser() -> argparse.ArgumentParser:
    d = ServeConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model artifact directory (default: the model shipped in fer_ray)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP interface; 0.0.0.0 exposes the service on the network")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--engine", default=None, choices=ENGINES, help="inference engine (default: best for the device)")
    p.add_argument("--replicas", default=str(d.num_replicas), help="model replicas, or 'auto' to autoscale")
    p.add_argument("--ingress-replicas", type=int, default=d.ingress_replicas, help="decode/detect replicas")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size, help="faces per inference call")
    p.add_argument("--cpus-per-replica", type=float, default=d.cpus_per_replica)
    p.add_argument("--gpus-per-replica", type=float, default=d.gpus_per_replica)
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes, help="larger requests get HTTP 413")
    p.add_argument("--max-files", type=int, default=d.max_files, help="multipart files per request; more get 413")
    p.add_argument("--api-key-file", default=None, help="file holding the API key (else $FER_RAY_API_KEY[_FILE])")
    p.add_argument("--no-docs", action="store_true", help="turn off /docs and /openapi.json")
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    p = get_args_parser()
    a = p.parse_args(argv)
    try:
        cfg = ServeConfig(
            model=a.model, engine=a.engine, num_replicas=a.replicas, ingress_replicas=a.ingress_replicas,
            max_batch_size=a.max_batch_size, max_ongoing_requests=max(2 * a.max_batch_size, 64),
            cpus_per_replica=a.cpus_per_replica, gpus_per_replica=a.gpus_per_replica, max_body_bytes=a.max_body_bytes,
            max_files=a.max_files, api_key_file=a.api_key_file, docs=not a.no_docs,
        )  # fmt: skip
        key = resolve_api_key(cfg.api_key_file)  # here too, so a bad key file stops us before Ray starts
        app = build(cfg)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    if key is None and not is_loopback(a.host):
        print(f"WARNING: listening on {a.host} with NO API key; anyone who can reach it can use it. "
              "Set FER_RAY_API_KEY or --api-key-file.", file=sys.stderr)  # fmt: skip
    init_ray(RayConfig(address=a.address, num_cpus=a.ray_cpus))
    run(app, host=a.host, port=a.port)
    auth = "API key required" if key else "no API key"
    print(f"serving on http://{a.host}:{a.port}/ ({auth}): POST /v1/predict, GET /v1/model, /healthz, /docs")
    print("Ctrl-C stops")
    signal.signal(signal.SIGTERM, _interrupt)  # `docker stop` / `kill` stop it as cleanly as Ctrl-C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        print("stopping")
        serve.delete(APP_NAME)  # only this app: a joined cluster may serve others
    return 0


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
