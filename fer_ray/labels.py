"""The one label map of fer_ray.

Order is the Kaggle ``fer2013.csv`` order, which every FER2013 copy (CSV, image
folders, our Parquet) can be mapped onto. Training, evaluation, batch scoring and
Serve all import it from here, and every model artifact records it, so a model
can never be read with a different class order than it was trained with.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
LABEL_OF: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

# Folder names seen in FER copies and photo collections; compared case-insensitively.
_ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
}

# Kaggle CSV "Usage" column -> our split names. PublicTest is the validation split
# used for model selection; PrivateTest is the held-out headline test split.
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def label_of(name: str) -> int:
    """Map a class name or common alias (``"Surprised"``, ``"happiness"``) to its label.

    Raises ``ValueError`` naming the input and the accepted names, since an unknown
    folder name usually means the wrong directory level was passed.
    """
    key = name.strip().lower()
    canonical = _ALIASES.get(key)
    if canonical is None:
        raise ValueError(
            f"unknown emotion name {name!r}; expected one of {list(EMOTIONS)} "
            f"(aliases: {sorted(set(_ALIASES) - set(EMOTIONS))})"
        )
    return LABEL_OF[canonical]


def emotion_of(label: int) -> str:
    """Inverse of :func:`label_of` for labels 0..6."""
    if not 0 <= int(label) < NUM_CLASSES:
        raise ValueError(f"label {label} out of range 0..{NUM_CLASSES - 1}")
    return EMOTIONS[int(label)]
