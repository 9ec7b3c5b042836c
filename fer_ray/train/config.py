"""The training config: one frozen dataclass, saved next to every checkpoint and artifact. Its fields are also
``jobs/train.py``'s flags and ``--config`` keys (``fer_ray.cli``): help, default and choices are written here."""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fer_ray.config import RAY_FLAGS, check_at_least, check_choices, setting
from fer_ray.models.config import ModelConfig
from fer_ray.preprocess import PreprocessConfig
from fer_ray.runtime import RayConfig


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation of the training split (:func:`fer_ray.train.loop.augment`)."""

    shift: float = 0.1  # max translation as a fraction of the side (4-5 px on 48: crop-with-padding)
    rotate_deg: float = 10.0
    scale: float = 0.1  # zoom in [1 - scale, 1 + scale]
    flip: bool = True
    erase_p: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)
    # Faces as a detector crops them from photos (:func:`fer_ray.train.loop.degrade`); off in the shipped recipes.
    gamma: float = 0.0  # exposure: pixels ** g, log g uniform in [-gamma, gamma]
    contrast: float = 0.0  # contrast around each face's mean, times [1 - contrast, 1 + contrast]
    low_res_p: float = 0.0  # share of faces shrunk to a side in [low_res_min, S) and scaled back up
    low_res_min: int = 16
    jpeg_p: float = 0.0  # share of faces JPEG-compressed (at their shrunk size) at a quality in jpeg_quality
    jpeg_quality: tuple[int, int] = (30, 90)

    def __post_init__(self) -> None:
        for name in ("erase_area", "jpeg_quality"):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # JSON gives lists
        if not (0 <= self.low_res_p <= 1 and 0 <= self.jpeg_p <= 1 and 0 <= self.contrast < 1 and self.gamma >= 0):
            raise ValueError(
                f"augment: low_res_p and jpeg_p must be in [0, 1], contrast in [0, 1), gamma >= 0; got {self}"
            )
        if not (2 <= self.low_res_min and 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100):
            raise ValueError(f"augment: low_res_min must be >= 2 and jpeg_quality a range in [1, 100]; got {self}")

    @property
    def degrades(self) -> bool:
        return bool(self.gamma or self.contrast or self.low_res_p or self.jpeg_p)


# The --help section of each TrainConfig field, named once per section.
data_setting = functools.partial(setting, group="data")
recipe_setting = functools.partial(setting, group="recipe")
scale_setting = functools.partial(setting, group="scale")
run_setting = functools.partial(setting, group="run")

# How the nested configs appear on the command line: ModelConfig's fields as flat flags (the
# architecture as --arch: --model names a trained artifact in every other job).
MODEL_FLAGS = {
    "name": {"flag": "--arch", "deprecated": ("--model",)},
    "num_classes": {"flag": None},
    "image_size": {"flag": None},
}


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = setting(
        help="the architecture and its sizes", default_factory=ModelConfig, flatten=True, fields=MODEL_FLAGS,
        group="model",
    )  # fmt: skip
    preprocess: PreprocessConfig = setting(
        help="preprocessing recorded in the artifact (config file only)", default_factory=PreprocessConfig, flag=None
    )
    augment: AugmentConfig | None = recipe_setting(
        help="batch augmentation (config file: shift, rotate_deg, scale, flip, erase_p, erase_area, gamma, contrast, "
        "low_res_p, low_res_min, jpeg_p, jpeg_quality; null: none)",
        default_factory=AugmentConfig,
        flag="--no-augment",
    )
    ray: RayConfig = setting(
        help="how the job reaches Ray",
        default_factory=RayConfig,
        flatten=True,
        fields=RAY_FLAGS,
        group="ray",
        resumable=True,
        machine=True,
        resources=True,
        bookkeeping=True,
    )

    data: str | None = data_setting(
        None,
        "FER2013 .parquet, fer2013.csv or train/<emotion>/ image folders, local or s3:// "
        "(unset: $FER_RAY_DATA/fer2013/fer2013.parquet, else ../shared/data beside the repo)",
    )
    val_fraction: float = data_setting(0.1, "seeded share of train held out when the source has no validation split")
    limit: int | None = data_setting(None, "rows per split, for smoke tests only (unset: everything)", bookkeeping=True)
    labels: Literal["fer2013", "ferplus"] = data_setting(
        "fer2013", "fer2013: the original labels; ferplus: FER+ crowd majority (our Parquet only)"
    )
    ferplus_csv: str | None = data_setting(None, "FER+ fer2013new.csv (unset: beside the Parquet)")

    epochs: int = recipe_setting(30, "joint epochs (all of the model)", resumable=True)
    pretrain_epochs: int = recipe_setting(1, "reconstruction-only epochs before the joint ones (ae_cnn_attn)")
    batch_size: int = recipe_setting(128, "global batch; each worker gets batch_size / workers")
    optimizer: Literal["adamw", "sgd"] = recipe_setting("adamw", "adamw, or sgd (Nesterov)")
    lr: float = recipe_setting(2e-3, "peak learning rate", resumable=True)
    weight_decay: float = recipe_setting(0.05, "weight decay")
    momentum: float = recipe_setting(0.9, "SGD momentum")
    scheduler: Literal["cosine", "onecycle", "plateau"] = recipe_setting(
        "cosine",
        "cosine (linear warm-up), onecycle (cosine warm-up from lr/25) or plateau (on val accuracy)",
        resumable=True,
    )
    warmup_epochs: float = recipe_setting(
        1.0, "warm-up of cosine/onecycle; OneCycle's usual 15% of 30 epochs is 4.5", resumable=True
    )
    label_smoothing: float = recipe_setting(0.1, "label smoothing of the cross-entropy")
    class_weighting: bool = recipe_setting(False, "weight the loss by inverse class frequency")
    recon_weight: float = recipe_setting(0.1, "weight of the reconstruction loss (ae_cnn_attn)")
    # The decoder shapes the latent early on; a decaying weight leaves the latent to the classifier
    # by the end (the paper trains both losses throughout: "constant").
    recon_schedule: Literal["constant", "linear", "cosine"] = recipe_setting(
        "constant",
        "reconstruction weight over the joint epochs: constant, or decaying from --recon-weight to 0 at the "
        "last joint epoch (linear or cosine) (ae_cnn_attn)",
    )
    # Resumable because it only says where the teachers are: a resume must match their weights and engine
    # (counts["teachers"]), so a teacher may move, e.g. aside before a better model ships under its name.
    teachers: tuple[str, ...] = recipe_setting(
        (),
        "trained artifacts to distil from (shipped names or paths, comma-separated; unset: none)",
        resumable=True,
    )
    distill_weight: float = recipe_setting(0.5, "share of the loss that matches the teachers (with --teachers)")
    distill_temperature: float = recipe_setting(
        2.0, "softmax temperature of teachers and student in the distillation loss"
    )
    teacher_engine: Literal["torch", "onnx", "onnx-int8"] = recipe_setting(
        "torch",
        "what runs the teachers: torch (on the training device, under its autocast) or ONNX Runtime on the CPU "
        "(onnx-int8: the fastest on a CPU; benchmarks/teacher_cost.py)",
    )
    teacher_tta: bool = recipe_setting(
        False, "teachers also score the mirrored batch (flip TTA, as the shipped models are scored)"
    )
    # Fine-tuning, e.g. an SGDR-style restart with new teachers; as for teachers, a resume checks the
    # recorded model_id, so the path itself may change.
    init_from: str | None = recipe_setting(
        None,
        "trained artifact (shipped name or path) whose weights start the run, e.g. to fine-tune it with new "
        "teachers; same architecture (dropout may differ); unset: random initialisation",
        resumable=True,
    )
    ema_decay: float = recipe_setting(
        0.0,
        "per-step decay of a moving average of the weights that is validated and exported (0: off; e.g. 0.999)",
    )
    seed: int = recipe_setting(0, "seed of initialisation, shuffling, augmentation and held-out splits")

    backend: Literal["ray", "plain"] = scale_setting(
        "ray",
        "ray: Ray Train; plain: the same recipe in one process without Ray (a GPU box, a laptop)",
        resumable=True,
    )
    workers: int = scale_setting(1, "Ray Train workers", resumable=True, resources=True)
    use_gpu: bool = scale_setting(False, "one GPU per worker", resumable=True, resources=True)
    cpus_per_worker: float = scale_setting(
        1.0,
        "CPUs per worker; fractions leave CPUs for Ray Data on small machines",
        resumable=True,
        resources=True,
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = scale_setting(
        "PACK",
        "PACK fills one node first; SPREAD puts workers on different nodes",
        resumable=True,
        resources=True,
    )
    torch_threads: int = scale_setting(
        0, "PyTorch threads per worker (0: this node's cores / workers)", resumable=True, resources=True
    )
    amp: bool = scale_setting(True, "autocast (mixed precision) on GPU", flag="--no-amp", resumable=True)
    cpu_bf16: bool = scale_setting(
        False,
        "bf16 autocast on CPU (faster steps on AVX512-BF16/AMX cores, slower elsewhere: "
        "benchmarks/train_throughput.py)",
        resumable=True,
    )
    shuffle_buffer: int = setting(8192, "rows in Ray Data's local shuffle buffer", flag=None, resumable=True)

    run_name: str = run_setting(
        "fer",
        "folder of the run under --storage-path; the same name resumes",
        default_text="the --arch name",
        bookkeeping=True,
    )
    storage_path: str = run_setting(
        "runs",
        "local directory or s3:// (shared storage on multi-node)",
        resumable=True,
        machine=True,
        bookkeeping=True,
    )
    keep_checkpoints: int = run_setting(2, "best checkpoints kept", resumable=True)
    max_failures: int = run_setting(0, "worker failures Ray Train recovers from", resumable=True, resources=True)
    crash_once_at_epoch: int | None = setting(
        None,
        "fault drill for tests: rank 0 exits abruptly halfway through this epoch, once per run dir",
        flag=None,
        resumable=True,
        bookkeeping=True,
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "teachers", tuple(str(t) for t in self.teachers))  # JSON gives lists
        check_choices(self)
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError("distill_weight must be in [0, 1] and distill_temperature > 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.epochs < 0 or self.pretrain_epochs < 0:
            raise ValueError("epochs and pretrain_epochs must be >= 0")
        check_at_least(self, workers=1)
        if self.batch_size < self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= workers ({self.workers})")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")
        if self.preprocess.image_size != self.model.image_size:
            raise ValueError(
                f"preprocess.image_size ({self.preprocess.image_size}) differs from model.image_size "
                f"({self.model.image_size}): preprocessing must make faces of the size the model is built for; "
                "set both to the same value"
            )

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.pretrain_epochs if self.model.name == "ae_cnn_attn" else 0)

    def phase(self, epoch: int) -> str:
        return "pretrain" if epoch < self.total_epochs - self.epochs else "joint"

    def recon_weight_at(self, epoch: int) -> float:
        """The reconstruction loss weight in (0-based, pretraining included) ``epoch`` of a joint phase."""
        if self.recon_schedule == "constant":
            return self.recon_weight
        joint = epoch - (self.total_epochs - self.epochs)
        t = min(1.0, max(0.0, joint / max(1, self.epochs - 1)))
        decay = 1.0 - t if self.recon_schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))
        return self.recon_weight * decay

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """From metadata fer_ray stored: unknown keys are ignored, so runs and artifacts of other versions stay
        readable (a file a person wrote goes through :func:`fer_ray.config.from_user_dict`, which refuses them)."""
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d.get("model", {}))
        d["preprocess"] = PreprocessConfig.from_dict(d.get("preprocess", {}))
        if d.get("augment", {}) is not None:
            d["augment"] = AugmentConfig(**d.get("augment", {}))
        d["ray"] = RayConfig(**d.get("ray", {}))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class TrainActions:
    """What ``jobs/train.py`` does with the run this time: flags, but neither ``--config`` keys nor saved."""

    export_only: bool = setting(
        False, "export the best checkpoint of the existing run (--storage-path/--run-name), e.g. one stopped midway"
    )
