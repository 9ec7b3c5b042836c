"""The plain-PyTorch core, without Ray: augmentation, losses, one epoch, evaluation."""

import cv2
import numpy as np
import pytest
import torch

from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.preprocess import PreprocessConfig, normalize
from fer_ray.train.config import AugmentConfig, TrainConfig
from fer_ray.train.loop import (
    LossConfig,
    augment,
    class_weights,
    compute_loss,
    degrade,
    evaluate,
    train_one_epoch,
)
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


def _faces(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([synthetic_face(i % 7, rng) for i in range(n)]))


def _degrade(faces: torch.Tensor, cfg: AugmentConfig, seed: int = 0) -> torch.Tensor:
    """degrade() on uint8 faces: normalized in, uint8 (B, S, S) back out."""
    pp = PreprocessConfig()
    out = degrade(normalize(faces, pp), cfg, pp, torch.Generator().manual_seed(seed))
    assert out.shape == (len(faces), 1, *faces.shape[-2:]) and out.dtype == torch.float32
    return ((out[:, 0] * pp.std + pp.mean) * 255).round().clamp(0, 255).to(torch.uint8)


def test_degrade_off_by_default_draws_nothing():
    # Runs recorded before degradation existed resume with the same random stream.
    x, g = normalize(_faces()), torch.Generator().manual_seed(3)
    state = g.get_state()
    assert degrade(x, AugmentConfig(), PreprocessConfig(), g) is x
    assert torch.equal(g.get_state(), state)


def _sharpness(faces: torch.Tensor) -> float:
    x = faces.float()
    return float((x[:, 1:, :] - x[:, :-1, :]).abs().mean() + (x[:, :, 1:] - x[:, :, :-1]).abs().mean())


def test_degrade_low_resolution_blurs_every_face():
    faces = _faces()
    out = _degrade(faces, AugmentConfig(low_res_p=1.0, low_res_min=12))
    assert _sharpness(out) < 0.9 * _sharpness(faces)
    # Scaled back up, each face still looks like itself.
    assert float((out.float() - faces.float()).abs().mean()) < 20


def test_degrade_jpeg_is_opencv_jpeg_at_the_drawn_quality():
    faces = _faces(4)
    out = _degrade(faces, AugmentConfig(jpeg_p=1.0, jpeg_quality=(10, 10)))
    for f, o in zip(faces.numpy(), out.numpy(), strict=True):
        _, buf = cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 10])
        assert np.array_equal(o, cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE))
        assert not np.array_equal(o, f)


def test_degrade_exposure_and_contrast_vary_per_face():
    faces = _faces(32)
    out = _degrade(faces, AugmentConfig(contrast=0.5))
    ratio = out.float().std((1, 2)) / faces.float().std((1, 2))
    assert 0.45 < ratio.min() < 0.9 and 1.1 < ratio.max() < 1.55  # drawn in [0.5, 1.5], some clipped at 0/255
    assert torch.allclose(out.float().mean((1, 2)), faces.float().mean((1, 2)), atol=12)
    shift = _degrade(faces, AugmentConfig(gamma=0.5)).float().mean((1, 2)) - faces.float().mean((1, 2))
    assert shift.min() < -5 and shift.max() > 5  # gamma > 1 darkens, < 1 brightens


def test_degrade_is_seeded_and_configurable_from_json():
    cfg = TrainConfig.from_dict({"augment": {"gamma": 0.3, "low_res_p": 0.5, "jpeg_p": 0.5, "jpeg_quality": [20, 80]}})
    assert cfg.augment.jpeg_quality == (20, 80) and cfg.augment.degrades
    faces = _faces()
    assert torch.equal(_degrade(faces, cfg.augment, seed=1), _degrade(faces, cfg.augment, seed=1))
    assert not torch.equal(_degrade(faces, cfg.augment, seed=1), _degrade(faces, cfg.augment, seed=2))
    with pytest.raises(ValueError, match="jpeg_p"):
        AugmentConfig(jpeg_p=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        AugmentConfig(jpeg_quality=(90, 30))


def test_student_reads_degraded_faces_teacher_and_reconstruction_the_clean_ones():
    """The point of degrading after augmenting: soft targets and the reconstruction come from the face itself."""
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            seen["student"] = x.detach().clone()
            return {"logits": self.w * x.flatten(1)[:, :7], "recon": x + self.w}

    class Teacher:
        def probabilities(self, x, temperature):
            seen["teacher"] = x.detach().clone()
            return torch.full((len(x), 7), 1 / 7)

    model = Spy()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(_faces(8), torch.zeros(8, dtype=torch.long))]
    aug = AugmentConfig(0, 0, 0, False, 0, low_res_p=1.0, low_res_min=12)
    loss_cfg = LossConfig(distill_weight=0.5)
    stats = train_one_epoch(model, batches, opt, torch.device("cpu"), aug_cfg=aug, teacher=Teacher(), loss_cfg=loss_cfg)
    clean = normalize(batches[0][0])
    assert torch.allclose(seen["teacher"], clean, atol=1e-5)  # no geometry drawn: the face itself
    assert _sharpness(seen["student"][:, 0]) < 0.9 * _sharpness(clean[:, 0])
    # The spy "reconstructs" what it read: the loss is its distance to the clean face, not zero.
    expected = float(torch.nn.functional.mse_loss(seen["student"], clean))
    assert stats.recon / stats.n == pytest.approx(expected, rel=1e-4) and expected > 0


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


# Degraded faces only (no geometry): the epoch takes the path through degrade() and still learns.
DEGRADE_ONLY = AugmentConfig(0, 0, 0, False, 0, gamma=0.3, contrast=0.3, low_res_p=0.5, jpeg_p=0.5)


@pytest.mark.parametrize(
    ("cpu_bf16", "aug"), [(False, None), (True, None), (False, DEGRADE_ONLY)], ids=["fp32", "cpu_bf16", "degraded"]
)
def test_loss_falls_and_accuracy_rises(cpu_bf16, aug):
    torch.manual_seed(0)
    batches = _batches()
    model = create_model(ModelConfig(widths=(16, 32), latent_channels=16))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    dev = torch.device("cpu")
    before = evaluate(model, batches, dev)
    stats = [train_one_epoch(model, batches, opt, dev, aug_cfg=aug, cpu_bf16=cpu_bf16) for _ in range(10)]
    after = evaluate(model, batches, dev)
    assert stats[-1].loss / stats[-1].n < stats[0].loss / stats[0].n
    assert after.correct / after.n > max(0.5, before.correct / before.n)


def test_epoch_lines_count_epochs_from_one():
    """Checkpoints and histories keep 0-based epochs; what people read is 1-based, the best epoch too."""
    from fer_ray.train.loop import epoch_line

    metrics = {"epoch": 4, "phase": "joint", "train_acc": 0.5, "train_loss": 1.0, "val_acc": 0.6, "val_loss": 1.1}
    line = epoch_line({**metrics, "lr": 1e-3}, 5, {"val_acc": 0.62, "epoch": 3}, 12.0)
    assert line.startswith("epoch 5/5 joint:") and line.endswith("(best val 0.6200 @ epoch 4)"), line
