"""The one label map, in Kaggle's ``fer2013.csv`` order: every stage imports it and every artifact records
it, so a model is never read with another class order than it was trained with."""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(EMOTIONS)
LABEL_OF: dict[str, int] = {name: i for i, name in enumerate(EMOTIONS)}

# Folder names seen in FER copies and photo collections, per emotion; compared case-insensitively.
_ALIASES: dict[str, str] = {
    alias: name
    for name, more in {
        "angry": ("anger", "mad"),
        "disgust": ("disgusted",),
        "fear": ("fearful", "afraid", "scared"),
        "happy": ("happiness", "joy"),
        "sad": ("sadness",),
        "surprise": ("surprised",),
        "neutral": ("calm",),
    }.items()
    for alias in (name, *more)
}

# Kaggle's "Usage" -> our split names: PublicTest selects models, PrivateTest is the headline test split.
USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


def label_of(name: str) -> int:
    """A class name or common alias (``"Surprised"``, ``"happiness"``) -> its label; an unknown name is a
    ``ValueError`` listing the accepted ones (it usually means the wrong directory level was passed)."""
    canonical = _ALIASES.get(name.strip().lower())
    if canonical is None:
        raise ValueError(
            f"unknown emotion name {name!r}; expected one of {list(EMOTIONS)} "
            f"(aliases: {sorted(set(_ALIASES) - set(EMOTIONS))})"
        )
    return LABEL_OF[canonical]
