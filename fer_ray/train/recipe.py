"""The training recipe both back ends share: optimizer, schedule, one epoch, checkpoint state, export.

Ray Train (:mod:`fer_ray.train.ray_train`) and the plain-PyTorch runner
(:mod:`fer_ray.train.plain`) differ only in where batches come from and where
checkpoints go; everything that decides the weights lives here, so a run on a GPU box
without Ray and a run on a Ray cluster follow the same recipe. Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fer_ray.config import DATA_ROOT_ENV, DEFAULT_PARQUET, UserError, fer2013_parquet
from fer_ray.data.sources import fingerprint
from fer_ray.inference.artifact import SHIPPED_MODELS, Artifact, load_artifact, save_artifact
from fer_ray.models import create_model
from fer_ray.train.config import TrainConfig
from fer_ray.train.distill import Teacher, load_teacher, teacher_ids
from fer_ray.train.ema import WeightEMA
from fer_ray.train.loop import Batch, EpochStats, LossConfig, class_weights, evaluate, train_one_epoch

STATE = "state.pt"  # one checkpoint = one torch.save'd dict {model, optimizer, scheduler, epoch, history, ...}
Reducer = Callable[[torch.Tensor], torch.Tensor]


class RunRefused(UserError):
    """A run that would continue or start from weights under another question (a resume with another
    model, recipe, data or teachers; a starting artifact of another architecture): a user's choice to
    change, so the CLI shows it as one line, not a traceback."""


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The per-step multiplier of ``cfg.lr`` for the step-wise schedules (cosine, onecycle).

    ``onecycle`` follows OneCycleLR's learning-rate shape (Smith & Topin, 2019): a cosine
    rise from lr/25 to lr over the warm-up, then a cosine fall to lr/25e4. It is written as
    a clamped factor rather than ``OneCycleLR`` itself because that one raises when a data
    shard yields one step more than planned; past the horizon the factor stays at its end.
    """
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


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps_per_epoch))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_config(cfg: TrainConfig, counts: dict[str, Any]) -> LossConfig:
    return LossConfig(
        cfg.label_smoothing,
        cfg.recon_weight,
        class_weights(counts["train"]) if cfg.class_weighting else None,
        distill_weight=cfg.distill_weight if cfg.teachers else 0.0,
        distill_temperature=cfg.distill_temperature,
    )


def data_record(
    cfg: TrainConfig,
    source: str,
    shown: str,
    teacher: Teacher | None = None,
    initial: Artifact | None = None,
) -> dict[str, Any]:
    """The head of a run's ``counts`` record: what it learnt from (data, labels, teachers and
    starting weights by ``model_id``), so a resume on other data or teachers is refused and the
    artifact names them.

    ``teacher`` / ``initial``: the already loaded teachers and starting artifact, whose ids are taken
    as they are (else each artifact is read once for its id, as on a Ray driver that trains nothing itself)."""
    record: dict[str, Any] = {"source": shown, "fingerprint": fingerprint(source), "labels": cfg.labels}
    if cfg.teachers:
        record["teachers"] = list(teacher.ids) if teacher is not None else teacher_ids(cfg.teachers, cfg.teacher_engine)
    if cfg.init_from:
        record["init_from"] = (initial or initial_artifact(cfg)).model_id
    record["decode_errors"] = {}
    return record


def initial_artifact(cfg: TrainConfig) -> Artifact:
    """``cfg.init_from`` loaded, refused when its architecture (name and sizes) is not the run's: one
    clear line instead of a state-dict mismatch; dropout may differ, it holds no weights."""
    art = load_artifact(cfg.init_from, engine="torch")
    theirs, ours = art.model_config.to_dict(), cfg.model.to_dict()
    differ = sorted(k for k in theirs.keys() | ours.keys() if k != "dropout" and theirs.get(k) != ours.get(k))
    if differ:
        shown = ", ".join(f"{k} {theirs.get(k)} vs {ours.get(k)}" for k in differ)
        raise RunRefused(
            f"--init-from {cfg.init_from}: its model differs from this run's ({shown})",
            "start from an artifact of this architecture, or give the flags its sizes (--arch, --widths, ...)",
        )
    return art


