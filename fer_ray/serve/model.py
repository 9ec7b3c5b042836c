"""The model deployment: one artifact per replica; ``@serve.batch`` stacks the face crops of concurrent
requests into one (B, S, S) array for :meth:`~fer_ray.inference.artifact.Artifact.predict_proba`."""

import asyncio
import collections
import logging
from typing import Any

import numpy as np
from ray import serve

from fer_ray.serve.config import ServeConfig

# fer_ray.inference.artifact (and with it torch) is imported only inside the replica: importing this
# module loads no weights and starts no Ray.

logger = logging.getLogger(__name__)


@serve.deployment
class FERModel:
    """Loads the model artifact once per replica and scores stacked face crops in batches."""

    def __init__(self, cfg: ServeConfig):
        from fer_ray.inference.artifact import load_artifact

        self.device = "cpu"
        if cfg.gpus_per_replica > 0:  # torch only where it may run: an ONNX Runtime replica starts sooner without it
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        art = self.artifact = load_artifact(cfg.model, self.device, engine=cfg.engine, threads=cfg.torch_threads)
        if art.engine_name == "torch":
            import torch

            torch.set_num_threads(cfg.torch_threads)
        metrics = dict(art.meta.get("metrics") or {})
        history = metrics.pop("history", None)  # per-epoch rows: too long for a status endpoint
        if history is not None:
            metrics["epochs"] = len(history)
        # What GET /v1/model reports; no local paths.
        self.info_dict = {
            "model_id": art.model_id,
            "engine": art.engine_name,
            "model_config": art.model_config.to_dict(),
            "labels": list(art.labels),
            "temperature": art.temperature,
            "uncertain_below": art.uncertain_below,
            "preprocess": art.preprocess.to_dict(),
            "metrics": metrics,
            **{k: art.meta.get(k) for k in ("parameters", "weights_sha256", "created_at", "data_fingerprint")},
        }
        self.predict.set_max_batch_size(cfg.max_batch_size)
        self.predict.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.counts = collections.Counter(requests=0, faces=0, batches=0, largest_batch=0)
        logger.info("serving %s from %s on %s (%s)", art.model_id, art.path, self.device, art.engine_name)

    async def info(self) -> dict[str, Any]:
        return self.info_dict

    async def stats(self) -> dict[str, int]:
        """Counters of this replica: requests and faces scored, batches run, most faces in one batch."""
        return dict(self.counts)

    # Each replica sets its own ServeConfig's sizes in __init__; the decorator needs some to start from.
    # A batch's size counts faces, not requests: one request may carry several faces.
    @serve.batch(
        max_batch_size=ServeConfig.max_batch_size,
        batch_wait_timeout_s=ServeConfig.batch_wait_timeout_s,
        batch_size_fn=lambda chunks: sum(len(c) for c in chunks),
    )
    async def predict(self, chunks: list[np.ndarray]) -> list[np.ndarray]:
        """Per request a ``uint8`` (N, S, S) array of face crops -> per request (N, K) probabilities."""
        sizes = [len(c) for c in chunks]
        faces = np.concatenate(chunks)  # (B, S, S), B = sum(sizes) <= max_batch_size
        self.counts.update(requests=len(chunks), faces=len(faces), batches=1)
        self.counts["largest_batch"] = max(self.counts["largest_batch"], len(faces))
        # On a thread, so the replica keeps queueing the next batch while this one runs.
        probs = await asyncio.to_thread(self.artifact.predict_proba, faces, self.device)  # (B, K)
        return np.split(probs, np.cumsum(sizes)[:-1])
