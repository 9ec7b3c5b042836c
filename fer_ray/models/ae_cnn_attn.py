"""Autoencoder + CNN + Attention, the paper's model: a conv encoder compresses the 48x48 face to a latent map
(24x24 by default), a mirrored decoder reconstructs the face from it (so the latent keeps the face's content),
and the attention CNN classifies the latent map, not the pixels."""

from __future__ import annotations

import math

import torch
from torch import nn

from fer_ray.models.blocks import AttentionCNN, ConvBNAct
from fer_ray.models.config import ModelConfig


class AECNNAttention(nn.Module):
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
