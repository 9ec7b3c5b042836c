"""Small helpers shared by the thin CLIs in ``jobs/``."""

from __future__ import annotations

import argparse
import logging
import os


def setup(verbose: bool = False) -> None:
    """Logging for CLIs; usage stats stay off unless the user opted in (see fer_ray/__init__)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def add_ray_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ray")
    g.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: host:port, or auto for one started on this machine with `ray start` "
        "(default: RAY_ADDRESS, which `ray job submit` sets; else this job starts its own private Ray)",
    )
    g.add_argument(
        "--ray-cpus",
        type=int,
        default=None,
        help="logical CPUs of the job's own Ray (default: 2x cores, leaving room for Ray Data next to workers); "
        "a joined cluster's nodes declare their own",
    )


def add_train_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags of jobs/train.py, shared with jobs/tune.py (whose sweep overrides some per trial)."""
    from fer_ray.models import MODELS, ModelConfig
    from fer_ray.train.config import PLACEMENT_STRATEGIES, SCHEDULERS, TrainConfig

    d = TrainConfig()
    p.add_argument("--model", default="ae_cnn_attn", choices=sorted(MODELS))
    p.add_argument(
        "--data", default=None, help="FER2013 .parquet / fer2013.csv / image-folder root (default: data root)"
    )
    p.add_argument(
        "--labels",
        default=d.labels,
        choices=["fer2013", "ferplus"],
        help="fer2013: original labels; ferplus: FER+ crowd-majority labels (our Parquet only)",
    )
    p.add_argument("--ferplus-csv", default=None, help="FER+ fer2013new.csv (default: beside the Parquet)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--pretrain-epochs", type=int, default=d.pretrain_epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--optimizer", default=d.optimizer, choices=["adamw", "sgd"])
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--scheduler", default=d.scheduler, choices=list(SCHEDULERS))
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="warm-up of cosine/onecycle")
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--recon-weight", type=float, default=d.recon_weight)
    p.add_argument("--class-weighting", action="store_true")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--latent-size", type=int, default=ModelConfig.latent_size, help="24, 12 or 6")
    p.add_argument("--latent-channels", type=int, default=ModelConfig.latent_channels)
    p.add_argument("--widths", default=",".join(map(str, ModelConfig().widths)))
    p.add_argument("--attention", default=ModelConfig.attention, choices=["se", "cbam", "none"])
    p.add_argument("--dropout", type=float, default=ModelConfig.dropout)
    p.add_argument("--limit", type=int, default=None, help="rows per split (smoke tests only)")
    p.add_argument(
        "--backend",
        default=d.backend,
        choices=["ray", "plain"],
        help="ray: Ray Train; plain: the same recipe in one process without Ray (a GPU box, a laptop)",
    )
    p.add_argument("--workers", type=int, default=d.workers)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=d.cpus_per_worker)
    p.add_argument(
        "--placement-strategy",
        default=d.placement_strategy,
        choices=list(PLACEMENT_STRATEGIES),
        help="SPREAD: one worker per node where possible; PACK: fill one node first",
    )
    p.add_argument("--torch-threads", type=int, default=d.torch_threads)
    p.add_argument("--run-name", default=None, help="default: the model name")
    p.add_argument("--storage-path", default=d.storage_path, help="local dir or s3:// (shared storage on multi-node)")
    p.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints)
    p.add_argument("--max-failures", type=int, default=d.max_failures)
    p.add_argument("--seed", type=int, default=d.seed)
    add_ray_args(p)
    return p


def train_config_from_args(a: argparse.Namespace):
    """The TrainConfig named by :func:`add_train_args` flags."""
    from fer_ray.config import replace
    from fer_ray.models import ModelConfig
    from fer_ray.runtime import RayConfig
    from fer_ray.train.config import TrainConfig

    d = TrainConfig()
    model = ModelConfig(
        name=a.model,
        latent_size=a.latent_size,
        latent_channels=a.latent_channels,
        widths=tuple(int(w) for w in a.widths.split(",")),
        attention=a.attention,
        dropout=a.dropout,
    )
    return replace(
        TrainConfig(),
        model=model,
        data=a.data,
        labels=a.labels,
        ferplus_csv=a.ferplus_csv,
        epochs=a.epochs,
        pretrain_epochs=a.pretrain_epochs,
        batch_size=a.batch_size,
        optimizer=a.optimizer,
        lr=a.lr,
        weight_decay=a.weight_decay,
        scheduler=a.scheduler,
        warmup_epochs=a.warmup_epochs,
        label_smoothing=a.label_smoothing,
        recon_weight=a.recon_weight,
        class_weighting=a.class_weighting,
        augment=None if a.no_augment else TrainConfig().augment,
        limit=a.limit,
        backend=getattr(a, "backend", d.backend),
        workers=a.workers,
        use_gpu=a.use_gpu,
        cpus_per_worker=a.cpus_per_worker,
        placement_strategy=a.placement_strategy,
        torch_threads=a.torch_threads,
        run_name=a.run_name or a.model,
        storage_path=a.storage_path,
        keep_checkpoints=a.keep_checkpoints,
        max_failures=a.max_failures,
        seed=a.seed,
        ray=RayConfig(address=a.address, num_cpus=a.ray_cpus),
    )
