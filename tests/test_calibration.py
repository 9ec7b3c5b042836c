"""Temperature scaling, ECE and the uncertain cut-off on synthetic logits whose miscalibration is known."""

from __future__ import annotations

import numpy as np
import pytest

from fer_ray.config import fer2013_parquet
from fer_ray.inference.calibration import ece, ece_gain, fit_temperature, softmax, uncertain_threshold
from fer_ray.inference.shipped import SHIPPED_NAMES


def _overconfident(n: int = 4000, true_t: float = 2.5, seed: int = 0):
    """Labels drawn from softmax(z), logits reported as z * true_t: an overconfident model whose fix is T = true_t."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 7))
    p = softmax(z)
    cdf = np.cumsum(p.astype(np.float64), 1)
    labels = np.minimum((rng.uniform(size=(n, 1)) * cdf[:, -1:] > cdf).sum(1), 6)  # one draw per row
    return z * true_t, labels


def test_fitted_temperature_recovers_the_miscalibration_and_lowers_ece():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(2.5, rel=0.1)
    before, after = ece(softmax(logits), labels), ece(softmax(logits, t), labels)
    assert after < before / 3
    # scaling never changes a prediction
    assert (softmax(logits, t).argmax(1) == softmax(logits).argmax(1)).all()


def test_a_temperature_is_kept_only_for_a_gain_beyond_the_bootstrap_noise():
    logits, labels = _overconfident()
    gain, noise = ece_gain(softmax(logits), softmax(logits, fit_temperature(logits, labels)), labels)
    assert gain > 2 * noise > 0  # a real miscalibration: the fix stands far above the noise
    calibrated, labels = _overconfident(true_t=1.0)
    gain, noise = ece_gain(softmax(calibrated), softmax(calibrated, 1.02), labels)
    assert abs(gain) < 2 * noise  # a 2% nudge of a calibrated model is noise


def test_ece_is_the_gap_between_confidence_and_accuracy():
    probs = np.full((100, 7), 0.05)
    probs[:, 0] = 0.7  # every face 70% sure of class 0
    assert ece(probs, np.where(np.arange(100) < 70, 0, 1)) == pytest.approx(0.0)  # right 70% of the time
    assert ece(probs, np.ones(100, dtype=int)) == pytest.approx(0.7)  # never right


def test_uncertain_threshold_flags_bands_that_are_wrong_more_often_than_right():
    rng = np.random.default_rng(1)
    n = 2000
    conf = rng.uniform(0.2, 1.0, n)
    labels = np.zeros(n, dtype=int)
    right = rng.uniform(size=n) < conf  # accuracy equals confidence: bands under 0.5 are mostly wrong
    probs = np.zeros((n, 7))
    probs[np.arange(n), np.where(right, 0, 1)] = conf
    probs[np.arange(n), np.where(right, 1, 0)] = (1 - conf) / 2
    t = uncertain_threshold(probs, labels)
    assert t == pytest.approx(0.5, abs=0.051)
    assert uncertain_threshold(probs[conf > 0.6], labels[conf > 0.6]) == 0.0


def test_empty_validation_split_is_a_clear_error():
    with pytest.raises(ValueError, match="empty"):
        fit_temperature(np.zeros((0, 7)), np.zeros(0, dtype=int))


def test_temperature_for_flip_tta_probabilities():
    logits, labels = _overconfident(n=3000, true_t=3.0, seed=2)
    rng = np.random.default_rng(3)
    mirror = logits + rng.normal(0, 0.5, logits.shape)  # a mirror image: nearly the same evidence
    t = fit_temperature(logits, labels, mirror)
    tta = (softmax(logits, t) + softmax(mirror, t)) / 2
    assert ece(tta, labels) < ece((softmax(logits) + softmax(mirror)) / 2, labels) / 3
    assert t == pytest.approx(3.0, rel=0.2)


@pytest.mark.skipif(fer2013_parquet() is None, reason="full FER2013 (../shared/data/fer2013) not present")
@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_shipped_models_keep_a_temperature_only_where_validation_says_it_helps(name):
    """Each shipped artifact's temperature follows calibrate_artifact's rule, checked again here on the data: the
    temperature fitted on PublicTest is kept only if it lowers PublicTest ECE by more than twice the bootstrap noise
    of that gain (label smoothing often leaves a model calibrated already), and a kept one also lowers ECE on
    PrivateTest, which it never saw."""
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.inference.export import labeled_faces

    art = load_artifact(name, engine="torch")
    cal = art.meta["metrics"]["calibration"]
    assert cal["fitted_on"] == "val (PublicTest)" and art.temperature > 0 and cal["fitted_temperature"] > 0

    def reported(split: str, *temperatures: float) -> tuple[list[np.ndarray], np.ndarray]:
        faces, labels = labeled_faces(str(fer2013_parquet()), split, art.preprocess)
        z, zm = art.predict_logits(faces), art.predict_logits(np.ascontiguousarray(faces[..., ::-1]))
        tta = art.flip_tta
        return [(softmax(z, t) + softmax(zm, t)) / 2 if tta else softmax(z, t) for t in temperatures], labels

    fitted = cal["fitted_temperature"]
    (p1, pf), labels = reported("val", 1.0, fitted)
    gain, noise = ece_gain(p1, pf, labels)
    if art.temperature == 1.0:
        assert gain <= 2 * noise + 1e-4  # the fitted one would not have helped beyond noise (4-decimal record)
    else:
        assert art.temperature == fitted and gain > 2 * noise
        (t1, tk), labels = reported("test", 1.0, art.temperature)
        assert ece(tk, labels) < ece(t1, labels)
    faces, _ = labeled_faces(str(fer2013_parquet()), "test", art.preprocess, limit=64)
    z, zm = art.predict_logits(faces), art.predict_logits(np.ascontiguousarray(faces[..., ::-1]))
    expected = (softmax(z, art.temperature) + softmax(zm, art.temperature)) / 2
    np.testing.assert_allclose(art.predict_proba(faces), expected, atol=1e-5)  # the artifact reports these


def test_calibrate_artifact_upgrades_a_shipped_name_where_it_ships(tmp_path, monkeypatch):
    """A library call given a shipped name records the calibration in that artifact, not in a new directory of
    that name under the working directory."""
    import json

    import torch

    from fer_ray.inference import artifact
    from fer_ray.inference.calibration import calibrate_artifact
    from fer_ray.models.config import ModelConfig
    from fer_ray.models.registry import create_model
    from tests.fer_fixtures import write_tiny_fer_parquet

    torch.manual_seed(0)
    cfg = ModelConfig(widths=(8, 16), latent_channels=8)
    shipped = artifact.save_artifact(create_model(cfg), cfg, tmp_path / "assets" / "cnn_attn")
    monkeypatch.setitem(artifact.SHIPPED_MODELS, "cnn_attn", shipped)
    monkeypatch.chdir(tmp_path)
    record = calibrate_artifact("cnn_attn", write_tiny_fer_parquet(tmp_path / "fer.parquet", n_per_class=4))
    assert not (tmp_path / "cnn_attn").exists()
    assert json.loads((shipped / artifact.META).read_text())["metrics"]["calibration"] == record
