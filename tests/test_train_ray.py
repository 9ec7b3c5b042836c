"""Ray Train end to end on a real local Ray: 2 workers, resume after a stop, restart after a crash."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from fer_ray.inference.artifact import load_artifact
from fer_ray.models.config import ModelConfig
from fer_ray.runtime import RayConfig
from fer_ray.train.checkpoints import STATE
from fer_ray.train.config import TrainConfig
from fer_ray.train.ray_train import export_run, train
from tests.fer_fixtures import write_tiny_fer_parquet

pytestmark = pytest.mark.slow

SMALL = ModelConfig(widths=(16, 32), latent_channels=16)


@pytest.fixture(scope="module")
def tiny_parquet(tmp_path_factory):
    return write_tiny_fer_parquet(tmp_path_factory.mktemp("data") / "tiny.parquet", n_per_class=10)


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    base = dict(
        model=SMALL,
        data=None if data is None else str(data),
        epochs=2,
        pretrain_epochs=0,
        batch_size=32,
        lr=3e-3,
        warmup_epochs=0.5,
        augment=None,
        storage_path=str(tmp_path / "runs"),
        run_name="t",
        workers=1,
        torch_threads=1,
        ray=RayConfig(),
        shuffle_buffer=256,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_two_workers_loss_falls(ray_local, tmp_path, tiny_parquet, request):
    """Real FER2013 (a few hundred images) when present, else the synthetic set."""
    try:
        data, limit = request.getfixturevalue("fer2013_path"), 448
    except pytest.skip.Exception:
        data, limit = tiny_parquet, None
    cfg = _cfg(
        tmp_path,
        data,
        workers=2,
        epochs=3,
        pretrain_epochs=1,
        limit=limit,
        batch_size=64,
        ema_decay=0.9,
        teachers=("cnn_attn",),
        teacher_engine="onnx-int8",
    )
    res = train(cfg)
    joint = [h for h in res.history if h["phase"] == "joint"]
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3]
    assert res.history[0]["phase"] == "pretrain"
    assert joint[-1]["train_loss"] < joint[0]["train_loss"]
    assert res.history[-1]["train_images"] == sum(res.counts["train"])  # both shards counted
    assert res.history[-1]["val_images"] == sum(res.counts["val"])
    assert "val_acc_raw" in res.history[-1]  # the weight average (of the DDP-wrapped model) was validated too
    assert res.counts["teachers"] == [load_artifact("cnn_attn", engine="onnx-int8").model_id]  # engine recorded
    art = load_artifact(res.artifact_dir)
    assert art.meta["metrics"]["best"]["val_acc"] == max(h["val_acc"] for h in res.history)
    assert art.meta["data_fingerprint"].startswith("sha256:")
    assert art.meta["metrics"]["counts"]["source"] == str(data)  # as the user gave it


def test_default_source_is_named_by_the_data_root(ray_local, tmp_path, tiny_parquet, monkeypatch):
    """Artifacts travel: the default data is recorded relative to the data root, not this machine's path."""
    from fer_ray.data.sources import fingerprint
    from fer_ray.train.ray_train import training_data

    root = tmp_path / "root"
    (root / "fer2013").mkdir(parents=True)
    shutil.copy(tiny_parquet, root / "fer2013" / "fer2013.parquet")
    monkeypatch.setenv("FER_RAY_DATA", str(root))
    counts = training_data(_cfg(tmp_path, None)).counts
    assert counts["source"] == "<data root>/fer2013/fer2013.parquet"
    assert str(tmp_path) not in json.dumps(counts)
    assert counts["fingerprint"] == fingerprint(tiny_parquet)  # the bytes, wherever they live


