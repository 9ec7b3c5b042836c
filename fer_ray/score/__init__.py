"""Batch scoring: photo collections (local or S3) -> one Parquet row per face, plus summary.json and report.html.

    from fer_ray.score.config import ScoreConfig
    from fer_ray.score.driver import score
    result = score(ScoreConfig(inputs=("photos/",), out="out/photos"))

One module per concern, in the order a row travels: config, faces (shared with Serve), schema, stages,
plan, driver; store and run_lock (OUT, resumable reruns, one run at a time); aggregate, report, plots.

Only the configs are imported here: Serve replicas import this package for them and for
:mod:`~fer_ray.score.faces`, and must not pull in pandas, pyarrow or Ray Data.
"""

from fer_ray.score.config import DetectConfig, ScoreConfig

__all__ = ["DetectConfig", "ScoreConfig"]
