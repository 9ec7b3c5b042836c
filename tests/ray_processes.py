"""Find and stop the processes of one Ray cluster a test started, and only those.

`ray stop` would stop every Ray on the machine (a user's, another test's). A cluster is named by a
marker on its command lines (its temp dir), but that alone misses processes: Ray's agents rename
themselves (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``), the dashboard's children are
multiprocessing spawns, and the client server names no directory. They were left running after
the suite. So a cluster is: the processes naming the marker, every process in their process
groups (start ``ray start`` with ``start_new_session=True`` so the group is the cluster's), and
all their descendants.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the parenthesised command name: state, ppid, pgrp, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _table() -> dict[int, tuple[bytes, int, int]]:
    """pid -> (command line, parent pid, process group) of every process still readable."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            fields = _stat(name)
        except (OSError, IndexError):
            continue
        out[int(name)] = (cmd, int(fields[1]), int(fields[2]))
    return out


def cluster_pids(marker: str) -> set[int]:
    """The processes of the cluster whose command lines name ``marker`` (never this process or its group)."""
    table, me, own_group = _table(), os.getpid(), os.getpgrp()
    found = {pid for pid, (cmd, _, _) in table.items() if marker.encode() in cmd}
    groups = {table[pid][2] for pid in found} - {own_group}
    found |= {pid for pid, (_, _, group) in table.items() if group in groups}
    while True:  # descendants, e.g. workers and agents of a raylet started without a session of its own
        more = {pid for pid, (_, ppid, _) in table.items() if ppid in found} - found
        if not more:
            return found - {me}
        found |= more


def kill_cluster(marker: str, wait_s: float = 10.0) -> list[int]:
    """SIGKILL the cluster's processes; the pids still alive after ``wait_s`` (empty when all stopped)."""
    pids = cluster_pids(marker)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait_s
    while True:
        left = sorted(pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid))
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        return _stat(pid)[0] == "Z"
    except (OSError, IndexError):
        return True