def initial_artifact_of(cfg: TrainConfig) -> Artifact | None:
    """The run's starting artifact (``None`` without ``--init-from``), loaded once per process and
    handed to :func:`data_record` and :meth:`Learner.build`, as the teachers are."""
    return initial_artifact(cfg) if cfg.init_from else None


def load_initial_weights(model: torch.nn.Module, initial: Artifact) -> None:
    """Copy ``initial``'s weights into ``model`` (or its DDP ``module``): the start of a fine-tuning run."""
    getattr(model, "module", model).load_state_dict(initial.model.state_dict())


def teacher_of(cfg: TrainConfig, device: torch.device) -> Teacher | None:
    """The run's teachers (``None`` without ``--teachers``); ONNX teachers get torch's thread count,
    the cores this worker holds (they never run at the same time as the student)."""
    if not cfg.teachers:
        return None
    threads = torch.get_num_threads()
    return load_teacher(cfg.teachers, cfg.preprocess, device, cfg.teacher_engine, cfg.teacher_tta, threads)


def uses_amp(cfg: TrainConfig, device: torch.device) -> bool:
    """Autocast applies on CUDA only (on unless ``--no-amp``); the CPU has its own switch, ``--cpu-bf16``."""
    return cfg.amp and device.type == "cuda"


def epoch_seed(cfg: TrainConfig, epoch: int, rank: int = 0) -> int:
    """Shuffling and augmentation seed of one epoch on one worker: a resumed run replays the same epochs."""
    return cfg.seed * 100_003 + epoch * 101 + rank


