"""Running a job: logging set-up, and user errors as one line with status 2 instead of a traceback."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable

from fer_ray.config import UserError

PROG = "fer_ray"
# What the `train` extra adds to the lean install (pyproject.toml).
TRAIN_EXTRA = ("torch", "onnx", "onnxscript")


class Exit(Exception):
    """Leave a job early with a status (e.g. after ``--print-config``); :func:`run_cli` returns it."""

    def __init__(self, code: int = 0):
        self.code = code


def setup(verbose: bool = False) -> None:
    """Logging for CLIs: our INFO lines, other libraries' warnings only (botocore's "Found credentials ..." is
    noise to a user); ``verbose``: everything at DEBUG. Usage stats stay off unless the user opted in."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("fer_ray").setLevel(logging.DEBUG if verbose else logging.INFO)


def before_ray(ns: argparse.Namespace) -> None:
    """Once the checks passed and just before Ray starts: Ray's own log lines only with ``--verbose``."""
    from fer_ray.runtime import configure_logging

    configure_logging(verbose=bool(getattr(ns, "verbose", False)))


def run_cli(main: Callable[[list[str]], int]) -> Callable[[list[str] | None], int]:
    """``main`` with user errors as one line on stderr and status 2 (the traceback only with ``--debug``)."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            return main(args)
        except Exit as e:
            return e.code
        except (UserError, ModuleNotFoundError) as e:
            missing = e.name.split(".")[0] if isinstance(e, ModuleNotFoundError) and e.name else None
            if isinstance(e, ModuleNotFoundError) and missing not in (*TRAIN_EXTRA, "ray"):
                raise
            if "--debug" in args:
                traceback.print_exc()
            if missing == "ray":  # only train gets here (fer_ray's import check asks every other job for Ray)
                message = (
                    f"{sys.executable} has no ray, which --backend ray needs — train with --backend plain "
                    "(one process, no Ray), or use the project's virtualenv (`make install`)"
                )
            elif missing:
                message = (
                    f"this job needs {e.name}, which the lean install (scoring, reports, Serve) leaves out — "
                    "pip install -e '.[train]' (or `make test`) adds training, export and evaluation"
                )
            else:
                message = " ".join(str(e).split())
            print(f"{PROG}: error: {message}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `... | head`: the reader left; say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141

    return wrapper
