"""Run outputs on a local disk and in a bucket (moto S3 on 127.0.0.1) through fer_ray.storage."""

from __future__ import annotations

import pytest

from fer_ray import storage


@pytest.fixture
def bucket(s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    name = "store"
    client.create_bucket(Bucket=name)
    yield f"s3://{name}"
    for o in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=o["Key"])
    client.delete_bucket(Bucket=name)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_text_and_dir_round_trip(where, tmp_path, request):
    base = str(tmp_path / "runs") if where == "local" else request.getfixturevalue("bucket") + "/runs"
    run = storage.join(base, "r1")
    assert not storage.exists(storage.join(run, "train_config.json"))
    storage.write_text(storage.join(run, "train_config.json"), '{"a": 1}\n')
    assert storage.exists(storage.join(run, "train_config.json"))
    assert storage.read_text(storage.join(run, "train_config.json")) == '{"a": 1}\n'

    src = tmp_path / "artifact"
    (src / "sub").mkdir(parents=True)
    (src / "artifact.json").write_text("{}")
    (src / "sub" / "weights.pt").write_bytes(b"\x00\x01" * 1000)
    target = storage.upload_dir(src, storage.join(run, "artifact"))
    back = storage.download_dir(target, tmp_path / "back")
    assert (back / "artifact.json").read_text() == "{}"
    assert (back / "sub" / "weights.pt").read_bytes() == b"\x00\x01" * 1000
    local = storage.local_artifact(target)
    assert (local / "sub" / "weights.pt").is_file()
    if where == "s3":
        assert local != back and str(tmp_path) not in str(local)  # a fresh temp dir, removed at exit

    with pytest.raises(FileNotFoundError, match="missing.json not found"):
        storage.read_text(storage.join(run, "missing.json"))
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        storage.download_dir(storage.join(run, "nothing_here"), tmp_path / "x")


def test_join_and_pass_through(tmp_path):
    assert storage.join("s3://b/p/", "run", "/artifact") == "s3://b/p/run/artifact"
    assert storage.join(tmp_path, "run") == tmp_path / "run"
    assert storage.local_artifact(None) is None  # the shipped model
    assert storage.local_artifact(str(tmp_path)) == tmp_path
