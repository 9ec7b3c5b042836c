"""Small helpers shared by the thin CLIs in ``jobs/``."""

from __future__ import annotations

import argparse
import logging
import os


def setup(verbose: bool = False) -> None:
    """Logging for CLIs; usage stats stay off unless the user opted in (see fer_ray/__init__)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def add_ray_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ray")
    g.add_argument("--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)")
    g.add_argument(
        "--ray-cpus",
        type=int,
        default=None,
        help="logical CPUs of a locally started Ray (default: 2x cores, leaving room for Ray Data next to workers)",
    )
