"""Ray Tune sweeps: per-model spaces, joint-epoch ASHA, stratified subsets, outputs, --config, interrupt/restore.

The sweeps are real: a local Ray, Ray Train trials forwarding reports to Tune, ASHA deciding.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_ray.cli import default_run_name, parse_config, train_parser
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.train.config import TrainConfig
from fer_ray.tune.config import SweepConfig, trial_config
from fer_ray.tune.report import best_config_dict
from fer_ray.tune.spaces import AE_ONLY, SPACES, apply_params, resolve_space, validate_space
from fer_ray.tune.sweep import stratified_subset, sweep, tune_metrics
from tests.fer_fixtures import write_tiny_fer_parquet

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- spaces (no Ray)
def test_each_model_samples_only_what_it_uses():
    assert AE_ONLY <= set(SPACES["ae_cnn_attn"])
    assert not AE_ONLY & set(SPACES["cnn_attn"])
    for model, space in SPACES.items():
        validate_space(model, space)
        assert set(space["optimizer"]["choice"]) == {"adamw_onecycle", "sgd_plateau"}
        assert set(space["attention"]["choice"]) == {"none", "se", "cbam"}
    with pytest.raises(ValueError, match=r"cnn_attn does not use \['latent_size'\]"):
        resolve_space("cnn_attn", {"latent_size": {"choice": [12]}})
    with pytest.raises(ValueError, match="unknown search parameter"):
        resolve_space("cnn_attn", {"lr_max": 1e-3})
    with pytest.raises(ValueError, match="no range for optimizer"):
        resolve_space("cnn_attn", {"lr": {"loguniform": {"adamw_onecycle": [1e-4, 1e-3]}}})
    with pytest.raises(ValueError, match="low > 0"):
        resolve_space("cnn_attn", {"lr": {"loguniform": [0, 1e-3]}})
    space = resolve_space("ae_cnn_attn", {"latent_size": None, "optimizer": "sgd_plateau", "dropout": 0.2})
    assert "latent_size" not in space and space["optimizer"] == "sgd_plateau" and space["dropout"] == 0.2


def test_trial_params_map_to_the_training_config():
    cfg = trial_config(
        TrainConfig(),
        {"latent_size": 12, "attention": "cbam", "optimizer": "sgd_plateau", "lr": 0.02, "widths": "32,64,128"},
    )
    assert (cfg.model.latent_size, cfg.model.attention, cfg.model.widths) == (12, "cbam", (32, 64, 128))
    assert (cfg.optimizer, cfg.scheduler, cfg.lr, cfg.run_name) == ("sgd", "plateau", 0.02, "train")
    assert apply_params(TrainConfig(), {"optimizer": "adamw_onecycle", "augment": "none"}).scheduler == "onecycle"
    assert apply_params(TrainConfig(), {"augment": "none"}).augment is None
    with pytest.raises(ValueError):
        apply_params(TrainConfig(), {"latent_size": 20})


@pytest.mark.parametrize("model", sorted(SPACES))
def test_every_sampled_architecture_builds(model):
    space = SPACES[model]
    x = torch.randn(2, 1, 48, 48)
    for widths in space["widths"]["choice"]:
        for attention in space["attention"]["choice"]:
            for latent in space.get("latent_size", {"choice": [24]})["choice"]:
                mc = apply_params(TrainConfig(model=ModelConfig(name=model)), {
                    "widths": widths, "attention": attention, **({"latent_size": latent} if model != "cnn_attn" else {})
                }).model  # fmt: skip
                out = create_model(mc).eval()(x)
                assert out["logits"].shape == (2, 7) and torch.isfinite(out["logits"]).all()


def test_pretraining_epochs_report_nothing_to_tune():
    assert tune_metrics({"epoch": 0, "phase": "pretrain", "val_acc": 0.0}, pretrain_epochs=1) is None
    joint = tune_metrics({"epoch": 1, "phase": "joint", "val_acc": 0.4}, pretrain_epochs=1)
    assert joint["joint_epoch"] == 1 and joint["val_acc"] == 0.4
    assert tune_metrics({"epoch": 0, "phase": "joint", "val_acc": 0.3}, pretrain_epochs=0)["joint_epoch"] == 1


def test_config_file_with_cli_overrides(tmp_path):
    import yaml

    best = trial_config(TrainConfig(momentum=0.8), {"optimizer": "sgd_plateau", "lr": 0.02, "augment": "strong"})
    f = tmp_path / "best.json"
    f.write_text(json.dumps(best_config_dict(best)))

    def parse(*argv):
        return parse_config(train_parser(), list(argv), adjust=default_run_name)[0]

    cfg = parse("--config", str(f), "--epochs", "3", "--run-name", "x")
    # flags given win; everything else (flagged or not: momentum, augmentation strength) comes from the file
    assert (cfg.epochs, cfg.run_name, cfg.lr, cfg.optimizer, cfg.scheduler, cfg.momentum) == (
        3, "x", 0.02, "sgd", "plateau", 0.8
    )  # fmt: skip
    assert cfg.augment == best.augment and cfg.augment.rotate_deg == 15.0
    assert parse("--config", str(f)).run_name == best.model.name  # as without --config
    y = tmp_path / "c.yaml"
    y.write_text(yaml.safe_dump({"model": {"name": "cnn_attn", "widths": [16, 32]}, "augment": None, "lr": 0.01}))
    cfg = parse("--config", str(y), "--lr", "0.005")
    assert (cfg.model.name, cfg.model.widths, cfg.augment, cfg.lr) == ("cnn_attn", (16, 32), None, 0.005)
    y.write_text(yaml.safe_dump({"lr": 0.01, "modle": {}, "model": {"widht": 3}}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) model\.widht, modle"):
        parse("--config", str(y))
    y.write_text(yaml.safe_dump({"optimizer": "adam"}))
    with pytest.raises(ValueError, match="optimizer must be adamw or sgd"):
        parse("--config", str(y))


def test_sweep_settings_are_checked_before_ray():
    with pytest.raises(ValueError, match="grace_period"):
        SweepConfig(base=TrainConfig(epochs=2), grace_period=3)
    with pytest.raises(ValueError, match="train_fraction"):
        SweepConfig(train_fraction=0)
    with pytest.raises(ValueError, match="does not use"):
        SweepConfig(base=TrainConfig(model=ModelConfig(name="cnn_attn")), space={"recon_weight": 0.1})


# ---------------------------------------------------------------- data subset (local Ray)
def test_stratified_subset_is_per_class_and_seeded(ray_local):
    import ray

    from fer_ray.train.ray_train import TrainingData

    rng = np.random.default_rng(0)
    per_class = [40, 8, 20, 60, 4, 12, 36]
    rows = [
        {"face": rng.integers(0, 256, (48, 48), dtype=np.uint8), "label": c} for c, n in enumerate(per_class)
        for _ in range(n)
    ]  # fmt: skip
    val = ray.data.from_items(rows[:10]).materialize()
    data = TrainingData(ray.data.from_items(rows).materialize(), val, {"train": per_class, "val": [10] + [0] * 6})

    def labels_and_faces(d):
        df = d.train.to_pandas()
        return np.bincount(df["label"], minlength=7).tolist(), {np.asarray(f).tobytes() for f in df["face"]}

    sub = stratified_subset(data, 0.25, seed=1)
    counts, faces = labels_and_faces(sub)
    assert counts == sub.counts["train"] == [10, 2, 5, 15, 1, 3, 9]
    assert sub.counts["train_full"] == per_class and sub.counts["train_fraction"] == 0.25 and sub.val is val
    assert labels_and_faces(stratified_subset(data, 0.25, seed=1))[1] == faces  # same seed, same faces
    assert labels_and_faces(stratified_subset(data, 0.25, seed=2))[1] != faces
    assert stratified_subset(data, 1.0, seed=1) is data


# ---------------------------------------------------------------- real sweeps
SMALL = {"widths": "16,32", "batch_size": 16, "augment": "none", "weight_decay": 1e-4}  # fast trials


def _result_rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_smoke_sweep_asha_stops_early_and_the_winner_trains(ray_local, tmp_path, caplog):
    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=40)
    base = TrainConfig(
        model=ModelConfig(name="ae_cnn_attn"), data=str(data), epochs=2, storage_path=str(tmp_path / "runs"),
        torch_threads=1,
    )  # fmt: skip
    # A learning rate of 0 predicts one class (1/7 on balanced validation); SGD at 0.05 (constant: plateau)
    # reaches ~70% after one joint epoch of 35 steps here. So ASHA (rung at joint epoch 1, keeping the top
    # half) must stop every lr-0 trial that reaches the rung after a learning one. One pretraining epoch
    # per trial would have reported 0.0 at that rung if pretraining were forwarded to Tune.
    space = {**SMALL, "batch_size": 8, "latent_channels": 8, "latent_size": 24, "pretrain_epochs": 1}
    space.update(attention="se", dropout=0.0, label_smoothing=0.0)
    space.update(optimizer="sgd_plateau", lr={"grid": [0.05, 0.0, 0.05, 0.0]})
    cfg = SweepConfig(base=base, name="smoke", space=space, num_samples=1, grace_period=1, reduction_factor=2)
    with caplog.at_level("INFO", logger="fer_ray.progress"):
        res = sweep(cfg)
    root = tmp_path / "runs" / "smoke"
    assert res.complete and len(res.trials) == 4 and res.root == root
    # progress (stderr is no terminal here: log lines): one line per trial, and the total at the end
    shown = [r.getMessage() for r in caplog.records if r.name == "fer_ray.progress"]
    assert sum(m.startswith("trial ") and " finished: val acc " in m for m in shown) == 4, shown
    assert shown[-1].startswith("sweep: 4/4 trials (100%), in "), shown
    assert all(t["error"] is None for t in res.trials), res.trials
    stopped = [t for t in res.trials if t["status"] == "stopped by ASHA"]
    finished = [t for t in res.trials if t["status"] == "finished"]
    assert stopped and finished, [(t["params"]["lr"], t["status"], t["curve"]) for t in res.trials]
    assert all(t["epochs_run"] == 1 and t["params"]["lr"] == 0.0 for t in stopped)
    assert all(t["epochs_run"] == 2 for t in finished)
    assert res.best["params"]["lr"] == 0.05
    assert res.best["val_acc"] > max(t["val_acc"] for t in res.trials if t["params"]["lr"] == 0.0)
    for t in res.trials:
        # Tune saw joint epochs only (numbered from 1); the trial's own history has the pretraining epoch too
        rows = _result_rows(root / t["trial"])
        assert [r["joint_epoch"] for r in rows] == list(range(1, t["epochs_run"] + 1))
        assert {r["phase"] for r in rows} == {"joint"}
        history = json.loads((root / t["trial"] / "train" / "history.json").read_text())
        # (a stopped trial's trainer may finish the epoch under way while Tune stops it)
        assert history[0]["phase"] == "pretrain" and len(history) >= t["epochs_run"] + 1

    lines = (root / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("rank,trial,val_acc,best_epoch,epochs_run,status,minutes,")
    accs = [float(line.split(",")[2]) for line in lines[1:]]
    assert len(accs) == 4 and accs == sorted(accs, reverse=True)
    md = (root / "sweep.md").read_text()
    assert "stopped by ASHA" in md and "jobs/train.py --config" in md and "asha.png" in md
    assert (root / "asha.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    art = json.loads((root / "best" / "artifact" / "artifact.json").read_text())
    assert art["model_config"]["name"] == "ae_cnn_attn"
    best = json.loads((root / "best_config.json").read_text())
    assert best["lr"] == 0.05 and best["optimizer"] == "sgd" and best["scheduler"] == "plateau"
    assert "run_name" not in best and "storage_path" not in best

    # the winner's config file trains with jobs/train.py (plain back end: no Ray, one process)
    sys.path.insert(0, str(REPO / "jobs"))
    import train as train_job

    argv = ["--config", str(root / "best_config.json"), "--backend", "plain", "--epochs", "1", "--pretrain-epochs", "0"]
    argv += ["--storage-path", str(tmp_path / "again"), "--run-name", "winner"]
    assert train_job.main(argv) == 0
    again = json.loads((tmp_path / "again" / "winner" / "artifact" / "artifact.json").read_text())
    assert again["model_config"] == art["model_config"]
    assert again["train_config"]["epochs"] == 1 and again["train_config"]["lr"] == 0.05


def _wait_for(pred, timeout: float, proc: subprocess.Popen, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep exited ({proc.returncode}) before {what}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.slow
def test_interrupted_sweep_continues_without_rerunning_finished_trials(tmp_path):
    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=12)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({**SMALL, "optimizer": "adamw_onecycle", "lr": {"loguniform": [1e-3, 3e-3]}}))
    root = tmp_path / "runs" / "resumable"
    cmd = [sys.executable, str(REPO / "jobs" / "tune.py"), "--model", "cnn_attn", "--data", str(data), "--epochs", "1"]
    cmd += ["--num-samples", "2", "--space", str(space), "--train-fraction", "0.5", "--name", "resumable"]
    cmd += ["--storage-path", str(tmp_path / "runs"), "--ray-cpus", "4", "--torch-threads", "1"]
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}

    def terminated_in_state() -> bool:
        return any("TERMINATED" in p.read_text(errors="replace") for p in root.glob("experiment_state-*.json"))

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        _wait_for(terminated_in_state, 240, proc, "Tune saved a finished trial")
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not (root / "best_config.json").exists()  # the first run did not finish the sweep
    done = {p.parent.name: p.read_text() for p in root.glob("trial_*/result.json") if '"done": true' in p.read_text()}
    assert len(done) == 1, done.keys()

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "continuing sweep resumable" in again.stderr
    for noise in ("TensorBoard", "Configuration for experiment"):  # Tune's banner and hint: not for users
        assert noise not in again.stdout + again.stderr, noise
    rows = (root / "sweep.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and all(",finished," in r for r in rows), rows
    for name, text in done.items():  # the finished trial was not run again
        assert (root / name / "result.json").read_text() == text
    counts = json.loads(next(root.glob("trial_*/train/train_config.json")).read_text())["counts"]
    assert counts["train"] == [6] * 7 and counts["train_full"] == [12] * 7 and counts["val"] == [12] * 7
    assert (root / "best_config.json").exists() and (root / "best" / "artifact" / "artifact.json").exists()
