"""Settings of an evaluation: the job's (what to evaluate, on which data, where to write) and the tables'.

Torch-free, so ``jobs/evaluate.py --help`` and its user errors answer before the model stack loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from fer_ray.config import RAY_FLAGS, setting
from fer_ray.inference.engine import ENGINES
from fer_ray.inference.shipped import MODEL_HELP
from fer_ray.runtime import RayConfig


@dataclass(frozen=True)
class EvalConfig:
    """How the tables are drawn: Table 4's seeded samples, and the batch the models run on."""

    iterations: int = 15
    sample_size: int = 100
    seed: int = 0
    batch_size: int = 512


@dataclass(frozen=True)
class EvaluateJobConfig:
    """``jobs/evaluate.py``: one or more artifacts side by side on one labelled source."""

    model: tuple[str, ...] = setting(
        (),
        MODEL_HELP + "; repeat --model to compare several",
        positional=True,
        flag="--model",
        metavar="MODEL",
        default_text="the shipped default model",
    )
    data: str | None = setting(None, "labelled FER2013 source", default_text="the data root's FER2013 Parquet")
    out: str = setting("out/eval", "directory for evaluation.json and evaluation.md")
    photos: str | None = setting(None, "folder of external face photos for Table 5")
    seed: int = setting(0, "seed of the 15x100 random draws")
    engine: str | None = setting(
        None, "engine of the main tables", choices=ENGINES, default_text="the artifact's, as scoring and Serve use it"
    )
    engines: bool = setting(True, "the table of every engine on PrivateTest")
    repeats: bool = setting(True, "accuracy apart on test faces repeated from training (decodes the training split)")
    ray: RayConfig = setting(
        help="how the job reaches Ray", default_factory=RayConfig, flatten=True, fields=RAY_FLAGS, group="ray"
    )
