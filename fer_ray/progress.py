"""Progress of long work: a tqdm bar on a terminal; anywhere else (a log file, CI, ``ray job submit``'s
captured output), where carriage returns make a mess, the same numbers as a log line every
:data:`LOG_INTERVAL_S` seconds and one at the end."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 30.0  # seconds between plain progress lines when stderr is not a terminal

T = TypeVar("T")


def progress_mode(progress: bool | None) -> str:
    """``"bar"``, ``"log"`` or ``"off"`` for a ``progress`` argument (``None``: bar on a TTY, else log lines)."""
    if progress is not None:
        return "bar" if progress else "off"
    try:
        return "bar" if sys.stderr.isatty() else "log"
    except (AttributeError, ValueError):  # replaced or closed stream
        return "log"


def _terminal_size() -> dict[str, Any]:
    """tqdm's size arguments: follow the terminal, unless it reports no size. A pseudo-terminal opened
    without one (some CI runners, ``docker exec -t``) says 0x0, and tqdm then hides every bar."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": size.columns or 100, "nrows": size.lines or 24}


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


class Progress(contextlib.AbstractContextManager):
    """A tqdm bar, periodic log lines, or nothing (:func:`progress_mode`); ``postfix`` values (``faces=...``)
    show next to the count. :meth:`close` (or leaving the ``with``) writes, in log mode, a final line."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "it",
        progress: bool | None = None,
        initial: int = 0,
        interval_s: float | None = None,
        leave: bool = True,
    ):
        self.desc, self.total, self.unit = desc, total, unit
        self.mode = progress_mode(progress)
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.interval_s = LOG_INTERVAL_S if interval_s is None else interval_s
        self._start = self._last_log = time.monotonic()
        self._closed = False
        self._lock = threading.Lock()  # scoring updates from a polling thread
        self._bar = None
        self._stack = contextlib.ExitStack()  # closes the bar, then the log redirection
        if self.mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Our log lines (root logger's console handlers) print above the bar instead of through it.
            self._stack.enter_context(logging_redirect_tqdm())
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                **_terminal_size(),
                leave=leave,
                smoothing=0.1,
                mininterval=0.2,
            )
            self._stack.callback(self._bar.close)

    def update(self, n: int = 1, **postfix: Any) -> None:
        self.set(self.n + n, **postfix)

    def set(self, n: int, **postfix: Any) -> None:
        with self._lock:
            if self._closed:
                return
            delta, self.n = n - self.n, n
            if postfix:
                self.postfix.update(postfix)
            if self._bar is not None:
                if postfix:
                    self._bar.set_postfix({k: _fmt(v) for k, v in self.postfix.items()}, refresh=False)
                if delta:
                    self._bar.update(delta)
                elif postfix:
                    self._bar.refresh()
            elif self.mode == "log" and time.monotonic() - self._last_log >= self.interval_s:
                self._log()

    def write(self, line: str) -> None:
        """A line of text that does not break the bar (above it on a TTY; a log line otherwise)."""
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        elif self.mode == "log":
            logger.info("%s", line)

    def line(self, final: bool = False) -> str:
        """The plain text of the current state, e.g. ``scoring: 120/1,000 images (12%), 3.4 images/s, ETA 4m18s``."""
        elapsed = time.monotonic() - self._start
        done = self.n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        count = f"{self.n:,}/{self.total:,}" if self.total is not None else f"{self.n:,}"
        parts = [f"{count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if final:
            parts.append(f"in {format_duration(elapsed)}")
        if 0 < rate < 1:  # slow items (epochs, trials): time per item reads better than 0.01/s
            parts.append(f"{format_duration(1 / rate)} per {self.unit.removesuffix('s')}")
        else:
            parts.append(f"{rate:,.2f} {self.unit}/s" if rate < 10 else f"{rate:,.0f} {self.unit}/s")
        if not final and self.total is not None and rate > 0 and self.n < self.total:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        parts += [f"{k} {_fmt(v)}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts)

    def _log(self, final: bool = False) -> None:
        self._last_log = time.monotonic()
        logger.info("%s", self.line(final))

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stack.close()
            if self.mode == "log":
                self._log(final=True)

    def __exit__(self, *exc: Any) -> None:
        self.close()


def iterate(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "it", progress: bool | None = None, **kw: Any
) -> Iterator[T]:
    """``items`` with a :class:`Progress` counting them (``leave=False`` etc. pass through)."""
    with Progress(desc, total=total, unit=unit, progress=progress, **kw) as p:
        for item in items:
            yield item
            p.update(1)


class Poller:
    """Calls ``poll()`` every ``every_s`` seconds on a daemon thread, and once more at the end: progress that
    lives elsewhere (a Ray actor's counters, a worker's ``history.json``) while the main thread blocks in Ray."""

    def __init__(self, poll: Callable[[], None], every_s: float = 1.0):
        self._poll, self._every = poll, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fer_ray-progress", daemon=True)

    def _safe_poll(self) -> None:
        try:
            self._poll()
        except Exception as e:  # a progress display must never fail the job
            logger.debug("progress poll failed: %s", e)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._safe_poll()

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=max(5.0, 2 * self._every))
        self._safe_poll()


class ProgressCounter:
    """Counts Ray workers ``add.remote`` without waiting and the driver polls with ``get``: a zero-CPU
    actor, whose process imports this module (so it stays free of heavy imports)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def add(self, **counts: int) -> None:
        self.counts.update({k: int(v) for k, v in counts.items()})

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def without_ray_data_bars(ds):
    """``ds`` with Ray Data's own bars off (two bars redrawing the same lines garble both): on the dataset's
    own DataContext, not the process-wide one; Ray Data's one warning that they are off is spent here."""
    from ray.util.debug import log_once

    ds.context.enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")  # the key of Ray Data's "Progress bars disabled" warning
    return ds
