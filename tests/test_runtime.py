"""Which Ray a job uses: the address it resolves, and a private local Ray despite a stale cluster file.

Joining a live cluster (``--address auto``, ``ray job submit``) is exercised in tests/test_two_nodes.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fer_ray.runtime import LOCAL, RayConfig, resolve_address

REPO = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter: the test session's own Ray must stay untouched.
PROBE = """
import json, logging, ray
from fer_ray.cli import setup
from fer_ray.runtime import RayConfig, init_ray
setup()
init_ray(RayConfig(address={address!r}, num_cpus={num_cpus!r}))
alive = [n for n in ray.nodes() if n["Alive"]]
print("PROBE " + json.dumps({{"cpus": ray.cluster_resources().get("CPU"), "nodes": len(alive)}}))
ray.shutdown()
"""


def probe_ray(env: dict[str, str], address: str | None = None, num_cpus: int | None = 3) -> tuple[dict, str]:
    """(cluster CPUs and alive nodes as the probe saw them, its log) for ``init_ray`` in a new process."""
    code = PROBE.format(address=address, num_cpus=num_cpus)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("PROBE "))
    return json.loads(line[len("PROBE ") :]), log


def test_address_comes_from_the_config_then_ray_address_then_local():
    assert resolve_address(RayConfig(), environ={}) == LOCAL
    assert resolve_address(RayConfig(), environ={"RAY_ADDRESS": "10.0.0.5:6379"}) == "10.0.0.5:6379"
    assert resolve_address(RayConfig(address="auto"), environ={"RAY_ADDRESS": "10.0.0.5:6379"}) == "auto"
    assert resolve_address(RayConfig(), environ={"RAY_ADDRESS": ""}) == LOCAL
    with pytest.raises(ValueError, match="must be a Ray address"):
        RayConfig(address=" ")
    with pytest.raises(ValueError, match="num_cpus must be >= 1"):
        RayConfig(num_cpus=0)


@pytest.mark.slow
def test_private_local_ray_despite_a_stale_cluster_file():
    """A leftover ``<tmp>/ray/ray_current_cluster`` (a crashed ``ray start``) made every job fail with
    "When connecting to an existing cluster, num_cpus ... must not be provided"; now the job starts
    its own Ray with the CPUs it asked for and says so."""
    # Short: Ray's unix sockets live under it (~107 bytes max), see tests/test_jobs_submit.py.
    root = tempfile.mkdtemp(prefix="rt", dir=os.environ.get("FER_RAY_TEST_SHORT_TMP", "/tmp"))
    try:
        (Path(root) / "ray").mkdir()
        (Path(root) / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")  # nothing listens there
        env = {**os.environ, "RAY_TMPDIR": root, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        seen, log = probe_ray(env, num_cpus=3)
        assert seen == {"cpus": 3.0, "nodes": 1}
        assert "starting a private local Ray with 3 logical CPUs" in log
    finally:
        from tests.ray_processes import kill_cluster

        kill_cluster(root)
        shutil.rmtree(root, ignore_errors=True)


def test_configure_logging_quiets_ray_and_ray_data_consoles_and_verbose_restores_them(monkeypatch):
    import logging

    import ray.data  # noqa: F401  (sets up Ray Data's console handler, as a job's first dataset does)

    from fer_ray import runtime

    def consoles():
        handlers = logging.getLogger("ray.data").handlers  # a terminal one, and one writing ray-data.log
        return [h for h in handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]

    ray_logger = logging.getLogger("ray")
    saved = ray_logger.level, [h.level for h in consoles()]
    monkeypatch.setattr(runtime, "_verbose", None)  # restored after the test, like the levels below
    try:
        assert consoles(), "Ray Data no longer logs through its own console handler: revisit configure_logging"
        runtime.configure_logging(verbose=False)
        assert ray_logger.level == logging.WARNING and {h.level for h in consoles()} == {logging.WARNING}
        assert not runtime.is_verbose()
        runtime.configure_logging(verbose=True)
        assert ray_logger.level == logging.INFO and {h.level for h in consoles()} == {logging.INFO}
        assert runtime.is_verbose()
    finally:
        ray_logger.setLevel(saved[0])
        for h, level in zip(consoles(), saved[1], strict=True):
            h.setLevel(level)
