"""Arbitrary images, local or on S3, as a Ray Dataset: :mod:`~fer_ray.data.listing` on the driver, then
:mod:`~fer_ray.data.fetch` in Ray tasks; and fingerprints of sources."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from fer_ray.data.fetch import fetch_bytes
from fer_ray.data.listing import list_images_and_settings
from fer_ray.data.s3 import S3Settings
from fer_ray.preprocess import PreprocessConfig

if TYPE_CHECKING:  # Ray is imported where it is used: plain-PyTorch training reads without it
    import ray.data

logger = logging.getLogger(__name__)

# Columns of read_images / read_image_folders: SOURCE_COLUMNS plus what a bucket can tell us.
IMAGE_SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("label", pa.int64()),
        ("emotion", pa.string()),
        ("split", pa.string()),
        ("usage", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("error", pa.string()),
    ]
)


def _fetch_table(batch: pd.DataFrame, settings: S3Settings | None, max_bytes: int) -> pa.Table:
    # A fixed schema per block, so blocks whose columns happen to be all-None still union cleanly.
    out = fetch_bytes(batch, settings, max_bytes)
    return pa.Table.from_pandas(out[IMAGE_SCHEMA.names], schema=IMAGE_SCHEMA, preserve_index=False)


def dataset_from_listing(
    listing: pd.DataFrame,
    settings: S3Settings | None = None,
    max_bytes: int = PreprocessConfig.max_bytes,
    rows_per_block: int = 128,
) -> ray.data.Dataset:
    """Ray Dataset of :data:`IMAGE_SCHEMA` from a listing (plus optional label columns); bytes are fetched in tasks."""
    df = listing.assign(**{c: None for c in ("emotion", "split", "usage", "error") if c not in listing})
    df["label"] = df["label"].astype(np.int64) if "label" in df else -1
    df["image"] = None
    df = df[IMAGE_SCHEMA.names]
    # Small blocks so that fetching (I/O bound) spreads over many tasks.
    n_blocks = max(1, math.ceil(len(df) / rows_per_block))
    step = math.ceil(len(df) / n_blocks) if len(df) else 1
    tables = [
        pa.Table.from_pandas(df.iloc[i : i + step], schema=IMAGE_SCHEMA, preserve_index=False)
        for i in range(0, max(len(df), 1), step)
    ]
    import ray.data

    ds = ray.data.from_arrow(tables)
    return ds.map_batches(
        _fetch_table,
        fn_kwargs={"settings": settings, "max_bytes": int(max_bytes)},
        batch_format="pandas",
        batch_size=None,
        udf_modifying_row_count=False,
    )


def read_images(
    inputs: Sequence[str] | str,
    settings: S3Settings | None = None,
    max_bytes: int = PreprocessConfig.max_bytes,
) -> ray.data.Dataset:
    """Arbitrary images from local paths, globs, list files and S3 as a Ray Dataset of :data:`IMAGE_SCHEMA`
    (no labels); follow with :func:`fer_ray.data.decode.decode`."""
    # The settings resolved while listing go to the tasks, so workers never consult their own environment.
    listing, settings = list_images_and_settings(inputs, settings)
    logger.info("listed %d files (%d with errors)", len(listing), int(listing["error"].notna().sum()))
    return dataset_from_listing(listing, settings, max_bytes)


def fingerprint(source: str | os.PathLike) -> str:
    """A short, stable identity of a data source: sha256 of a file, or of a local tree's names and sizes;
    a remote one's URI (hashing it would read the bucket)."""
    s = str(source)
    if "://" in s:
        return "uri:" + hashlib.sha256(s.encode()).hexdigest()[:16]
    p = Path(s)
    h = hashlib.sha256()
    if p.is_file():
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return "sha256:" + h.hexdigest()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p)}\0{f.stat().st_size}\n".encode())
    return "tree:" + h.hexdigest()[:16]
