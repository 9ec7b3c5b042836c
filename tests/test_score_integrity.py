"""Batch scoring outputs that stay right after reruns, faults and concurrent runs (issue 14).

Real parts only: a local Ray, moto's S3 server on 127.0.0.1, and for the transient fault a
loopback HTTP proxy in front of moto that answers the first reads of one object with 503
SlowDown, more often than botocore retries within one run.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fer_ray.data.fetch import TRANSIENT_PREFIX
from fer_ray.data.listing import list_images, list_images_and_settings
from fer_ray.data.s3 import S3Settings
from fer_ray.inference.artifact import ArtifactIntegrityError, save_artifact
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.score.aggregate import TRANSIENT_REASON
from fer_ray.score.config import ScoreConfig
from fer_ray.score.driver import MixedModelsError, score
from fer_ray.score.run_lock import OutputLocked, RunLock, _died_on_this_host, _process_start
from fer_ray.score.stages import FacePredictor, artifact_files
from fer_ray.score.store import LOCK_FILE, OutputStore
from tests.helpers_score import EXAMPLES, assert_exactly_once, copy_samples

CROPS = [
    "crops/astronaut.jpg",
    "crops/grace_hopper.jpg",
    "crops/astronaut_blurred.jpg",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path_factory.mktemp("other") / "model")


def _rows(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / "rows")  # what anyone reading rows/*.parquet directly gets


def _fer_tmp() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("fer_ray_*")}


# -- 2: a changed input's old rows are replaced -------------------------------------------------------
def test_changed_file_rerun_leaves_one_row_set(ray_local, tmp_path, model_dir):
    src, out = tmp_path / "in", tmp_path / "out"
    copy_samples(src, [*CROPS, "photos/group_of_three.jpg"])
    cfg = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir), images_per_task=1, batch_size=2)
    tmp_before = _fer_tmp()
    r1 = score(cfg)
    assert r1.summary["complete"] and len(_rows(out)) == 3 + 3

    # Replace the three-face photo by a one-face crop under the same name (new size and mtime).
    victim = src / "photos/group_of_three.jpg"
    shutil.copyfile(EXAMPLES / CROPS[0], victim)
    os.utime(victim, (time.time() + 5, time.time() + 5))
    r2 = score(cfg)
    assert (r2.run["images_scored"], r2.run["images_changed"], r2.run["rows_superseded"]) == (1, 1, 3)
    df = _rows(out)
    assert len(df) == 3 + 1 and df["path"].nunique() == 4
    assert_exactly_once(df)
    new = df[df["path"] == str(victim)]
    assert new["run_id"].tolist() == [r2.run["run_id"]] and new["size"].iloc[0] == victim.stat().st_size
    s = json.loads((out / "summary.json").read_text())
    assert s["complete"] and s["rows"] == 4 and s["faces"] == 4 and s["rows_not_in_inputs"] == 0
    assert s["duplicate_images"] == 0 and s["images_in"] == s["image_rows_out"] == 4

    # 8: no model copies (or anything else of ours) left in /tmp after the runs.
    assert _fer_tmp() - tmp_before == set()


def test_failed_model_load_leaves_no_temp_files(model_dir):
    files = artifact_files(model_dir)
    files["weights.pt"] = files["weights.pt"][:1000]  # damaged in transit
    before = _fer_tmp()
    with pytest.raises(ArtifactIntegrityError, match="weights.pt"):
        FacePredictor(files, run_id="r")
    assert _fer_tmp() - before == set()


# -- 3: transient S3 read errors are retried by the next run, and only they ----------------------------
class _FlakyProxy(ThreadingHTTPServer):
    """Forwards every request to moto; the first ``failures`` GETs of ``path`` get 503 SlowDown."""

    daemon_threads = True

    def __init__(self, upstream: str, path: str, failures: int):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream.removeprefix("http://")
        self.flaky_path, self.failures, self.gets = path, failures, 0
        self.count_lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        server: _FlakyProxy = self.server  # type: ignore[assignment]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "GET" and self.path.split("?")[0] == server.flaky_path:
            with server.count_lock:
                server.gets += 1
                fail = server.gets <= server.failures
            if fail:
                err = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Reduce your rate"
                err += b"</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(err)))
                self.end_headers()
                self.wfile.write(err)
                return
        conn = http.client.HTTPConnection(server.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "content-length")}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


def test_transient_s3_error_is_retried_by_the_next_run(ray_local, s3_server, tmp_path, model_dir):
    s3 = S3Settings.from_env().client()
    s3.create_bucket(Bucket="flaky")
    for name in CROPS:
        s3.put_object(Bucket="flaky", Key=f"in/{Path(name).name}", Body=(EXAMPLES / name).read_bytes())
    s3.put_object(Bucket="flaky", Key="in/broken.jpg", Body=b"\xff\xd8\xff\xe0 not really a jpeg")
    victim = f"in/{Path(CROPS[1]).name}"
    proxy = _FlakyProxy(s3_server, f"/flaky/{victim}", failures=4)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        # Endpoint and region only: workers take the (moto) credentials from their own AWS chain.
        settings = S3Settings(endpoint_url=proxy.url, region="us-east-1")
        cfg = ScoreConfig(inputs=("s3://flaky/in/",), out=str(tmp_path / "out"), model=str(model_dir), s3=settings)
        r1 = score(cfg)
        # the client's own attempts (3 with botocore's standard retries, 4 where the AWS SDK's default
        # retry strategy reads): every one of them throttled, since the proxy fails the first 4 reads
        assert 3 <= proxy.gets <= 4
        df = _rows(tmp_path / "out").set_index("path")
        row = df.loc[f"s3://flaky/{victim}"]
        assert row["status"] == "error" and row["error"].startswith(TRANSIENT_PREFIX) and "SlowDown" in row["error"]
        assert df.loc["s3://flaky/in/broken.jpg", "status"] == "error"
        assert not df.loc["s3://flaky/in/broken.jpg", "error"].startswith(TRANSIENT_PREFIX)
        assert r1.summary["errors_by_reason"][TRANSIENT_REASON] == 1

        r2 = score(cfg)  # any throttled read left fails once more, then a retry gets read 5
        assert (r2.run["images_scored"], r2.run["transient_retried"], r2.run["rows_superseded"]) == (1, 1, 1)
        assert proxy.gets == 5
        df = _rows(tmp_path / "out")
        assert_exactly_once(df)
        by_path = df.set_index("path")
        assert by_path.loc[f"s3://flaky/{victim}", "status"] == "ok"
        assert by_path.loc[f"s3://flaky/{victim}", "run_id"] == r2.run["run_id"]
        # The permanent error is not retried: its row is still the first run's.
        assert by_path.loc["s3://flaky/in/broken.jpg", "run_id"] == r1.run["run_id"]
        assert r2.summary["complete"] and TRANSIENT_REASON not in r2.summary["errors_by_reason"]
        assert score(cfg).run["images_scored"] == 0
    finally:
        proxy.shutdown()
        proxy.server_close()


# -- Also: list files in a bucket, credentials ----------------------------------------------------------
def test_list_file_in_a_bucket_cannot_name_local_paths(s3_server, tmp_path):
    local = tmp_path / "secret.jpg"
    shutil.copyfile(EXAMPLES / CROPS[0], local)
    s3 = S3Settings.from_env().client()
    s3.create_bucket(Bucket="lists")
    s3.put_object(Bucket="lists", Key="a/face.jpg", Body=local.read_bytes())
    body = f"face.jpg\n{local}\nfile://{local}\n".encode()
    s3.put_object(Bucket="lists", Key="a/list.txt", Body=body)

    df, settings = list_images_and_settings(["s3://lists/a/list.txt"])
    assert settings.access_key is None and settings.endpoint_url == s3_server  # nothing secret to ship to tasks
    by_path = df.set_index("path")["error"]
    assert by_path["s3://lists/a/face.jpg"] is None
    assert by_path[str(local)].startswith("refused local path") and "--allow-local" in by_path[str(local)]
    assert by_path[f"file://{local}"].startswith("refused local path")
    trusted = list_images(["s3://lists/a/list.txt"], allow_local=True)
    assert trusted["error"].isna().all() and str(local) in set(trusted["path"])


# -- 4: one run at a time per OUT -------------------------------------------------------------------------
def test_concurrent_runs_on_one_out(ray_local, tmp_path, model_dir):
    src, out = tmp_path / "in", tmp_path / "out"
    copy_samples(src, CROPS[:2])
    cfg = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir))
    results: dict[int, object] = {}
    start = threading.Barrier(2)

    def run(i: int, c: ScoreConfig) -> None:
        start.wait()
        try:
            results[i] = score(c)
        except Exception as e:  # collected and checked below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, cfg)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    refused = [r for r in results.values() if isinstance(r, OutputLocked)]
    done = [r for r in results.values() if not isinstance(r, Exception)]
    assert len(refused) == 1 and len(done) == 1, results
    assert "is in use by run" in str(refused[0]) and "--lock-wait" in str(refused[0])
    assert "\n" not in str(refused[0])
    assert not (out / LOCK_FILE).exists()  # released

    # With --lock-wait the second run waits for the first, then finds nothing left to score.
    copy_samples(src, CROPS[2:])
    waiting = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir), lock_wait_s=240)
    results.clear()
    start.reset()
    threads = [threading.Thread(target=run, args=(i, waiting)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    assert sorted(r.run["images_scored"] for r in results.values()) == [0, 1]
    df = _rows(out)
    assert len(df) == 3 and len(list((out / "runs").glob("*.json"))) == 3
    assert_exactly_once(df)


def test_stale_lock_is_taken_over_and_a_live_one_stops_the_cli(ray_local, tmp_path, model_dir, caplog, capsys):
    from jobs.score import main

    src, out = tmp_path / "in", tmp_path / "out"
    copy_samples(src, CROPS[:1])
    out.mkdir()
    dead = {"owner": "dead-run", "host": "gone", "pid": 999999, "heartbeat": time.time() - 3600}
    (out / LOCK_FILE).write_text(json.dumps(dead))
    with caplog.at_level(logging.WARNING, logger="fer_ray.score.run_lock"):
        res = score(ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir)))
    assert res.run["lock_taken_over"]["owner"] == "dead-run" and res.summary["complete"]
    assert any("taking over the lock" in r.getMessage() and "dead-run" in r.getMessage() for r in caplog.records)
    assert not (out / LOCK_FILE).exists()

    with RunLock(OutputStore(str(out)), "live-run").acquire():
        code = main([str(src), "--out", str(out), "--model", str(model_dir)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fer_ray: error:")]
    assert code == 2 and len(err) == 1 and "in use by run live-run" in err[0], err


def test_lock_of_a_killed_run_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    """kill -9 or the OOM killer leaves a fresh heartbeat behind; the rerun need not wait stale_s for it."""
    import signal
    import socket
    import subprocess
    import sys

    store = OutputStore(str(tmp_path / "out"))
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    record = {"owner": "killed-run", "host": socket.gethostname(), "pid": victim.pid, "heartbeat": time.time()}
    record["pid_start"] = _process_start(victim.pid)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / LOCK_FILE).write_text(json.dumps(record))
    with pytest.raises(OutputLocked, match="in use by run killed-run"):  # alive: its lock holds
        RunLock(store, "rerun", stale_s=300).acquire()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="fer_ray.score.run_lock"):
        lock = RunLock(store, "rerun", stale_s=300).acquire()
    assert time.monotonic() - t0 < 5 and lock.taken_over["owner"] == "killed-run"
    assert any("is no longer running" in r.getMessage() for r in caplog.records)
    lock.release()
    # A pid reused by a later process is not the run that locked: its start time differs.
    record.update(pid=os.getpid(), pid_start=-1)
    assert not _died_on_this_host(record)  # our own pid is never taken for dead
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record.update(pid=other.pid, pid_start=(_process_start(other.pid) or 0) + 1)
        assert _died_on_this_host(record)
        record.update(host="another-host")
        assert not _died_on_this_host(record)  # another host's pids say nothing here
    finally:
        other.kill()
        other.wait()


def test_lock_on_s3_is_exclusive_beats_and_expires(s3_server):
    S3Settings.from_env().client().create_bucket(Bucket="locks")
    store = OutputStore("s3://locks/reports/x")
    first = RunLock(store, "run-a", stale_s=60, heartbeat_s=0.5).acquire()
    try:
        with pytest.raises(OutputLocked, match="in use by run run-a"):
            RunLock(store, "run-b", stale_s=60).acquire()
        beat = first.read()["heartbeat"]
        deadline = time.time() + 30
        while first.read()["heartbeat"] == beat and time.time() < deadline:
            time.sleep(0.2)
        assert first.read()["heartbeat"] > beat and first.read()["owner"] == "run-a"
    finally:
        first.release()
    assert first.read() is None

    # A run that died keeps its lock only until its heartbeat is stale_s old.
    dead = RunLock(store, "run-dead")
    record = dead._record()
    record["heartbeat"] -= 3600
    assert dead._put(record, exclusive=True) and not dead._put(record, exclusive=True)  # exclusive: If-None-Match
    taker = RunLock(store, "run-c", stale_s=60).acquire()
    assert taker.taken_over["owner"] == "run-dead" and taker.read()["owner"] == "run-c"
    taker.release()
    assert taker.read() is None


# -- 5: one model per OUT unless asked ------------------------------------------------------------------
def test_mixed_models_refused_unless_allowed(ray_local, tmp_path, model_dir, other_model_dir):
    from fer_ray.inference.export import export_engines

    src, out = tmp_path / "in", tmp_path / "out"
    copy_samples(src, CROPS[:2])
    base = {"inputs": (str(src),), "out": str(out)}
    score(ScoreConfig(**base, model=str(model_dir)))
    files = sorted(p.name for p in (out / "rows").iterdir())

    copy_samples(src, CROPS[2:])  # something new to score, so a mix would really happen
    with pytest.raises(MixedModelsError, match="--allow-mixed-models"):
        score(ScoreConfig(**base, model=str(other_model_dir)))
    exported = tmp_path / "exported"
    shutil.copytree(model_dir, exported)
    export_engines(exported, np.random.default_rng(0).integers(0, 256, (32, 48, 48), dtype=np.uint8))
    with pytest.raises(MixedModelsError, match=r"\+onnx"):  # the same weights on another engine
        score(ScoreConfig(**base, model=str(exported), engine="onnx"))
    assert sorted(p.name for p in (out / "rows").iterdir()) == files  # nothing written or deleted

    res = score(ScoreConfig(**base, model=str(other_model_dir), allow_mixed_models=True))
    by_model = res.summary["by_model"]
    assert len(by_model) == 2 and sorted(m["images"] for m in by_model.values()) == [1, 2]
    assert sum(m["faces"] for m in by_model.values()) == res.summary["faces"] == 3
    assert "By model" in (out / "report.html").read_text()
