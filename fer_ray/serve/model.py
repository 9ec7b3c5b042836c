"""The model deployment: one artifact per replica, face crops of concurrent requests scored in one batch.

``@serve.batch`` stacks the uint8 crops of concurrent requests into one (B, S, S) array for
:meth:`~fer_ray.inference.artifact.Artifact.predict_proba`; its sizes come from :class:`ServeConfig`.
"""

import asyncio
import logging
from typing import Any

import numpy as np
from ray import serve

from fer_ray.serve.config import ServeConfig

# fer_ray.inference.artifact (and with it torch) is imported only inside the replica: importing this
# module loads no weights and starts no Ray.

logger = logging.getLogger(__name__)


def _faces_in(chunks: list[np.ndarray]) -> int:
    """Batch size in faces, not requests: one request may carry several faces."""
    return sum(len(c) for c in chunks)


def model_info(artifact: Any) -> dict[str, Any]:
    """What ``GET /v1/model`` reports: id, config, labels, preprocessing and a metrics summary; no local paths."""
    meta = artifact.meta
    metrics = dict(meta.get("metrics") or {})
    history = metrics.pop("history", None)  # per-epoch rows: too long for a status endpoint
    if history is not None:
        metrics["epochs"] = len(history)
    return {
        "model_id": artifact.model_id,
        "engine": artifact.engine_name,
        "model_config": artifact.model_config.to_dict(),
        "labels": list(artifact.labels),
        "temperature": artifact.temperature,
        "uncertain_below": artifact.uncertain_below,
        "preprocess": artifact.preprocess.to_dict(),
        "metrics": metrics,
        "parameters": meta.get("parameters"),
        "weights_sha256": meta.get("weights_sha256"),
        "created_at": meta.get("created_at"),
        "data_fingerprint": meta.get("data_fingerprint"),
    }


@serve.deployment
class FERModel:
    """Loads the model artifact once per replica and scores stacked face crops in batches."""

    def __init__(self, cfg: ServeConfig):
        from fer_ray.inference.artifact import load_artifact

        self.device = "cpu"
        if cfg.gpus_per_replica > 0:  # torch only where it may run: an ONNX Runtime replica starts sooner without it
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.artifact = load_artifact(cfg.model, self.device, engine=cfg.engine, threads=cfg.torch_threads)
        if self.artifact.engine_name == "torch":
            import torch

            torch.set_num_threads(cfg.torch_threads)
        self.engine_name = self.artifact.engine_name
        self.info_dict = model_info(self.artifact)
        self.predict.set_max_batch_size(cfg.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.counts = {"requests": 0, "faces": 0, "batches": 0, "largest_batch": 0}
        logger.info(
            "serving %s from %s on %s (%s)", self.artifact.model_id, self.artifact.path, self.device, self.engine_name
        )

    async def info(self) -> dict[str, Any]:
        return self.info_dict

    async def stats(self) -> dict[str, int]:
        """Counters of this replica: requests and faces scored, batches run, most faces in one batch."""
        return dict(self.counts)

    # Each replica sets its own ServeConfig's sizes in __init__; the decorator needs some to start from.
    @serve.batch(
        max_batch_size=ServeConfig.max_batch_size,
        batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s,
        batch_size_fn=_faces_in,
    )
    async def predict(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Per request a ``uint8`` (N, S, S) array of face crops -> per request (N, K) probabilities."""
        sizes = [len(c) for c in chunks]
        faces = np.concatenate(chunks)  # (B, S, S), B = sum(sizes) <= max_batch_size
        c = self.counts
        c["requests"] += len(chunks)
        c["faces"] += len(faces)
        c["batches"] += 1
        c["largest_batch"] = max(c["largest_batch"], len(faces))
        # On a thread, so the replica keeps queueing the next batch while this one runs.
        probs = await asyncio.to_thread(self.artifact.predict_proba, faces, self.device)  # (B, K)
        return np.split(probs, np.cumsum(sizes)[:-1])
