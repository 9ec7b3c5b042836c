"""The plain-PyTorch back end: same recipe and artifact as Ray Train, in one process, with no Ray at all."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fer_ray.inference.artifact import load_artifact
from fer_ray.models.config import ModelConfig
from fer_ray.train import checkpoints
from fer_ray.train.checkpoints import STATE
from fer_ray.train.config import TrainConfig
from fer_ray.train.plain import BEST, LATEST, export_plain, train_plain
from fer_ray.train.recipe import lr_factor
from tests.fer_fixtures import write_tiny_fer_parquet

SMALL = ModelConfig(name="cnn_attn", widths=(8, 16), latent_channels=8)


@pytest.fixture(scope="module")
def tiny_parquet(tmp_path_factory):
    return write_tiny_fer_parquet(tmp_path_factory.mktemp("data") / "tiny.parquet", n_per_class=6)


def _cfg(tmp_path, data, **kw) -> TrainConfig:
    base = dict(
        model=SMALL,
        data=str(data),
        epochs=2,
        pretrain_epochs=0,
        batch_size=16,
        lr=3e-3,
        scheduler="onecycle",
        warmup_epochs=0.5,
        storage_path=str(tmp_path / "runs"),
        run_name="p",
        backend="plain",
        torch_threads=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_trains_and_exports_without_ray(tmp_path, tiny_parquet):
    """Run in a child process where ``import ray`` fails: a GPU box without Ray must be able to train."""
    cfg = _cfg(tmp_path, tiny_parquet)
    code = textwrap.dedent(
        f"""
        import sys, json
        sys.modules["ray"] = None  # any import of ray now raises ImportError
        from fer_ray.train.config import TrainConfig
        from fer_ray.train.plain import train_plain
        res = train_plain(TrainConfig.from_dict(json.loads({json.dumps(json.dumps(cfg.to_dict()))})))
        print(res.artifact_dir)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "p"
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    art = load_artifact(run / "artifact")
    assert art.model_config == SMALL
    assert art.meta["train_config"]["backend"] == "plain"
    assert art.meta["metrics"]["counts"]["train"] == [6] * 7


def test_the_train_job_runs_without_ray_on_the_plain_back_end(tmp_path, tiny_parquet):
    """``python jobs/train.py --backend plain`` on a machine without Ray (a GPU box with PyTorch only): the job's
    job asks for Ray only where it needs it, and says so in one line where it does."""
    job = str(Path(__file__).resolve().parents[1] / "jobs" / "train.py")
    flags = ["--arch", "cnn_attn", "--widths", "8,16", "--data", str(tiny_parquet), "--epochs", "1"]
    flags += ["--batch-size", "16", "--run-name", "j", "--storage-path", str(tmp_path / "runs"), "--torch-threads", "1"]
    code = "import runpy, sys; sys.modules['ray'] = None; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
    code += "run_name='__main__')"  # any import of ray raises ImportError, and find_spec finds none

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code, job, *flags, *extra], capture_output=True, text=True, timeout=300
        )

    plain = run("--backend", "plain")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert load_artifact(tmp_path / "runs" / "j" / "artifact").meta["train_config"]["backend"] == "plain"
    # a --config file's back end counts as the flag's does (the Ray-free check cannot read it before parsing)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("backend: plain\n")
    assert run("--config", str(recipe), "--run-name", "c").returncode == 0
    assert (tmp_path / "runs" / "c" / "artifact" / "weights.pt").exists()
    with_ray = run("--backend", "ray", "--run-name", "k")
    lines = with_ray.stderr.strip().splitlines()
    assert with_ray.returncode == 2 and len(lines) == 1 and "has no ray" in lines[0] and "--backend plain" in lines[0]