def _adam_steps(run_dir) -> tuple[int, int]:
    """(epoch, AdamW step count) of the latest checkpoint in a run dir."""
    latest = max((p for p in run_dir.glob("checkpoint_*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    state = torch.load(latest / STATE, weights_only=False)
    return state["epoch"], int(next(iter(state["optimizer"]["state"].values()))["step"])


def test_stop_then_rerun_resumes(ray_local, tmp_path, tiny_parquet, caplog):
    first = train(_cfg(tmp_path, tiny_parquet, epochs=1))
    assert [h["epoch"] for h in first.history] == [0]
    epoch, steps_after_1 = _adam_steps(first.run_dir)
    assert epoch == 0 and steps_after_1 > 0
    # Same run name, more epochs: continues at epoch 1 with the optimizer state restored.
    with caplog.at_level("INFO", logger="fer_ray.train.ray_train"):
        second = train(_cfg(tmp_path, tiny_parquet, epochs=2))
    assert [h["epoch"] for h in second.history] == [0, 1]
    # the driver's progress (read from history.json while fit() runs): only the epoch this run trained
    lines = [m for m in caplog.messages if m.startswith("epoch ")]
    assert len(lines) == 1 and lines[0].startswith("epoch 2/2 joint: train acc "), lines
    assert second.history[0] == first.history[0]  # epoch 0 was not redone
    epoch, steps = _adam_steps(second.run_dir)
    assert epoch == 1 and steps == 2 * steps_after_1
    # `jobs/train.py --export-only`: the same artifact again, from the run dir alone.
    trained = load_artifact(second.artifact_dir)
    shutil.rmtree(second.artifact_dir)
    exported = export_run(str(tmp_path / "runs"), "t")
    assert exported.history == second.history
    again = load_artifact(exported.artifact_dir)
    assert again.meta["weights_sha256"] == trained.meta["weights_sha256"]
    assert again.model_config == trained.model_config


def test_crashed_worker_restarts_from_checkpoint(ray_local, tmp_path, tiny_parquet):
    cfg = _cfg(tmp_path, tiny_parquet, epochs=3, batch_size=16, crash_once_at_epoch=1, max_failures=1)
    res = train(cfg)
    assert (res.run_dir / ".crashed_once").exists()  # the worker really died mid-epoch 1
    assert [h["epoch"] for h in res.history] == [0, 1, 2]
    saved = json.loads((res.run_dir / "history.json").read_text())
    assert [h["epoch"] for h in saved] == [0, 1, 2]


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        # equal accuracy: the lower validation loss wins, whatever the epoch order
        ([(5, 0.58, 1.10), (7, 0.58, 1.05), (6, 0.57, 0.90)], 7),
        ([(7, 0.58, 1.10), (5, 0.58, 1.05)], 5),
        # equal accuracy and loss: the later epoch wins
        ([(5, 0.58, 1.0), (7, 0.58, 1.0)], 7),
        # accuracy first
        ([(2, 0.60, 1.5), (9, 0.59, 0.8)], 2),
    ],
)
def test_select_checkpoint_breaks_ties(metrics, expected):
    from fer_ray.train.checkpoints import select_checkpoint

    candidates = [(f"ckpt{e}", {"epoch": e, "val_acc": a, "val_loss": loss}) for e, a, loss in metrics]
    assert select_checkpoint(candidates) == f"ckpt{expected}"
    assert select_checkpoint([]) is None


def test_run_outputs_on_s3_resume_and_export(ray_local, s3_server, tmp_path, tiny_parquet, monkeypatch):
    """``--storage-path s3://...`` (a real S3 protocol, moto on 127.0.0.1): checkpoints, the saved
    config, the history and the artifact all land in the bucket (a submitted job's working dir is
    deleted with the job), a rerun resumes from them and ``--export-only`` exports from them."""
    import boto3

    from fer_ray.storage import local_artifact

    client = boto3.client("s3", endpoint_url=s3_server)
    client.create_bucket(Bucket="ckpt")
    monkeypatch.chdir(tmp_path)  # the job's working dir: nothing may be left there

    def keys() -> set[str]:
        return {o["Key"] for o in client.list_objects_v2(Bucket="ckpt", Prefix="runs/t/").get("Contents", [])}

    def history() -> list[dict]:
        return json.loads(client.get_object(Bucket="ckpt", Key="runs/t/history.json")["Body"].read())

    storage = "s3://ckpt/runs"
    first = train(_cfg(tmp_path, tiny_parquet, epochs=1, storage_path=storage))
    assert any("/checkpoint_" in k and k.endswith(STATE) for k in keys()), keys()
    assert {"runs/t/train_config.json", "runs/t/history.json", "runs/t/artifact/artifact.json"} <= keys()
    assert (first.run_dir, first.artifact_dir) == ("s3://ckpt/runs/t", "s3://ckpt/runs/t/artifact")
    assert not (tmp_path / "runs").exists()
    assert [h["epoch"] for h in history()] == [0]

    second = train(_cfg(tmp_path, tiny_parquet, epochs=2, storage_path=storage))
    assert [h["epoch"] for h in second.history] == [0, 1]
    assert second.history[0] == first.history[0]  # resumed from the bucket, epoch 0 not redone
    assert history() == second.history
    trained = load_artifact(local_artifact(second.artifact_dir))  # what jobs/evaluate.py does with s3://
    assert trained.meta["metrics"]["history"] == second.history

    for key in [k for k in keys() if k.startswith("runs/t/artifact/")]:
        client.delete_object(Bucket="ckpt", Key=key)
    exported = export_run(storage, "t")  # `jobs/train.py --export-only`, from the bucket alone
    assert "runs/t/artifact/weights.pt" in keys()
    again = load_artifact(local_artifact(exported.artifact_dir))
    assert again.meta["weights_sha256"] == trained.meta["weights_sha256"]
    with pytest.raises(FileNotFoundError, match="is 'nope' a run under"):
        export_run(storage, "nope")
