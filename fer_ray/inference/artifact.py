"""The one model artifact format, loaded the same way by evaluation, batch scoring and Serve.

A directory with ``weights.pt`` (a plain ``state_dict``), ``artifact.json`` (model config, label map,
preprocessing, metrics, data fingerprint, hashes) and, once exported, the ONNX engines. Every model file is
checked against its recorded hash before it runs: a truncated or replaced file would score quietly wrong.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_ray.inference.engine import ONNX_FILES, Engine, OnnxEngine, TorchEngine, check_engine
from fer_ray.inference.host_check import CHECK_FILE, HostCheck, load_check
from fer_ray.inference.host_check import check_engine as check_on_host
from fer_ray.inference.outputs import softmax
from fer_ray.inference.shipped import DEFAULT_MODEL, SHIPPED_NAMES
from fer_ray.labels import EMOTIONS
from fer_ray.models.config import ModelConfig
from fer_ray.preprocess import PreprocessConfig

# torch is imported only to build or save the PyTorch model: ONNX engines never need it (the lean install has none)
if TYPE_CHECKING:
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
META = "artifact.json"
WEIGHTS = "weights.pt"
ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED_MODELS: dict[str, Path] = {name: ASSETS / name for name in SHIPPED_NAMES}
DEFAULT_MODEL_DIR = SHIPPED_MODELS[DEFAULT_MODEL]
SHIPPED_MODELS["default"] = DEFAULT_MODEL_DIR
INT8_MAX_ACCURACY_DROP = 0.005  # int8 is the default only this close to the PyTorch model's val accuracy


class ArtifactIntegrityError(ValueError):
    """A model file differs from the hash ``artifact.json`` records (truncated, empty, replaced)."""


class EngineCheckError(RuntimeError):
    """An ONNX engine (and its fp32 fallback) gives answers on this CPU that stray from the reference."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, expected: str | None) -> str:
    """sha256 of ``path``, checked against the recorded hash (skipped when none is recorded)."""
    actual = sha256_file(path)
    if expected and actual != expected:
        size = path.stat().st_size
        what = "is empty (0 bytes)" if size == 0 else f"({size:,} bytes) is truncated, damaged or replaced"
        raise ArtifactIntegrityError(
            f"{path} {what}: its sha256 is {actual} but {META} records {expected}; "
            "copy the artifact again (or re-export it) instead of using it"
        )
    return actual


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write ``artifact.json`` atomically (a reader never sees half of it)."""
    tmp = path / f".{META}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path / META)


def resolve_model(path: str | os.PathLike | None) -> Path:
    """An artifact directory from a path or a shipped model's name (``None``: the default model). A directory of
    that name wins, so a local ``cnn_attn/`` is not shadowed; a leading ``~`` is expanded (the shell does so only
    at the start of a word: the second path of ``--teachers ~/a,~/b`` arrives unexpanded)."""
    if path is None:
        return DEFAULT_MODEL_DIR
    p = Path(path).expanduser()
    if not p.exists() and str(path) in SHIPPED_MODELS and SHIPPED_MODELS[str(path)].is_dir():
        return SHIPPED_MODELS[str(path)]
    return p


def _device_type(device: str | torch.device | None) -> str:
    return "cpu" if device is None else str(device).split(":")[0]


@dataclass
class Artifact:
    """A loaded artifact: the engine that runs it and what ``artifact.json`` records."""

    engine: Engine  # what runs the network: torch, onnx or onnx-int8
    torch_model: nn.Module | None  # None for an ONNX engine until first used (see ``model``)
    model_config: ModelConfig
    preprocess: PreprocessConfig
    labels: tuple[str, ...]
    meta: dict[str, Any]
    path: Path
    # Average the probabilities of the face and its mirror image: in distribution for a model that
    # trained on flipped faces (expressions are mirror symmetric), at the cost of a second pass.
    flip_tta: bool = False
    # Calibration (fer_ray.inference.calibration): softmax(logits / temperature), and a top
    # probability below ``uncertain_below`` is flagged as uncertain.
    temperature: float = 1.0
    uncertain_below: float | None = None
    host_check: HostCheck | None = None  # the ONNX engine's check on this host; None when not verified

    @property
    def model(self) -> nn.Module:
        """The PyTorch model (on CPU when built late): evaluation's parameter count, ONNX export, tests."""
        if self.torch_model is None:
            self.torch_model = _torch_model(self.path, self.model_config, self.meta.get("weights_sha256"), "cpu")
        return self.torch_model

    @property
    def label_set(self) -> str:
        """The labels it learnt (``fer2013``, ``ferplus``): what its validation figures and calibration are against."""
        return (self.meta.get("train_config") or {}).get("labels", "fer2013")

    @property
    def engine_name(self) -> str:
        return self.engine.name

    @property
    def model_sha256(self) -> str | None:
        """sha256 of the model file the engine executes (weights.pt, model.onnx or model.int8.onnx)."""
        return self.engine.sha256

    @property
    def model_id(self) -> str:
        """``name@first-12-hex-of-weights-sha256``, plus ``+engine`` for the ONNX engines: what reports record
        (int8's probabilities differ slightly from the PyTorch model's, so its rows must not pass for them)."""
        base = f"{self.model_config.name}@{self.meta.get('weights_sha256', 'unsaved')[:12]}"
        return base if self.engine_name == "torch" else f"{base}+{self.engine_name}"

    def predict_logits(self, faces: np.ndarray | torch.Tensor, device: str | torch.device | None = None) -> np.ndarray:
        """``uint8`` faces (B, S, S) (or a normalized float batch) -> logits (B, K) from the engine."""
        if isinstance(self.engine, TorchEngine):
            return self.engine.logits(faces, device)
        torch = sys.modules.get("torch")  # a tensor (the teachers' input) can only exist once torch is imported
        return self.engine.logits(faces.cpu().numpy() if torch and isinstance(faces, torch.Tensor) else faces)

    def predict_proba(
        self, faces: np.ndarray, device: str | torch.device | None = None, flip_tta: bool | None = None
    ) -> np.ndarray:
        """``uint8`` faces (B, S, S) from :func:`fer_ray.preprocess.face_input` -> probabilities (B, K);
        ``flip_tta`` overrides the artifact's own setting."""
        if len(faces) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if not (self.flip_tta if flip_tta is None else flip_tta):
            return softmax(self.predict_logits(faces, device), self.temperature)
        return self.predict_proba_both(faces, device)[1]

    def predict_proba_both(
        self, faces: np.ndarray, device: str | torch.device | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(single-pass, flip-TTA) probabilities from one engine call on faces + mirrors: evaluation reports both."""
        if len(faces) == 0:
            empty = np.zeros((0, len(self.labels)), dtype=np.float32)
            return empty, empty
        faces = np.asarray(faces)
        both = np.concatenate([faces, faces[..., ::-1]])  # (2B, S, S): the faces, then their mirror images
        probs = softmax(self.predict_logits(both, device), self.temperature)  # (2B, K)
        single, mirror = probs[: len(faces)], probs[len(faces) :]
        return single, (single + mirror) / 2


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
    import torch

    from fer_ray.models.registry import count_parameters

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / WEIGHTS)
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
    write_meta(out, meta)
    return out


def default_engine(meta: dict[str, Any], path: Path, device: str | torch.device = "cpu") -> str:
    """``torch`` on a GPU; on CPU ``onnx-int8`` when its recorded validation accuracy is within
    :data:`INT8_MAX_ACCURACY_DROP` of the PyTorch model's and the artifact holds the host check that
    :func:`load_artifact` verifies it with on this CPU, else ``onnx``, else ``torch``."""
    if _device_type(device) != "cpu":
        return "torch"
    rec = meta.get("engines") or {}
    if (path / ONNX_FILES["onnx-int8"]).is_file() and (path / CHECK_FILE).is_file():
        acc8 = rec.get("onnx-int8", {}).get("val_accuracy")
        acc32 = rec.get("torch", {}).get("val_accuracy")
        if acc8 is not None and acc32 is not None and acc8 >= acc32 - INT8_MAX_ACCURACY_DROP:
            return "onnx-int8"
    if (path / ONNX_FILES["onnx"]).is_file() and "onnx" in rec:
        return "onnx"
    return "torch"


def _torch_model(path: Path, cfg: ModelConfig, sha256: str | None, device: str | torch.device) -> nn.Module:
    """The PyTorch model from ``path/weights.pt`` in eval mode (checked against ``sha256`` when given)."""
    import torch

    from fer_ray.models.registry import create_model

    if sha256:
        verify_file(path / WEIGHTS, sha256)
    model = create_model(cfg)
    model.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    return model.to(device).eval()


def _onnx_engine(p: Path, meta: dict[str, Any], name: str, preprocess: PreprocessConfig, threads: int) -> OnnxEngine:
    sha = verify_file(p / ONNX_FILES[name], (meta.get("engines") or {}).get(name, {}).get("sha256"))
    return OnnxEngine(name, p / ONNX_FILES[name], preprocess, sha, threads)


def load_artifact(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    engine: str | None = None,
    threads: int | None = None,
    verify: bool = True,
) -> Artifact:
    """Load an artifact directory (default: the shipped default model), its files checked against their sha256.

    ``engine``: ``None`` picks :func:`default_engine`. ``threads``: ONNX Runtime threads (the cores the caller
    holds). ``verify``: an ONNX engine first passes the host check; an ``onnx-int8`` that fails is replaced by
    ``onnx`` with one warning line. Off only where an engine is measured as it is (export, evaluation).
    """
    p = resolve_model(path)
    check_engine(engine)
    if not (p / META).is_file() or not (p / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"{p} is not a fer_ray model artifact: it needs {META} and {WEIGHTS} "
            "(produce one with `python jobs/train.py`, name a shipped model "
            f"({', '.join(n for n, d in SHIPPED_MODELS.items() if d.is_dir())}), or omit --model for the default)"
        )
    meta = json.loads((p / META).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{p}: artifact format {meta.get('format_version')} is not {FORMAT_VERSION}")
    labels = tuple(meta["labels"])
    if labels != EMOTIONS:
        raise ValueError(f"{p}: label map {labels} differs from fer_ray's {EMOTIONS}")
    engine = engine or default_engine(meta, p, device)
    if engine != "torch":
        if not (p / ONNX_FILES[engine]).is_file():
            have = ["torch", *(e for e, f in ONNX_FILES.items() if (p / f).is_file())]
            raise FileNotFoundError(
                f"{p} has no {ONNX_FILES[engine]} for engine {engine!r}; add it with "
                f"`python jobs/export_onnx.py {p}`, or pick another engine ({', '.join(have)})"
            )
        if _device_type(device) != "cpu":
            raise ValueError(f"engine {engine!r} runs on CPU only; use engine 'torch' on {device}")
    # only the files this load reads: another engine's stale file is not read, and re-exporting replaces it
    weights_sha = verify_file(p / WEIGHTS, meta.get("weights_sha256"))
    cfg = ModelConfig.from_dict(meta["model_config"])
    preprocess = PreprocessConfig.from_dict(meta["preprocess"])
    inference = meta.get("inference", {})
    temperature = float(inference.get("temperature", 1.0))  # 1.0: not calibrated
    if not temperature > 0:
        raise ValueError(f"{p}: {META} records temperature {temperature}; it must be > 0")
    model, runner, host_check = None, None, None
    if engine == "torch":
        model = _torch_model(p, cfg, None, device)  # verified above
        runner = TorchEngine(model, preprocess, p / WEIGHTS, weights_sha, device)
    else:
        runner = _onnx_engine(p, meta, engine, preprocess, threads or 1)
        if verify:
            runner, host_check = _verified(p, meta, runner, preprocess, threads or 1)
    flip_tta, uncertain = bool(inference.get("flip_tta", False)), inference.get("uncertain_below")  # both optional
    return Artifact(runner, model, cfg, preprocess, labels, meta, p, flip_tta, temperature, uncertain, host_check)


def _verified(
    p: Path, meta: dict[str, Any], runner: Engine, preprocess: PreprocessConfig, threads: int
) -> tuple[Engine, HostCheck | None]:
    """``runner`` if it passes the host check, else fp32 ONNX (itself checked), with one warning line."""
    check = load_check(p)
    if check is None and runner.name == "onnx":
        return runner, None  # exported before the check: fp32 runs as PyTorch does, int8 is refused
    if check is None:
        raise FileNotFoundError(
            f"{p} has no {CHECK_FILE}, so engine {runner.name!r} cannot be checked on this CPU; re-export it "
            f"with `python jobs/export_onnx.py {p}`, or use engine 'torch'"
        )
    verify_file(p / CHECK_FILE, (meta.get("host_check") or {}).get("sha256"))
    result = check_on_host(runner, check)
    if result.passed:
        return runner, result
    if runner.name == "onnx-int8" and (p / ONNX_FILES["onnx"]).is_file():
        fp32 = _onnx_engine(p, meta, "onnx", preprocess, threads)
        fallback = check_on_host(fp32, check)
        if fallback.passed:
            logger.warning("%s; running onnx (fp32) instead", result.line())
            return fp32, fallback
        result = fallback
    raise EngineCheckError(f"{result.line()}; run this host with engine 'torch' (--engine torch)")
