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
    p.add_argument(
        "--config",
        default=None,
        help="JSON or YAML file of TrainConfig fields (nested model:, augment:, ...), e.g. a sweep's "
        "best_config.json; flags given on the command line override it",
    )
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


def load_config_file(path: str):
    """A TrainConfig from a JSON or YAML file of its fields (nested ``model:``, ``preprocess:``,
    ``augment:`` (``null``: no augmentation), ``ray:``); fields left out keep their defaults.

    Unknown keys are an error naming them: a typo must not silently train something else.
    """
    import dataclasses
    import json
    from pathlib import Path

    from fer_ray.train.config import TrainConfig

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    if p.suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a mapping of TrainConfig fields, got {type(data).__name__}")

    nested = _nested_classes()
    bad = [k for k in data if k not in {f.name for f in dataclasses.fields(TrainConfig)}]
    for k, cls in nested.items():
        if isinstance(data.get(k), dict):
            bad += [f"{k}.{n}" for n in data[k] if n not in {f.name for f in dataclasses.fields(cls)}]
    if bad:
        raise ValueError(
            f"--config {path}: unknown key(s) {', '.join(sorted(bad))}; "
            f"valid top-level keys: {', '.join(f.name for f in dataclasses.fields(TrainConfig))}"
        )
    try:
        return TrainConfig.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--config {path}: {e}") from None


def _nested_classes():
    from fer_ray.models import ModelConfig
    from fer_ray.preprocess import PreprocessConfig
    from fer_ray.runtime import RayConfig
    from fer_ray.train.augment import AugmentConfig

    return {"model": ModelConfig, "preprocess": PreprocessConfig, "augment": AugmentConfig, "ray": RayConfig}


def config_defaults(cfg) -> dict:
    """Parser defaults (by flag dest) that reproduce ``cfg`` for the flags :func:`add_train_args` defines."""
    from fer_ray.train.config import TrainConfig

    m = cfg.model
    out = {k: getattr(cfg, k) for k in _FLAT_FLAGS}
    if cfg.run_name == TrainConfig.run_name:
        out["run_name"] = None  # not in the file: the model name, as without --config
    out.update(
        model=m.name,
        latent_size=m.latent_size,
        latent_channels=m.latent_channels,
        widths=",".join(map(str, m.widths)),
        attention=m.attention,
        dropout=m.dropout,
        no_augment=cfg.augment is None,
        address=cfg.ray.address,
        ray_cpus=cfg.ray.num_cpus,
    )
    return out


_FLAT_FLAGS = (
    "data labels ferplus_csv epochs pretrain_epochs batch_size optimizer lr weight_decay scheduler warmup_epochs "
    "label_smoothing recon_weight class_weighting limit backend workers use_gpu cpus_per_worker placement_strategy "
    "torch_threads run_name storage_path keep_checkpoints max_failures seed"
).split()


def parse_train_args(p: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` with ``--config FILE``'s values as defaults, so explicit flags override the file."""
    pre, _ = p.parse_known_args(argv)
    if getattr(pre, "config", None):
        p.set_defaults(**config_defaults(load_config_file(pre.config)))
    return p.parse_args(argv)


def train_config_from_args(a: argparse.Namespace):
    """The TrainConfig named by :func:`add_train_args` flags (on top of ``--config FILE`` when given)."""
    from fer_ray.config import replace
    from fer_ray.train.config import TrainConfig

    # Fields without a flag (momentum, preprocessing, augmentation strength, ...) come from the file.
    base = load_config_file(a.config) if getattr(a, "config", None) else TrainConfig()
    model = replace(
        base.model,
        name=a.model,
        latent_size=a.latent_size,
        latent_channels=a.latent_channels,
        widths=tuple(int(w) for w in a.widths.split(",")),
        attention=a.attention,
        dropout=a.dropout,
    )
    return replace(
        base,
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
        augment=None if a.no_augment else (base.augment or TrainConfig().augment),
        limit=a.limit,
        backend=getattr(a, "backend", base.backend),
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
        ray=replace(base.ray, address=a.address, num_cpus=a.ray_cpus),
    )


def artifact_and_data_or_exit(p: argparse.ArgumentParser, artifact: str, data: str | None, need: str) -> str:
    """For jobs that update an artifact in place from labelled data: the data source, or one usage error."""
    from pathlib import Path

    from fer_ray.config import fer2013_parquet

    source = data or fer2013_parquet()
    if source is None:
        p.error(f"no labelled data found: pass --data ({need})")
    if not Path(artifact).is_dir():
        p.error(f"{artifact} is not a directory; pass a model artifact (the directory holding artifact.json)")
    return str(source)
