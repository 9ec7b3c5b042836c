"""The plain-PyTorch core, without Ray: augmentation, losses, one epoch, evaluation."""

import numpy as np
import pytest
import torch

from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.train.config import AugmentConfig
from fer_ray.train.loop import LossConfig, augment, class_weights, compute_loss, evaluate, train_one_epoch
from tests.fer_fixtures import synthetic_face


def _batches(n_per_class=16, batch=32, seed=0):
    rng = np.random.default_rng(seed)
    faces = np.stack([synthetic_face(c, rng) for c in range(7) for _ in range(n_per_class)])
    labels = np.repeat(np.arange(7), n_per_class)
    order = rng.permutation(len(labels))
    faces, labels = torch.from_numpy(faces[order]), torch.from_numpy(labels[order])
    return [(faces[i : i + batch], labels[i : i + batch]) for i in range(0, len(labels), batch)]


def test_augment_keeps_shape_and_changes_pixels():
    x = torch.randn(8, 1, 48, 48)
    g = torch.Generator().manual_seed(0)
    y = augment(x, AugmentConfig(), g)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(x, y)
    # Seeded: the same generator state gives the same augmentation (resume is reproducible).
    assert torch.equal(augment(x, AugmentConfig(), torch.Generator().manual_seed(0)), y)


def test_pretrain_phase_ignores_classification():
    x, y = torch.randn(4, 1, 48, 48), torch.randint(0, 7, (4,))
    out = {"logits": torch.randn(4, 7), "recon": torch.zeros_like(x)}
    total, parts = compute_loss(out, x, y, LossConfig(), "pretrain")
    assert torch.isclose(total, parts["recon"])
    total, parts = compute_loss(out, x, y, LossConfig(recon_weight=0.5), "joint")
    assert torch.isclose(total, parts["ce"] + 0.5 * parts["recon"])


def test_class_weights_favour_rare_classes():
    w = class_weights(np.array([3995, 436, 4097, 7215, 4830, 3171, 4965]))
    assert np.isclose(np.mean(w), 1) and np.argmax(w) == 1


@pytest.mark.parametrize("cpu_bf16", [False, True], ids=["fp32", "cpu_bf16"])
def test_loss_falls_and_accuracy_rises(cpu_bf16):
    torch.manual_seed(0)
    batches = _batches()
    model = create_model(ModelConfig(widths=(16, 32), latent_channels=16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    dev = torch.device("cpu")
    before = evaluate(model, batches, dev)
    stats = [train_one_epoch(model, batches, opt, dev, aug_cfg=None, cpu_bf16=cpu_bf16) for _ in range(10)]
    after = evaluate(model, batches, dev)
    assert stats[-1].loss / stats[-1].n < stats[0].loss / stats[0].n
    assert after.correct / after.n > max(0.5, before.correct / before.n)


def test_epoch_lines_count_epochs_from_one():
    """Checkpoints and histories keep 0-based epochs; what people read is 1-based, the best epoch too."""
    from fer_ray.train.loop import epoch_line

    metrics = {"epoch": 4, "phase": "joint", "train_acc": 0.5, "train_loss": 1.0, "val_acc": 0.6, "val_loss": 1.1}
    line = epoch_line({**metrics, "lr": 1e-3}, 5, {"val_acc": 0.62, "epoch": 3}, 12.0)
    assert line.startswith("epoch 5/5 joint:") and line.endswith("(best val 0.6200 @ epoch 4)"), line
