"""The models: ``create_model(cfg)`` builds any registered model by name (see :mod:`fer_ray.models.registry`).

Every model maps a normalized batch (B, 1, 48, 48) to a dict with ``logits`` (B, 7)
and, for autoencoders, ``recon`` (B, 1, 48, 48), so losses and evaluation are shared.

Only :class:`ModelConfig` is imported eagerly: the registry imports torch (~2 s), which the
ONNX Runtime engines of batch scoring and Serve never need, so it loads on first use.
"""

from __future__ import annotations

from typing import Any

from fer_ray.models.config import ModelConfig

_LAZY = ("MODELS", "create_model", "count_parameters", "multiply_adds")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from fer_ray.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MODELS", "ModelConfig", "count_parameters", "create_model", "multiply_adds"]
