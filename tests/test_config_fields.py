"""Field metadata as the one source of the training config's policies, defaults written once, and the
image size the model config owns."""

from __future__ import annotations

import pytest

from fer_ray.config import fields_where, from_user_dict
from fer_ray.models.config import ModelConfig
from fer_ray.preprocess import PreprocessConfig
from fer_ray.train.checkpoints import portable
from fer_ray.train.config import TrainActions, TrainConfig
from fer_ray.train.loop import LossConfig

# The sets the four hand-kept lists held before they became field metadata: a change here changes what a
# resume may alter, what artifacts leave out, what a sweep's rerun may alter or its best config drops.
PINNED = {
    "resumable": {
        "amp", "backend", "cpu_bf16", "cpus_per_worker", "crash_once_at_epoch", "epochs", "init_from",
        "keep_checkpoints", "lr", "max_failures", "placement_strategy", "ray", "scheduler", "shuffle_buffer",
        "storage_path", "teachers", "torch_threads", "use_gpu", "warmup_epochs", "workers",
    },
    "machine": {"ray", "storage_path"},
    "resources": {
        "cpus_per_worker", "max_failures", "placement_strategy", "ray", "torch_threads", "use_gpu", "workers",
    },
    "bookkeeping": {"crash_once_at_epoch", "limit", "ray", "run_name", "storage_path"},
}  # fmt: skip


@pytest.mark.parametrize("policy", sorted(PINNED))
def test_policies_resolve_from_field_metadata_to_the_pinned_sets(policy):
    assert fields_where(TrainConfig, policy) == PINNED[policy]


def test_artifacts_leave_out_the_machine_fields():
    kept = portable(TrainConfig().to_dict())
    assert set(TrainConfig().to_dict()) - set(kept) == PINNED["machine"]


def test_an_unknown_policy_names_the_valid_ones():
    with pytest.raises(ValueError, match="resumable"):
        fields_where(TrainConfig, "resumeable")


def test_loss_defaults_are_the_training_config_defaults():
    train, loss = TrainConfig(), LossConfig()
    assert (loss.label_smoothing, loss.recon_weight, loss.distill_temperature) == (
        train.label_smoothing,
        train.recon_weight,
        train.distill_temperature,
    )
    assert loss.distill_weight == 0.0  # no teachers: nothing to match


def test_image_size_is_the_model_configs_and_a_mismatch_is_named():
    assert PreprocessConfig().image_size == ModelConfig().image_size
    with pytest.raises(ValueError, match=r"preprocess.image_size \(64\) differs from model.image_size \(48\)"):
        TrainConfig(preprocess=PreprocessConfig(image_size=64))
    both = {"model": {"image_size": 96, "latent_size": 24}, "preprocess": {"image_size": 96}}
    cfg = from_user_dict(TrainConfig, both)
    assert cfg.model.image_size == cfg.preprocess.image_size == 96


def test_actions_are_no_training_setting():
    assert "export_only" not in TrainConfig.__dataclass_fields__
    assert TrainActions().export_only is False
