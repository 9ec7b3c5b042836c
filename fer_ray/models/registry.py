"""The registered models and ``create_model(cfg)``, which builds any of them by name."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fer_ray.models.blocks import AttentionCNN, ConvBNAct
from fer_ray.models.config import ModelConfig


class AECNNAttention(nn.Module):
    """Autoencoder + CNN + Attention, the paper's model: a conv encoder compresses the 48x48 face to a latent map
    (24x24 by default), a mirrored decoder reconstructs the face from it (so the latent keeps the face's content),
    and the attention CNN classifies the latent map, not the pixels."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        downs = int(math.log2(cfg.image_size // cfg.latent_size))
        c = 32
        enc: list[nn.Module] = [ConvBNAct(1, c)] + [ConvBNAct(c, c) for _ in range(cfg.encoder_convs - 1)]
        for _ in range(downs):
            enc.append(ConvBNAct(c, cfg.latent_channels, stride=2))
            c = cfg.latent_channels
        enc.append(ConvBNAct(c, cfg.latent_channels))
        self.encoder = nn.Sequential(*enc)

        dec: list[nn.Module] = []
        c = cfg.latent_channels
        for _ in range(downs):
            dec += [nn.ConvTranspose2d(c, 32, 2, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(True)]
            c = 32
        dec += [nn.Conv2d(c, 1, 3, padding=1), nn.Tanh()]  # normalized pixels lie in [-1, 1]
        self.decoder = nn.Sequential(*dec)

        self.classifier = AttentionCNN(cfg, cfg.latent_channels, cfg.latent_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        z = self.encoder(x)  # (B, latent_channels, latent_size, latent_size)
        return {"logits": self.classifier(z), "recon": self.decoder(z)}  # (B, K), (B, 1, S, S)


class CNNAttention(nn.Module):
    """CNN + Attention, the paper's baseline: the same classifier CNN applied to the raw 48x48 face."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # A stem to the same channel count the autoencoder's latent has, at full resolution,
        # so the comparison differs only in the autoencoder.
        self.stem = ConvBNAct(1, cfg.latent_channels)
        self.classifier = AttentionCNN(cfg, cfg.latent_channels, cfg.image_size)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        return {"logits": self.classifier(self.stem(x))}  # (B, K)


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "ae_cnn_attn": AECNNAttention,
    "cnn_attn": CNNAttention,
}


def create_model(cfg: ModelConfig | str) -> nn.Module:
    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg)
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; registered: {sorted(MODELS)}")
    # NHWC weights (and inputs, see the models' forward): oneDNN's CPU convolutions and GPU AMP are faster so.
    return MODELS[cfg.name](cfg).to(memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def multiply_adds(model: nn.Module) -> int:
    """Multiply-adds of one face through the convolutions and linear layers scoring runs (not an
    autoencoder's decoder, which the ONNX engines leave out): unlike faces/s, it compares models across hosts."""
    size = getattr(model, "cfg", ModelConfig()).image_size
    decoder = set(getattr(model, "decoder", nn.Sequential()).modules())
    total = 0

    def count(m: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if m not in decoder]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, size, size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total
