"""Shared fixtures: one real local Ray per test session, a real S3 (moto) on 127.0.0.1, FER2013 when present."""

from __future__ import annotations

import os

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before anything imports ray
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fer_ray.config import fer2013_parquet  # noqa: E402

# Logical CPUs of the test cluster: more than the 2 cores CI has, so Ray Data tasks
# find slots next to training workers and actor pools (see fer_ray.runtime).
TEST_RAY_CPUS = 6
_WORKER_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray, started once for every test that needs it."""
    import ray

    from fer_ray.runtime import RayConfig, init_ray

    if not ray.is_initialized():
        # Workers take S3 credentials from the standard AWS chain (none travel with tasks), and a
        # worker sees only the environment Ray started with: give it moto's dummy keys (and no
        # instance-metadata lookups) from the start, without changing this process's environment.
        saved = {k: os.environ.get(k) for k in _WORKER_AWS_ENV}
        os.environ.update(_WORKER_AWS_ENV)
        try:
            init_ray(RayConfig(num_cpus=TEST_RAY_CPUS))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def fer2013_path() -> Path:
    p = fer2013_parquet()
    if p is None:
        pytest.skip("full FER2013 Parquet not found (set FER_RAY_DATA or place it at ../shared/data/fer2013/)")
    return p


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 protocol endpoint (moto) bound to 127.0.0.1 on a free port.

    Yields the endpoint URL. Credentials are dummies set only in this process's
    environment, so no request can be signed for a real account.
    """
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
    )
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()
