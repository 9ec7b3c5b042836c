"""The command lines of training and tuning: TrainConfig's flags, a run named after its architecture unless
told otherwise, and what training refuses before Ray starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fer_ray.cli.checks import check_data, check_input_path, check_model, check_output_dir
from fer_ray.cli.parser import Parser, config_parser
from fer_ray.config import UserError
from fer_ray.storage import is_remote


def _arch_overlay() -> dict:
    """``--arch`` (TrainConfig's ``model.name``, spelled in ``fer_ray.train.config.MODEL_FLAGS``) for train and
    tune: the registered architectures as its choices, and why its old spelling ``--model`` warns."""
    from fer_ray.models.registry import MODELS

    note = " (--model names a trained artifact in score, serve and evaluate)"
    return {"model": {"fields": {"name": {"choices": tuple(sorted(MODELS)), "deprecated_note": note}}}}


def default_run_name(train: dict[str, Any]) -> None:
    """A run named by neither the file nor ``--run-name`` is named after its architecture."""
    from fer_ray.models.config import ModelConfig

    if "run_name" not in train:
        train["run_name"] = (train.get("model") or {}).get("name", ModelConfig().name)


def train_parser(description: str | None = None) -> Parser:
    """The flags of jobs/train.py: TrainConfig's fields, and ``--export-only`` (TrainActions)."""
    from fer_ray.train.config import TrainActions, TrainConfig

    return config_parser(TrainConfig, description, overlay=_arch_overlay(), actions=TrainActions)


def tune_parser(description: str | None = None) -> Parser:
    """The flags of jobs/tune.py: SweepConfig's fields, the training ones flat (``--epochs``: 4 by default),
    and ``--show-space`` (SweepActions)."""
    from fer_ray.tune.config import SweepActions, SweepConfig

    return config_parser(
        SweepConfig,
        description,
        overlay={"base": {"fields": _arch_overlay()}},
        defaults={"base": {"epochs": 4}},  # a sweep's trials are short; the winner is trained longer afterwards
        config_help="YAML or JSON file of the sweep's settings, training ones under base: (the keys of "
        "--print-config); flags given override it",
        actions=SweepActions,
    )


def check_train(cfg: Any, export_only: bool = False) -> None:
    """What jobs/train.py refuses before Ray starts: storage it cannot write, a run to export that is not
    there, missing data, teachers or starting weights that do not load (or whose architecture differs)."""
    check_output_dir(cfg.storage_path, "--storage-path")
    if export_only:
        run = Path(cfg.storage_path).expanduser() / cfg.run_name
        if not is_remote(cfg.storage_path) and not run.is_dir():
            raise UserError(f"--export-only: no run {run}", "check --storage-path and --run-name")
        return
    check_data(cfg.data, need="training data")
    if cfg.ferplus_csv:
        check_input_path(cfg.ferplus_csv, "--ferplus-csv", "pass FER+'s fer2013new.csv")
    for teacher in cfg.teachers:
        check_model(teacher, "--teachers", engine=cfg.teacher_engine)
    if cfg.init_from:
        check_model(cfg.init_from, "--init-from")
        from fer_ray.train.checkpoints import initial_artifact

        initial_artifact(cfg)  # the architecture matches: one line now, not after the data is read
