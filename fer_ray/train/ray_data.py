"""The driver's side of a Ray Train run's data: decoded train and validation Ray Datasets, and their counts."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import ray.data

from fer_ray.data import decode, read_labeled
from fer_ray.labels import NUM_CLASSES
from fer_ray.train.checkpoints import data_record, resolve_source
from fer_ray.train.config import TrainConfig

logger = logging.getLogger(__name__)


def _assign_val(batch: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Move a seeded, order-independent share of ``train`` to ``val`` (hash of the path)."""

    def is_val(path: str) -> bool:
        h = hashlib.sha256(f"{seed}:{path}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < fraction

    mask = (batch["split"] == "train") & batch["path"].map(is_val)
    batch.loc[mask, "split"] = "val"
    return batch


def _only(batch: pd.DataFrame, split: str) -> pd.DataFrame:
    return batch[(batch["split"] == split) & batch["error"].isna()][["face", "label"]]


@dataclass
class TrainingData:
    train: ray.data.Dataset
    val: ray.data.Dataset
    counts: dict[str, Any]  # per split/class counts and decode errors, saved with the run


def _decoded(source: str, split: str, cfg: TrainConfig) -> ray.data.Dataset:
    ds = read_labeled(source, splits=(split,), labels=cfg.labels, ferplus_csv=cfg.ferplus_csv)
    if cfg.limit:
        ds = ds.limit(cfg.limit)  # before decoding, so smoke runs do not decode the full data
    return decode(ds, cfg.preprocess).materialize()


def training_data(cfg: TrainConfig) -> TrainingData:
    """Decoded train and validation datasets, never test: validation is the source's own (FER2013
    PublicTest) or, without one (image folders), a seeded ``val_fraction`` of train."""
    source, shown = resolve_source(cfg)
    train, val = _decoded(source, "train", cfg), _decoded(source, "val", cfg)
    if val.count() == 0:
        train = train.map_batches(
            _assign_val, fn_kwargs={"fraction": cfg.val_fraction, "seed": cfg.seed}, batch_format="pandas"
        ).materialize()
        val = train
    counts = data_record(cfg, source, shown)
    splits = {}
    for split, ds in (("train", train), ("val", val)):
        meta = ds.select_columns(["label", "split", "error"]).to_pandas()
        meta = meta[meta["split"] == split]
        bad = meta["error"].notna()
        if bad.any():
            logger.warning(
                "%d %s rows failed to decode and are left out: %s",
                bad.sum(),
                split,
                meta.loc[bad, "error"].value_counts().head(5).to_dict(),
            )
        counts[split] = np.bincount(meta.loc[~bad, "label"], minlength=NUM_CLASSES).tolist()
        counts["decode_errors"][split] = int(bad.sum())
        splits[split] = ds.map_batches(_only, fn_kwargs={"split": split}, batch_format="pandas").materialize()
    if sum(counts["train"]) == 0 or sum(counts["val"]) == 0:
        raise ValueError(f"{source}: need decodable rows in both train and val, got {counts}")
    return TrainingData(splits["train"], splits["val"], counts)
