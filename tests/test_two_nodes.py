"""A real two-node Ray cluster on one machine: training spread over both nodes and batch scoring,
both submitted with `ray job submit`, with everything they produce in S3 (moto on 127.0.0.1).

Two nodes sharing the same cores prove correctness (placement, shared storage, job env), not speed-up.
Each node advertises 2 logical CPUs: one for its training worker and one for Ray Data (a one-CPU
node whose worker takes it hangs the data pipeline, see fer_ray.runtime).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

import pytest

from tests.fer_fixtures import write_tiny_fer_parquet
from tests.ray_processes import kill_cluster
from tests.test_jobs_submit import RAY, REPO, _free_port, _submit
from tests.test_runtime import probe_ray

pytestmark = pytest.mark.slow

BUCKET = "twonodes"
# Ports each node needs for itself: Ray's defaults (e.g. the dashboard agent's 52365) clash on one host.
NODE_PORTS = (
    "node-manager",
    "object-manager",
    "runtime-env-agent",
    "dashboard-agent-listen",
    "dashboard-agent-grpc",
    "metrics-export",
)


@dataclass(frozen=True)
class Cluster:
    dashboard: str  # http://127.0.0.1:<port>: the Jobs API and state API
    root: str  # RAY_TMPDIR under which the head records its address (what `--address auto` finds)
    env: dict[str, str]


def _ray_start(args: list[str], env: dict[str, str]) -> None:
    # its own session: each node's processes share one process group, which kill_cluster stops
    out = subprocess.run(
        [RAY, "start", *args], env=env, timeout=180, capture_output=True, text=True, start_new_session=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args[:2])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.util.state import list_nodes

    # Short: Ray's unix sockets live under it (~107 bytes max), see tests/test_jobs_submit.py.
    root = tempfile.mkdtemp(prefix="tn", dir=os.environ.get("FER_RAY_TEST_SHORT_TMP", "/tmp"))
    gcs, dash = _free_port(), _free_port()
    # The nodes get no S3 settings: the jobs bring theirs in their runtime_env, as on a real cluster.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    common = ["--num-cpus=2", "--num-gpus=0", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        _ray_start(
            [
                "--head",
                f"--port={gcs}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--ray-client-server-port={_free_port()}",
                f"--temp-dir={root}/ray",
                *common,
                *(f"--{name}-port={_free_port()}" for name in NODE_PORTS),
            ],
            env,
        )
        _ray_start(
            [
                f"--address=127.0.0.1:{gcs}",
                f"--temp-dir={root}/node2",
                *common,
                *(f"--{name}-port={_free_port()}" for name in NODE_PORTS),
            ],
            env,
        )
        address = f"http://127.0.0.1:{dash}"
        deadline = time.monotonic() + 60
        while len(list_nodes(address=address, filters=[("state", "=", "ALIVE")])) < 2:
            assert time.monotonic() < deadline, "the second node never joined the head"
            time.sleep(1)
        yield Cluster(address, root, env)
    finally:
        left = kill_cluster(root)  # only this cluster's processes: `ray stop` would stop every Ray here
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the two-node cluster still running: {left}"


@pytest.fixture(scope="module")
def bucket(s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket=BUCKET)
    return client


def _submit_job(cluster: Cluster, s3_endpoint: str, name: str, entrypoint: list[str]) -> tuple[str, str]:
    """``ray job submit`` with the runtime_env a cluster built from our image needs; (job id, output)."""
    runtime_env = {
        "env_vars": {
            "RAY_USAGE_STATS_ENABLED": "0",
            "AWS_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    }
    job_id = f"{name}-{uuid.uuid4().hex[:8]}"
    cmd = [
        RAY, "job", "submit", "--address", cluster.dashboard, "--submission-id", job_id,
        "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", sys.executable, *entrypoint,
    ]  # fmt: skip
    out = _submit(cmd, cluster.env)
    return job_id, out.stdout + out.stderr


def _keys(client, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_spread_training_and_scoring_jobs(two_nodes, bucket, s3_server, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_actors, list_nodes

    from fer_ray.inference.artifact import load_artifact
    from fer_ray.storage import download_dir

    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=6)
    bucket.upload_file(str(data), BUCKET, "data/tiny.parquet")
    crops = sorted(p for p in (REPO / "examples" / "images" / "crops").iterdir() if p.is_file())
    for p in crops:
        bucket.upload_file(str(p), BUCKET, f"crops/{p.name}")
    jobs = JobSubmissionClient(two_nodes.dashboard)

    train_id, log = _submit_job(
        two_nodes,
        s3_server,
        "train",
        [
            "jobs/train.py", "--data", f"s3://{BUCKET}/data/tiny.parquet", "--epochs", "1", "--pretrain-epochs", "0",
            "--widths", "16,32", "--latent-channels", "16", "--batch-size", "32", "--no-augment",
            "--workers", "2", "--placement-strategy", "SPREAD", "--cpus-per-worker", "1", "--torch-threads", "1",
            "--storage-path", f"s3://{BUCKET}/runs", "--run-name", "two",
        ],
    )  # fmt: skip
    assert jobs.get_job_status(train_id) == JobStatus.SUCCEEDED, log[-4000:]
    nodes = {n.node_id for n in list_nodes(address=two_nodes.dashboard, filters=[("state", "=", "ALIVE")])}
    workers = list_actors(address=two_nodes.dashboard, filters=[("class_name", "=", "RayTrainWorker")], detail=True)
    worker_nodes = {a.node_id for a in workers}
    assert len(workers) == 2 and worker_nodes == nodes, (nodes, [(a.actor_id, a.node_id) for a in workers])

    keys = _keys(bucket, "runs/two/")
    assert {"runs/two/train_config.json", "runs/two/history.json", "runs/two/artifact/artifact.json"} <= keys, keys
    model = load_artifact(download_dir(f"s3://{BUCKET}/runs/two/artifact", tmp_path / "model"))
    assert model.meta["metrics"]["history"][0]["train_images"] == 42  # 6 per class: both shards counted

    score_id, log = _submit_job(
        two_nodes,
        s3_server,
        "score",
        [
            "jobs/score.py", f"s3://{BUCKET}/crops/", "--whole-image", "--model", str(tmp_path / "model"),
            "--out", f"s3://{BUCKET}/reports/crops",
        ],
    )  # fmt: skip
    assert jobs.get_job_status(score_id) == JobStatus.SUCCEEDED, log[-4000:]
    summary = json.loads(bucket.get_object(Bucket=BUCKET, Key="reports/crops/summary.json")["Body"].read())
    assert summary["complete"] and summary["images_in"] == summary["image_rows_out"] == 7
    assert any(k.endswith(".parquet") for k in _keys(bucket, "reports/crops/"))
    print(
        f"\ntwo-node run: nodes {sorted(nodes)}; training workers on {sorted(worker_nodes)}; "
        f"{train_id} {jobs.get_job_status(train_id)}; {score_id} {jobs.get_job_status(score_id)}; "
        f"artifact s3://{BUCKET}/runs/two/artifact; report s3://{BUCKET}/reports/crops"
    )


def test_address_auto_joins_the_running_cluster_and_no_address_stays_private(two_nodes):
    """With a cluster running on the machine, ``--address auto`` joins it (ignoring ``--ray-cpus``);
    without an address a job starts its own Ray instead of failing on ``num_cpus``."""
    env = {**two_nodes.env, "RAY_TMPDIR": two_nodes.root}  # where the head recorded its address
    joined, log = probe_ray(env, address="auto", num_cpus=3)
    assert joined == {"cpus": 4.0, "nodes": 2}, log[-2000:]
    assert "joining the Ray cluster at auto" in log
    private, log = probe_ray(env, num_cpus=3)
    assert private == {"cpus": 3.0, "nodes": 1}, log[-2000:]
    assert "starting a private local Ray with 3 logical CPUs" in log
