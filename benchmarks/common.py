"""What every benchmark shares: peak memory of the process tree, machine facts, the JSON result file."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# -- memory of the process tree (no psutil in the venv: /proc directly) ------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name field may contain spaces
        children.setdefault(ppid, []).append(int(entry))
    return children


def _pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # kernels without smaps_rollup: RSS (over-counts shared pages)
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def tree_memory(root: int | None = None) -> int:
    """Summed PSS in bytes of ``root`` (default: this process) and all its descendants."""
    root = root or os.getpid()
    children = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _pss_bytes(pid)
        stack.extend(children.get(pid, ()))
    return total


class PeakMemory:
    """Samples :func:`tree_memory` in a background thread while the ``with`` block runs."""

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_memory())
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, tree_memory())


def timed_then_measured(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` twice: once unobserved for its timings, then under :class:`PeakMemory` for its peak.

    Sampling PSS makes the kernel walk the page tables of every process in the tree several
    times a second. A local Ray has a dozen processes mapping the object store, a plain loop
    one, so timing a sampled run taxes only the Ray path (seen once: Ray Train with 1 worker at
    158 vs 264 images/s in two otherwise identical runs with and without the sampler).
    """
    result = fn()
    with PeakMemory() as m:
        fn()
    result["peak_memory_mb"] = round(m.peak / 2**20, 1)
    return result


def machine_info(**extra: Any) -> dict[str, Any]:
    """Facts that make a figure comparable: cores, load while it ran, versions."""
    import ray

    from fer_ray.inference.host_check import cpu_description

    info = {
        "cpu": cpu_description(),  # model and the flags that decide speed and int8 answers
        "cpus": os.cpu_count(),
        "ray_cpus": ray.cluster_resources().get("CPU") if ray.is_initialized() else None,
        "loadavg_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        **extra,
    }
    return info


def write_result(result: dict[str, Any], out: str | os.PathLike) -> Path:
    result.setdefault("date", time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def fer2013_or_exit(path: str | None = None) -> Path:
    """The FER2013 Parquet a benchmark reads: ``--data``, else the data root's copy, else a clear exit."""
    import sys

    from fer_ray.config import fer2013_parquet

    data = path or fer2013_parquet()
    if data is None:
        sys.exit("no FER2013 Parquet found: pass --data or set FER_RAY_DATA (see ../shared/data/fer2013/README.md)")
    return Path(data)


def model_args(doc: str, default_out: Path, argv: list[str] | None = None, data_help: str = "FER2013 Parquet"):
    """The command line of the benchmarks that score models on FER2013: models, engine (fp32 ONNX unless told:
    int8 answers differ between CPUs), data and the JSON to write."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="*", default=["ae_cnn_attn", "cnn_attn"], help="shipped names or artifact paths")
    p.add_argument("--engine", default="onnx", help="engine of every model (default: fp32 ONNX)")
    p.add_argument("--data", default=None, help=data_help)
    p.add_argument("--out", type=Path, default=default_out)
    return p.parse_args(argv)


def model_label(model: str) -> str:
    """How results name a model argument: a shipped name as it is, a path with the home directory as ``~``, so no
    machine path is committed."""
    home = str(Path.home())
    return "~" + model[len(home) :] if model.startswith(home + os.sep) else model


def repo_relative(path: str | os.PathLike) -> str:
    """A path as results record it: relative to the repository root, so no machine path is committed."""
    return os.path.relpath(Path(path).resolve(), Path(__file__).resolve().parent.parent)
