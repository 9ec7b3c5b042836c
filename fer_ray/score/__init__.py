"""Batch scoring: photo collections (local or S3) -> one Parquet row per face, plus summary.json and report.html.

from fer_ray.score import ScoreConfig, score
result = score(ScoreConfig(inputs=("photos/",), out="out/photos"))
"""

from fer_ray.score.config import DetectConfig, ScoreConfig
from fer_ray.score.pipeline import OUTPUT_SCHEMA, ScoreResult, score
from fer_ray.score.report import format_table, write_report

__all__ = ["DetectConfig", "OUTPUT_SCHEMA", "ScoreConfig", "ScoreResult", "format_table", "score", "write_report"]
