"""`ray job submit` of the real CLIs to a real cluster started with `ray start --head`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fer_fixtures import write_tiny_fer_parquet
from tests.ray_processes import kill_cluster

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _submit(job: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the dashboard agent that accepts jobs is still coming up."""
    deadline = time.monotonic() + 120
    while True:
        out = subprocess.run(job, env=env, timeout=600, capture_output=True, text=True)
        if "No available agent" not in out.stderr + out.stdout or time.monotonic() > deadline:
            return out
        time.sleep(2)


@pytest.fixture(scope="module")
def head_cluster():
    # Ray's unix sockets live under it and their paths must stay short (~107 bytes), so a long
    # $TMPDIR will not do; FER_RAY_TEST_SHORT_TMP picks another short directory.
    temp_dir = tempfile.mkdtemp(prefix="rj", dir=os.environ.get("FER_RAY_TEST_SHORT_TMP", "/tmp"))
    dash = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [
        RAY,
        "start",
        "--head",
        "--num-cpus=4",
        f"--port={_free_port()}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={_free_port()}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
        "--include-dashboard=true",
        # Explicit free ports: the defaults collide with any other Ray on the machine (e.g. the tests' own).
        *(
            f"--{name}-port={_free_port()}"
            for name in (
                "dashboard-agent-listen",
                "dashboard-agent-grpc",
                "runtime-env-agent",
                "metrics-export",
                "node-manager",
                "object-manager",
            )
        ),
    ]
    # its own session: every process of the cluster shares one process group, which kill_cluster stops
    subprocess.run(cmd, check=True, env=env, timeout=180, capture_output=True, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{dash}", env
    finally:
        left = kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"processes of the head cluster still running: {left}"


def test_submit_train_job(head_cluster, tmp_path):
    address, env = head_cluster
    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=6)
    storage = tmp_path / "runs"
    job = [
        RAY,
        "job",
        "submit",
        "--address",
        address,
        "--working-dir",
        str(REPO),
        "--",
        sys.executable,
        "jobs/train.py",
        "--data",
        str(data),
        "--epochs",
        "1",
        "--pretrain-epochs",
        "0",
        "--widths",
        "16,32",
        "--latent-channels",
        "16",
        "--batch-size",
        "32",
        "--no-augment",
        "--storage-path",
        str(storage),
        "--run-name",
        "job",
    ]
    out = _submit(job, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout
    meta = json.loads((storage / "job" / "artifact" / "artifact.json").read_text())
    assert meta["metrics"]["history"][0]["train_images"] == 42  # 6 per class, all of train


def test_submit_score_job(head_cluster, tmp_path):
    from fer_ray.inference.artifact import save_artifact
    from fer_ray.models.config import ModelConfig
    from fer_ray.models.registry import create_model

    address, env = head_cluster
    cfg = ModelConfig(widths=(16, 32), latent_channels=16)
    model = save_artifact(create_model(cfg), cfg, tmp_path / "model")
    out = tmp_path / "report"
    job = [
        RAY, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
        sys.executable, "jobs/score.py", str(REPO / "examples" / "images" / "crops"), "--whole-image",
        "--model", str(model), "--out", str(out),
    ]  # fmt: skip
    res = _submit(job, env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["images_in"] == summary["image_rows_out"] == 7
