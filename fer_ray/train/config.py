"""The training config: one frozen dataclass, saved next to every checkpoint and artifact."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fer_ray.models.config import ModelConfig
from fer_ray.preprocess import PreprocessConfig
from fer_ray.runtime import RayConfig
from fer_ray.train.augment import AugmentConfig

SCHEDULERS = ("cosine", "onecycle", "plateau")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)  # None disables augmentation
    ray: RayConfig = field(default_factory=RayConfig)

    # Data: None means the FER2013 Parquet under the data root (see fer_ray.config).
    data: str | None = None
    val_fraction: float = 0.1  # seeded share of train held out when the source has no val split
    limit: int | None = None  # rows per split, for smoke tests only; None trains on everything
    # fer2013: the original labels; ferplus: FER+ crowd majority (fer_ray.data.ferplus), Parquet sources only
    labels: str = "fer2013"
    ferplus_csv: str | None = None  # None: fer2013new.csv beside the Parquet

    # Schedule. pretrain_epochs train the autoencoder alone (reconstruction), then
    # `epochs` train everything jointly; models without a decoder skip pretraining.
    epochs: int = 30
    pretrain_epochs: int = 1
    batch_size: int = 128  # global; each worker gets batch_size // workers
    optimizer: str = "adamw"  # adamw | sgd (Nesterov)
    lr: float = 2e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine (linear warmup) | onecycle (cosine warmup from lr/25) | plateau (val acc)
    warmup_epochs: float = 1.0  # of the step-wise schedules; OneCycle's usual 15% of 30 epochs is 4.5
    label_smoothing: float = 0.1
    class_weighting: bool = False
    recon_weight: float = 0.1
    seed: int = 0

    # Scale. backend "ray" runs Ray Train (workers, shards, cluster storage); "plain" runs the same
    # recipe in this process without Ray (one device: a GPU box or a laptop), see fer_ray.train.plain.
    backend: str = "ray"
    # cpus_per_worker may be fractional: on small machines, leave CPUs for Ray Data.
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # PACK fills one node first; SPREAD puts workers on different nodes (Ray placement group strategies)
    placement_strategy: str = "PACK"
    torch_threads: int = 0  # 0: this node's cores / workers
    amp: bool = True  # autocast on GPU only
    shuffle_buffer: int = 8192

    # Bookkeeping. Rerunning with the same storage_path/run_name resumes from the latest checkpoint.
    run_name: str = "fer"
    storage_path: str = "runs"
    keep_checkpoints: int = 2
    max_failures: int = 0
    # Fault drill for tests: rank 0 exits abruptly halfway through this epoch, once per run dir.
    crash_once_at_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.pretrain_epochs < 0:
            raise ValueError("epochs and pretrain_epochs must be >= 0")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if self.batch_size < self.workers:
            raise ValueError(f"batch_size ({self.batch_size}) must be >= workers ({self.workers})")
        if self.labels not in ("fer2013", "ferplus"):
            raise ValueError(f"labels must be fer2013 or ferplus, got {self.labels!r}")
        if self.backend not in ("ray", "plain"):
            raise ValueError(f"backend must be ray or plain, got {self.backend!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}; got {self.scheduler!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(
                f"placement_strategy must be one of {', '.join(PLACEMENT_STRATEGIES)}; got {self.placement_strategy!r}"
            )
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.keep_checkpoints < 1:
            raise ValueError("keep_checkpoints must be >= 1")

    @property
    def total_epochs(self) -> int:
        return self.epochs + (self.pretrain_epochs if self.model.name == "ae_cnn_attn" else 0)

    def phase(self, epoch: int) -> str:
        return "pretrain" if epoch < self.total_epochs - self.epochs else "joint"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig.from_dict(d.get("model", {}))
        d["preprocess"] = PreprocessConfig.from_dict(d.get("preprocess", {}))
        aug = d.get("augment", {})
        if aug is not None:
            aug = dict(aug)
            if "erase_area" in aug:
                aug["erase_area"] = tuple(aug["erase_area"])
            d["augment"] = AugmentConfig(**aug)
        d["ray"] = RayConfig(**d.get("ray", {}))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
