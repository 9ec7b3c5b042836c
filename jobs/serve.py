"""Serve a FER model over HTTP with Ray Serve until Ctrl-C (local Ray, or RAY_ADDRESS / --address).

    python jobs/serve.py                                          # shipped model, http://127.0.0.1:8000
    python jobs/serve.py --model cnn_attn --replicas 2 --port 8080
    python jobs/serve.py --model runs/x/artifact --config serve.yaml      # ServeConfig settings from a file
    FER_RAY_API_KEY=$(cat key.txt) python jobs/serve.py --host 0.0.0.0   # every interface, key required
    curl -H "Authorization: Bearer $FER_RAY_API_KEY" -F file=@examples/images/photos/group_of_three.jpg \\
         http://127.0.0.1:8000/v1/predict
    open http://127.0.0.1:8000/  (upload page)   http://127.0.0.1:8000/docs  (API docs, served offline)

The API key is read from $FER_RAY_API_KEY or a file ($FER_RAY_API_KEY_FILE, --api-key-file), never from a flag
holding the key itself. The same application without this script (``serve run`` binds 127.0.0.1:8000)::

    serve run serve_config.yaml
    serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2 max_batch_size=64
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from fer_ray.cli import (
    Parser,
    UserError,
    before_ray,
    check_model,
    check_port_free,
    config_parser,
    parse_config,
    run_cli,
)
from fer_ray.serve.config import ServeConfig, ServeRun, is_loopback, resolve_api_key


def get_args_parser() -> Parser:
    return config_parser(ServeConfig, __doc__, actions=ServeRun)


def _busy_batches(d: dict[str, Any]) -> None:
    # room for two batches per replica unless the file or a flag set it
    batch = int(d.get("max_batch_size", ServeConfig.max_batch_size))
    d.setdefault("max_ongoing_requests", max(2 * batch, ServeConfig.max_ongoing_requests))


@run_cli
def main(argv: list[str]) -> int:
    cfg, a = parse_config(get_args_parser(), argv, adjust=_busy_batches)
    from fer_ray.runtime import LOCAL, RayConfig, init_ray, resolve_address

    ray_cfg = RayConfig(address=a.address, num_cpus=a.ray_cpus)
    check_model(cfg.model, engine=cfg.engine)
    try:
        key = resolve_api_key(cfg.api_key_file)  # here too, so a bad key file stops us before Ray starts
    except ValueError as e:
        raise UserError(str(e)) from None
    if resolve_address(ray_cfg) == LOCAL:  # our own Ray will start Serve's proxy on this port
        check_port_free(a.host, a.port)
    from fer_ray.serve import APP_NAME, build, run

    app = build(cfg)
    if key is None and not is_loopback(a.host):
        print(f"WARNING: listening on {a.host} with NO API key; anyone who can reach it can use it. "
              "Set FER_RAY_API_KEY or --api-key-file.", file=sys.stderr)  # fmt: skip
    before_ray(a)
    init_ray(ray_cfg)
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
