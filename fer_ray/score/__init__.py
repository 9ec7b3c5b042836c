"""Batch scoring: photo collections (local or S3) -> one Parquet row per face, plus summary.json and report.html.

from fer_ray.score import ScoreConfig, score
result = score(ScoreConfig(inputs=("photos/",), out="out/photos"))
"""

import importlib

from fer_ray.score.config import DetectConfig, ScoreConfig

# Serve replicas import score.config and score.faces only: keep pandas, pyarrow and Ray Data
# (pipeline, report) out of that import path, loaded on first use instead.
_LAZY = {
    "OUTPUT_SCHEMA": "pipeline",
    "ScoreResult": "pipeline",
    "score": "pipeline",
    "format_table": "report",
    "write_report": "report",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"fer_ray.score.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DetectConfig", "OUTPUT_SCHEMA", "ScoreConfig", "ScoreResult", "format_table", "score", "write_report"]
