"""Plain PyTorch training and evaluation, nothing here knows about Ray. Batches are ``(faces, labels)`` with
``uint8`` faces (B, S, S) from the shared decode stage, normalized on the device as batch scoring and Serve do."""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fer_ray.preprocess import PreprocessConfig, normalize
from fer_ray.train.config import AugmentConfig, TrainConfig
from fer_ray.train.distill import Teacher, distill_loss

logger = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class LossConfig:
    """The loss settings of one epoch (``recon_weight`` follows its schedule); distillation off by default."""

    label_smoothing: float = TrainConfig.label_smoothing
    recon_weight: float = TrainConfig.recon_weight
    class_weights: tuple[float, ...] | None = None
    distill_weight: float = 0.0  # with teacher probabilities: (1 - w) x cross-entropy + w x distillation
    distill_temperature: float = TrainConfig.distill_temperature


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: normalized (B, 1, S, S) -> augmented (B, 1, S, S) on the same device, in one pass: one ``affine_grid`` /
    ``grid_sample`` call applies the shift (the "random crop with padding"), flip, rotation and scale to the whole
    batch; random erasing is a vectorized rectangle mask."""
    b, dev = x.shape[0], x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    angle = (rand(b) * 2 - 1) * math.radians(cfg.rotate_deg)
    zoom = 1 + (rand(b) * 2 - 1) * cfg.scale
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0) if cfg.flip else torch.ones(b, device=dev)
    tx, ty = ((rand(b) * 2 - 1) * 2 * cfg.shift for _ in range(2))  # grid units span 2 per side
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    # Border padding: a shifted face shows extended edges, not a black frame the test set never has.
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    if cfg.erase_p > 0:
        s = x.shape[-1]
        area = cfg.erase_area[0] + rand(b) * (cfg.erase_area[1] - cfg.erase_area[0])
        aspect = torch.exp((rand(b) * 2 - 1) * math.log(3.0))
        h = (torch.sqrt(area * aspect) * s).clamp(1, s)
        w = (torch.sqrt(area / aspect) * s).clamp(1, s)
        y0, x0 = rand(b) * (s - h), rand(b) * (s - w)
        coords = torch.arange(s, device=dev, dtype=x.dtype)
        in_y = (coords[None] >= y0[:, None]) & (coords[None] < (y0 + h)[:, None])  # (B, S)
        in_x = (coords[None] >= x0[:, None]) & (coords[None] < (x0 + w)[:, None])
        mask = in_y[:, :, None] & in_x[:, None, :] & (rand(b) < cfg.erase_p)[:, None, None]  # (B, S, S)
        noise = torch.randn(x.shape, generator=generator).to(dev, x.dtype)
        x = torch.where(mask[:, None], noise, x)
    return x


def degrade(
    x: torch.Tensor, cfg: AugmentConfig, pre_cfg: PreprocessConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Normalized faces (B, 1, S, S) -> the same faces as YuNet's crops of photos tend to look, not only as
    FER2013's crops do: other exposure and contrast, small faces scaled up to S (blurred), JPEG blocks at the face's
    own size; normalized, on x's device. The student reads these; the teachers and the reconstruction target keep
    the face before it (``train_one_epoch``), so the model learns to read a poor photo as the clean face. The pixel
    work is uint8 on the CPU (JPEG is OpenCV's). With every option off nothing happens, not even a random draw, so
    runs recorded without it resume and replay unchanged."""
    if not cfg.degrades:
        return x
    b, s = x.shape[0], x.shape[-1]

    def rand(n: int) -> np.ndarray:
        return torch.rand(n, generator=generator).numpy()

    u = (x.detach().float().cpu().reshape(b, s, s) * pre_cfg.std + pre_cfg.mean).clamp(0, 1)
    if cfg.gamma or cfg.contrast:
        g = torch.from_numpy(np.exp((rand(b) * 2 - 1) * cfg.gamma))[:, None, None]
        c = torch.from_numpy(1 + (rand(b) * 2 - 1) * cfg.contrast)[:, None, None]
        u = u**g
        mean = u.mean((1, 2), keepdim=True)
        u = (u - mean) * c + mean
    out = (u.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    small = rand(b) < cfg.low_res_p
    sides = (cfg.low_res_min + rand(b) * (s - cfg.low_res_min)).astype(int)
    jpeg = rand(b) < cfg.jpeg_p
    qualities = (cfg.jpeg_quality[0] + rand(b) * (cfg.jpeg_quality[1] + 1 - cfg.jpeg_quality[0])).astype(int)
    for i in np.flatnonzero(small | jpeg):
        out[i] = degrade_face(out[i], sides[i] if small[i] else None, qualities[i] if jpeg[i] else None)
    return normalize(out, pre_cfg).to(x.device, x.dtype).reshape(x.shape)


def degrade_face(face: np.ndarray, side: int | None = None, quality: int | None = None) -> np.ndarray:
    """One uint8 face (S, S) shrunk to ``side`` and JPEG-compressed at ``quality`` at that size, then scaled back
    to S (each step skipped when None): :func:`degrade`'s pixel work, also what ``benchmarks/robustness.py`` tests."""
    s = face.shape[-1]
    img = cv2.resize(face, (int(side), int(side)), interpolation=cv2.INTER_AREA) if side else face
    if quality:
        _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return cv2.resize(img, (s, s), interpolation=cv2.INTER_LINEAR) if side else img


def compute_loss(
    out: dict[str, torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: LossConfig,
    phase: str,
    teacher_probs: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``phase="pretrain"`` trains reconstruction only; ``"joint"`` adds cross-entropy, and with
    ``teacher_probs`` (:meth:`fer_ray.train.distill.Teacher.probabilities`) the distillation term."""
    parts: dict[str, torch.Tensor] = {}
    total = torch.zeros((), device=x.device)
    if "recon" in out:
        parts["recon"] = F.mse_loss(out["recon"].float(), x.float())
        total = total + (parts["recon"] if phase == "pretrain" else cfg.recon_weight * parts["recon"])
    weight = torch.tensor(cfg.class_weights, device=x.device) if cfg.class_weights else None
    parts["ce"] = F.cross_entropy(out["logits"].float(), y, weight=weight, label_smoothing=cfg.label_smoothing)
    if phase == "pretrain":
        return total, parts
    if teacher_probs is None:
        return total + parts["ce"], parts
    parts["kd"] = distill_loss(out["logits"], teacher_probs, cfg.distill_temperature)
    return total + (1 - cfg.distill_weight) * parts["ce"] + cfg.distill_weight * parts["kd"], parts


@functools.cache
def _warn_without_native_bf16() -> None:
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        logger.warning("--cpu-bf16 on a CPU without native bf16 (AVX512-BF16/AMX): expect slower steps than fp32")


def autocast(device: torch.device, enabled: bool, cpu_bf16: bool = False):
    """bf16 autocast on GPUs that have it, fp16 elsewhere on CUDA; on CPU only with ``cpu_bf16``, since it
    changes a recipe's numerics and pays only on cores with native bf16."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    if device.type == "cpu" and cpu_bf16:
        _warn_without_native_bf16()
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class WeightEMA:
    """A moving average of the weights (batch-norm statistics too), validated and exported when asked: it smooths
    out the final updates' noise at no cost at inference. ``decay`` per step, warmed up as ``min(decay, (1 + n) /
    (10 + n))`` after n updates to forget the random initialisation within the first epoch (as timm's ModelEmaV2)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(getattr(model, "module", model)).eval().requires_grad_(False)

    def rate(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        keep = self.rate()
        ours, theirs = self.module.state_dict(), getattr(model, "module", model).state_dict()
        floats = [(ours[k], theirs[k].detach()) for k in ours if ours[k].is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [b for _, b in floats], 1.0 - keep)
        for k, v in ours.items():
            if not v.is_floating_point():  # e.g. batch norm's step counter
                v.copy_(theirs[k])

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])


@dataclass
class EpochStats:
    loss: float = 0.0
    correct: int = 0
    n: int = 0
    recon: float = 0.0
    seconds: float = 0.0

    def add(self, loss: float, recon: float, correct: int, n: int) -> None:
        self.loss += loss * n
        self.recon += recon * n
        self.correct += correct
        self.n += n

    def reduce(self, device: torch.device) -> EpochStats:
        """Sum counts across DDP workers (all-reduce, under torch.distributed) so every rank reports the same."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self
        t = torch.tensor([self.loss, self.recon, self.correct, self.n], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return EpochStats(float(t[0]), int(t[2]), int(t[3]), float(t[1]), self.seconds)

    def as_metrics(self, prefix: str) -> dict[str, float]:
        n = max(self.n, 1)
        return {
            f"{prefix}_loss": self.loss / n,
            f"{prefix}_acc": self.correct / n,
            f"{prefix}_recon": self.recon / n,
            f"{prefix}_images": self.n,
        }


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    phase: str = "joint",
    loss_cfg: LossConfig = LossConfig(),
    aug_cfg: AugmentConfig | None = AugmentConfig(),
    pre_cfg: PreprocessConfig = PreprocessConfig(),
    step_scheduler: Callable[[], None] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    generator: torch.Generator | None = None,
    cpu_bf16: bool = False,
    teacher: Teacher | None = None,
    ema: WeightEMA | None = None,
) -> EpochStats:
    """One pass over ``batches``; ``ema`` (when given) follows the weights after every step."""
    model.train()
    stats, scaler = EpochStats(), scaler or torch.amp.GradScaler(enabled=False)  # disabled: plain steps
    t0 = time.perf_counter()
    for faces, y in batches:
        x = normalize(faces.to(device, non_blocking=True), pre_cfg)  # (B, 1, S, S)
        y = y.to(device, non_blocking=True).long()
        if aug_cfg is not None:
            x = augment(x, aug_cfg, generator)
        seen = degrade(x, aug_cfg, pre_cfg, generator) if aug_cfg is not None else x  # what the student reads
        with autocast(device, amp, cpu_bf16):
            soft = teacher.probabilities(x, loss_cfg.distill_temperature) if teacher and phase != "pretrain" else None
            out = model(seen)
            loss, parts = compute_loss(out, x, y, loss_cfg, phase, soft)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if step_scheduler is not None:
            step_scheduler()
        if ema is not None:
            ema.update(model)
        with torch.no_grad():
            correct = int((out["logits"].argmax(1) == y).sum())
        stats.add(float(loss.detach()), float(parts.get("recon", torch.zeros(())).detach()), correct, len(y))
    stats.seconds = time.perf_counter() - t0
    return stats


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, pre_cfg: PreprocessConfig = PreprocessConfig()
) -> EpochStats:
    """Loss (plain cross-entropy, no smoothing, so it is comparable across runs), accuracy and reconstruction."""
    t0 = time.perf_counter()
    model.eval()
    logits, labels, recon_sum = [], [], 0.0
    for faces, y in batches:
        x = normalize(faces.to(device), pre_cfg)
        out = model(x)
        logits.append(out["logits"].float().cpu())
        labels.append(y.cpu().long())
        if "recon" in out:
            recon_sum += float(F.mse_loss(out["recon"].float(), x, reduction="sum")) / x[0].numel()
    stats = EpochStats()
    if labels:
        lt, yt = torch.cat(logits), torch.cat(labels)
        stats.add(float(F.cross_entropy(lt, yt)), recon_sum / len(yt), int((lt.argmax(1) == yt).sum()), len(yt))
    stats.seconds = time.perf_counter() - t0
    return stats


def epoch_line(metrics: dict, total_epochs: int, best: dict, seconds: float) -> str:
    """One epoch's metrics row as a log line; epochs are 0-based in histories, 1-based where people read them."""
    raw = f" (raw weights {metrics['val_acc_raw']:.4f})" if "val_acc_raw" in metrics else ""
    return (
        f"epoch {metrics['epoch'] + 1}/{total_epochs} {metrics['phase']}: train acc {metrics['train_acc']:.4f} "
        f"loss {metrics['train_loss']:.4f} | val acc {metrics['val_acc']:.4f}{raw} loss {metrics['val_loss']:.4f} "
        f"| lr {metrics['lr']:.2e} | {seconds:.0f} s (best val {best['val_acc']:.4f} @ epoch {best['epoch'] + 1})"
    )


def class_weights(counts: np.ndarray) -> tuple[float, ...]:
    """Inverse-square-root frequency weights, normalized to mean 1 (helps the rare ``disgust``)."""
    w = 1 / np.sqrt(np.maximum(np.asarray(counts, dtype=np.float64), 1))
    return tuple(float(v) for v in w / w.mean())
