"""The training recipe both back ends share (:class:`Learner`): Ray Train (:mod:`fer_ray.train.ray_train`) and
the plain runner (:mod:`fer_ray.train.plain`) differ only in where batches come from and where checkpoints go;
everything that decides the weights lives here. Nothing here imports Ray."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from fer_ray.inference.artifact import Artifact
from fer_ray.train.checkpoints import initial_artifact
from fer_ray.train.config import TrainConfig
from fer_ray.train.distill import Teacher, load_teacher
from fer_ray.train.loop import Batch, LossConfig, WeightEMA, class_weights, evaluate, train_one_epoch


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The per-step multiplier of ``cfg.lr`` (cosine, onecycle). ``onecycle`` has OneCycleLR's shape (a cosine rise
    from lr/25 to lr over the warm-up, a cosine fall to lr/25e4) but stays at its end past the horizon, where
    ``OneCycleLR`` raises when a data shard yields one step more than planned."""
    warmup = max(1, int(cfg.warmup_epochs * steps_per_epoch))
    total = max(warmup + 1, cfg.total_epochs * steps_per_epoch)

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    def onecycle(step: int) -> float:
        start, end = 1 / 25, 1 / 25e4
        if step < warmup:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / warmup))
        t = min(1.0, (step - warmup) / (total - warmup))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))

    return {"cosine": cosine, "onecycle": onecycle}[cfg.scheduler]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def teacher_of(cfg: TrainConfig, device: torch.device) -> Teacher | None:
    """The run's teachers, if any; ONNX ones get this worker's cores (they never run while the student does)."""
    if not cfg.teachers:
        return None
    threads = torch.get_num_threads()
    return load_teacher(cfg.teachers, cfg.preprocess, device, cfg.teacher_engine, cfg.teacher_tta, threads)


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int = 0) -> int:
    """Shuffling and augmentation seed of one epoch on one worker: a resumed run replays the same epochs."""
    return cfg.seed * 100_003 + epoch * 101 + rank


class Learner:
    """What a run trains and checkpoints (model, optimizer, schedule, loss, teachers, weight average), assembled
    once for both back ends, so no option can reach one back end and not the other."""

    def __init__(
        self,
        cfg: TrainConfig,
        model: torch.nn.Module,  # on Ray Train the DDP-wrapped model
        device: torch.device,
        counts: dict[str, Any],  # the run's record: class counts per split
        teacher: Teacher | None = None,
        initial: Artifact | None = None,
    ) -> None:
        if cfg.init_from:  # before the optimizer and the weight average take their copies
            getattr(model, "module", model).load_state_dict((initial or initial_artifact(cfg)).model.state_dict())
        self.cfg, self.model, self.device, self.teacher = cfg, model, device, teacher
        self.optimizer = build_optimizer(model, cfg)
        self.steps_per_epoch = max(1, math.ceil(sum(counts["train"]) / cfg.batch_size))
        if cfg.scheduler == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, "max", factor=0.5, patience=3)
        else:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg, self.steps_per_epoch))
        self.loss_cfg = LossConfig(
            cfg.label_smoothing,
            cfg.recon_weight,
            class_weights(counts["train"]) if cfg.class_weighting else None,
            distill_weight=cfg.distill_weight if cfg.teachers else 0.0,
            distill_temperature=cfg.distill_temperature,
        )
        self.amp = cfg.amp and device.type == "cuda"  # the CPU has its own switch, --cpu-bf16
        fp16 = self.amp and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None  # fp16 needs loss scaling; bf16 does not
        self.ema = WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None

    def run_epoch(
        self, epoch: int, train_batches: Iterable[Batch], val_batches: Iterable[Batch], *, generator: torch.Generator
    ) -> dict[str, Any]:
        """One epoch's metrics row. With ``ema`` the ``val_*`` metrics (selection, plateau schedule) are the
        averaged weights', and ``val_*_raw`` the trained weights' on the same faces."""
        cfg, device, ema = self.cfg, self.device, self.ema
        phase = cfg.phase(epoch)
        loss_cfg = dataclasses.replace(self.loss_cfg, recon_weight=cfg.recon_weight_at(epoch))
        tr = train_one_epoch(
            self.model,
            train_batches,
            self.optimizer,
            device,
            phase=phase,
            loss_cfg=loss_cfg,
            aug_cfg=cfg.augment,
            pre_cfg=cfg.preprocess,
            step_scheduler=None if cfg.scheduler == "plateau" else self.scheduler.step,
            scaler=self.scaler,
            amp=self.amp,
            generator=generator,
            cpu_bf16=cfg.cpu_bf16,
            teacher=self.teacher,
            ema=ema,
        ).reduce(device)  # keeps the local seconds
        model, raw = self.model, {}
        if ema is not None:
            val_batches = list(val_batches)  # read twice: the raw weights, then the average
            raw = evaluate(model, val_batches, device, cfg.preprocess).reduce(device).as_metrics("val")
            raw = {f"{k}_raw": v for k, v in raw.items() if k in ("val_acc", "val_loss")}
            model = ema.module
        va = evaluate(model, val_batches, device, cfg.preprocess).reduce(device)
        if cfg.scheduler == "plateau" and phase == "joint":
            self.scheduler.step(va.correct / max(va.n, 1))
        metrics = {
            "epoch": epoch,
            "phase": phase,
            **tr.as_metrics("train"),
            **va.as_metrics("val"),
            **raw,
            "lr": self.optimizer.param_groups[0]["lr"],
            **({"recon_weight": loss_cfg.recon_weight} if cfg.model.name == "ae_cnn_attn" else {}),
            "epoch_s": tr.seconds,
            "images_per_s": tr.n / max(tr.seconds, 1e-9),
        }
        if phase == "pretrain":
            metrics["val_acc"] = 0.0  # the classifier is untrained: never select a pretraining checkpoint
        return metrics

    def state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything a resume needs, as one dict (torchvision references' layout)."""
        return {
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            "model": getattr(self.model, "module", self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": epoch,
            "history": history,
            "rng": {"torch": torch.get_rng_state()},
            "train_config": self.cfg.to_dict(),
        }

    def restore(self, state: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        """Load a :meth:`state` dict; returns (next epoch, history so far)."""
        getattr(self.model, "module", self.model).load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        return state["epoch"] + 1, state["history"]