@dataclasses.dataclass
class Learner:
    """What a run trains and checkpoints: the model with its optimizer, schedule, loss, teachers and
    weight average, assembled once by :meth:`build` for both back ends, so no option can reach one
    back end and not the other; they differ only in where batches come from and checkpoints go."""

    cfg: TrainConfig
    model: torch.nn.Module  # on Ray Train the DDP-wrapped model
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    loss_cfg: LossConfig
    scaler: torch.amp.GradScaler | None = None
    teacher: Teacher | None = None
    ema: WeightEMA | None = None

    @classmethod
    def build(
        cls,
        cfg: TrainConfig,
        model: torch.nn.Module,
        device: torch.device,
        steps_per_epoch: int,
        counts: dict[str, Any],
        teacher: Teacher | None = None,
        initial: Artifact | None = None,
    ) -> Learner:
        if cfg.init_from:  # before the optimizer and the weight average take their copies
            load_initial_weights(model, initial or initial_artifact(cfg))
        optimizer = build_optimizer(model, cfg)
        # fp16 needs loss scaling; bf16 (where the GPU has it) does not
        scaler = torch.amp.GradScaler("cuda") if uses_amp(cfg, device) and not torch.cuda.is_bf16_supported() else None
        return cls(
            cfg,
            model,
            optimizer,
            build_scheduler(optimizer, cfg, steps_per_epoch),
            device,
            loss_config(cfg, counts),
            scaler,
            teacher,
            WeightEMA(model, cfg.ema_decay) if cfg.ema_decay else None,
        )

    def run_epoch(
        self,
        epoch: int,
        train_batches: Iterable[Batch],
        val_batches: Iterable[Batch],
        *,
        generator: torch.Generator,
        reducer: Reducer | None = None,
    ) -> dict[str, Any]:
        """Train one epoch, validate, step an epoch-wise schedule; returns the epoch's metrics row.

        With ``ema`` the ``val_*`` metrics (selection, plateau schedule) are the averaged weights', and
        ``val_*_raw`` the trained weights' on the same faces."""
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
            amp=uses_amp(cfg, device),
            generator=generator,
            cpu_bf16=cfg.cpu_bf16,
            teacher=self.teacher,
            ema=ema,
        )
        seconds = tr.seconds
        tr: EpochStats = tr.reduce(reducer)
        model, raw = self.model, {}
        if ema is not None:
            val_batches = list(val_batches)  # read twice: the raw weights, then the average
            raw = evaluate(model, val_batches, device, loss_cfg, cfg.preprocess).reduce(reducer).as_metrics("val")
            raw = {f"{k}_raw": v for k, v in raw.items() if k in ("val_acc", "val_loss")}
            model = ema.module
        va = evaluate(model, val_batches, device, loss_cfg, cfg.preprocess).reduce(reducer)
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
            "epoch_s": seconds,
            "images_per_s": tr.n / max(seconds, 1e-9),
        }
        if phase == "pretrain":
            metrics["val_acc"] = 0.0  # the classifier is untrained: never select a pretraining checkpoint
        return metrics

    def state(self, epoch: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything a resume needs, as one dict (torchvision references' checkpoint layout)."""
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


def select_checkpoint(candidates: list[tuple[Any, dict[str, Any]]]):
    """The kept checkpoint with the best validation accuracy; ties go to the lower
    validation loss, then the later epoch (Ray's own ranking keeps the earliest)."""
    if not candidates:
        return None
    ckpt, _ = max(candidates, key=lambda cm: rank_key(cm[1]))
    return ckpt


def rank_key(metrics: dict[str, Any]) -> tuple[float, float, int]:
    """Order of checkpoints: validation accuracy, then lower validation loss, then the later epoch."""
    return (metrics.get("val_acc", 0.0), -metrics.get("val_loss", math.inf), metrics.get("epoch", -1))


def resolve_source(cfg: TrainConfig) -> tuple[str, str]:
    """(where to read the training data, how to name it in artifacts).

    Artifacts ship to other machines: the source is named as the user gave it (or relative
    to the data root), not by this machine's absolute path; the fingerprint identifies the bytes.
    """
    source = cfg.data or fer2013_parquet()
    if source is None:
        raise FileNotFoundError(
            "no training data: pass --data (FER2013 .parquet, fer2013.csv or train/<emotion>/ folders) "
            f"or set {DATA_ROOT_ENV} to a directory holding {DEFAULT_PARQUET}"
        )
    return str(source), str(cfg.data) if cfg.data else f"<data root>/{DEFAULT_PARQUET}"


# Where and on what a run ran: machine facts, not part of what reproduces the weights. Artifacts ship
# to other machines, so they leave these out (the run's own train_config.json keeps them).
MACHINE_FIELDS = ("storage_path", "ray")


def portable(train_config: dict[str, Any]) -> dict[str, Any]:
    """``train_config`` without this machine's facts; teachers by shipped name or directory name (their
    exact weights are in the record's ``counts["teachers"]``, by ``model_id``)."""
    out = {k: v for k, v in train_config.items() if k not in MACHINE_FIELDS}
    if out.get("teachers"):
        out["teachers"] = [t if t in SHIPPED_MODELS else Path(t).name for t in out["teachers"]]
    if out.get("init_from") and out["init_from"] not in SHIPPED_MODELS:
        out["init_from"] = Path(out["init_from"]).name
    return out


def export_state(
    state: dict[str, Any],
    cfg: TrainConfig,
    counts: dict[str, Any],
    history: list[dict[str, Any]],
    out_dir: Path,
    segments: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint's weights as a model artifact with the run's metrics and config.

    ``segments`` lists each change of config on resume (e.g. a longer horizon), so the
    artifact's record reproduces its weights and not only the last command.
    """
    model = create_model(cfg.model)
    model.load_state_dict(state["ema"]["weights"] if "ema" in state else state["model"])  # what was validated
    return save_artifact(
        model,
        cfg.model,
        out_dir,
        preprocess=cfg.preprocess,
        metrics={
            "best": state["history"][-1],
            "history": history,
            "counts": counts,
            "segments": [{**g, "train_config": portable(g["train_config"])} for g in segments or []],
        },
        train_config=portable(cfg.to_dict()),
        # runs saved before counts carried the fingerprint hash their (then absolute) source
        data_fingerprint=counts.get("fingerprint") or fingerprint(counts["source"]),
        # mirror-image test-time augmentation only for models that trained on mirrored faces
        flip_tta=cfg.augment is not None and cfg.augment.flip,
    )


# What a resume may change: how long and how fast it trains, and where and on what it runs. Anything
# else (model, data, labels, preprocessing, augmentation, loss, optimizer, batch size) would continue
# the saved weights under a different question than the one they were trained on.
RESUMABLE = frozenset(
    {
        "epochs",
        "lr",
        "scheduler",
        "warmup_epochs",
        "workers",
        "cpus_per_worker",
        "torch_threads",
        "use_gpu",
        "amp",
        "cpu_bf16",
        "placement_strategy",
        "backend",
        "storage_path",
        "keep_checkpoints",
        "max_failures",
        "shuffle_buffer",
        "crash_once_at_epoch",
        "ray",
        # Where the teachers are found (a shipped name, a directory): their identity is the weights and
        # engine recorded in ``counts["teachers"]``, which a resume must match (checked in resume_record).
        # So a teacher may move, e.g. be copied aside before a better model ships under its name.
        "teachers",
        # Likewise where the starting weights are found: their identity is counts["init_from"].
        "init_from",
    }
)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def resume_record(
    saved: dict[str, Any] | None, cfg: TrainConfig, counts: dict[str, Any], next_epoch: int
) -> dict[str, Any]:
    """The run's ``train_config.json`` content for this invocation, checking a resume against the saved one.

    A first start records one segment. A resume with the same config keeps the record; one
    that changes only :data:`RESUMABLE` fields (a longer horizon, an LR restart, more workers)
    appends a segment with the epoch it takes effect, which the exported artifact carries, so
    the record reproduces the weights. Any other change, or different training data, raises
    :class:`RunRefused` naming the fields: start a new ``--run-name`` instead.
    """
    current = cfg.to_dict()
    if not saved:
        return {"train_config": current, "counts": counts, "segments": [{"start_epoch": 0, "train_config": current}]}
    # Read back through TrainConfig: a setting added since the run started counts as its default, so
    # a new version of fer_ray resumes runs started by an older one.
    before, after = _flat(TrainConfig.from_dict(saved["train_config"]).to_dict()), _flat(current)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    unsafe = [k for k in changed if k.split(".")[0] not in RESUMABLE]
    old_fp, new_fp = saved.get("counts", {}).get("fingerprint"), counts.get("fingerprint")
    if old_fp and new_fp and old_fp != new_fp:
        unsafe.append("data (its fingerprint changed)")
    if saved.get("counts", {}).get("teachers", []) != counts.get("teachers", []):
        unsafe.append("teachers (other weights)")
    if saved.get("counts", {}).get("init_from") != counts.get("init_from"):
        unsafe.append("init_from (other starting weights)")
    if after.get("epochs", 0) < before.get("epochs", 0):
        unsafe.append(f"epochs (shorter: {before['epochs']} -> {after['epochs']})")
    if unsafe:
        raise RunRefused(
            f"run {cfg.run_name!r} was trained with a different {', '.join(unsafe)}; a resume may change only "
            f"{', '.join(sorted(RESUMABLE))}",
            "use a new --run-name to train with these settings",
        )
    segments = saved.get("segments") or [{"start_epoch": 0, "train_config": saved["train_config"]}]
    if changed:
        segments = [*segments, {"start_epoch": next_epoch, "changed": changed, "train_config": current}]
    return {"train_config": current, "counts": counts, "segments": segments}
