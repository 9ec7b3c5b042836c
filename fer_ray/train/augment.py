"""Batch augmentation on the training device, in one pass: one ``affine_grid``/``grid_sample`` call applies the
shift (the "random crop with padding"), horizontal flip, small rotation and scale to the whole batch; random
erasing is a vectorized rectangle mask. Only the training split is augmented."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    shift: float = 0.1  # max translation as a fraction of the side (4-5 px on 48: crop-with-padding)
    rotate_deg: float = 10.0
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    flip: bool = True
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: normalized (B, 1, S, S) -> augmented (B, 1, S, S) on the same device."""
    b, dev = x.shape[0], x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    angle = (rand(b) * 2 - 1) * math.radians(cfg.rotate_deg)
    zoom = 1 + (rand(b) * 2 - 1) * cfg.scale
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=dev)
    tx, ty = ((rand(b) * 2 - 1) * 2 * cfg.shift for _ in range(2))  # grid units span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    # Border padding: a shifted face shows extended edges, not a black frame the test set never has.
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    if cfg.erase_p > 0:
        s = x.shape[-1]
        area = cfg.erase_area[0] + rand(b) * (cfg.erase_area[1] - cfg.erase_area[0])
        aspect = torch.exp((rand(b) * 2 - 1) * math.log(3.0))
        h = (torch.sqrt(area * aspect) * s).clamp(1, s)
        w = (torch.sqrt(area / aspect) * s).clamp(1, s)
        y0, x0 = rand(b) * (s - h), rand(b) * (s - w)
        coords = torch.arange(s, device=dev, dtype=x.dtype)
        in_y = (coords[None] >= y0[:, None]) & (coords[None] < (y0 + h)[:, None])  # (B, S)
        in_x = (coords[None] >= x0[:, None]) & (coords[None] < (x0 + w)[:, None])
        mask = in_y[:, :, None] & in_x[:, None, :] & (rand(b) < cfg.erase_p)[:, None, None]  # (B, S, S)
        noise = torch.randn(x.shape, generator=generator).to(dev, x.dtype)
        x = torch.where(mask[:, None], noise, x)
    return x
