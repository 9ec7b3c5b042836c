"""The output directory of a scoring job, local or on S3, and what makes reruns resumable.

Layout of ``OUT``::

    rows/part-<run_id>-<write_uuid>-<task>-0.parquet   one row per face (or per image without one)
    inputs.parquet                                     the last run's listing: the report's denominator
    summary.json, report.html, config.json             written at the end of every run
    runs/<run_id>.json                                 one record per run (counts, timings)

    lock.json                                          held while a run writes (see RunLock)

Every run writes new part files (its ``run_id`` is in their names). An input is *done*
when its key (path, size, mtime) has a complete set of rows in a readable part file and
none of them is a transient read error; a rerun scores only the rest. A run killed while
writing can leave a part file without its Parquet footer: :meth:`OutputStore.scan` deletes
such files, so their inputs are scored again and every input ends with exactly one set of rows.

``rows/`` always holds the latest rows only. When an input changed (same path, new size or
mtime) or its rows are a transient error about to be retried, :meth:`OutputStore.drop_rows`
rewrites the part files holding its old rows without them before the run scores it again:
whoever reads ``rows/*.parquet`` directly (pandas, DuckDB, Spark) never sees two versions of
an image. A rewrite writes the new file before deleting the old; a run killed in between
leaves both, which the next :meth:`~OutputStore.scan` sees as duplicated rows and repairs by
rescoring their images.

One run at a time writes to an ``OUT``: :class:`RunLock` keeps ``lock.json`` (owner run,
host, pid, heartbeat) there, created exclusively (``O_EXCL`` locally, a conditional
``If-None-Match: *`` PUT on S3); a lock whose heartbeat stopped longer ago than its timeout
is taken over with a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fer_ray.data.sources import S3Settings, is_s3_uri, is_transient_error, resolve_filesystem

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
_SCAN_OPTIONAL = ["status", "error", "model_id"]  # absent in hand-made or very old part files


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


def path_hash(paths: pd.Series) -> np.ndarray:
    """64-bit hash per path (to find rows of an input whose size or mtime changed)."""
    if len(paths) == 0:
        return np.zeros(0, dtype=np.uint64)
    return pd.util.hash_pandas_object(pd.Series(paths.astype(str).to_numpy()), index=False).to_numpy(dtype=np.uint64)


@dataclass
class ScanResult:
    """What :meth:`OutputStore.scan` found: keys with a complete set of rows, and what it repaired."""

    done: np.ndarray  # sorted unique key hashes (uint64) with a complete set of rows, transient errors excluded
    files: int = 0
    rows: int = 0
    removed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    transient: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))  # keys to retry
    models: dict[str, int] = field(default_factory=dict)  # model_id -> rows
    keys: pd.DataFrame | None = None  # one row per key found: key, path (hashes)

    def stale(self, listing: pd.DataFrame) -> np.ndarray:
        """Keys in OUT of inputs listed now under another key (same path, new size or mtime)."""
        if self.keys is None or not len(self.keys):
            return np.zeros(0, dtype=np.uint64)
        same_path = np.isin(self.keys["path"].to_numpy(), path_hash(listing["path"]))
        other_key = ~np.isin(self.keys["key"].to_numpy(), key_hash(listing))
        return np.unique(self.keys["key"].to_numpy()[same_path & other_key])


class OutputStore:
    """Reads and writes the files of one ``OUT`` (a local directory or ``s3://bucket/prefix``)."""

    def __init__(self, out: str, settings: S3Settings | None = None):
        self.uri = str(out).rstrip("/")
        self.is_s3 = is_s3_uri(self.uri)
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
            df = self.read_part(path, columns).to_pandas()
        except pa.ArrowInvalid:  # footer present but a column chunk is damaged
            return None
        for c in _SCAN_OPTIONAL:
            if c not in df:
                df[c] = None
        return df

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
        extra: dict[str, tuple[np.ndarray, np.ndarray, pd.Series]] = {}  # path hashes, transient mask, model ids
        for p in self.part_files():
            df = self._read_keys(p)
            if df is None:
                self._delete(p, "unreadable Parquet (no footer: written by a run that was killed)", removed)
                continue
            faces = pd.to_numeric(df["faces"]).fillna(0).astype(np.int64).to_numpy()
            per_file[p] = (key_hash(df), np.maximum(faces, 1))
            transient = (df["status"].astype(str) == "error").to_numpy() & df["error"].map(is_transient_error).to_numpy(
                dtype=bool
            )
            extra[p] = (path_hash(df["path"]), transient, df["model_id"])
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
        if not per_file:
            return ScanResult(done=done, files=0, rows=0, removed=removed)
        hashes = np.concatenate([h for h, _ in per_file.values()])
        transient = np.unique(hashes[np.concatenate([extra[p][1] for p in per_file])])
        models = pd.concat([extra[p][2] for p in per_file]).dropna().astype(str).value_counts()
        keys = pd.DataFrame({"key": hashes, "path": np.concatenate([extra[p][0] for p in per_file])})
        return ScanResult(
            done=np.setdiff1d(done, transient),
            files=len(per_file),
            rows=rows,
            removed=removed,
            transient=transient,
            models={str(k): int(v) for k, v in models.items()},
            keys=keys.drop_duplicates("key"),
        )

    def drop_rows(self, keys: np.ndarray, run_id: str, reason: str) -> int:
        """Rewrite the part files holding rows of ``keys`` without them; returns the rows dropped.

        Each affected file is rewritten as ``part-<run_id>-rewrite-...`` (same schema, the
        other rows unchanged), then deleted; a file left with no rows is just deleted.
        """
        if len(keys) == 0:
            return 0
        dropped = 0
        for p in self.part_files():
            table = self.read_part(p)
            hit = np.isin(key_hash(table.select(list(KEY_COLUMNS)).to_pandas()), keys)
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


# -- the run lock ----------------------------------------------------------------------------------
class OutputLocked(RuntimeError):
    """Another live run holds the lock of this ``OUT``."""


def _process_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), or None where /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])  # field 22; the name may hold spaces
    except (OSError, ValueError, IndexError):
        return None


