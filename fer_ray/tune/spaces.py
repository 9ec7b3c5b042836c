"""Named search spaces per model for Ray Tune sweeps, as plain data: each holds only what its model uses, and a
YAML/JSON file given with ``--space`` overrides entries by parameter name. A space maps a parameter to one spec:

- ``{"choice": [a, b, ...]}``: uniform pick; ``{"grid": [a, b, ...]}``: every value (times ``num_samples``)
- ``{"uniform": [lo, hi]}`` / ``{"loguniform": [lo, hi]}``
- ``{"loguniform": {"adamw_onecycle": [lo, hi], "sgd_plateau": [lo, hi]}}``: the range depends on the
  sampled ``optimizer`` (AdamW and SGD want learning rates an order of magnitude apart)
- a plain value: fixed for every trial; ``null`` in an override file: not searched (the base config's value)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fer_ray.config import replace
from fer_ray.train.config import AugmentConfig, TrainConfig

# Optimizer recipes: the optimizer and the learning-rate schedule travel together.
OPTIMIZERS: dict[str, dict[str, str]] = {
    "adamw_onecycle": {"optimizer": "adamw", "scheduler": "onecycle"},
    "sgd_plateau": {"optimizer": "sgd", "scheduler": "plateau"},
}

# Augmentation strength (shift, rotation, zoom, random erasing); "default" is the training default.
AUGMENT_LEVELS: dict[str, AugmentConfig | None] = {
    "none": None,
    "light": AugmentConfig(shift=0.05, rotate_deg=5.0, scale=0.05, erase_p=0.25),
    "default": AugmentConfig(),
    "strong": AugmentConfig(shift=0.15, rotate_deg=15.0, scale=0.15, erase_p=0.5, erase_area=(0.02, 0.3)),
}

# Parameters only the autoencoder model reads; every other parameter applies to both models.
AE_ONLY = frozenset(
    {"latent_size", "latent_channels", "encoder_convs", "recon_weight", "recon_schedule", "pretrain_epochs"}
)
MODEL_FIELDS = frozenset(
    {"latent_size", "latent_channels", "encoder_convs", "unpooled_stages", "widths", "attention", "dropout"}
)
TRAIN_FIELDS = frozenset(
    {"recon_weight", "recon_schedule", "pretrain_epochs", "lr", "weight_decay", "label_smoothing", "batch_size"}
)
PARAMS = MODEL_FIELDS | TRAIN_FIELDS | {"optimizer", "augment"}

_SHARED: dict[str, Any] = {
    "attention": {"choice": ["none", "se", "cbam"]},
    "widths": {"choice": ["32,64,128", "32,64,128,256"]},
    "dropout": {"uniform": [0.1, 0.5]},
    "optimizer": {"choice": ["adamw_onecycle", "sgd_plateau"]},
    "lr": {"loguniform": {"adamw_onecycle": [5e-4, 5e-3], "sgd_plateau": [3e-3, 3e-2]}},
    "weight_decay": {"loguniform": {"adamw_onecycle": [1e-2, 1e-1], "sgd_plateau": [3e-5, 5e-4]}},
    "label_smoothing": {"choice": [0.0, 0.1, 0.2]},
    "augment": {"choice": ["light", "default", "strong"]},
    "batch_size": {"choice": [64, 128]},
}

SPACES: dict[str, dict[str, Any]] = {
    "cnn_attn": dict(_SHARED),
    "ae_cnn_attn": {
        **_SHARED,
        "latent_size": {"choice": [24, 12, 6]},  # the paper: do not squeeze below 24x24; 12 and 6 test it
        "latent_channels": {"choice": [16, 32, 64]},
        "encoder_convs": {"choice": [1, 2, 3]},  # the full-resolution compute cnn_attn has and the encoder lacks
        # 1: the classifier on the 24x24 latent runs its later stages at cnn_attn's map sizes
        "unpooled_stages": {"choice": [0, 1]},
        "recon_weight": {"loguniform": [0.02, 0.5]},
        "recon_schedule": {"choice": ["constant", "linear", "cosine"]},  # decay to 0 by the last joint epoch
        "pretrain_epochs": {"choice": [0, 1]},  # reconstruction-only epochs before the joint phase
    },
}

_KINDS = ("choice", "grid", "uniform", "loguniform")


def resolve_space(model: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The named space of ``model`` with ``overrides`` applied (``None`` values drop a parameter), validated."""
    if model not in SPACES:
        raise ValueError(f"no search space for model {model!r}; named spaces: {', '.join(sorted(SPACES))}")
    space = dict(SPACES[model])
    for name, spec in (overrides or {}).items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = spec
    validate_space(model, space)
    return space


