"""Model registry: ``create_model(cfg)`` builds any registered model by name (imported lazily by
:mod:`fer_ray.models`, because it imports torch)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fer_ray.models.ae_cnn_attn import AECNNAttention
from fer_ray.models.cnn_attn import CNNAttention
from fer_ray.models.config import ModelConfig

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "ae_cnn_attn": AECNNAttention,
    "cnn_attn": CNNAttention,
}


def create_model(cfg: ModelConfig | str) -> nn.Module:
    if isinstance(cfg, str):
        cfg = ModelConfig(name=cfg)
    if cfg.name not in MODELS:
        raise ValueError(f"unknown model {cfg.name!r}; registered: {sorted(MODELS)}")
    # NHWC weights (and NHWC inputs, see the models' forward): oneDNN's CPU convolutions
    # train ~1.6x faster this way on the 2-core machine, and GPUs prefer it for AMP too.
    return MODELS[cfg.name](cfg).to(memory_format=torch.channels_last)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "ModelConfig", "create_model", "count_parameters"]
