"""One evaluation from artifacts to files: predictions, metrics, the FER+ table, then writing them out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fer_ray.evaluate.config import EvalConfig
from fer_ray.evaluate.ferplus import ferplus_metrics
from fer_ray.evaluate.metrics import evaluate_artifact
from fer_ray.evaluate.predictions import ENGINE_SPLIT, engine_results, external_photos
from fer_ray.evaluate.writing import write_evaluation, write_plots
from fer_ray.inference.artifact import Artifact


def evaluate_all(
    artifacts: list[Artifact],
    source: str,
    out_dir: str | Path,
    cfg: EvalConfig = EvalConfig(),
    engines: bool = True,
    progress: bool | None = None,
) -> list[dict]:
    """Evaluate each artifact on ``source`` (see :func:`~fer_ray.evaluate.metrics.evaluate_artifact`); write
    evaluation.json/.md and plots. ``progress``: as :class:`fer_ray.progress.Progress` takes it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, histories = [], []
    for art, label in zip(artifacts, labels_of(artifacts), strict=True):
        r = {"label": label, **evaluate_artifact(art, source, cfg, progress)}
        if engines:
            r["engines"] = engine_results(art, source, ENGINE_SPLIT[r["split"]], progress=progress)
        if r["split"] == "PrivateTest":
            r["ferplus_private_test"] = ferplus_metrics(art, source, cfg.batch_size)
        histories.append(art.meta.get("metrics", {}).get("history", []))
        write_plots(r, histories[-1], out, label)
        results.append(r)
    write_evaluation(results, histories, out)
    return results


def labels_of(artifacts: list[Artifact]) -> list[str]:
    """What tables and file names call each artifact: its architecture, or ``name@weights-id`` where two share one.

    A candidate is usually evaluated beside the shipped model of its own architecture; by name alone
    their rows read the same and the second one's plots overwrite the first's.
    """
    names = [a.model_config.name for a in artifacts]
    return [n if names.count(n) == 1 else a.model_id.split("+")[0] for n, a in zip(names, artifacts, strict=True)]


def photo_tables(
    artifacts: list[Artifact], folder: str | Path, out_dir: str | Path
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(model name, Table 5) of each artifact on a folder of whole-face photos, each written as
    ``<model>_photos.json``."""
    tables = []
    for art in artifacts:
        rows = external_photos(art, folder)
        (Path(out_dir) / f"{art.model_config.name}_photos.json").write_text(json.dumps(rows, indent=2))
        tables.append((art.model_config.name, rows))
    return tables
