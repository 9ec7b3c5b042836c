"""A real (tiny) Ray Tune sweep driving Ray Train trials through TuneReportCallback."""

import pytest

from fer_ray.models import ModelConfig
from fer_ray.train.config import TrainConfig
from fer_ray.tune import SweepConfig, search_space, sweep, trial_config
from tests.fer_fixtures import write_tiny_fer_parquet

pytestmark = pytest.mark.slow


def test_trial_config_applies_params():
    cfg = trial_config(
        TrainConfig(),
        {"latent_size": 12, "attention": "cbam", "lr": 1e-3, "recon_weight": 0.5, "optimizer": "sgd"},
        "t1",
    )
    assert (cfg.model.latent_size, cfg.model.attention, cfg.lr, cfg.recon_weight, cfg.optimizer, cfg.run_name) == (
        12, "cbam", 1e-3, 0.5, "sgd", "t1"
    )  # fmt: skip
    with pytest.raises(ValueError):
        trial_config(
            TrainConfig(), {"latent_size": 20, "attention": "se", "lr": 1, "recon_weight": 0, "optimizer": "sgd"}, "x"
        )
    with pytest.raises(ValueError):
        SweepConfig(lr_range=(1e-2, 1e-3))


def test_tiny_sweep(ray_local, tmp_path):
    data = write_tiny_fer_parquet(tmp_path / "tiny.parquet", n_per_class=6)
    base = TrainConfig(
        model=ModelConfig(widths=(16, 32), latent_channels=16), data=str(data), epochs=2, pretrain_epochs=0,
        batch_size=32, augment=None, storage_path=str(tmp_path / "runs"), torch_threads=1,
    )  # fmt: skip
    cfg = SweepConfig(base=base, name="tiny", num_samples=2, grace_period=1, latent_sizes=(24, 12))
    summary = sweep(cfg)
    assert len(summary["trials"]) == 2
    for t in summary["trials"]:
        assert t["error"] is None and t["epochs_run"] >= 1
        assert 0 <= t["best_val_acc"] <= 1
        assert t["params"]["latent_size"] in (24, 12) and set(t["params"]) == set(search_space(cfg))
    assert (tmp_path / "runs" / "tiny" / "sweep.json").exists()
