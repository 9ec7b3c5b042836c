"""The output directory of a scoring job, local or on S3, and what makes reruns resumable.

Layout of ``OUT``::

    rows/part-<run_id>-<write_uuid>-<task>-0.parquet   one row per face (or per image without one)
    inputs.parquet                                     the last run's listing: the report's denominator
    summary.json, report.html, config.json             written at the end of every run
    runs/<run_id>.json                                 one record per run (counts, timings)
    lock.json                                          held while a run writes (fer_ray.score.run_lock)

An input is *done* when its key (path, size, mtime) has a complete set of rows in a readable part file and
none of them is a transient read error; a rerun scores only the rest. ``rows/`` holds the latest rows only,
so readers of ``rows/*.parquet`` (pandas, DuckDB, Spark) never see two versions of an image: the old rows of
an input that changed, or of a transient error, are dropped before it is scored again. A run killed between
writing the new file and deleting the old leaves both; the next scan repairs that by rescoring their images.
"""

from __future__ import annotations

import json
import logging
import posixpath
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fer_ray.data.fetch import is_transient_error
from fer_ray.data.s3 import S3Settings, resolve_filesystem
from fer_ray.storage import is_remote
from fer_ray.video.config import VideoConfig

logger = logging.getLogger(__name__)

ROWS_DIR = "rows"
RUNS_DIR = "runs"
INPUTS_FILE = "inputs.parquet"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
CONFIG_FILE = "config.json"
LOCK_FILE = "lock.json"
PART_PREFIX = "part-"
KEY_COLUMNS = ("path", "size", "mtime")
_SCAN_COLUMNS = [*KEY_COLUMNS, "faces"]
# absent in hand-made or older part files (the video columns came with video input)
_SCAN_OPTIONAL = ["status", "error", "model_id", "segment", "sample_fps", "segment_s", "segment_rows"]
VIDEO_KEY_COLUMNS = ("segment", "segment_s", "sample_fps")


def _hash(columns: dict[str, np.ndarray]) -> np.ndarray:
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy(dtype=np.uint64)


def key_hash(df: pd.DataFrame) -> np.ndarray:
    """64-bit hash per row of the resume key (path, size, mtime; a video segment adds :data:`VIDEO_KEY_COLUMNS`);
    missing size/mtime hash as -1."""
    keys = {
        "path": df["path"].astype(str).to_numpy(),
        "size": pd.to_numeric(df["size"]).fillna(-1).astype(np.int64).to_numpy(),
        "mtime": pd.to_numeric(df["mtime"]).astype(np.float64).fillna(-1.0).to_numpy(),
    }
    h = _hash(keys).copy()
    video = df["segment"].notna().to_numpy() if "segment" in df else np.zeros(len(df), dtype=bool)
    if video.any():
        extra = {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan)[video] for c in VIDEO_KEY_COLUMNS}
        h[video] = _hash({**{k: v[video] for k, v in keys.items()}, **extra})
    return h


