"""Building blocks shared by every model: conv units, attention, and the classifier CNN."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from fer_ray.models.config import ModelConfig


class ConvBNAct(nn.Sequential):
    """3x3 conv -> BatchNorm -> ReLU, the unit every stage is built from."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al., 2018): reweight channels from their global average."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al., 2018): *where* on the face to look, not only *what*."""

    def __init__(self, channels: int, reduction: int = 8, kernel: int = 7) -> None:
        super().__init__()
        hidden = max(8, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean((2, 3), keepdim=True))
        mx = self.mlp(x.amax((2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)  # (B, C, H, W)
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)  # (B, 2, H, W)
        return x * torch.sigmoid(self.spatial(pooled))


# ModelConfig has validated the name
ATTENTION = {"se": SqueezeExcite, "cbam": CBAM, "none": lambda channels: nn.Identity()}


class AttentionCNN(nn.Module):
    """The classifier both models share, on a ``c_in``-channel map of side ``size``: stages of two convs +
    attention + 2x2 pooling (skipped by the first ``unpooled_stages``, and once the map is 3x3, so that small
    latent maps fit), then global average pooling."""

    def __init__(self, cfg: ModelConfig, c_in: int, size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = c_in
        for i, w in enumerate(cfg.widths):
            layers += [ConvBNAct(c, w), ConvBNAct(w, w), ATTENTION[cfg.attention](w)]
            if i >= cfg.unpooled_stages and size >= 6:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(c, cfg.num_classes))
        self.out_size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, C_last, s, s)
        return self.head(x.mean((2, 3), keepdim=True))  # (B, num_classes)