def test_resume_with_longer_horizon_records_a_segment(tmp_path, tiny_parquet):
    train_plain(_cfg(tmp_path, tiny_parquet, epochs=1))
    first = torch.load(tmp_path / "runs" / "p" / LATEST / STATE, weights_only=False)
    assert first["epoch"] == 0
    res = train_plain(_cfg(tmp_path, tiny_parquet, epochs=2))
    assert [h["epoch"] for h in res.history] == [0, 1]  # epoch 0 was not trained again
    segments = load_artifact(res.artifact_dir).meta["metrics"]["segments"]
    assert [(s["start_epoch"], s["train_config"]["epochs"]) for s in segments] == [(0, 1), (1, 2)]
    # the best checkpoint is the one exported, and export alone reproduces it
    best = torch.load(tmp_path / "runs" / "p" / BEST / STATE, weights_only=False)
    again = export_plain(tmp_path / "runs" / "p")
    assert again.best_metrics == best["history"][-1]


def test_weight_average_is_validated_exported_and_resumed(tmp_path, tiny_parquet):
    run = tmp_path / "runs" / "p"
    train_plain(_cfg(tmp_path, tiny_parquet, epochs=1, ema_decay=0.9))
    first = torch.load(run / LATEST / STATE, weights_only=False)
    steps = int(next(iter(first["optimizer"]["state"].values()))["step"])
    assert first["ema"]["updates"] == steps > 0
    res = train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, ema_decay=0.9))
    latest = torch.load(run / LATEST / STATE, weights_only=False)
    assert latest["ema"]["updates"] == 2 * steps  # the average went on from where it stopped
    assert all({"val_acc", "val_acc_raw", "val_loss_raw"} <= set(h) for h in res.history)
    # the artifact holds the averaged weights of the best epoch, which its val_acc measured
    best = torch.load(run / BEST / STATE, weights_only=False)
    art = load_artifact(res.artifact_dir, engine="torch")
    for k, v in art.model.state_dict().items():
        assert torch.equal(v, best["ema"]["weights"][k])
    assert any(not torch.equal(v, best["model"][k]) for k, v in art.model.state_dict().items())
    assert art.meta["metrics"]["best"]["val_acc"] == max(h["val_acc"] for h in res.history)
    with pytest.raises(ValueError, match="ema_decay"):  # a recipe change, as any other
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=3, ema_decay=0.99))


def test_plain_back_end_refuses_what_it_cannot_do(tmp_path, tiny_parquet):
    with pytest.raises(ValueError, match="--backend ray"):
        train_plain(_cfg(tmp_path, tiny_parquet, workers=2))
    with pytest.raises(ValueError, match="Parquet only"):
        train_plain(_cfg(tmp_path, tmp_path))


def test_onecycle_rises_from_a_25th_then_anneals_to_nearly_zero():
    cfg = TrainConfig(model=SMALL, epochs=10, scheduler="onecycle", warmup_epochs=1.5)
    f = lr_factor(cfg, steps_per_epoch=100)
    assert f(0) == pytest.approx(1 / 25)
    assert f(150) == pytest.approx(1.0)
    assert f(75) == pytest.approx((1 + 1 / 25) / 2)
    assert f(999) < 1e-3 and f(5000) == pytest.approx(1 / 25e4)  # clamped past the horizon
    assert all(f(s) >= f(s + 1) for s in range(150, 1000))


def test_resume_refuses_a_changed_model_or_recipe(tmp_path, tiny_parquet):
    train_plain(_cfg(tmp_path, tiny_parquet, epochs=1))
    wider = ModelConfig(name="cnn_attn", widths=(8, 32), latent_channels=8)
    with pytest.raises(ValueError, match=r"model\.widths.*new --run-name"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, model=wider))
    with pytest.raises(ValueError, match="label_smoothing"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, label_smoothing=0.0))
    with pytest.raises(ValueError, match="shorter"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=0))


def test_a_run_saved_before_a_setting_existed_resumes(tmp_path, tiny_parquet):
    """A run started by an older fer_ray (its train_config.json lacks a setting added since) resumes
    unchanged when the new setting keeps its default, and refuses a non-default value as any recipe change."""
    train_plain(_cfg(tmp_path, tiny_parquet, epochs=1))
    saved = tmp_path / "runs" / "p" / "train_config.json"
    record = json.loads(saved.read_text())
    for config in (record["train_config"], *(seg["train_config"] for seg in record["segments"])):
        del config["recon_schedule"]  # as written before the setting existed
    saved.write_text(json.dumps(record))
    train_plain(_cfg(tmp_path, tiny_parquet, epochs=1))  # the same command: resumes, nothing to add
    assert len(json.loads(saved.read_text())["segments"]) == 1
    with pytest.raises(ValueError, match="recon_schedule"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, recon_schedule="cosine"))


