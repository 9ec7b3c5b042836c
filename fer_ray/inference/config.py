"""The shipped models' names, and the settings of the jobs that upgrade an artifact in place
(``jobs/calibrate.py``, ``jobs/export_onnx.py``).

Torch-free: help texts and ``--help`` read the names without loading the model stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from fer_ray.config import setting
from fer_ray.inference.quantize import CALIBRATION_FACES

# Models shipped in the package (``fer_ray/assets/<name>``), loadable by name wherever an artifact
# path is accepted; ``default`` names DEFAULT_MODEL.
SHIPPED_NAMES = ("ae_cnn_attn", "cnn_attn")
# What scoring, Serve and evaluation use without --model: the shipped model with the better PublicTest
# accuracy (issue #9's rule; docs/RESULTS.md has the figures). Switching it is this one line.
DEFAULT_MODEL = "ae_cnn_attn"
# The names a user may type, as help texts and error messages list them.
SHIPPED = ", ".join(("default", *SHIPPED_NAMES))


def _artifact_to_upgrade(verb: str) -> object:
    return setting(
        None,
        f"model artifact to {verb} in place: its directory or a shipped name ({SHIPPED})",
        positional=True,
        flag="--model",
        metavar="ARTIFACT",
        default_text="required",
    )


@dataclass(frozen=True)
class CalibrateConfig:
    """Fit the temperature and the ``uncertain`` cut-off on the validation split; predictions do not change."""

    model: str | None = _artifact_to_upgrade("calibrate")
    data: str | None = setting(
        None, "labelled source with a validation split", default_text="the data root's FER2013 Parquet"
    )


@dataclass(frozen=True)
class ExportConfig:
    """Add the ONNX Runtime engines (fp32, static int8) with their validation accuracy; weights.pt is kept."""

    model: str | None = _artifact_to_upgrade("upgrade")
    data: str | None = setting(
        None, "labelled source: FER2013 .parquet/.csv or image folders", default_text="the data root's FER2013 Parquet"
    )
    calib: int = setting(CALIBRATION_FACES, "training faces to calibrate int8 on")
    seed: int = setting(0, "which training faces calibrate")
    threads: int | None = setting(None, "ONNX Runtime threads while measuring accuracy", default_text="1")
