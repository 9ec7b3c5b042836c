"""One run at a time per ``OUT``: ``OUT/lock.json`` names the run that writes there and carries its heartbeat."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from fer_ray.data.s3 import client_for, error_code
from fer_ray.score.store import LOCK_FILE, OutputStore

logger = logging.getLogger(__name__)


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


class RunLock(contextlib.AbstractContextManager):
    """``OUT/lock.json``: names its owner (run id, host, pid, start); a daemon thread refreshes its heartbeat.

    Created exclusively (``O_EXCL`` locally, a conditional ``If-None-Match: *`` PUT on S3), so of two runs
    starting together exactly one gets it; the other waits up to ``wait_s``, then raises :class:`OutputLocked`.
    A lock whose heartbeat is older than ``stale_s`` is taken over with a warning; so is, at once, that of a
    process on this host that no longer runs (``kill -9``, the OOM killer). If two runs take over one stale
    lock at once, the later wins; the other's heartbeat thread sees a foreign owner and :meth:`check` raises
    before that run touches OUT's files again.
    """

    def __init__(self, store: OutputStore, owner: str, stale_s: float = 300.0, heartbeat_s: float | None = None):
        if stale_s <= 0:
            raise ValueError(f"stale_s must be > 0, got {stale_s}")
        self.store, self.owner, self.stale_s = store, owner, stale_s
        self.heartbeat_s = heartbeat_s or max(0.5, min(30.0, stale_s / 5))
        self.path = store.path(LOCK_FILE)
        self.taken_over: dict[str, Any] | None = None  # the stale lock this run replaced
        self._started = time.time()
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
            "started_at": self._started,
            "heartbeat": now,
            "heartbeat_iso": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(timespec="seconds"),
        }

    def _put(self, record: dict[str, Any], exclusive: bool = False) -> bool:
        """Write the lock object; ``exclusive``: only where there is none (False when one exists)."""
        data = json.dumps(record, indent=2).encode()
        if self.store.is_s3:  # one PUT replaces the object atomically
            bucket, _, key = self.path.partition("/")
            only_new = {"IfNoneMatch": "*"} if exclusive else {}
            try:
                client_for(self.store.settings).put_object(Bucket=bucket, Key=key, Body=data, **only_new)
            except Exception as e:
                if exclusive and error_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                    return False
                raise
            return True
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        if exclusive:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        tmp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"  # readers never see a half-written heartbeat
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, self.path)
        return True

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
        with contextlib.suppress(FileNotFoundError):
            self.store.fs.delete_file(self.path)

    # -- acquire / heartbeat / release --------------------------------------------------------------
    def acquire(self, wait_s: float = 0.0) -> RunLock:
        deadline = time.monotonic() + max(0.0, wait_s)
        announced = False
        while True:
            if self._put(self._record(), exclusive=True):
                # Stores that ignore If-None-Match (some S3 look-alikes) let two PUTs "win": the later
                # one is what stays, so only the run that reads its own record back holds the lock.
                mine = self.read()
                if mine is not None and mine.get("owner") == self.owner:
                    break
            held = self.read()
            if held is None:
                continue  # released between our create and read: try again
            age = time.time() - float(held.get("heartbeat", 0))
            owner, host, pid = held.get("owner"), held.get("host"), held.get("pid")
            dead = None
            if _died_on_this_host(held):  # killed on this very host: no need to wait for its heartbeat to age
                dead = f"run {owner} (pid {pid} on this host) is no longer running"
            elif age > self.stale_s:
                dead = (
                    f"run {owner} (host {host}, pid {pid}) sent no heartbeat for {age:.0f} s "
                    f"(> {self.stale_s:.0f} s); it is presumed dead"
                )
            if dead:
                logger.warning("taking over the lock of %s: %s", self.store.uri, dead)
                self.taken_over = held
                self._delete()
                continue
            if time.monotonic() >= deadline:
                raise OutputLocked(
                    f"{self.store.uri} is in use by run {owner} (host {host}, pid {pid}, heartbeat {age:.0f} s ago); "
                    "wait for it to finish (--lock-wait SECONDS), "
                    f"or pick another --out (a lock without heartbeat for {self.stale_s:.0f} s is taken over)"
                )
            if not announced:
                logger.info("%s is locked by run %s; waiting up to %.0f s", self.store.uri, owner, wait_s)
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
                    self._put(self._record(), exclusive=True)
                    continue
                if held.get("owner") != self.owner:
                    self._lost = f"the lock of {self.store.uri} now belongs to run {held.get('owner')}"
                    logger.error("%s; this run stops writing there", self._lost)
                    return
                self._put(self._record())
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

    def __exit__(self, *exc: object) -> None:
        self.release()
