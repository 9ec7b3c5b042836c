"""Batch scoring: photo collections (local or S3) -> one Parquet row per face, plus summary.json and report.html.

    from fer_ray.score.config import ScoreConfig
    from fer_ray.score.driver import score
    result = score(ScoreConfig(inputs=("photos/",), out="out/photos"))

One module per concern, in the order a row travels:

- :mod:`~fer_ray.score.config`: :class:`ScoreConfig` and :class:`DetectConfig`;
- :mod:`~fer_ray.score.faces`: decode, detect and crop (shared with Serve);
- :mod:`~fer_ray.score.schema`: the columns of the rows;
- :mod:`~fer_ray.score.stages`: the CPU stage and the inference actors, plain Python;
- :mod:`~fer_ray.score.plan`: how a run lays the stages out on Ray;
- :mod:`~fer_ray.score.driver`: :func:`score`, the Ray Data job;
- :mod:`~fer_ray.score.store` and :mod:`~fer_ray.score.run_lock`: OUT, resumable reruns, one run at a time;
- :mod:`~fer_ray.score.aggregate`, :mod:`~fer_ray.score.report` and :mod:`~fer_ray.score.plots`: the report.

Only the configs are imported here: Serve replicas import this package for them and for
:mod:`~fer_ray.score.faces`, and must not pull in pandas, pyarrow or Ray Data.
"""

from fer_ray.score.config import DetectConfig, ScoreConfig

__all__ = ["DetectConfig", "ScoreConfig"]
