"""CNN + Attention: the paper's baseline, the same classifier CNN applied to the raw 48x48 face."""

from __future__ import annotations

import torch
from torch import nn

from fer_ray.models.blocks import AttentionCNN, ConvBNAct
from fer_ray.models.config import ModelConfig


class CNNAttention(nn.Module):
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