def _died_on_this_host(held: dict[str, Any]) -> bool:
    """True when the lock's run ran on this host and its process is gone (or the pid now names another)."""
    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    start = _process_start(pid)
    return held.get("pid_start") is not None and start is not None and start != held["pid_start"]


class RunLock:
    """``OUT/lock.json``: at most one run writes to an ``OUT`` at a time.

    The lock object names its owner (run id, host, pid, start) and carries a heartbeat
    that a daemon thread refreshes every ``heartbeat_s``. It is created exclusively, so
    of two runs starting together exactly one gets it; the other waits up to ``wait_s``
    for it (0: not at all) and then raises :class:`OutputLocked`. A lock whose heartbeat
    is older than ``stale_s`` belongs to a run that died (killed, machine lost): it is
    taken over with a warning; so is, at once, the lock of a process on this host that no
    longer runs (``kill -9``, the OOM killer), whose rerun would otherwise wait ``stale_s``.
    If two runs take over the same stale lock at the same moment, the later one wins; the
    heartbeat thread of the other sees a foreign owner and :meth:`check` then raises before
    that run touches OUT's files again.
    """

    def __init__(self, store: OutputStore, owner: str, stale_s: float = 300.0, heartbeat_s: float | None = None):
        if stale_s <= 0:
            raise ValueError(f"stale_s must be > 0, got {stale_s}")
        self.store, self.owner, self.stale_s = store, owner, stale_s
        self.heartbeat_s = heartbeat_s or max(0.5, min(30.0, stale_s / 5))
        self.path = store.path(LOCK_FILE)
        self.taken_over: dict[str, Any] | None = None  # the stale lock this run replaced
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the lock object -------------------------------------------------------------------------
    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),  # tells the pid from a later process that reuses it
            "started_at": getattr(self, "_started", now),
            "heartbeat": now,
            "heartbeat_iso": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _create(self, record: dict[str, Any]) -> bool:
        """Create the lock object if there is none; False when one exists."""
        data = json.dumps(record, indent=2).encode()
        if not self.store.is_s3:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        bucket, _, key = self.path.partition("/")
        try:
            self._client().put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except Exception as e:
            code = str((getattr(e, "response", None) or {}).get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise
        return True

    def _write(self, data: bytes) -> None:
        if self.store.is_s3:  # one PUT replaces the object atomically
            bucket, _, key = self.path.partition("/")
            self._client().put_object(Bucket=bucket, Key=key, Body=data)
            return
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"  # readers never see a half-written heartbeat
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)

    def _client(self):
        from fer_ray.data.s3 import client_for

        return client_for(self.store.settings)

    def read(self) -> dict[str, Any] | None:
        """The current lock record, or None when OUT is not locked."""
        for attempt in range(3):
            try:
                return json.loads(self.store.read_bytes(LOCK_FILE))
            except (OSError, ValueError):  # missing, or caught mid-replace (S3 GET racing a PUT)
                if not self.store.exists(LOCK_FILE):
                    return None
                if attempt == 2:
                    raise
                time.sleep(0.2)
        return None

    def _delete(self) -> None:
        try:
            self.store.fs.delete_file(self.path)
        except FileNotFoundError:
            pass

    # -- acquire / heartbeat / release --------------------------------------------------------------
    def acquire(self, wait_s: float = 0.0) -> RunLock:
        self._started = time.time()
        deadline = time.monotonic() + max(0.0, wait_s)
        announced = False
        while True:
            if self._create(self._record()):
                # Stores that ignore If-None-Match (some S3 look-alikes) let two PUTs "win": the later
                # one is what stays, so only the run that reads its own record back holds the lock.
                mine = self.read()
                if mine is not None and mine.get("owner") == self.owner:
                    break
            held = self.read()
            if held is None:
                continue  # released between our create and read: try again
            age = time.time() - float(held.get("heartbeat", 0))
            gone = _died_on_this_host(held)
            if gone:  # killed (kill -9, OOM) on this very host: no need to wait for its heartbeat to age
                logger.warning(
                    "taking over the lock of %s: run %s (pid %s on this host) is no longer running",
                    self.store.uri,
                    held.get("owner"),
                    held.get("pid"),
                )
                self.taken_over = held
                self._delete()
                continue
            if age > self.stale_s:
                logger.warning(
                    "taking over the lock of %s: run %s (host %s, pid %s) sent no heartbeat for %.0f s (> %.0f s); "
                    "it is presumed dead",
                    self.store.uri,
                    held.get("owner"),
                    held.get("host"),
                    held.get("pid"),
                    age,
                    self.stale_s,
                )
                self.taken_over = held
                self._delete()
                continue
            if time.monotonic() >= deadline:
                raise OutputLocked(
                    f"{self.store.uri} is in use by run {held.get('owner')} (host {held.get('host')}, pid "
                    f"{held.get('pid')}, heartbeat {age:.0f} s ago); wait for it to finish (--lock-wait SECONDS), "
                    f"or pick another --out (a lock without heartbeat for {self.stale_s:.0f} s is taken over)"
                )
            if not announced:
                logger.info("%s is locked by run %s; waiting up to %.0f s", self.store.uri, held.get("owner"), wait_s)
                announced = True
            time.sleep(min(1.0, self.heartbeat_s, max(0.05, deadline - time.monotonic())))
        logger.info("locked %s for run %s", self.store.uri, self.owner)
        self._thread = threading.Thread(target=self._beat, name=f"fer_ray-lock-{self.owner}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                held = self.read()
                if held is None:  # deleted under us (by hand?): hold it again unless another run did
                    logger.warning("the lock of %s disappeared; taking it again", self.store.uri)
                    self._create(self._record())
                    continue
                if held.get("owner") != self.owner:
                    self._lost = f"the lock of {self.store.uri} now belongs to run {held.get('owner')}"
                    logger.error("%s; this run stops writing there", self._lost)
                    return
                self._write(json.dumps(self._record(), indent=2).encode())
            except Exception as e:  # a missed beat is not fatal; stale_s allows several
                logger.warning("lock heartbeat for %s failed: %s", self.store.uri, e)

    def check(self) -> None:
        """Raise :class:`OutputLocked` if another run took this run's lock over."""
        if self._lost:
            raise OutputLocked(self._lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        held = self.read()
        if held is not None and held.get("owner") == self.owner:
            self._delete()
            logger.info("released the lock of %s", self.store.uri)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
