"""The output directory of a scoring job, local or on S3, and what makes reruns resumable.

Layout of ``OUT``::

    rows/part-<run_id>-<write_uuid>-<task>-0.parquet   one row per face (or per image without one)
    inputs.parquet                                     the last run's listing: the report's denominator
    summary.json, report.html, config.json             written at the end of every run
    runs/<run_id>.json                                 one record per run (counts, timings)

Every run writes new part files (its ``run_id`` is in their names) and never rewrites
old ones. An input is *done* when its key (path, size, mtime) has a complete set of rows
in a readable part file; a rerun scores only the rest. A run killed while writing can
leave a part file without its Parquet footer: :meth:`OutputStore.scan` deletes such
files, so their inputs are scored again and every input ends with exactly one set of rows.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fer_ray.data.sources import S3Settings, resolve_filesystem

logger = logging.getLogger(__name__)

ROWS_DIR = "rows"
RUNS_DIR = "runs"
INPUTS_FILE = "inputs.parquet"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
CONFIG_FILE = "config.json"
PART_PREFIX = "part-"
KEY_COLUMNS = ("path", "size", "mtime")
_SCAN_COLUMNS = [*KEY_COLUMNS, "faces"]


def key_hash(df: pd.DataFrame) -> np.ndarray:
    """64-bit hash per row of the resume key (path, size, mtime); missing size/mtime hash as -1."""
    if len(df) == 0:
        return np.zeros(0, dtype=np.uint64)
    keys = pd.DataFrame(
        {
            "path": df["path"].astype(str).to_numpy(),
            "size": pd.to_numeric(df["size"]).fillna(-1).astype(np.int64).to_numpy(),
            "mtime": pd.to_numeric(df["mtime"]).astype(np.float64).fillna(-1.0).to_numpy(),
        }
    )
    return pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)


@dataclass
class ScanResult:
    """What :meth:`OutputStore.scan` found: keys with a complete set of rows, and what it repaired."""

    done: np.ndarray  # sorted unique key hashes (uint64)
    files: int = 0
    rows: int = 0
    removed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


class OutputStore:
    """Reads and writes the files of one ``OUT`` (a local directory or ``s3://bucket/prefix``)."""

    def __init__(self, out: str, settings: S3Settings | None = None):
        self.uri = str(out).rstrip("/")
        self.fs, self.root = resolve_filesystem(self.uri, settings)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    # -- plain files -------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def write_bytes(self, name: str, data: bytes) -> None:
        target = self.path(name)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def write_json(self, name: str, obj: Any) -> None:
        self.write_bytes(name, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def write_inputs(self, listing: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(listing[["path", "size", "mtime", "error"]], preserve_index=False)
        self.fs.create_dir(self.root, recursive=True)
        pq.write_table(table, self.path(INPUTS_FILE), filesystem=self.fs)

    def read_inputs(self) -> pd.DataFrame | None:
        if not self.exists(INPUTS_FILE):
            return None
        return pq.read_table(self.path(INPUTS_FILE), filesystem=self.fs).to_pandas()

    def latest_run(self) -> dict[str, Any] | None:
        selector = pafs.FileSelector(self.path(RUNS_DIR), allow_not_found=True)
        names = sorted(i.base_name for i in self.fs.get_file_info(selector) if i.base_name.endswith(".json"))
        return self.read_json(posixpath.join(RUNS_DIR, names[-1])) if names else None

    # -- part files --------------------------------------------------------------------------
    def part_files(self) -> list[str]:
        """Paths (inside :attr:`fs`) of this job's Parquet part files, sorted."""
        selector = pafs.FileSelector(self.path(ROWS_DIR), allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File and i.base_name.startswith(PART_PREFIX) and i.base_name.endswith(".parquet")
        )

    def read_part(self, path: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(path, filesystem=self.fs, columns=columns)

    def clear(self) -> int:
        """Delete this job's files under OUT (``--overwrite``); anything else there is left alone."""
        doomed = self.part_files()
        doomed += [self.path(n) for n in (INPUTS_FILE, SUMMARY_FILE, REPORT_FILE, CONFIG_FILE) if self.exists(n)]
        runs = self.fs.get_file_info(pafs.FileSelector(self.path(RUNS_DIR), allow_not_found=True))
        doomed += [i.path for i in runs if i.base_name.endswith(".json")]
        for p in doomed:
            self.fs.delete_file(p)
        logger.info("--overwrite: deleted %d earlier result files under %s", len(doomed), self.uri)
        return len(doomed)

    def _read_keys(self, path: str) -> pd.DataFrame | None:
        """Key columns of one part file, or None when it is unreadable (no footer: a killed writer)."""
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
        try:
            return self.read_part(path, _SCAN_COLUMNS).to_pandas()
        except pa.ArrowInvalid:  # footer present but a column chunk is damaged
            return None

    def scan(self) -> ScanResult:
        """Find the inputs already scored; delete part files a killed run left unreadable or incomplete.

        A file is dropped (and its inputs rescored) when it has no Parquet footer, or when
        it holds rows of an image whose row count does not match its ``faces`` column: the
        pipeline writes all rows of an image into one file, so that only happens after
        something went wrong, and rescoring is the safe repair. I/O errors propagate:
        a flaky connection must never delete results.
        """
        removed: list[tuple[str, str]] = []
        per_file: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for p in self.part_files():
            df = self._read_keys(p)
            if df is None:
                self._delete(p, "unreadable Parquet (no footer: written by a run that was killed)", removed)
                continue
            faces = pd.to_numeric(df["faces"]).fillna(0).astype(np.int64).to_numpy()
            per_file[p] = (key_hash(df), np.maximum(faces, 1))
        while True:
            if not per_file:
                done, bad = np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
                break
            hashes = np.concatenate([h for h, _ in per_file.values()])
            expected_rows = np.concatenate([e for _, e in per_file.values()])
            done, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
            expected = np.zeros(len(done), dtype=np.int64)
            np.maximum.at(expected, inverse, expected_rows)
            bad = done[counts != expected]
            if len(bad) == 0:
                break
            for p in [p for p, (h, _) in per_file.items() if np.isin(h, bad).any()]:
                n = int(np.isin(np.unique(per_file[p][0]), bad).sum())
                self._delete(p, f"holds an incomplete or duplicated set of rows for {n} image(s)", removed)
                del per_file[p]
        rows = sum(len(h) for h, _ in per_file.values())
        return ScanResult(done=done, files=len(per_file), rows=rows, removed=removed)

    def _delete(self, path: str, reason: str, removed: list[tuple[str, str]]) -> None:
        logger.warning("deleting %s: %s; its inputs will be scored again", path, reason)
        self.fs.delete_file(path)
        removed.append((path, reason))
