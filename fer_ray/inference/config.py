"""The settings of the jobs that upgrade an artifact in place (``jobs/calibrate.py``, ``jobs/export_onnx.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from fer_ray.config import setting
from fer_ray.inference.host_check import CALIBRATION_FACES
from fer_ray.inference.shipped import SHIPPED


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