def test_reconstruction_weight_schedules(tmp_path, tiny_parquet):
    cfg = TrainConfig(model=ModelConfig(name="ae_cnn_attn"), epochs=5, pretrain_epochs=1, recon_weight=0.2)
    assert [cfg.recon_weight_at(e) for e in range(6)] == [0.2] * 6
    linear = [TrainConfig(**{**cfg.__dict__, "recon_schedule": "linear"}).recon_weight_at(e) for e in range(1, 6)]
    assert linear == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])
    cosine = [TrainConfig(**{**cfg.__dict__, "recon_schedule": "cosine"}).recon_weight_at(e) for e in range(1, 6)]
    assert cosine[0] == pytest.approx(0.2) and cosine[2] == pytest.approx(0.1) and cosine[-1] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    # the weight each epoch trained with is in its history row
    ae = ModelConfig(name="ae_cnn_attn", widths=(8, 16), latent_channels=8)
    train_plain(_cfg(tmp_path, tiny_parquet, model=ae, epochs=3, recon_weight=0.3, recon_schedule="linear"))
    history = json.loads((tmp_path / "runs" / "p" / "history.json").read_text())
    assert [h["recon_weight"] for h in history] == pytest.approx([0.3, 0.15, 0.0])


class _Payload:
    def __reduce__(self):
        return (print, ("pickle payload ran",))


def test_a_checkpoint_carrying_code_is_refused(tmp_path, tiny_parquet, capsys):
    """Checkpoints may come from shared storage: loading them must never run code (weights_only)."""
    train_plain(_cfg(tmp_path, tiny_parquet, epochs=1))
    latest = tmp_path / "runs" / "p" / LATEST / STATE
    state = torch.load(latest, weights_only=True)
    state["history"].append({"evil": _Payload()})
    torch.save(state, latest)
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=2))
    assert "pickle payload ran" not in capsys.readouterr().out


def test_a_run_can_start_from_a_trained_artifact_and_records_which(tmp_path, tiny_parquet, monkeypatch):
    first = load_artifact(train_plain(_cfg(tmp_path, tiny_parquet, epochs=1, run_name="a")).artifact_dir)
    loads = []
    monkeypatch.setattr(checkpoints, "load_artifact", lambda *a, **k: loads.append(a) or load_artifact(*a, **k))
    # a near-zero learning rate: the fine-tuned weights are the starting artifact's, not a fresh draw
    res = train_plain(_cfg(tmp_path, tiny_parquet, epochs=1, run_name="b", lr=1e-9, init_from=str(first.path)))
    assert len(loads) == 1  # read once, for both its id in the record and its weights
    tuned = load_artifact(res.artifact_dir)
    start, after = first.model.state_dict(), tuned.model.state_dict()
    convs = [k for k in start if k.endswith("weight") and start[k].dim() == 4]
    assert convs and all(torch.allclose(start[k], after[k], atol=1e-6) for k in convs)
    assert tuned.meta["metrics"]["counts"]["init_from"] == first.model_id
    assert tuned.meta["train_config"]["init_from"] == "artifact"  # by directory name: no path of this machine
    # a resume must start from the same weights; another architecture is one clear error
    seed1 = train_plain(_cfg(tmp_path, tiny_parquet, epochs=1, run_name="a1", seed=1)).artifact_dir
    with pytest.raises(ValueError, match="init_from"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, run_name="b", lr=1e-9, init_from=str(seed1)))
    with pytest.raises(ValueError, match=r"--init-from cnn_attn: .*widths \[32, 64, 128, 256\] vs \[8, 16\]"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=1, run_name="c", init_from="cnn_attn"))
