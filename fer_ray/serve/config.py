"""The Serve config (one frozen dataclass) and where the API key comes from.

The key is never a config field: ``serve config`` and the dashboard print an application's args back, and
command lines end up in shell history and ``ps``. Each ingress replica reads it from its own environment
(``FER_RAY_API_KEY``) or a secret file (``FER_RAY_API_KEY_FILE``, or the ``api_key_file`` arg: a path is no secret).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_ray.config import RAY_FLAGS, build, check_at_least, flat_keys, set_path, setting, text_parser
from fer_ray.inference.engine import ENGINES, check_engine
from fer_ray.inference.shipped import MODEL_HELP
from fer_ray.score.config import DetectConfig
from fer_ray.video.config import VideoConfig

API_KEY_ENV = "FER_RAY_API_KEY"
API_KEY_FILE_ENV = "FER_RAY_API_KEY_FILE"
MIN_KEY_LENGTH = 16  # a short key is guessable; `python -c "import secrets; print(secrets.token_urlsafe(32))"`
_SECRET_NAMES = ("api_key", "key", "token", "secret", "password")


def _as_in_scoring(name: str) -> Any:
    """A clip's tracking setting is batch scoring's of the same name (default, help, flag): a clip posted to the
    service and the same video scored by ``jobs/score.py`` are tracked alike unless someone changes one of them."""
    f = next(f for f in dataclasses.fields(VideoConfig) if f.name == name)
    return setting(f.default, f.metadata["help"])


@dataclass(frozen=True)
class ServeConfig:
    """Everything the Serve application needs: ``build_app`` args, ``serve_config.yaml`` and ``jobs/serve.py``
    flags map onto it. The ingress does the CPU-heavy decoding and face detection; fractional CPUs let it and
    the model fit next to each other on a 2-core machine."""

    model: str | None = setting(None, MODEL_HELP, default_text="the shipped default model")
    engine: str | None = setting(
        None, "torch, onnx or onnx-int8 (unset: the artifact's best for the device)", choices=ENGINES
    )
    num_replicas: int | str = setting(
        1, "model replicas, or auto for Serve's default autoscaling", flag="--replicas", aliases=("--num-replicas",)
    )
    autoscaling_config: Mapping[str, Any] | None = setting(
        None, 'JSON, e.g. \'{"min_replicas": 1, "max_replicas": 4}\'; wins over --replicas', metavar="JSON"
    )
    ingress_replicas: int = setting(1, "ingress replicas (they decode images and detect faces)")
    cpus_per_replica: float = setting(0.5, "CPUs per model replica (fractions let both fit on a small machine)")
    gpus_per_replica: float = setting(0.0, "GPUs per model replica")
    ingress_cpus: float = setting(0.5, "CPUs per ingress replica")
    torch_threads: int = setting(1, "engine threads per model replica (PyTorch or ONNX Runtime intra-op)")
    prep_threads: int = setting(2, "decode/detect threads per ingress replica")
    max_batch_size: int = setting(32, "faces per model call (@serve.batch)")
    batch_wait_timeout_s: float = setting(0.005, "longest wait for a batch to fill; adds to latency at low load")
    max_ongoing_requests: int = setting(
        64, "requests per model replica; must be >= --max-batch-size for batches to fill",
        default_text="max(64, 2 x --max-batch-size) on the command line, else 64",
    )  # fmt: skip
    ingress_max_ongoing_requests: int = setting(16, "requests per ingress replica")
    max_body_bytes: int = setting(20_000_000, "a larger request body (or above the model's max_bytes) gets HTTP 413")
    max_files: int = setting(8, "multipart file parts per request; more get HTTP 413")
    body_timeout_s: float = setting(60.0, "the whole body must arrive within this many seconds, else HTTP 408")
    max_pixels: int | None = setting(None, "larger images are refused", default_text="the model's limit")
    max_clip_s: float = setting(30.0, "longer video clips get HTTP 413 (batch scoring takes any length)")
    max_clip_bytes: int = setting(20_000_000, "larger video clips get HTTP 413")
    clip_fps: float = setting(VideoConfig.fps, "frames per second of a video clip to score (0: every frame)")
    max_clip_frames: int = setting(
        300, "clips with more frames to score (at --clip-fps) get HTTP 413: bounds a request's work at every frame"
    )
    track_iou: float = _as_in_scoring("track_iou")
    track_max_gap: int = _as_in_scoring("track_max_gap")
    track_landmark_weight: float = _as_in_scoring("track_landmark_weight")
    api_key_file: str | None = setting(
        None, f"file holding the API key (else ${API_KEY_FILE_ENV} or ${API_KEY_ENV}); no key: an open service"
    )
    docs: bool = setting(True, "/docs (Swagger UI, served from the package) and /openapi.json")
    detect: DetectConfig = setting(
        help="face detection, as in batch scoring", default_factory=DetectConfig, flatten=True, group="face detection"
    )

    def __post_init__(self) -> None:
        if self.engine is not None:
            check_engine(self.engine)
        if isinstance(self.num_replicas, str):
            if self.num_replicas.isdigit():
                object.__setattr__(self, "num_replicas", int(self.num_replicas))
            elif self.num_replicas != "auto":
                raise ValueError(f"num_replicas must be a positive integer or 'auto', got {self.num_replicas!r}")
        if isinstance(self.num_replicas, int) and self.num_replicas < 1:
            raise ValueError(f"num_replicas must be >= 1, got {self.num_replicas}")
        if self.autoscaling_config is not None and not isinstance(self.autoscaling_config, Mapping):
            raise ValueError(
                "autoscaling_config must be a mapping such as {'min_replicas': 1, 'max_replicas': 4}, "
                f"got {type(self.autoscaling_config).__name__}"
            )
        ones = "ingress_replicas torch_threads prep_threads max_batch_size max_body_bytes ingress_max_ongoing_requests"
        ones += " max_clip_bytes max_clip_frames"
        check_at_least(self, **dict.fromkeys(ones.split(), 1))
        if not 1 <= self.max_files <= 1000:
            raise ValueError(f"max_files must be in [1, 1000], got {self.max_files}")
        if self.clip_fps < 0 or not self.max_clip_s > 0:
            raise ValueError(f"clip_fps must be >= 0 and max_clip_s > 0, got {self.clip_fps} and {self.max_clip_s}")
        self.clip_video()  # the tracking settings are checked where they are defined
        if self.body_timeout_s <= 0:
            raise ValueError(f"body_timeout_s must be > 0 seconds, got {self.body_timeout_s}")
        if self.cpus_per_replica < 0 or self.ingress_cpus < 0 or self.gpus_per_replica < 0:
            raise ValueError("cpus_per_replica, ingress_cpus and gpus_per_replica must be >= 0 (fractions allowed)")
        if not 0 <= self.batch_wait_timeout_s <= 1:
            raise ValueError(f"batch_wait_timeout_s must be in [0, 1] seconds, got {self.batch_wait_timeout_s}")
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
                f"({self.max_batch_size}), or batches can never fill"
            )
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be positive or None (the model's limit), got {self.max_pixels}")

    def clip_video(self) -> VideoConfig:
        """How a posted clip is sampled and tracked: batch scoring's video settings with the service's limits."""
        track = {k: getattr(self, k) for k in ("track_iou", "track_max_gap", "track_landmark_weight")}
        limits = {"max_duration_s": self.max_clip_s, "max_frames": self.max_clip_frames}
        return VideoConfig(fps=self.clip_fps, **limits, **track)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["autoscaling_config"] = dict(self.autoscaling_config) if self.autoscaling_config else None
        return d

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> ServeConfig:
        """Build from ``serve run ... key=value`` strings or the typed ``args:`` of ``serve_config.yaml``: keys
        are field names (face detection's flat) or a field's flag spelling (``replicas``); strings are converted
        as a flag's would be. A key-like argument is refused: Serve prints the args back."""
        keys = flat_keys(cls)
        kw: dict[str, Any] = {}
        for key, value in (args or {}).items():
            if key.lower() in _SECRET_NAMES:
                raise ValueError(
                    f"argument {key!r} is refused: Serve prints application args back (serve config, dashboard). "
                    f"Set the key in the environment of the Ray nodes ({API_KEY_ENV}=...) or put it in a file "
                    f"and pass its path: api_key_file=/run/secrets/fer_api_key (or {API_KEY_FILE_ENV})"
                )
            if key not in keys:
                raise ValueError(
                    f"unknown argument {key!r}; expected one of {sorted(keys)} "
                    "(e.g. `serve run fer_ray.serve:build_app model=runs/x/artifact replicas=2`)"
                )
            path, tp = keys[key]
            try:
                typed = text_parser(tp)(value) if isinstance(value, str) else value
            except (TypeError, ValueError) as e:
                raise ValueError(f"argument {key}={value!r}: {e}") from e
            set_path(kw, path, typed)
        return build(cls, kw)


@dataclass(frozen=True)
class ServeRun:
    """Where ``jobs/serve.py`` listens and which Ray it joins: flags of the job, never ``--config`` keys or
    application args (``serve run`` takes the HTTP address from ``http_options`` instead)."""

    host: str = setting("127.0.0.1", "HTTP interface; 0.0.0.0 exposes the service on the network", group="HTTP")
    port: int = setting(8000, "HTTP port", group="HTTP")
    address: str | None = setting(None, RAY_FLAGS["address"]["help"], group="ray")
    ray_cpus: int | None = setting(None, RAY_FLAGS["num_cpus"]["help"], group="ray")


def resolve_api_key(api_key_file: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The API key this process should require (None: an open service): ``api_key_file`` > ``$FER_RAY_API_KEY_FILE``
    > ``$FER_RAY_API_KEY``. A named file that is missing or empty, or a short key, is an error, not an open service.
    """
    env = os.environ if environ is None else environ
    path = api_key_file or env.get(API_KEY_FILE_ENV) or None
    if path:
        p = Path(path).expanduser()
        try:
            key = p.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ValueError(f"cannot read the API key file {p} ({e.strerror}); fix the path or unset it") from None
        source = f"file {p}"
    else:
        key = (env.get(API_KEY_ENV) or "").strip()
        source = f"${API_KEY_ENV}"
        if not key:
            return None
    if len(key) < MIN_KEY_LENGTH:
        raise ValueError(
            f"the API key from {source} is {len(key)} characters; use at least {MIN_KEY_LENGTH} "
            '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return key


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that resolves elsewhere, or 0.0.0.0-like wildcards written oddly
