"""Progress of long work (scoring, training, Tune sweeps, evaluation) as a person watching it wants it.

On a terminal (stderr is a TTY) a tqdm bar: count, rate and, when the total is known, ETA.
Anywhere else (a log file, CI, ``ray job submit``'s captured output) carriage returns would
make a mess, so the same numbers become a plain log line every :data:`LOG_INTERVAL_S`
seconds and one at the end. Every long-running library function takes
``progress: bool | None = None``: ``None`` chooses by the TTY, ``True`` forces the bar,
``False`` shows nothing.
"""

from __future__ import annotations

import contextlib
import logging
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
    if progress is False:
        return "off"
    if progress is True:
        return "bar"
    return "bar" if _stderr_is_tty() else "log"


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _terminal_size() -> dict[str, Any]:
    """tqdm's size arguments: follow the terminal, unless it reports no size. A pseudo-terminal opened
    without one (some CI runners, ``docker exec -t``) says 0x0, and tqdm then hides every bar."""
    import os

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


class Progress:
    """One progress display: a tqdm bar, periodic log lines, or nothing (see :func:`progress_mode`).

    ``update(n, **postfix)`` adds to the count, ``set(n, **postfix)`` sets it; ``postfix`` values
    (e.g. ``faces=...``, ``val_acc=...``) are shown next to the count. Use as a context manager, or
    call :meth:`close`, which in log mode writes a final line with the total time and rate.
    """

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
        self._redirect = contextlib.ExitStack()
        if self.mode == "bar":
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Our log lines (root logger's console handlers) print above the bar instead of through it.
            self._redirect.enter_context(logging_redirect_tqdm())
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                initial=initial,
                file=sys.stderr,
                **_terminal_size(),
                leave=leave,
                unit_scale=False,
                smoothing=0.1,
                mininterval=0.2,
            )

    # -- updates --------------------------------------------------------------------------------
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

    # -- rendering in log mode ------------------------------------------------------------------
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

    # -- end --------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._bar is not None:
                self._bar.close()
                self._redirect.close()
            elif self.mode == "log":
                self._log(final=True)

    def __enter__(self) -> Progress:
        return self

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
    """Calls ``poll()`` every ``every_s`` seconds on a daemon thread until stopped, and once more at the end.

    For progress that lives elsewhere (a Ray actor's counters, a ``history.json`` a training
    worker rewrites every epoch) while the main thread blocks in Ray (``write_parquet``, ``fit``).
    A failing poll is logged at DEBUG and retried: progress must never fail the job.
    """

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
    """Counts reported by Ray workers, read by the driver: run as a zero-CPU Ray actor.

    Workers call ``add.remote(images=..., faces=...)`` without waiting; the driver polls ``get``.
    Kept free of heavy imports: the actor's process imports this module.
    """

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, **counts: int) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)

    def get(self) -> dict[str, int]:
        return dict(self.counts)


def without_ray_data_bars(ds):
    """``ds`` with Ray Data's own progress bars off (our bar replaces them: two bars redrawing the
    same terminal lines garble both). A dataset keeps the DataContext it was built with, so this
    sets the dataset's own, leaving the process-wide one alone. Ray Data warns once that its bars
    are off; that warning is spent here."""
    from ray.util.debug import log_once

    ds.context.enable_progress_bars = False
    log_once("ray_data_progress_manager_disabled")  # the key of Ray Data's "Progress bars disabled" warning
    return ds
