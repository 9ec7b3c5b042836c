"""Inference engines: one model, run by PyTorch, ONNX Runtime fp32 or ONNX Runtime static int8.

Every engine maps a face batch to **logits** (B, K); probabilities and flip TTA are computed once, in
:class:`fer_ray.inference.artifact.Artifact`, so the engines differ only in how the network runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.preprocess import PreprocessConfig, normalize

ENGINES = ("torch", "onnx", "onnx-int8")
ONNX_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}  # engine -> file in the artifact directory
INPUT_NAME, OUTPUT_NAME = "x", "logits"  # of the exported graphs


def check_engine(name: str | None) -> None:
    """``None`` (choose automatically) or one of :data:`ENGINES`; anything else is a user mistake."""
    if name is not None and name not in ENGINES:
        raise ValueError(f"unknown inference engine {name!r}; choose one of {list(ENGINES)} or omit it")


def model_input(faces: Any, preprocess: PreprocessConfig) -> np.ndarray:
    """The numpy twin of :func:`fer_ray.preprocess.normalize` (same float32 arithmetic): ``uint8`` (B, S, S)
    or (B, 1, S, S), or normalized floats -> float32 (B, 1, S, S)."""
    x = np.asarray(faces)
    if x.ndim == 3:
        x = x[:, None]  # (B, S, S) -> (B, 1, S, S)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected a batch of shape (B, S, S) or (B, 1, S, S), got {tuple(x.shape)}")
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) / np.float32(255.0) - np.float32(preprocess.mean)) / np.float32(preprocess.std)
    return np.ascontiguousarray(x, dtype=np.float32)


class TorchEngine:
    """The PyTorch model. Every engine has a ``name``, the ``file`` it runs and its ``sha256``, and ``logits``:
    ``uint8`` (B, S, S) or normalized float (B, 1, S, S) faces -> float32 logits (B, K)."""

    name = "torch"

    def __init__(self, model, preprocess: PreprocessConfig, file: Path | None, sha256: str | None, device="cpu"):
        import torch

        self.model, self.preprocess, self.file, self.sha256 = model, preprocess, file, sha256
        self.device = torch.device(device)

    def logits(self, faces: Any, device=None) -> np.ndarray:
        import torch

        device = torch.device(device) if device else self.device
        t = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces).to(device)
        x = normalize(t, self.preprocess) if t.dtype == torch.uint8 else t.float()
        if x.ndim == 3:
            x = x.unsqueeze(1)  # (B, S, S) -> (B, 1, S, S)
        with torch.no_grad():
            return self.model(x)["logits"].float().cpu().numpy()


class OnnxEngine:
    """An ONNX Runtime CPU session over ``model.onnx`` or ``model.int8.onnx``. ``threads``: the cores the caller
    holds (more oversubscribes); idle threads do not spin, as decode and detection need those cycles."""

    def __init__(self, name: str, path: Path, preprocess: PreprocessConfig, sha256: str | None, threads: int = 1):
        import onnxruntime as ort

        self.name, self.file, self.sha256, self.preprocess = name, Path(path), sha256, preprocess
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # warnings about unused initializers etc. are noise to users
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def logits(self, faces: Any) -> np.ndarray:
        x = model_input(faces, self.preprocess)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0].astype(np.float32, copy=False)


Engine = TorchEngine | OnnxEngine