def expected_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows each row's input has in all: one per face or one (image), or the segment's ``segment_rows`` (video)."""
    faces = np.maximum(pd.to_numeric(df["faces"]).fillna(0).astype(np.int64).to_numpy(), 1)
    if "segment_rows" not in df:
        return faces
    segment_rows = df["segment_rows"].to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(segment_rows), faces, segment_rows).astype(np.int64)


def path_hash(paths: pd.Series) -> np.ndarray:
    """64-bit hash per path (to find rows of an input whose size or mtime changed)."""
    return _hash({"path": paths.astype(str).to_numpy()})


def _no_keys() -> np.ndarray:
    return np.zeros(0, dtype=np.uint64)


@dataclass
class ScanResult:
    """What :meth:`OutputStore.scan` found: keys with a complete set of rows, and what it repaired."""

    done: np.ndarray = field(default_factory=_no_keys)  # key hashes with a complete set of rows, bar transient errors
    files: int = 0
    rows: int = 0
    removed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    models: dict[str, int] = field(default_factory=dict)  # model_id -> rows
    # Keys of rows to drop before their inputs are scored again: transient errors of listed inputs, and
    # inputs listed now under another key (same path, new size or mtime).
    retry: np.ndarray = field(default_factory=_no_keys)
    stale: np.ndarray = field(default_factory=_no_keys)


class OutputStore:
    """Reads and writes the files of one ``OUT`` (a local directory or ``s3://bucket/prefix``)."""

    def __init__(self, out: str, settings: S3Settings | None = None):
        self.uri = str(out).rstrip("/")
        self.is_s3 = is_remote(self.uri)
        self.settings = settings if settings is not None or not self.is_s3 else S3Settings.from_env(credentials=False)
        self.fs, self.root = resolve_filesystem(self.uri, self.settings)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    # -- plain files -------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def write_bytes(self, name: str, data: bytes) -> None:
        # Through the store's own filesystem, not fer_ray.storage: its S3 settings may name another endpoint.
        target = self.path(name)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def write_inputs(self, listing: pd.DataFrame) -> None:
        buf = pa.BufferOutputStream()
        columns = ["path", "size", "mtime", "error", *(c for c in (*VIDEO_KEY_COLUMNS, "end_s") if c in listing)]
        pq.write_table(pa.Table.from_pandas(listing[columns], preserve_index=False), buf)
        self.write_bytes(INPUTS_FILE, buf.getvalue().to_pybytes())

    def read_inputs(self) -> pd.DataFrame | None:
        return self.read_part(self.path(INPUTS_FILE)).to_pandas() if self.exists(INPUTS_FILE) else None

    def latest_run(self) -> dict[str, Any] | None:
        runs = self._files(RUNS_DIR)
        return json.loads(self.read_bytes(posixpath.join(RUNS_DIR, posixpath.basename(runs[-1])))) if runs else None

    # -- part files --------------------------------------------------------------------------
    def _files(self, folder: str, prefix: str = "", suffix: str = ".json") -> list[str]:
        """Paths (inside :attr:`fs`) of the files in ``folder`` named ``<prefix>...<suffix>``, sorted."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(folder), allow_not_found=True))
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.startswith(prefix) and i.base_name.endswith(suffix)
        )

    def part_files(self) -> list[str]:
        """Paths (inside :attr:`fs`) of this job's Parquet part files, sorted."""
        return self._files(ROWS_DIR, PART_PREFIX, ".parquet")

    def read_schema(self, path: str) -> pa.Schema:
        return pq.read_schema(path, filesystem=self.fs)

    def video_config(self) -> VideoConfig:
        """The last run's video settings (config.json), so a report rebuilt later joins tracks the same way."""
        if not self.exists(CONFIG_FILE):
            return VideoConfig()
        saved = json.loads(self.read_bytes(CONFIG_FILE)).get("score", {}).get("video") or {}
        return VideoConfig(**{k: v for k, v in saved.items() if k in VideoConfig.__dataclass_fields__})

    def read_part(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(path, filesystem=self.fs, columns=columns)

    def clear(self) -> None:
        """Delete this job's files under OUT (``--overwrite``); anything else there is left alone."""
        doomed = self.part_files() + self._files(RUNS_DIR)
        doomed += [self.path(n) for n in (INPUTS_FILE, SUMMARY_FILE, REPORT_FILE, CONFIG_FILE) if self.exists(n)]
        for p in doomed:
            self.fs.delete_file(p)
        logger.info("--overwrite: deleted %d earlier result files under %s", len(doomed), self.uri)

    def _read_keys(self, path: str) -> pd.DataFrame | None:
        """Key columns (and status, error, model) of one part file, or None when it is unreadable."""
        try:
            schema = pq.read_schema(path, filesystem=self.fs)
        except pa.ArrowInvalid:
            return None
        missing = [c for c in _SCAN_COLUMNS if c not in schema.names]
        if missing:
            raise ValueError(
                f"{path} is named like a fer_ray part file but lacks columns {missing}; "
                f"move it out of {self.uri_of(ROWS_DIR)} or rerun with --overwrite"
            )
        columns = _SCAN_COLUMNS + [c for c in _SCAN_OPTIONAL if c in schema.names]
        try:
            return self.read_part(path, columns).to_pandas().reindex(columns=[*_SCAN_COLUMNS, *_SCAN_OPTIONAL])
        except pa.ArrowInvalid:  # footer present but a column chunk is damaged
            return None

    def scan(self, listing: pd.DataFrame) -> ScanResult:
        """Find the inputs of ``listing`` already scored; delete part files a killed run left unreadable or incomplete.

        A file is dropped (its inputs rescored) when it has no Parquet footer, or an image's row count there does not
        match its ``faces`` (all rows of an image go to one file). I/O errors propagate: a flaky connection must
        never delete results.
        """
        removed: list[tuple[str, str]] = []
        parts: dict[str, pd.DataFrame] = {}  # one row per part-file row: key, expected rows of its image, ...
        for p in self.part_files():
            df = self._read_keys(p)
            if df is None:
                self._delete(p, "unreadable Parquet (no footer: written by a run that was killed)", removed)
                continue
            error = (df["status"].astype(str) == "error").to_numpy()
            parts[p] = pd.DataFrame(
                {
                    "key": key_hash(df),
                    "expected": expected_rows(df),
                    "path": path_hash(df["path"]),
                    "transient": error & df["error"].map(is_transient_error).to_numpy(dtype=bool),
                    "model_id": df["model_id"].to_numpy(dtype=object),
                }
            )
        while parts:
            rows = pd.concat(parts.values())
            done, inverse, counts = np.unique(rows["key"].to_numpy(), return_inverse=True, return_counts=True)
            expected = np.zeros(len(done), dtype=np.int64)
            np.maximum.at(expected, inverse, rows["expected"].to_numpy())
            bad = done[counts != expected]
            if len(bad) == 0:
                break
            for p in [p for p, d in parts.items() if np.isin(d["key"], bad).any()]:
                n = int(np.isin(parts.pop(p)["key"].unique(), bad).sum())
                self._delete(p, f"holds an incomplete or duplicated set of rows for {n} image(s)", removed)
        if not parts:
            return ScanResult(removed=removed)
        listed, keys = key_hash(listing), rows["key"].to_numpy()
        transient = np.unique(keys[rows["transient"].to_numpy()])
        stale = np.isin(rows["path"].to_numpy(), path_hash(listing["path"])) & ~np.isin(keys, listed)
        models = rows["model_id"].dropna().astype(str).value_counts()
        return ScanResult(
            done=np.setdiff1d(done, transient),
            files=len(parts),
            rows=len(rows),
            removed=removed,
            models={str(k): int(v) for k, v in models.items()},
            retry=transient[np.isin(transient, listed)],
            stale=np.unique(keys[stale]),
        )

    def drop_rows(self, keys: np.ndarray, run_id: str, reason: str) -> int:
        """Rewrite the part files holding rows of ``keys`` as ``part-<run_id>-rewrite-...`` without them (a file
        left with no rows is just deleted); returns the rows dropped."""
        if len(keys) == 0:
            return 0
        dropped = 0
        for p in self.part_files():
            table = self.read_part(p)
            columns = [c for c in (*KEY_COLUMNS, *VIDEO_KEY_COLUMNS) if c in table.column_names]
            hit = np.isin(key_hash(table.select(columns).to_pandas()), keys)
            if not hit.any():
                continue
            kept = table.filter(pa.array(~hit))
            if kept.num_rows:
                name = f"{PART_PREFIX}{run_id}-rewrite-{uuid.uuid4().hex[:12]}-000000.parquet"
                pq.write_table(kept, self.path(ROWS_DIR, name), filesystem=self.fs)
            self.fs.delete_file(p)
            dropped += int(hit.sum())
            logger.info("dropped %d rows (%s) from %s", int(hit.sum()), reason, p)
        return dropped

    def _delete(self, path: str, reason: str, removed: list[tuple[str, str]]) -> None:
        logger.warning("deleting %s: %s; its inputs will be scored again", path, reason)
        self.fs.delete_file(path)
        removed.append((path, reason))
