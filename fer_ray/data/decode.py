"""The shared decode stage: encoded bytes (or CSV pixels) -> ``face`` uint8 (S, S) + ``error``; a bad file
is a row with an ``error`` reason, never a failed task, so rows out == rows in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fer_ray.preprocess import ImageDecodeError, PreprocessConfig, decode_image, face_input

if TYPE_CHECKING:  # Ray is imported where it is used: plain-PyTorch training decodes without it
    import ray.data

# Columns every reader produces: ``image`` encoded bytes (None for the CSV, which carries ``pixels``);
# ``label`` -1 and ``emotion`` None when unknown; ``split`` train/val/test (Training/PublicTest/PrivateTest)
# when known; ``error`` set by readers that could not fetch the bytes (missing file, S3 error).
SOURCE_COLUMNS = ("image", "label", "emotion", "split", "usage", "path")


def decode_batch(batch: dict[str, np.ndarray], cfg: PreprocessConfig | None = None) -> dict[str, Any]:
    """Decode one batch; rows that fail get a zero face and an ``error`` reason."""
    cfg = cfg or PreprocessConfig()
    s = cfg.image_size
    n = len(batch["path"])
    faces = np.zeros((n, s, s), dtype=np.uint8)
    errors: list[str | None] = [None] * n
    prior = batch.get("error")
    images = batch.get("image")
    pixels = batch.get("pixels")
    for i in range(n):
        # A null error may arrive as None or, from an all-null column, as NaN: only a string is a reason.
        if prior is not None and isinstance(prior[i], str) and prior[i]:
            errors[i] = prior[i]
            continue
        try:
            if pixels is not None and pixels[i] is not None:
                gray = np.asarray(pixels[i], dtype=np.uint8).reshape(s, s)
            else:
                gray = decode_image(images[i] if images is not None else None, cfg.max_pixels)
            faces[i] = face_input(gray, None, cfg)
        except (ImageDecodeError, ValueError) as e:
            errors[i] = str(e)
    out = {k: v for k, v in batch.items() if k not in ("image", "pixels", "error")}
    return {**out, "face": faces, "error": np.array(errors, dtype=object)}


def decode(ds: ray.data.Dataset, cfg: PreprocessConfig | None = None, batch_size: int = 512) -> ray.data.Dataset:
    """Add ``face`` and ``error`` columns to a reader's dataset and drop the encoded bytes."""
    return ds.map_batches(decode_batch, fn_kwargs={"cfg": cfg or PreprocessConfig()}, batch_size=batch_size)
