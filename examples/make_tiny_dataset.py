"""A tiny labelled image-folder dataset for trying training, evaluation and scoring without FER2013.

The images are NOT faces: each is 48x48 grey noise with a bright vertical band whose position
depends on the class, so a small model learns it within a few epochs. They exist to show the
folder layout fer_ray reads (``<root>/{train,val,test}/<emotion>/*.png``, the same as your own
labelled photos) and to exercise every job end to end in a minute, nothing more.

    python examples/make_tiny_dataset.py out/tiny                  # 7 classes x (40 train, 10 val, 10 test)
    python jobs/train.py --data out/tiny --arch cnn_attn --widths 16,32 --epochs 5 --batch-size 32 --lr 3e-3 \\
        --no-augment --run-name tiny --storage-path out/runs                 # ~40 s on 2 cores, val ~40%
    python jobs/evaluate.py --model out/runs/tiny/artifact --data out/tiny --out out/tiny_eval

(`--no-augment`: mirror images and shifts move the band, i.e. change the class of these images.
Image folders train on the Ray back end, the default; `--backend plain` reads FER2013 Parquet only.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer_ray.labels order


def band_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """Noise plus a bright band at a class-specific position: learnable, and obviously not a face."""
    img = rng.normal(100, 20, (size, size))
    band = size // len(EMOTIONS)
    img[:, label * band : (label + 1) * band] += 100
    return np.clip(img, 0, 255).astype(np.uint8)


def make(root: Path, per_split: dict[str, int], seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    n = 0
    for split, count in per_split.items():
        for label, emotion in enumerate(EMOTIONS):
            folder = root / split / emotion
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(band_image(label, rng)).save(folder / f"{split}_{i:04d}.png")
                n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="output directory (created)")
    p.add_argument("--train", type=int, default=40, help="images per class in train/")
    p.add_argument("--val", type=int, default=10, help="images per class in val/")
    p.add_argument("--test", type=int, default=10, help="images per class in test/")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n = make(Path(a.root), {"train": a.train, "val": a.val, "test": a.test}, a.seed)
    print(f"wrote {n} images under {a.root}/{{train,val,test}}/<emotion>/ (synthetic bands, not faces)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
