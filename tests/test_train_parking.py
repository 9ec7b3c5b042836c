"""Parking a plain run in a file and laying it out again: resuming from the parked copy must be the same as never
having stopped, since the parked copy is what survives a lost machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fer_ray.config import UserError
from fer_ray.models.config import ModelConfig
from fer_ray.train import plain
from fer_ray.train.checkpoints import STATE
from fer_ray.train.config import TrainConfig
from fer_ray.train.parking import park, unpark
from fer_ray.train.plain import BEST, LATEST, train_plain
from tests.fer_fixtures import write_tiny_fer_parquet

TOOL = Path(__file__).resolve().parents[1] / "tools" / "park_run.py"


@pytest.fixture(scope="module")
def tiny_parquet(tmp_path_factory):
    return write_tiny_fer_parquet(tmp_path_factory.mktemp("data") / "tiny.parquet", n_per_class=6)


def _cfg(storage: Path, data: Path, epochs: int) -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(name="ae_cnn_attn", widths=(8, 16), latent_channels=8),
        data=str(data),
        epochs=epochs,
        pretrain_epochs=1,
        batch_size=16,
        ema_decay=0.9,
        storage_path=str(storage),
        run_name="r",
        backend="plain",
        torch_threads=1,
    )


def _state(run_dir: Path, which: str = LATEST) -> dict:
    return torch.load(run_dir / which / STATE, map_location="cpu", weights_only=True)


def _same(a, b) -> bool:
    """Equal nested state dicts, tensors bit for bit."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_a_run_resumed_from_its_parked_copy_matches_one_never_stopped(tmp_path, tiny_parquet, monkeypatch):
    straight = train_plain(_cfg(tmp_path / "straight", tiny_parquet, epochs=3))  # 4 epochs with the pretraining one

    def killed_after_epoch_2(metrics, *args):  # the session ends once epoch 2's checkpoint is written
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt
        return real_line(metrics, *args)

    real_line = plain.epoch_line
    monkeypatch.setattr(plain, "epoch_line", killed_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_plain(_cfg(tmp_path / "lost", tiny_parquet, epochs=3))
    monkeypatch.undo()
    parked = tmp_path / "parked.pt"
    done = park(tmp_path / "lost" / "r", parked)
    assert done["epochs_done"] == 2 and done["bytes"] == parked.stat().st_size

    run_dir = unpark(parked, tmp_path / "new_machine")
    assert run_dir == (tmp_path / "new_machine" / "r").resolve()
    resumed = train_plain(_cfg(tmp_path / "new_machine", tiny_parquet, epochs=3))

    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    clock = {"epoch_s", "images_per_s"}
    assert [{k: v for k, v in h.items() if k not in clock} for h in resumed.history] == [
        {k: v for k, v in h.items() if k not in clock} for h in straight.history
    ]  # every metric of every epoch, the resumed ones included
    a, b = _state(Path(straight.run_dir)), _state(run_dir)
    assert _same(a["model"], b["model"]) and _same(a["ema"], b["ema"]) and _same(a["optimizer"], b["optimizer"])
    # the export reads the best checkpoint: the parked copy's slim one exports the same weights
    exported = [torch.load(Path(r.artifact_dir) / "weights.pt", weights_only=True) for r in (straight, resumed)]
    assert _same(exported[0], exported[1])


def test_a_best_epoch_that_is_the_latest_is_stored_once(tmp_path, tiny_parquet):
    train_plain(_cfg(tmp_path / "runs", tiny_parquet, epochs=1))
    run_dir = tmp_path / "runs" / "r"
    best, latest = _state(run_dir, BEST), _state(run_dir)
    best["epoch"] = latest["epoch"]  # as in a run whose accuracy still climbs
    torch.save(best, run_dir / BEST / STATE)
    once = park(run_dir, tmp_path / "once.pt")["bytes"]
    best["epoch"] = latest["epoch"] - 1
    torch.save(best, run_dir / BEST / STATE)
    assert park(run_dir, tmp_path / "twice.pt")["bytes"] > once + _size(latest["ema"]["weights"]) * 0.9
    laid_out = _state(unpark(tmp_path / "once.pt", tmp_path / "new"), BEST)
    assert _same(laid_out["ema"]["weights"], latest["ema"]["weights"]) and laid_out["history"] == latest["history"][-1:]


def _size(weights: dict) -> int:
    return sum(t.numel() * t.element_size() for t in weights.values())


def test_unpark_keeps_a_run_that_is_further_and_refuses_other_files(tmp_path, tiny_parquet):
    train_plain(_cfg(tmp_path / "runs", tiny_parquet, epochs=1))
    parked = tmp_path / "parked.pt"
    park(tmp_path / "runs" / "r", parked)
    with pytest.raises(UserError, match="has trained 2 epochs, the parked copy 2"):
        unpark(parked, tmp_path / "runs")
    assert (tmp_path / "runs" / "r" / BEST / STATE).exists()

    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a parked run"):
        unpark(tmp_path / "other.pt", tmp_path / "elsewhere")
    with pytest.raises(UserError, match="no plain run here"):
        park(tmp_path / "elsewhere", tmp_path / "x.pt")


def test_the_tool_parks_and_unparks_with_one_line_errors(tmp_path, tiny_parquet):
    train_plain(_cfg(tmp_path / "runs", tiny_parquet, epochs=1))
    parked = tmp_path / "parked.pt"
    run = [sys.executable, str(TOOL)]
    out = subprocess.run([*run, "park", str(tmp_path / "runs" / "r"), str(parked)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "after 2 epochs" in out.stdout and "MiB" in out.stdout
    out = subprocess.run(
        [*run, "unpark", str(parked), "--storage-path", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "b" / "r" / "history.json").read_text()) == _state(tmp_path / "runs" / "r")["history"]
    out = subprocess.run(
        [*run, "unpark", str(parked), "--storage-path", str(tmp_path / "b")], capture_output=True, text=True
    )
    assert (
        out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "keeping the run directory" in out.stderr
    )
