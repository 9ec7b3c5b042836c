"""What is in a data source: counts per split and class, per file format, and errors per reason, from
the real readers and decode stage (so its errors are exactly those training or scoring would see)."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from fer_ray.config import RAY_FLAGS, setting
from fer_ray.data.decode import decode_batch
from fer_ray.data.fer2013 import FOLDER_SPLITS, read_fer_csv, read_fer_parquet, read_image_folders
from fer_ray.data.s3 import S3Settings, is_s3_uri, open_text, resolve_filesystem
from fer_ray.data.sources import read_images
from fer_ray.labels import EMOTIONS
from fer_ray.preprocess import PreprocessConfig
from fer_ray.runtime import RayConfig

if TYPE_CHECKING:  # Ray is imported where a dataset is built, not by ``jobs/describe_data.py --help``
    import ray.data


@dataclass(frozen=True)
class DescribeConfig:
    """``jobs/describe_data.py``: which sources to describe, and where the full report goes."""

    sources: tuple[str, ...] = setting(
        (),
        "FER .parquet, Kaggle fer2013.csv, train/<emotion>/ folders, image dirs/files/globs, "
        "list files (.txt/.csv/.parquet with a path column) or s3://bucket/prefix",
        positional=True,
        metavar="SOURCE",
        default_text="required",
    )
    limit: int | None = setting(None, "read only the first N rows of each source (unset: all)")
    json: str | None = setting(None, "also write the full report as JSON to this path", metavar="FILE")
    ray: RayConfig = setting(
        help="how the job reaches Ray", default_factory=RayConfig, flatten=True, fields=RAY_FLAGS, group="ray"
    )


def looks_like_image_folders(root: str, settings: S3Settings | None = None) -> bool:
    """True when ``root`` holds ``train/``, ``test/``, ``val/`` or ``validation/`` sub-folders."""
    try:
        fs, path = resolve_filesystem(root, settings)
        entries = fs.get_file_info(pafs.FileSelector(path))
    except Exception:  # not a folder, or unreadable: the reader of plain images raises the helpful error
        return False
    return any(e.type == pafs.FileType.Directory and e.base_name.lower() in FOLDER_SPLITS for e in entries)


def open_source(source: str, settings: S3Settings | None = None) -> tuple[str, ray.data.Dataset]:
    """``(reader name, dataset)`` for one source, choosing the reader from its form."""
    s = str(source)
    lower = s.lower()
    if lower.endswith(".parquet"):
        fs, path = resolve_filesystem(s, settings)
        if "image" in pq.read_schema(path, filesystem=fs).names:  # else a list of paths, read below
            return "fer_parquet", read_fer_parquet(s, settings=settings)
    if lower.endswith(".csv"):
        with open_text(s, settings) as f:  # Kaggle's CSV has a pixels column; one with a path column lists images
            header = f.readline()
        if "pixels" in [c.strip().strip('"').lower() for c in header.split(",")]:
            return "fer_csv", read_fer_csv(s, settings=settings)
    if looks_like_image_folders(s, settings):
        return "image_folders", read_image_folders(s, settings=settings)
    return "images", read_images([s], settings)


def _format_of(data: Any, path: str) -> str:
    if data is not None and len(data):
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format:
                    return im.format
        except Exception:  # not an image: fall through to the name
            pass
    ext = os.path.splitext(str(path))[1].lower()
    return f"unrecognised {ext}" if ext else "unrecognised (no extension)"


def _summary_batch(batch: dict[str, np.ndarray], cfg: PreprocessConfig) -> dict[str, np.ndarray]:
    """Format per row, then the real decode stage; only small columns leave the task."""
    n = len(batch["path"])
    if "pixels" in batch:
        formats = ["csv pixels"] * n
    else:
        formats = [_format_of(data, path) for data, path in zip(batch["image"], batch["path"], strict=True)]
    out = decode_batch(batch, cfg)
    errors = out["error"]
    return {
        **{c: np.asarray(out[c], dtype=object) for c in ("split", "usage", "emotion")},
        "label": np.asarray(out["label"], dtype=np.int64),
        "format": np.asarray(formats, dtype=object),
        "error": errors,
        # Paths of failed rows only, as examples; good rows would only fill the driver's memory.
        "path": np.asarray([p if e else None for p, e in zip(batch["path"], errors, strict=True)], dtype=object),
    }


def reason_key(message: str) -> str:
    """Group error messages by kind: the text before the details, with numbers replaced by N."""
    head = re.split(r"[:(]", message, maxsplit=1)[0].strip()
    return re.sub(r"\d[\d,.x]*", "N", head) or message


def _counts(series: pd.Series) -> dict[str, int]:
    s = series.astype(object).fillna("(unknown)")
    return {str(k): int(v) for k, v in s.value_counts().sort_index().items()}


def summarize(rows: pd.DataFrame, source: str, reader: str) -> dict[str, Any]:
    """The report of one source from its per-row summary (columns of :func:`_summary_batch`)."""
    rows = rows.astype({"split": object, "usage": object, "emotion": object, "error": object, "path": object})
    ok = rows["error"].isna()
    report: dict[str, Any] = {
        "source": source,
        "reader": reader,
        "rows": len(rows),
        "decoded": int(ok.sum()),
        "errors": int((~ok).sum()),
        "by_split": _counts(rows["split"]),
        "by_usage": _counts(rows["usage"]),
        "formats": _counts(rows["format"]),
    }
    labelled = rows[rows["label"] >= 0]
    report["by_split_class"] = {
        split: _class_counts(group)
        for split, group in labelled.groupby(labelled["split"].fillna("(unknown)"), sort=True)
    }
    # The paper's (and most FER papers') "test" set is PublicTest + PrivateTest together.
    test = labelled[labelled["usage"].isin(["PublicTest", "PrivateTest"])]
    report["paper_test"] = {"total": len(test), "by_class": _class_counts(test)} if len(test) else None
    reasons: dict[str, dict[str, Any]] = {}
    for message, path in zip(rows.loc[~ok, "error"], rows.loc[~ok, "path"], strict=True):
        entry = reasons.setdefault(reason_key(str(message)), {"count": 0, "example": str(message), "path": path})
        entry["count"] += 1
    report["error_reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1]["count"]))
    return report


def _class_counts(rows: pd.DataFrame) -> dict[str, int]:
    counts = rows["label"].value_counts()
    return {e: int(counts.get(i, 0)) for i, e in enumerate(EMOTIONS) if counts.get(i, 0)}


def describe(
    sources: Sequence[str] | str,
    limit: int | None = None,
    settings: S3Settings | None = None,
    cfg: PreprocessConfig | None = None,
) -> dict[str, Any]:
    """``{"sources": [report, ...], "rows": total, "errors": total}`` (``limit``: first N rows of each)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise ValueError("no sources given; pass a Parquet/CSV file, an image folder, a bucket prefix or image files")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if settings is None and any(is_s3_uri(str(s)) for s in sources):
        settings = S3Settings.from_env()
    reports = []
    for source in map(str, sources):
        reader, ds = open_source(source, settings)
        if limit is not None:
            ds = ds.limit(limit)
        summary = ds.map_batches(_summary_batch, fn_kwargs={"cfg": cfg or PreprocessConfig()}, batch_size=256)
        reports.append({**summarize(summary.to_pandas(), source, reader), "limit": limit})
    return {
        "sources": reports,
        "rows": sum(r["rows"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
    }


def format_report(result: dict[str, Any]) -> str:
    """A concise human-readable rendering of :func:`describe`'s result."""
    lines: list[str] = []
    for r in result["sources"]:
        limited = f", first {r['limit']:,} rows" if r.get("limit") else ""
        lines.append(f"== {r['source']} ({r['reader']}{limited})")
        lines.append(f"rows {r['rows']:,}: decoded {r['decoded']:,}, errors {r['errors']:,}")
        lines.append("splits: " + _kv(r["by_split"]))
        if set(r["by_usage"]) != {"(unknown)"}:
            lines.append("usage: " + _kv(r["by_usage"]))
        for split, counts in r["by_split_class"].items():
            lines.append(f"  {split:<9} {sum(counts.values()):>7,}  " + _kv(counts))
        if r["paper_test"]:
            t = r["paper_test"]
            lines.append(f"  paper test = PublicTest + PrivateTest: {t['total']:,}  " + _kv(t["by_class"]))
        lines.append("formats: " + _kv(r["formats"]))
        for key, e in r["error_reasons"].items():
            lines.append(f"  error x{e['count']:,} {key}: e.g. {e['example']}")
    if len(result["sources"]) > 1:
        lines.append(f"total rows {result['rows']:,}, errors {result['errors']:,}")
    return "\n".join(lines)


def _kv(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in d.items()) or "-"
