"""Every registered model: output structure, shapes, gradients, configs (as timm tests every model)."""

import pytest
import torch

from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import MODELS, count_parameters, create_model, multiply_adds


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("attention", ["se", "cbam", "none"])
def test_forward_backward(name, attention):
    model = create_model(ModelConfig(name=name, attention=attention))
    x = torch.randn(4, 1, 48, 48)
    out = model(x)
    assert out["logits"].shape == (4, 7)
    assert torch.isfinite(out["logits"]).all()
    loss = out["logits"].logsumexp(1).mean()
    if name == "ae_cnn_attn":
        assert out["recon"].shape == x.shape
        assert out["recon"].abs().max() <= 1  # tanh: normalized pixel range
        loss = loss + out["recon"].pow(2).mean()
    else:
        assert "recon" not in out
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("latent", [24, 12, 6])
def test_latent_sizes(latent):
    model = create_model(ModelConfig(latent_size=latent))
    z = model.encoder(torch.randn(2, 1, 48, 48))
    assert z.shape == (2, model.cfg.latent_channels, latent, latent)
    out = model(torch.randn(2, 1, 48, 48))
    assert out["logits"].shape == (2, 7) and out["recon"].shape == (2, 1, 48, 48)


def test_deeper_encoder_adds_full_resolution_convs_only():
    base, deeper = create_model(ModelConfig()), create_model(ModelConfig(encoder_convs=3))
    # two more 32->32 3x3 convs with their BatchNorm (weight, bias), nothing else
    assert count_parameters(deeper) - count_parameters(base) == 2 * (32 * 32 * 9 + 2 * 32)
    assert multiply_adds(deeper) - multiply_adds(base) == 2 * 48 * 48 * 32 * 32 * 9  # one face, at full resolution
    z = deeper.encoder(torch.randn(2, 1, 48, 48))
    assert z.shape == (2, 32, 24, 24)
    # artifacts written before the field existed rebuild the one-conv encoder they were trained with
    old = ModelConfig().to_dict()
    del old["encoder_convs"]
    assert ModelConfig.from_dict(old).encoder_convs == 1


def test_unpooled_stage_moves_the_classifier_to_larger_maps_only():
    base, unpooled = create_model(ModelConfig()), create_model(ModelConfig(unpooled_stages=1))
    assert count_parameters(unpooled) == count_parameters(base)  # pooling has no weights
    # stages 2-4 (32->64->64, 64->128->128, 128->256->256) each at twice the side: 4x their multiply-adds
    later = 9 * (12 * 12 * (32 * 64 + 64 * 64) + 6 * 6 * (64 * 128 + 128 * 128) + 3 * 3 * (128 * 256 + 256 * 256))
    assert multiply_adds(unpooled) - multiply_adds(base) == 3 * later  # squeeze-excite works on pooled vectors
    out = unpooled(torch.randn(2, 1, 48, 48))
    assert out["logits"].shape == (2, 7) and unpooled.classifier.out_size == 3
    cnn = create_model(ModelConfig(name="cnn_attn", unpooled_stages=1))
    assert cnn(torch.randn(2, 1, 48, 48))["logits"].shape == (2, 7)
    old = ModelConfig().to_dict()
    del old["unpooled_stages"]  # artifacts written before the field existed pool after every stage
    assert ModelConfig.from_dict(old).unpooled_stages == 0


def test_unknown_model_lists_registered():
    with pytest.raises(ValueError, match="ae_cnn_attn"):
        create_model(ModelConfig(name="resnet9000"))


@pytest.mark.parametrize(
    "kw",
    [
        {"latent_size": 20},
        {"dropout": 1.5},
        {"attention": "transformer"},
        {"widths": ()},
        {"encoder_convs": 0},
        {"unpooled_stages": 4},
        {"unpooled_stages": -1},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError):
        ModelConfig(**kw)


def test_config_round_trip_and_size():
    cfg = ModelConfig(latent_size=12, widths=(16, 32), attention="cbam")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # Far below the paper's 54 MB / 2.8 GB models.
    for name in MODELS:
        assert count_parameters(create_model(name)) * 4 < 10 * 2**20


def test_multiply_adds_count_what_scoring_runs():
    cnn, ae = create_model("cnn_attn"), create_model("ae_cnn_attn")
    # stem 1->32 at 48x48: 48*48*32*9; the figure the README and the model cards state for cnn_attn
    assert multiply_adds(cnn) == 138_706_176
    # the decoder (reconstruction, training only; not in the ONNX files) is not counted
    without_decoder = multiply_adds(ae)
    ae.decoder = torch.nn.Sequential()
    assert multiply_adds(ae) == without_decoder == 45_808_896
    assert cnn.training  # counted in eval mode, handed back as it came
