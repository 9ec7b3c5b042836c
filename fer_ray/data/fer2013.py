"""Readers for FER2013 in the formats it circulates in; each yields :data:`SOURCE_COLUMNS`."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import ray.data

from fer_ray.labels import USAGE_TO_SPLIT

SPLITS = ("train", "val", "test")


def _check_splits(splits: Iterable[str] | None) -> tuple[str, ...] | None:
    if splits is None:
        return None
    splits = tuple(splits)
    bad = sorted(set(splits) - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; valid: {list(SPLITS)}")
    return splits


def _parquet_batch(batch: pd.DataFrame, splits: tuple[str, ...] | None) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "image": batch["image"],
            "label": batch["label"].astype(np.int64),
            "emotion": batch["emotion"],
            "split": batch["usage"].map(USAGE_TO_SPLIT),
            "usage": batch["usage"],
            "path": batch["source_name"],
        }
    )
    if splits is not None:
        out = out[out["split"].isin(splits)]
    return out


def read_fer_parquet(
    path: str, splits: Iterable[str] | None = None, filesystem=None, **read_kwargs
) -> ray.data.Dataset:
    """Our FER2013 Parquet (see ``../shared/data/fer2013/README.md``).

    ``split`` follows the Kaggle CSV convention: Training -> train, PublicTest -> val
    (model selection), PrivateTest -> test (headline). ``usage`` keeps the original
    name so the paper's 7,178-image "test" (PublicTest + PrivateTest) can be rebuilt.
    """
    splits = _check_splits(splits)
    ds = ray.data.read_parquet(
        path,
        columns=["image", "label", "emotion", "usage", "source_name"],
        filesystem=filesystem,
        **read_kwargs,
    )
    return ds.map_batches(_parquet_batch, fn_kwargs={"splits": splits}, batch_format="pandas")
