"""Export -> reload gives identical logits; broken artifacts fail with a helpful error."""

import json

import numpy as np
import pytest
import torch

from fer_ray.artifact import META, load_artifact, save_artifact
from fer_ray.labels import EMOTIONS
from fer_ray.models import ModelConfig, create_model
from fer_ray.preprocess import PreprocessConfig


@pytest.mark.parametrize("name", ["ae_cnn_attn", "cnn_attn"])
def test_export_reload_identical_logits(tmp_path, name):
    torch.manual_seed(0)
    cfg = ModelConfig(name=name, widths=(16, 32), latent_channels=16, attention="cbam")
    model = create_model(cfg).eval()
    path = save_artifact(model, cfg, tmp_path / "a", preprocess=PreprocessConfig(mean=0.4), metrics={"val_acc": 0.5})
    art = load_artifact(path)
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x)["logits"], art.model(x)["logits"])
    assert art.model_config == cfg and art.preprocess.mean == 0.4 and art.labels == EMOTIONS
    assert art.meta["metrics"]["val_acc"] == 0.5
    assert art.model_id == f"{name}@{art.meta['weights_sha256'][:12]}"
    probs = art.predict_proba(np.zeros((3, 48, 48), np.uint8))
    assert probs.shape == (3, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_missing_or_mismatched_artifact(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a fer_ray model artifact"):
        load_artifact(tmp_path)
    path = save_artifact(create_model("cnn_attn"), ModelConfig(name="cnn_attn"), tmp_path / "b")
    meta = json.loads((path / META).read_text())
    meta["labels"] = list(reversed(EMOTIONS))
    (path / META).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="label map"):
        load_artifact(path)
