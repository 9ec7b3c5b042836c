"""Readers for FER2013 in the formats it circulates in (our Parquet, Kaggle's CSV, image folders);
each yields :data:`~fer_ray.data.decode.SOURCE_COLUMNS`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from fer_ray.data import ferplus
from fer_ray.data.listing import list_images_and_settings
from fer_ray.data.s3 import S3Settings, is_s3_uri, local_path, open_text, resolve_filesystem
from fer_ray.data.sources import dataset_from_listing
from fer_ray.labels import EMOTIONS, USAGE_TO_SPLIT, label_of
from fer_ray.preprocess import PreprocessConfig

if TYPE_CHECKING:  # Ray is imported where it is used: plain-PyTorch training reads without it
    import ray.data

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Split folder names of the image-folder layout (compared case-insensitively).
FOLDER_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
FER_SIZE = 48  # the CSV stores 48x48 images as 2,304 space-separated grey levels
CSV_CHUNK_ROWS = 2048


def _check_splits(splits: Iterable[str] | None) -> tuple[str, ...] | None:
    splits = None if splits is None else tuple(splits)
    if bad := sorted(set(splits or ()) - set(SPLITS)):
        raise ValueError(f"unknown split(s) {bad}; valid: {list(SPLITS)}")
    return splits


FERPLUS_JOIN_COLUMNS = ("csv_index", "csv_index_ambiguous")
PARQUET_COLUMNS = ("image", "label", "emotion", "usage", "source_name")  # what the readers take from our Parquet


def parquet_rows(batch: pd.DataFrame, splits: tuple[str, ...] | None, votes=None) -> pd.DataFrame:
    """Our Parquet's columns as :data:`SOURCE_COLUMNS` (with Ray Data or, for plain training, without);
    ``votes`` (:func:`fer_ray.data.ferplus.load`) swap in FER+ labels, dropping the rows that have none."""
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
    if votes is not None:
        join = [c for c in FERPLUS_JOIN_COLUMNS if c in batch]
        out = ferplus.relabel(out.assign(**{c: batch[c] for c in join}), *votes).drop(columns=join)
    if splits is not None:
        out = out[out["split"].isin(splits)]
    return out


def parquet_columns(path: str, filesystem=None, labels: str = "fer2013") -> list[str]:
    """Columns to read: FER+ labels also need the ``csv_index`` join columns (the ambiguity flag if present)."""
    if labels not in ferplus.LABEL_SETS:
        raise ValueError(f"labels must be one of {list(ferplus.LABEL_SETS)}, got {labels!r}")
    if labels == "fer2013":
        return list(PARQUET_COLUMNS)
    names = pq.read_schema(path, filesystem=filesystem).names
    if "csv_index" not in names:
        raise ValueError(f"{path}: FER+ labels need a csv_index column (our FER2013 Parquet has one)")
    return list(PARQUET_COLUMNS) + [c for c in FERPLUS_JOIN_COLUMNS if c in names]


def read_fer_parquet(
    path: str,
    splits: Iterable[str] | None = None,
    settings: S3Settings | None = None,
    labels: str = "fer2013",
    ferplus_csv: str | None = None,
) -> ray.data.Dataset:
    """Our FER2013 Parquet (``../shared/data/fer2013/README.md``), local or ``s3://`` (through ``settings``:
    pyarrow alone ignores ``AWS_ENDPOINT_URL``). ``usage`` keeps the original split name beside ``split``,
    so the paper's "test" (PublicTest + PrivateTest) can be rebuilt."""
    splits = _check_splits(splits)
    votes = ferplus.load(str(path), ferplus_csv) if labels == "ferplus" else None
    filesystem, path = resolve_filesystem(str(path), settings)
    import ray.data

    # select_columns is pushed down into the read (Ray >= 2.51 deprecates read_parquet(columns=...))
    ds = ray.data.read_parquet(path, filesystem=filesystem).select_columns(parquet_columns(path, filesystem, labels))
    return ds.map_batches(parquet_rows, fn_kwargs={"splits": splits, "votes": votes}, batch_format="pandas")


