"""The batch-scoring config: one frozen dataclass, saved (without secrets) next to every report."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from fer_ray.config import RAY_FLAGS, check_at_least, setting
from fer_ray.data.s3 import S3Settings
from fer_ray.inference.engine import ENGINES, check_engine
from fer_ray.inference.shipped import MODEL_HELP
from fer_ray.runtime import RayConfig
from fer_ray.video.config import VideoConfig

Detector = Literal["yunet", "haar"]
DETECTORS: tuple[str, ...] = Detector.__args__


@dataclass(frozen=True)
class DetectConfig:
    """Face detection: YuNet (``cv2.FaceDetectorYN``, default) or OpenCV's Haar cascade.

    YuNet's cost grows with the pixel count and its recall drops for faces under ~40 px, so it detects on a copy
    shrunk until a ``min_face`` face is ``detect_face_px`` pixels, and never larger than ``max_side`` (defaults:
    benchmarks/results/detect_recall.md). The cascade detects on a copy at most ``max_side``.
    """

    detector: Detector = setting("yunet", "yunet (cv2.FaceDetectorYN) or haar (OpenCV's cascade)")
    min_face: int = setting(40, "smallest face side to find, in original-image pixels")
    max_side: int = setting(
        640,
        "never detect on a copy larger than this (pixels, long side); 1024 or more finds smaller faces, slower",
        flag="--detect-max-side",
    )
    detect_face_px: int = setting(40, "yunet: a --min-face face is shrunk to no less than this for detection")
    align: bool = setting(
        True,
        "yunet: face alignment, which turns tilted faces upright by their eye landmarks before the crop "
        "(benchmarks/align_faces.py)",
        flag="--no-align",
    )
    score_threshold: float = setting(0.5, "yunet: keep boxes scoring at least this (0..1); higher = fewer false boxes")
    nms_threshold: float = setting(0.3, "yunet: IoU above which overlapping boxes are merged")
    top_k: int = setting(5000, "yunet: candidate boxes kept before NMS")
    scale_factor: float = setting(1.1, "haar: image pyramid step; smaller finds more faces, slower")
    min_neighbors: int = setting(5, "haar: overlapping detections needed to keep a box; higher = fewer false boxes")
    crop_max_side: int = setting(64, "images no larger than this per side are taken as face crops (0: never)")
    max_faces: int = setting(100, "keep the largest N boxes of an image (guards against pathological false boxes)")

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"unknown face detector {self.detector!r}; choose one of {list(DETECTORS)}")
        if not self.scale_factor > 1.0:
            raise ValueError(f"scale_factor must be > 1 (e.g. 1.1), got {self.scale_factor}")
        if not 0 < self.score_threshold < 1 or not 0 < self.nms_threshold < 1:
            raise ValueError("score_threshold and nms_threshold must be between 0 and 1 (e.g. 0.7 and 0.3)")
        check_at_least(
            self,
            min_neighbors=(0, ""),
            min_face=(1, " pixel"),
            max_side=(64, " pixels"),
            detect_face_px=(8, " pixels (YuNet finds little below ~16)"),
            top_k=(1, ""),
            crop_max_side=(0, " (0 disables)"),
            max_faces=(1, ""),
        )


@dataclass(frozen=True)
class ScoreConfig:
    """Everything a scoring run needs; ``python jobs/score.py --help`` maps flags onto these fields.

    A rerun with the same ``out`` skips inputs whose (path, size, mtime) has rows there; ``overwrite`` rescores.
    """

    inputs: tuple[str, ...] = setting(
        (),
        "dirs, files, globs, list files (.txt/.csv/.parquet) or s3://bucket/prefix",
        positional=True,
        metavar="INPUT",
    )
    out: str = setting(
        "", "local directory or s3://bucket/prefix for the Parquet rows and report", default_text="required"
    )
    model: str | None = setting(None, MODEL_HELP, default_text="the shipped default model")
    whole_image: bool = setting(False, "every input is already a face crop: skip face detection")
    engine: str | None = setting(
        None,
        "torch, onnx or onnx-int8 (unset: the artifact's fastest engine as accurate as torch)",
        choices=ENGINES,
        group="model",
    )
    flip_tta: bool | None = setting(
        None,
        "single pass even if the artifact enables flip test-time augmentation (about 2x faster)",
        flag="--no-tta",
        default_text="the artifact's setting",
        group="model",
    )
    detect: DetectConfig = setting(
        help="face detection", default_factory=DetectConfig, flatten=True, group="face detection"
    )
    video: VideoConfig = setting(
        help="video sampling and tracking", default_factory=VideoConfig, flatten=True, group="video"
    )

    images_per_task: int = setting(32, "images per CPU task (read, decode, detect, crop)", group="scale")
    cpus_per_task: float = setting(1.0, "CPUs per CPU task", group="scale")
    max_cpu_tasks: int | None = setting(
        None,
        "cap on concurrent CPU tasks",
        default_text="this machine's cores on a Ray the job starts itself; on a cluster Ray Data decides",
        group="scale",
    )
    write_cpus: float = setting(
        0.0,
        "CPUs reserved per Parquet write task: writes are light, and on a small machine a reserved CPU "
        "holds back a decode/detect task",
        group="scale",
    )
    task_retries: int = setting(3, "retries of a CPU task whose worker died (e.g. out of memory)", group="scale")
    # Fused stages save the crops' hop through the object store and CPU tasks and actors taking turns
    # on the same cores; split stages keep GPUs busy and let Ray Data size the CPU stage on a cluster.
    stages: Literal["auto", "fused", "split"] = setting(
        "auto",
        "fused: each inference actor reads, decodes and detects its own images; split: separate CPU tasks "
        "do that and hand the crops to the actors; auto: fused for CPU inference on a Ray the job starts "
        "itself, split on a cluster or with GPUs",
        group="scale",
    )
    actors: int | None = setting(
        None, "inference actors", default_text="this machine's cores when stages are fused, else 1", group="scale"
    )
    batch_size: int = setting(256, "faces per inference call", group="scale")
    cpus_per_actor: float = setting(1.0, "CPUs per inference actor", group="scale")
    gpus_per_actor: float | None = setting(
        None, "GPUs per inference actor", default_text="1 when the cluster has GPUs, else 0", group="scale"
    )
    threads: int | None = setting(
        None,
        "engine threads per actor (torch or ONNX Runtime)",
        aliases=("--torch-threads",),
        default_text="the CPUs it holds",
        group="scale",
    )
    rows_per_file: int | None = setting(
        None, "rows per Parquet file (unset: one file per inference call)", group="scale"
    )

    max_pixels: int | None = setting(None, "larger images become error rows", default_text="the model's limit")
    max_bytes: int | None = setting(None, "larger files are not read", default_text="the model's limit")

    overwrite: bool = setting(False, "delete this job's earlier results in --out and score everything")
    allow_mixed_models: bool = setting(
        False, "add rows of this model/engine to an --out scored with another (the report groups by model)",
        group="integrity",
    )  # fmt: skip
    allow_local: bool = setting(False, "let a list file on S3 name local paths", group="integrity")
    lock_wait_s: float = setting(
        0.0, "seconds to wait for another run holding --out", flag="--lock-wait", group="integrity"
    )
    lock_stale_s: float = setting(
        300.0, "take over a lock whose heartbeat is older than this (seconds)", flag="--lock-stale", group="integrity"
    )
    save_crops: str | None = setting(
        None, "also write every 48x48 model-input crop as PNG here (opt-in: face pixels!)", metavar="DIR"
    )
    s3: S3Settings | None = setting(None, "resolved from the environment on the driver", flag=None, file=False)
    # Scoring's own local Ray needs no dashboard: without it start-up is shorter and a loaded machine cannot
    # time out its metrics module into an error traceback in a successful run (a joined cluster keeps its own).
    ray: RayConfig = setting(
        help="how the job reaches Ray",
        default_factory=lambda: RayConfig(include_dashboard=False),
        flatten=True,
        fields=RAY_FLAGS,
        group="ray",
    )

    def __post_init__(self) -> None:
        inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(str(i) for i in self.inputs)
        object.__setattr__(self, "inputs", inputs)
        if not inputs:
            raise ValueError("no inputs: pass at least one directory, file, glob, list file or s3://bucket/prefix")
        if not self.out:
            raise ValueError("out is required: a local directory or s3://bucket/prefix for the Parquet report")
        check_engine(self.engine)
        if self.cpus_per_task <= 0 or self.cpus_per_actor < 0:
            raise ValueError("cpus_per_task must be > 0 and cpus_per_actor >= 0")
        check_at_least(
            self,
            images_per_task=(1, ""),
            actors=(1, ""),
            batch_size=(1, ""),
            threads=(1, " or None (the cores an actor holds)"),
            gpus_per_actor=(0, ""),
            write_cpus=(0, ""),
            max_cpu_tasks=(1, " or None"),
            task_retries=(0, ""),
            rows_per_file=(1, " or None"),
        )
        for name in ("max_pixels", "max_bytes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be positive or None (the model's limit), got {v}")
        if self.lock_wait_s < 0 or self.lock_stale_s <= 0:
            raise ValueError(
                f"lock_wait_s must be >= 0 and lock_stale_s > 0, got {self.lock_wait_s} and {self.lock_stale_s}"
            )
        if self.save_crops and self.save_crops.rstrip("/") == self.out.rstrip("/"):
            raise ValueError("save_crops must not be the output directory; pick a separate directory")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with S3 credentials left out (the report directory may be shared)."""
        d = asdict(self)
        if self.s3 is not None:
            d["s3"] = {"endpoint_url": self.s3.endpoint_url, "region": self.s3.region}
        return d


REPORT_ROWS = 1000  # images in report.html's per-image table (the least confident first)


@dataclass(frozen=True)
class ReportJobConfig:
    """``jobs/report.py``: rebuild summary.json and report.html of a scoring output from its files alone."""

    out: str | None = setting(
        None,
        "the --out of jobs/score.py (local directory or s3://bucket/prefix)",
        positional=True,
        metavar="OUT",
        default_text="required",
    )
    max_rows: int = setting(REPORT_ROWS, "images in report.html's per-image table, least confident first (0: none)")
