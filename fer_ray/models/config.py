"""The model config: everything needed to rebuild a model, stored in every artifact."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fer_ray.config import as_user_dict, check_choices, setting
from fer_ray.labels import NUM_CLASSES


@dataclass(frozen=True)
class ModelConfig:
    name: str = setting("ae_cnn_attn", "architecture: ae_cnn_attn (autoencoder + attention CNN) or cnn_attn")
    num_classes: int = setting(NUM_CLASSES, "classes of the label map")
    # FER2013's resolution; the one place it is written (PreprocessConfig takes its default from here)
    image_size: int = setting(48, "input side in pixels (recorded in the artifact)")
    # The paper advises against squeezing below 24x24; 12 and 6 are there to measure that claim.
    latent_size: int = setting(24, "ae_cnn_attn: side of the latent map (24, 12 or 6 for 48x48 input)")
    latent_channels: int = setting(32, "ae_cnn_attn: channels of the latent map")
    # Full resolution is where cnn_attn spends most of its compute (three convs there); one conv keeps
    # the autoencoder model cheap (benchmarks and docs/RESULTS.md hold the multiply-adds).
    encoder_convs: int = setting(1, "ae_cnn_attn: 3x3 convs at full resolution before the encoder downsamples")
    # The last stage runs at 3x3, so its channels add many parameters for little compute.
    widths: tuple[int, ...] = setting((32, 64, 128, 256), "channels per CNN stage, comma-separated")
    # ae_cnn_attn's stages run at half cnn_attn's sides (24-12-6-3 vs 48-24-12-6); with 1, stages 2-4 see
    # 24-12-6. 0 keeps older artifacts unchanged; the shipped ae_cnn_attn uses 1 (see its model card).
    unpooled_stages: int = setting(
        0, "classifier stages, from the first, that skip the 2x2 pooling (0: each stage halves the map until 3x3)"
    )
    attention: Literal["se", "cbam", "none"] = setting("se", "attention block of each stage")
    dropout: float = setting(0.3, "dropout before the classifier")

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        check_choices(self)
        if self.image_size % self.latent_size or self.image_size // self.latent_size not in (1, 2, 4, 8):
            raise ValueError(
                f"latent_size must be image_size / 2**k with k in 0..3 (e.g. 24, 12, 6 for 48), "
                f"got {self.latent_size} for image_size {self.image_size}"
            )
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")
        if self.encoder_convs < 1:
            raise ValueError(f"encoder_convs must be at least 1, got {self.encoder_convs}")
        if not 0 <= self.unpooled_stages < len(self.widths):
            raise ValueError(
                f"unpooled_stages must be in 0..{len(self.widths) - 1} (one per width but the last), "
                f"got {self.unpooled_stages}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict[str, Any]:
        return as_user_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