def _parse_pixels(text: Any) -> np.ndarray:
    """``"70 80 82 ..."`` -> ``uint8`` (48, 48); ``ValueError`` with a reason when malformed."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("malformed pixels: empty")
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError as e:
        raise ValueError(f"malformed pixels: not space-separated integers ({e})") from None
    n = FER_SIZE * FER_SIZE
    if values.size != n:
        raise ValueError(f"malformed pixels: {values.size} values, expected {n} ({FER_SIZE}x{FER_SIZE})")
    if values.min() < 0 or values.max() > 255:
        raise ValueError(f"malformed pixels: values must be 0..255, got {values.min()}..{values.max()}")
    return values.astype(np.uint8).reshape(FER_SIZE, FER_SIZE)


def _parse_label(text: str) -> int:
    try:
        label = int(text)
    except ValueError:
        label = -1
    if not 0 <= label < len(EMOTIONS):
        raise ValueError(f"malformed emotion {text!r}: expected an integer label 0..{len(EMOTIONS) - 1}")
    return label


def _csv_batch(batch: pd.DataFrame) -> pd.DataFrame:
    n = len(batch)
    pixels = np.zeros((n, FER_SIZE, FER_SIZE), dtype=np.uint8)
    labels = np.full(n, -1, dtype=np.int64)
    emotions: list[str | None] = [None] * n
    errors: list[str | None] = [None] * n
    for i, (text, emotion) in enumerate(zip(batch["pixels"], batch["emotion"], strict=True)):
        try:
            if emotion:  # test-only CSVs have no emotion column
                labels[i] = _parse_label(emotion)
                emotions[i] = EMOTIONS[labels[i]]
            pixels[i] = _parse_pixels(text)
        except ValueError as e:
            errors[i] = str(e)
    usage = [u or None for u in batch["usage"]]
    return pd.DataFrame(
        {
            "image": pd.Series([None] * n, dtype=object),
            "label": labels,
            "emotion": pd.Series(emotions, dtype=object),
            "split": pd.Series([USAGE_TO_SPLIT.get(u) for u in usage], dtype=object),
            "usage": pd.Series(usage, dtype=object),
            "path": batch["path"].to_numpy(dtype=object),
            "pixels": list(pixels),
            "error": pd.Series(errors, dtype=object),
        }
    )


def read_fer_csv(
    path: str,
    splits: Iterable[str] | None = None,
    chunk_rows: int = CSV_CHUNK_ROWS,
    settings: S3Settings | None = None,
) -> ray.data.Dataset:
    """Kaggle's ``fer2013.csv`` (``emotion,pixels,Usage``; also its ``train.csv``/``test.csv``), local or S3:
    ``pixels`` (48, 48) instead of ``image`` bytes, ``path`` ``<csv>#row=<i>`` (0-based), a malformed row
    zero pixels and an ``error``. The driver reads the text in chunks; Ray tasks parse the numbers."""
    splits = _check_splits(splits)
    try:
        f = open_text(path, settings)
    except FileNotFoundError:
        raise FileNotFoundError(f"no FER2013 CSV at {path!r}; pass the path of Kaggle's fer2013.csv") from None
    blocks = []
    start = 0
    with f, pd.read_csv(f, dtype=str, keep_default_na=False, chunksize=chunk_rows) as reader:
        for chunk in reader:
            cols = {c.strip().lower(): c for c in chunk.columns}
            if "pixels" not in cols:
                raise ValueError(
                    f"{path!r} is not a FER2013 CSV: no 'pixels' column (columns: {list(chunk.columns)}); "
                    "expected the Kaggle header emotion,pixels,Usage"
                )
            n = len(chunk)
            empty = pd.Series([""] * n, index=chunk.index)
            block = pd.DataFrame(
                {
                    "emotion": chunk[cols["emotion"]].str.strip() if "emotion" in cols else empty,
                    "pixels": chunk[cols["pixels"]],
                    "usage": chunk[cols["usage"]].str.strip() if "usage" in cols else empty,
                    "path": [f"{path}#row={i}" for i in range(start, start + n)],
                }
            )
            start += n
            if splits is not None:  # filter on the driver: cheap, and no task sees an empty block
                block = block[block["usage"].map(USAGE_TO_SPLIT).isin(splits)]
            if len(block):
                blocks.append(block.reset_index(drop=True))
    if not blocks:
        raise ValueError(f"{path!r} has no data rows" + (f" in splits {list(splits)}" if splits else ""))
    import ray.data

    ds = ray.data.from_pandas(blocks)
    return ds.map_batches(_csv_batch, batch_format="pandas", batch_size=None, udf_modifying_row_count=False)


def _folder_fields(rel: str, root: str) -> tuple[str, str | None, int, str]:
    """``(split, usage, label, emotion)`` of a file from its path relative to the dataset root."""
    parts = rel.split("/")
    split = FOLDER_SPLITS.get(parts[0].lower()) if len(parts) > 1 else None
    if len(parts) > 1 and split is None:
        raise ValueError(
            f"unknown split folder {parts[0]!r} in {root}; expected one of {sorted(FOLDER_SPLITS)} "
            "(pass the directory that holds train/ and test/, not a class folder)"
        )
    if len(parts) < 3:
        raise ValueError(
            f"{root}/{rel} is not in <split>/<emotion>/<file>; pass the directory that holds "
            f"train/ and test/ (expected split folders {sorted(FOLDER_SPLITS)})"
        )
    try:
        label = label_of(parts[1])
    except ValueError as e:
        raise ValueError(f"unknown class folder {parts[0]}/{parts[1]} in {root}: {e}") from None
    name = parts[-1]
    usage: str | None = None
    if split == "train":
        usage = "Training"
    elif name.startswith("PublicTest_"):
        usage = "PublicTest"
    elif name.startswith("PrivateTest_") and split == "test":
        usage = "PrivateTest"
    if split == "test" and usage == "PublicTest":
        split = "val"  # Kaggle copies keep PublicTest inside test/; it is our validation split
    return split, usage, label, EMOTIONS[label]


def read_image_folders(
    root: str,
    splits: Iterable[str] | None = None,
    settings: S3Settings | None = None,
    max_bytes: int = PreprocessConfig.max_bytes,
) -> ray.data.Dataset:
    """FER2013 as ``root/{train,test,val|validation}/<emotion>/*.jpg``, local or ``s3://``; class folders may
    be aliases (:func:`fer_ray.labels.label_of`). In ``test/``, ``PublicTest_*`` files are split ``val``,
    ``PrivateTest_*`` ``test``; other test files have unknown usage."""
    splits = _check_splits(splits)
    root = str(root).rstrip("/")
    listing, settings = list_images_and_settings([root], settings)
    base = root if is_s3_uri(root) else local_path(root)
    fields = [_folder_fields(p[len(base) :].lstrip("/") if p.startswith(base) else p, root) for p in listing["path"]]
    fields = pd.DataFrame(fields, columns=["split", "usage", "label", "emotion"], dtype=object)
    listing = pd.concat([listing, fields.astype({"label": np.int64})], axis=1)
    if splits is not None:
        listing = listing[listing["split"].isin(splits)].reset_index(drop=True)
    logger.info("image folders %s: %s", root, listing.groupby("split").size().to_dict())
    return dataset_from_listing(listing, settings, max_bytes)