def validate_space(model: str, space: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming what is wrong: unknown parameters, ones ``model`` ignores, bad specs."""
    unknown = sorted(set(space) - PARAMS)
    if unknown:
        raise ValueError(f"unknown search parameter(s) {unknown}; known: {sorted(PARAMS)}")
    unused = sorted(set(space) & AE_ONLY) if model != "ae_cnn_attn" else []
    if unused:
        raise ValueError(f"model {model} does not use {unused}: drop them from the space (only ae_cnn_attn has them)")
    optimizers = _values(space.get("optimizer", list(OPTIMIZERS)))
    for param, known in (("optimizer", OPTIMIZERS), ("augment", AUGMENT_LEVELS)):
        bad = sorted(set(map(str, _values(space.get(param, [])))) - set(known))
        if bad:
            raise ValueError(f"{param} {bad} unknown; choose from {sorted(known)}")
    for name, spec in space.items():
        if not isinstance(spec, dict):
            continue
        if len(spec) != 1 or next(iter(spec)) not in _KINDS:
            raise ValueError(f"{name}: a spec is one of {{{', '.join(k + ': ...' for k in _KINDS)}}} or a value")
        kind, arg = next(iter(spec.items()))
        if kind in ("choice", "grid"):
            if not isinstance(arg, list) or not arg:
                raise ValueError(f"{name}: {kind} needs a non-empty list, got {arg!r}")
        elif isinstance(arg, dict):
            if "optimizer" not in space:
                raise ValueError(f"{name}: a range per optimizer needs optimizer in the space")
            missing = sorted(set(map(str, optimizers)) - set(arg))
            if missing:
                raise ValueError(f"{name}: no range for optimizer(s) {missing}")
            for r in arg.values():
                _check_range(name, kind, r)
        else:
            _check_range(name, kind, arg)


def _values(spec: Any) -> list[Any]:
    if isinstance(spec, dict):
        return list(next(iter(spec.values()), []))
    return spec if isinstance(spec, list) else [spec]


def _check_range(name: str, kind: str, r: Any) -> None:
    if not (isinstance(r, list) and len(r) == 2 and all(isinstance(v, int | float) for v in r) and r[0] <= r[1]):
        raise ValueError(f"{name}: {kind} needs [low, high] with low <= high, got {r!r}")
    if kind == "loguniform" and r[0] <= 0:
        raise ValueError(f"{name}: loguniform needs low > 0, got {r!r}")


class _PerOptimizerLogUniform:
    """``tune.sample_from`` body: a log-uniform draw in the range of the trial's sampled optimizer. It takes the
    trial's config dict: the old ``spec.config`` form made Tune log a deprecation warning for every trial."""

    def __init__(self, ranges: dict[str, list[float]]):
        self.ranges = ranges

    def __call__(self, config: Mapping[str, Any]) -> float:
        import numpy as np

        lo, hi = self.ranges[config["optimizer"]]
        return float(math.exp(np.random.uniform(math.log(lo), math.log(hi))))


def to_tune(space: Mapping[str, Any]) -> dict[str, Any]:
    """The Ray Tune ``param_space`` of a validated space."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, spec in space.items():
        if not isinstance(spec, dict):
            out[name] = spec
            continue
        kind, arg = next(iter(spec.items()))
        if isinstance(arg, dict):  # a range per optimizer
            out[name] = tune.sample_from(_PerOptimizerLogUniform(arg))
        elif kind in ("choice", "grid"):
            out[name] = tune.choice(arg) if kind == "choice" else tune.grid_search(arg)
        else:
            out[name] = getattr(tune, kind)(*arg)
    return out


def apply_params(base: TrainConfig, params: Mapping[str, Any]) -> TrainConfig:
    """``base`` with one trial's sampled values (of a space :func:`validate_space` passed); the config classes
    validate the result."""
    model_kw: dict[str, Any] = {}
    train_kw: dict[str, Any] = {}
    for name, value in params.items():
        if name == "widths":
            model_kw[name] = tuple(int(w) for w in str(value).replace("-", ",").split(","))
        elif name in MODEL_FIELDS:
            model_kw[name] = value
        elif name == "optimizer":
            train_kw.update(OPTIMIZERS[value])
        elif name == "augment":
            train_kw["augment"] = AUGMENT_LEVELS[value]
        else:
            train_kw[name] = int(value) if name in ("pretrain_epochs", "batch_size") else value
    return replace(base, model=replace(base.model, **model_kw), **train_kw)
