"""The one label map: Kaggle order, folder-name aliases, helpful errors."""

from __future__ import annotations

import pytest

from fer_ray.labels import EMOTIONS, LABEL_OF, NUM_CLASSES, USAGE_TO_SPLIT, label_of


def test_order_is_the_kaggle_csv_order():
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert NUM_CLASSES == 7
    assert [LABEL_OF[e] for e in EMOTIONS] == list(range(7))


@pytest.mark.parametrize(
    "name, label",
    [
        ("angry", 0),
        ("Anger", 0),
        ("disgusted", 1),
        ("fearful", 2),
        ("happiness", 3),
        ("HAPPY", 3),
        ("sadness", 4),
        ("Surprised", 5),
        (" surprise ", 5),
        ("neutral", 6),
    ],
)
def test_aliases_are_case_insensitive(name, label):
    assert label_of(name) == label


def test_unknown_name_names_the_input_and_the_choices():
    with pytest.raises(ValueError) as e:
        label_of("contempt")
    msg = str(e.value)
    assert "'contempt'" in msg and "angry" in msg and "neutral" in msg


def test_usage_to_split():
    assert USAGE_TO_SPLIT == {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
