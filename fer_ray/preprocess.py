"""The one preprocessing path: encoded bytes -> grayscale -> (face crop) -> 48x48 -> normalized; every
artifact records its :class:`PreprocessConfig` (drift between training and serving silently costs accuracy).
:func:`decode_image` and :func:`face_input` make small ``uint8`` arrays on CPU (cheap to ship between Ray
actors); :func:`normalize` makes the float tensor on the model's device."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fer_ray.config import check_at_least
from fer_ray.models.config import ModelConfig

try:  # phone photos; optional so that a minimal install still imports
    import pillow_heif

    pillow_heif.register_heif_opener()
    HEIF_SUPPORTED = True
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    HEIF_SUPPORTED = False


_SIGNATURES = {b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive (or .docx/.xlsx)", b"\x1f\x8b": "a gzip file"}


def _what_is(data: bytes) -> str:
    """A guess at what a non-image is, for the error row: users often point jobs at the wrong files."""
    for magic, name in _SIGNATURES.items():
        if data.startswith(magic):
            return name
    try:
        data[:512].decode("utf-8")
        return "text"
    except UnicodeDecodeError:
        return "unknown binary data"


class ImageDecodeError(ValueError):
    """An input that is not a decodable image; its message is the row's ``error`` reason."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of the shared preprocessing, saved inside every model artifact."""

    image_size: int = ModelConfig.image_size  # the model config owns the input side; training checks they agree
    mean: float = 0.5  # applied to pixels scaled to [0, 1]
    std: float = 0.5
    max_pixels: int = 100_000_000  # larger images are rejected (decompression bombs)
    max_bytes: int = 200_000_000  # larger files are not read at all
    face_margin: float = 0.15  # fraction of the detected box added on each side, as FER crops are loose

    def __post_init__(self) -> None:
        check_at_least(self, image_size=8)
        if self.std <= 0:
            raise ValueError(f"std must be > 0, got {self.std}")
        if self.max_pixels <= 0 or self.max_bytes <= 0:
            raise ValueError("max_pixels and max_bytes must be positive")
        if not 0 <= self.face_margin <= 1:
            raise ValueError(f"face_margin must be in [0, 1], got {self.face_margin}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def decode_image(data: bytes | None, max_pixels: int = PreprocessConfig.max_pixels) -> np.ndarray:
    """Any supported encoded image -> upright ``uint8`` grayscale (H, W): EXIF orientation, alpha (on white,
    as viewers show it), palette, CMYK, 16-bit, HEIC, an animation's first frame; else :class:`ImageDecodeError`."""
    return decode_image_scaled(data, max_pixels)[0]


def decode_image_scaled(
    data: bytes | None, max_pixels: int = PreprocessConfig.max_pixels, scale: float = 1.0
) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`decode_image` that may decode a JPEG at 1/2, 1/4 or 1/8 size (Pillow's ``draft``, never below
    ``scale``; other formats in full), about twice as fast, for face detection on a downscaled copy; also
    returns the upright full size (W, H)."""
    if data is None or len(data) == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageDecodeError(
                    f"image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                    "(possible decompression bomb; raise max_pixels if it is genuine)"
                )
            if scale < 1.0 and im.format == "JPEG":
                im.draft("L" if im.mode in ("L", "RGB", "YCbCr") else im.mode, (w * scale, h * scale))
            im.load()
            swap = im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees
            im = ImageOps.exif_transpose(im)
            return _to_gray(im), ((h, w) if swap else (w, h))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageDecodeError(
            f"decompression bomb: {e} (over Pillow's Image.MAX_IMAGE_PIXELS; raise it and max_pixels if genuine)"
        ) from e
    except UnidentifiedImageError as e:
        raise ImageDecodeError(
            f"not a recognised image format: looks like {_what_is(data)} "
            f"({len(data):,} bytes; starts with {data[:8]!r})"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        # Pillow reports truncated or corrupt data as OSError/SyntaxError/ValueError.
        raise ImageDecodeError(f"corrupt or truncated image: {type(e).__name__}: {e}") from e


def _to_gray(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (and 32-bit integer) grayscale: Pillow's convert("L") clips instead of scaling.
        arr = np.asarray(im).astype(np.float32)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float32)
        lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).astype(np.uint8)
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    if mode == "CMYK":
        im = im.convert("RGB")
    if im.mode != "L":
        im = im.convert("L")
    return np.asarray(im, dtype=np.uint8)


def face_input(
    gray: np.ndarray,
    box: tuple[int, int, int, int] | None = None,
    cfg: PreprocessConfig | None = None,
) -> np.ndarray:
    """Crop a face (``box`` = x, y, w, h, widened by ``face_margin``; ``None``: the centre square of the
    image, so faces keep their proportions) and resize it to ``uint8`` (S, S)."""
    cfg = cfg or PreprocessConfig()
    h, w = gray.shape[:2]
    if box is None:
        side = min(h, w)
        y0, x0 = (h - side) // 2, (w - side) // 2
        crop = gray[y0 : y0 + side, x0 : x0 + side]
    else:
        x, y, bw, bh = (int(v) for v in box)
        mx, my = int(round(bw * cfg.face_margin)), int(round(bh * cfg.face_margin))
        x0, y0 = max(0, x - mx), max(0, y - my)
        x1, y1 = min(w, x + bw + mx), min(h, y + bh + my)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"face box {box} lies outside the {w}x{h} image")
        crop = gray[y0:y1, x0:x1]
    s = cfg.image_size
    if crop.shape == (s, s):
        return np.ascontiguousarray(crop, dtype=np.uint8)
    # Pillow's bilinear resize filters over the whole source footprint when shrinking (antialiased).
    return np.asarray(Image.fromarray(crop).resize((s, s), Image.BILINEAR), dtype=np.uint8)


def normalize(x: Any, cfg: PreprocessConfig | None = None) -> Any:
    """``uint8`` batch (B, S, S) or (B, 1, S, S), numpy or torch -> float tensor (B, 1, S, S) on its device."""
    import torch

    cfg = cfg or PreprocessConfig()
    t = torch.as_tensor(x)
    if t.ndim == 3:
        t = t.unsqueeze(1)  # (B, S, S) -> (B, 1, S, S)
    if t.ndim != 4 or t.shape[1] != 1:
        raise ValueError(f"expected a batch of shape (B, S, S) or (B, 1, S, S), got {tuple(t.shape)}")
    return (t.float() / 255.0 - cfg.mean) / cfg.std


def preprocess_bytes(data: bytes, cfg: PreprocessConfig | None = None) -> np.ndarray:
    """Encoded bytes of a face crop -> ``uint8`` (S, S): the whole-image path used by Serve and FER data."""
    cfg = cfg or PreprocessConfig()
    return face_input(decode_image(data, cfg.max_pixels), None, cfg)
