"""A plain run's progress as one file small enough to commit, and back: a long CPU schedule spans many sessions,
and a session's machine (with ``~/.cache``) is not always the next one's, while the repository is. Model v2's
first 300-epoch run was lost that way at epoch 212 of 300 (#34).

The parked file holds what a resume needs, unchanged: the latest checkpoint in full (weights, EMA, optimizer and
scheduler state, random state, history) and the run's ``train_config.json`` record; of the best checkpoint only
what its export reads (the validated weights and that epoch's metrics), and nothing where it is the latest.
``unpark`` lays them out as a run directory, so rerunning the run's own command resumes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fer_ray.config import UserError
from fer_ray.train import checkpoints
from fer_ray.train.plain import BEST, LATEST, save_atomic

FORMAT = "fer_ray.parked_run/1"
SAME_AS_LATEST = "latest"


def _best_for_export(best: dict[str, Any]) -> dict[str, Any]:
    """The part of a best checkpoint :func:`checkpoints.export_state` reads."""
    weights = {"ema": {"weights": best["ema"]["weights"]}} if "ema" in best else {"model": best["model"]}
    return {**weights, "epoch": best["epoch"], "history": best["history"][-1:]}


def _best_to_park(best: dict[str, Any] | None, latest: dict[str, Any]) -> dict[str, Any] | str | None:
    """While accuracy climbs the best epoch is the latest: its weights are then stored once."""
    if best is None:
        return None
    return SAME_AS_LATEST if best["epoch"] == latest["epoch"] else _best_for_export(best)


def park(run_dir: Path | str, dest: Path | str) -> dict[str, Any]:
    """Write ``run_dir``'s resume state to the file ``dest``; returns a summary (epochs done, best, bytes)."""
    run_dir, dest = Path(run_dir).expanduser(), Path(dest).expanduser()
    latest_path, record_path = run_dir / LATEST / checkpoints.STATE, run_dir / checkpoints.TRAIN_CONFIG
    if not latest_path.exists() or not record_path.exists():
        raise UserError(f"{run_dir}: no plain run here (no {LATEST}/{checkpoints.STATE} or {checkpoints.TRAIN_CONFIG})")
    latest = torch.load(latest_path, map_location="cpu", weights_only=True)
    best_path = run_dir / BEST / checkpoints.STATE
    best = torch.load(best_path, map_location="cpu", weights_only=True) if best_path.exists() else None
    parked = {
        "format": FORMAT,
        "run_name": run_dir.name,
        "record": json.loads(record_path.read_text()),
        "latest": latest,
        "best": _best_to_park(best, latest),
    }
    save_atomic(parked, dest)
    return {"epochs_done": latest["epoch"] + 1, "best": latest.get("best"), "bytes": dest.stat().st_size}


def unpark(parked_file: Path | str, storage_path: Path | str) -> Path:
    """Lay a parked file out as ``<storage_path>/<run_name>``; refuses to replace a run that is as far or further
    (that one is newer than the parked copy). Returns the run directory."""
    parked = torch.load(Path(parked_file).expanduser(), map_location="cpu", weights_only=True)
    if not isinstance(parked, dict) or parked.get("format") != FORMAT:
        raise UserError(f"{parked_file}: not a parked run (written by tools/park_run.py park)")
    run_dir = Path(storage_path).expanduser().resolve() / parked["run_name"]
    latest_path = run_dir / LATEST / checkpoints.STATE
    if latest_path.exists():
        here = torch.load(latest_path, map_location="cpu", weights_only=True)["epoch"]
        if here >= parked["latest"]["epoch"]:
            raise UserError(
                f"{run_dir} has trained {here + 1} epochs, the parked copy {parked['latest']['epoch'] + 1}: "
                "keeping the run directory (remove it to go back to the parked copy)"
            )
    save_atomic(parked["latest"], latest_path)
    best = _best_for_export(parked["latest"]) if parked["best"] == SAME_AS_LATEST else parked["best"]
    if best is not None:
        save_atomic(best, run_dir / BEST / checkpoints.STATE)
    (run_dir / checkpoints.TRAIN_CONFIG).write_text(json.dumps(parked["record"], indent=2, sort_keys=True) + "\n")
    (run_dir / checkpoints.HISTORY).write_text(json.dumps(parked["latest"]["history"], indent=2) + "\n")
    return run_dir
