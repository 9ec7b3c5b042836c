"""The one model artifact format, loaded the same way by evaluation, batch scoring and Serve.

An artifact is a directory with ``weights.pt`` (a plain ``state_dict``) and
``artifact.json`` (model config, label map, preprocessing parameters, training
metrics, data fingerprint, weights hash). It needs no training config to load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fer_ray.labels import EMOTIONS
from fer_ray.models import ModelConfig, count_parameters, create_model
from fer_ray.preprocess import PreprocessConfig, normalize

FORMAT_VERSION = 1
WEIGHTS = "weights.pt"
META = "artifact.json"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class Artifact:
    model: nn.Module
    model_config: ModelConfig
    preprocess: PreprocessConfig
    labels: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    # Average the probabilities of the face and its mirror image. Expressions are mirror
    # symmetric and the model trained on flipped faces, so this is in distribution; it
    # costs a second forward pass and is recorded in artifact.json ("inference").
    flip_tta: bool = False

    @property
    def model_id(self) -> str:
        """``name@first-12-hex-of-weights-sha256``: what reports record about the model."""
        return f"{self.model_config.name}@{self.meta.get('weights_sha256', 'unsaved')[:12]}"

    @torch.no_grad()
    def predict_proba(
        self,
        faces: np.ndarray | torch.Tensor,
        device: str | torch.device | None = None,
        flip_tta: bool | None = None,
    ) -> np.ndarray:
        """``uint8`` faces (B, S, S) from :func:`fer_ray.preprocess.face_input` -> probabilities (B, K).

        ``flip_tta`` overrides the artifact's own setting.
        """
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        x = self._input(faces, device)
        probs = self._softmax(x)
        if self.flip_tta if flip_tta is None else flip_tta:
            probs = self._with_mirror(probs, x)
        return probs.cpu().numpy()

    @torch.no_grad()
    def predict_proba_both(
        self, faces: np.ndarray | torch.Tensor, device: str | torch.device | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(single-pass, flip-TTA) probabilities from two forward passes: evaluation reports both."""
        if len(faces) == 0:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            return empty, empty
        x = self._input(faces, device)
        single = self._softmax(x)
        return single.cpu().numpy(), self._with_mirror(single, x).cpu().numpy()

    def _input(self, faces: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
        device = torch.device(device) if device else next(self.model.parameters()).device
        return normalize(torch.as_tensor(np.asarray(faces)).to(device), self.preprocess)  # (B, 1, S, S)

    def _softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x)["logits"].float(), 1)

    def _with_mirror(self, probs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Flip TTA: the mean of the face's and its mirror image's probabilities."""
        return (probs + self._softmax(x.flip(-1))) / 2


def save_artifact(
    model: nn.Module,
    model_config: ModelConfig,
    out_dir: str | os.PathLike,
    *,
    preprocess: PreprocessConfig | None = None,
    metrics: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    data_fingerprint: str | None = None,
    flip_tta: bool = False,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save(state, out / WEIGHTS)
    meta = {
        "format_version": FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "labels": list(EMOTIONS),
        "preprocess": (preprocess or PreprocessConfig()).to_dict(),
        "inference": {"flip_tta": bool(flip_tta)},
        "metrics": metrics or {},
        "train_config": train_config or {},
        "data_fingerprint": data_fingerprint,
        "parameters": count_parameters(model),
        "weights_bytes": (out / WEIGHTS).stat().st_size,
        "weights_sha256": sha256_file(out / WEIGHTS),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / META).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return out


def load_artifact(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> Artifact:
    """Load an artifact directory (default: the model shipped inside the package)."""
    p = Path(path) if path is not None else DEFAULT_MODEL_DIR
    if not (p / META).is_file() or not (p / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{p} is not a fer_ray model artifact: it needs {META} and {WEIGHTS} "
            "(produce one with `python jobs/train.py`, or omit --model to use the shipped default)"
        )
    meta = json.loads((p / META).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{p}: artifact format {meta.get('format_version')} is not {FORMAT_VERSION}")
    labels = tuple(meta["labels"])
    if labels != EMOTIONS:
        raise ValueError(f"{p}: label map {labels} differs from fer_ray's {EMOTIONS}")
    cfg = ModelConfig.from_dict(meta["model_config"])
    model = create_model(cfg)
    model.load_state_dict(torch.load(p / WEIGHTS, map_location="cpu", weights_only=True))
    model.to(device).eval()
    flip_tta = bool(meta.get("inference", {}).get("flip_tta", False))  # absent in older artifacts
    return Artifact(model, cfg, PreprocessConfig.from_dict(meta["preprocess"]), labels, meta, p, flip_tta)
