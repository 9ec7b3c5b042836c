"""Ray Data readers. Every reader returns a ``ray.data.Dataset`` with :data:`SOURCE_COLUMNS`;
:func:`fer_ray.data.decode.decode` is the one stage that turns them into model-ready faces."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fer_ray.data.decode import SOURCE_COLUMNS, decode

if TYPE_CHECKING:  # importing fer_ray.data must not need Ray (plain-PyTorch training runs without it)
    import ray.data


def read_labeled(
    source: str | Path, splits=None, labels: str = "fer2013", ferplus_csv: str | None = None, **kwargs
) -> ray.data.Dataset:
    """Any labelled FER2013 copy: our Parquet, the Kaggle ``fer2013.csv``, or ``train/<emotion>/`` folders;
    ``labels="ferplus"``: FER+ majority labels (our Parquet only: it carries the join key)."""
    from fer_ray.data import fer2013

    s = str(source)
    if s.endswith(".parquet"):
        return fer2013.read_fer_parquet(s, splits=splits, labels=labels, ferplus_csv=ferplus_csv, **kwargs)
    if labels != "fer2013":
        raise ValueError(f"FER+ labels need our FER2013 Parquet (it carries csv_index), got {s!r}")
    if s.endswith(".csv"):
        return fer2013.read_fer_csv(s, splits=splits, **kwargs)
    if s.startswith("s3://") or Path(s).is_dir():
        return fer2013.read_image_folders(s, splits=splits, **kwargs)
    raise FileNotFoundError(
        f"no labelled FER2013 data at {s!r}: expected a .parquet file, a Kaggle fer2013.csv, "
        "or a directory with train/<emotion>/*.jpg (and optionally test/<emotion>/)"
    )


__all__ = ["SOURCE_COLUMNS", "decode", "read_labeled"]
