"""Helpers shared by every typed config: the data root, CLI overrides, JSON round trips."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DATA_ROOT_ENV = "FER_RAY_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARQUET = "fer2013/fer2013.parquet"  # under the data root


def default_data_root() -> Path | None:
    """Where FER2013 lives: ``$FER_RAY_DATA``, else ``../shared/data`` beside the repo if it exists.

    Returns ``None`` when neither is there (e.g. a job shipped with ``ray job submit
    --working-dir .`` cannot see ``../shared``): callers then need an explicit path.
    """
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env)
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None


def fer2013_parquet() -> Path | None:
    """The full FER2013 Parquet under the data root, or ``None`` when it is absent."""
    root = default_data_root()
    if root is None:
        return None
    p = root / DEFAULT_PARQUET
    return p if p.is_file() else None


def replace(cfg: T, **overrides: Any) -> T:
    """``dataclasses.replace`` that names the valid fields when a key is wrong."""
    fields = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {type(cfg).__name__} field(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Rebuild a (possibly nested-free) config dataclass, ignoring keys it does not know."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in d.items() if k in names})


def save_json(obj: Any, path: str | os.PathLike) -> None:
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    Path(path).write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
