"""The one command-line layer of every job in ``jobs/``: flags generated from the config dataclasses
(:mod:`~fer_ray.cli.parser`, :mod:`~fer_ray.cli.training`), ``--config FILE``, checks before Ray starts
(:mod:`~fer_ray.cli.checks`), and errors a person can act on: :func:`run_cli` prints
``fer_ray: error: <what> — <how to fix>`` and exits 2 (``--debug`` adds the traceback).

Kept free of torch and Ray: ``--help`` and most user errors answer before either loads.
"""

from fer_ray.cli.checks import (
    check_bucket,
    check_data,
    check_input_path,
    check_model,
    check_output_dir,
    check_port_free,
    local_artifact_dir,
    submitted_working_dir,
)
from fer_ray.cli.parser import Parser, add_ray_args, config_parser, parse_config, show_default
from fer_ray.cli.runner import before_ray, run_cli, setup
from fer_ray.cli.training import check_train, default_run_name, train_parser, tune_parser
from fer_ray.config import UserError
from fer_ray.storage import is_remote

__all__ = [
    "Parser",
    "UserError",
    "add_ray_args",
    "before_ray",
    "check_bucket",
    "check_data",
    "check_input_path",
    "check_model",
    "check_output_dir",
    "check_port_free",
    "check_train",
    "config_parser",
    "default_run_name",
    "is_remote",
    "local_artifact_dir",
    "parse_config",
    "run_cli",
    "setup",
    "show_default",
    "submitted_working_dir",
    "train_parser",
    "tune_parser",
]
