"""Export -> reload gives identical logits; broken artifacts fail with a helpful error."""

import json

import numpy as np
import pytest
import torch

from fer_ray.inference.artifact import META, load_artifact, save_artifact
from fer_ray.labels import EMOTIONS
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.preprocess import PreprocessConfig, normalize
from tests.fer_fixtures import absolute_paths


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


def test_flip_tta_averages_the_mirror_image(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(16, 32), latent_channels=16)
    model = create_model(cfg).eval()
    with torch.no_grad():
        model.classifier.head[-1].weight.normal_(0, 50)  # untrained logits are near-uniform: spread them
    art = load_artifact(save_artifact(model, cfg, tmp_path / "tta", flip_tta=True))
    assert art.flip_tta and art.meta["inference"] == {"flip_tta": True}
    faces = np.random.default_rng(0).integers(0, 256, (4, 48, 48), dtype=np.uint8)
    x = normalize(faces, art.preprocess)
    with torch.no_grad():
        want = (torch.softmax(model(x)["logits"], 1) + torch.softmax(model(x.flip(-1))["logits"], 1)) / 2
    assert np.allclose(art.predict_proba(faces), want.numpy(), atol=1e-5)
    single = art.predict_proba(faces, flip_tta=False)
    assert not np.allclose(single, want.numpy(), atol=1e-5)
    both = art.predict_proba_both(faces)  # evaluation's two-pass path gives the same two answers
    assert np.allclose(both[0], single, atol=1e-6) and np.allclose(both[1], want.numpy(), atol=1e-5)
    # a mirror-symmetric face gets the same answer either way
    sym = np.concatenate([faces[:, :, :24], faces[:, :, :24][:, :, ::-1]], axis=2)
    assert np.allclose(art.predict_proba(sym), art.predict_proba(sym, flip_tta=False), atol=1e-5)
    # artifacts written before the setting existed load without it
    meta = json.loads((art.path / META).read_text())
    del meta["inference"]
    (art.path / META).write_text(json.dumps(meta))
    assert load_artifact(art.path).flip_tta is False


def test_shipped_default_model_is_self_contained():
    """The package's default artifact loads (weights hash checked), fits the size budget and
    names nothing on the machine that trained it: it ships to every user."""
    from fer_ray.inference.artifact import DEFAULT_MODEL_DIR, WEIGHTS

    art = load_artifact(DEFAULT_MODEL_DIR)
    assert art.labels == EMOTIONS and art.flip_tta
    assert (DEFAULT_MODEL_DIR / WEIGHTS).stat().st_size <= 10 * 2**20
    assert absolute_paths(art.meta) == []


def test_tampered_truncated_or_empty_weights_refused(tmp_path):
    """Weights changed after export (same size, cut short, emptied) never load: one error names the file and both
    hashes, instead of silently scoring with other weights or a raw PyTorch reader error."""
    from fer_ray.inference.artifact import WEIGHTS, ArtifactIntegrityError, sha256_file

    src = save_artifact(create_model("cnn_attn"), ModelConfig(name="cnn_attn"), tmp_path / "src")
    recorded = sha256_file(src / WEIGHTS)
    data = (src / WEIGHTS).read_bytes()
    mid = len(data) // 2
    flipped = data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 2000]) + data[mid + 2000 :]
    for case, damaged in [("flipped", flipped), ("truncated", data[: len(data) // 3]), ("empty", b"")]:
        path = src.parent / case
        path.mkdir()
        for f in src.iterdir():
            (path / f.name).write_bytes(f.read_bytes())
        (path / WEIGHTS).write_bytes(damaged)
        with pytest.raises(ArtifactIntegrityError) as e:
            load_artifact(path)
        msg = str(e.value)
        assert str(path / WEIGHTS) in msg and recorded in msg and sha256_file(path / WEIGHTS) in msg, msg
        assert ("empty (0 bytes)" in msg) == (case == "empty"), msg


def test_a_path_under_home_may_be_written_with_a_tilde(tmp_path, monkeypatch):
    """``--teachers ~/a,~/b``: the shell leaves the second ``~`` as it is, the loader expands it."""
    import shutil

    from fer_ray.inference.artifact import DEFAULT_MODEL_DIR

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "models" / "m")
    art = load_artifact("~/models/m", engine="torch")
    assert art.path == tmp_path / "models" / "m"
    assert art.model_id == load_artifact(DEFAULT_MODEL_DIR, engine="torch").model_id
