"""Batch scoring: photo collections (local or S3) -> one Parquet row per face, plus summary.json and report.html.

    from fer_ray.score.config import ScoreConfig
    from fer_ray.score.driver import score
    result = score(ScoreConfig(inputs=("photos/",), out="out/photos"))

Only the configs are imported here: Serve replicas import them (and :mod:`~fer_ray.score.faces`) without
pandas, pyarrow or Ray Data.
"""

from fer_ray.score.config import DetectConfig, ScoreConfig

__all__ = ["DetectConfig", "ScoreConfig"]
