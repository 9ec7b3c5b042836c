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
