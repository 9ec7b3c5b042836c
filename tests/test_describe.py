"""describe(): counts per split/class, formats and error reasons, on tiny sources written by the test."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from fer_ray.data.describe import describe, format_report, reason_key
from tests.test_data_fer2013 import write_fer_csv, write_fer_folders


def png(level: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (20, 20), level).save(buf, format="PNG")
    return buf.getvalue()


def test_describe_folders_and_a_photo_dir(ray_local, tmp_path):
    fer = write_fer_folders(tmp_path / "fer")
    (fer / "test" / "sad" / "PrivateTest_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(png(10))
    (photos / "b.png").write_bytes(png(20))
    (photos / "c.jpg").write_bytes(b"")
    (photos / "readme.md").write_text("skipped: not an image name")

    result = describe([str(fer), str(photos)])
    folders, images = result["sources"]
    assert (folders["reader"], images["reader"]) == ("image_folders", "images")
    assert (result["rows"], result["errors"]) == (15 + 3, 2)

    assert (folders["rows"], folders["decoded"], folders["errors"]) == (15, 14, 1)
    assert folders["by_split"] == {"test": 5, "train": 7, "val": 3}
    assert folders["by_usage"] == {"(unknown)": 1, "PrivateTest": 4, "PublicTest": 3, "Training": 7}
    assert folders["by_split_class"]["train"] == {e: 1 for e in ("angry", "disgust", "fear", "happy", "sad")} | {
        "surprise": 1,
        "neutral": 1,
    }
    # paper test = PublicTest + PrivateTest (the file with no usage prefix is not counted)
    assert folders["paper_test"]["total"] == 7 and folders["paper_test"]["by_class"]["sad"] == 1
    assert folders["formats"] == {"JPEG": 14, "unrecognised .jpg": 1}
    (reason,) = folders["error_reasons"]
    assert folders["error_reasons"][reason]["path"].endswith("PrivateTest_broken.jpg")

    assert (images["rows"], images["errors"]) == (3, 1)
    assert images["by_split"] == {"(unknown)": 3} and images["by_split_class"] == {} and images["paper_test"] is None
    assert images["formats"] == {"PNG": 2, "unrecognised .jpg": 1}
    assert list(images["error_reasons"]) == ["empty file"]

    text = format_report(result)
    assert "paper test = PublicTest + PrivateTest: 7" in text and "error x1 empty file" in text


def test_describe_csv_with_limit(ray_local, tmp_path):
    csv = tmp_path / "fer2013.csv"
    write_fer_csv(csv, bad_row=3)
    (report,) = describe(str(csv), limit=10)["sources"]
    assert report["reader"] == "fer_csv" and report["rows"] == 10 and report["limit"] == 10
    assert report["formats"] == {"csv pixels": 10}
    assert report["error_reasons"]["malformed pixels"]["count"] == 1
    assert report["by_usage"] == {"Training": 10}


def test_reason_key_groups_messages():
    assert reason_key("not found: /a/b.jpg") == "not found"
    msg = "not a recognised image format (29 bytes; starts with b'%PDF')"
    assert reason_key(msg) == "not a recognised image format"
    msg = "image is 30000x30000 = 900,000,000 pixels, over the limit"
    assert reason_key(msg) == "image is N = N pixels, over the limit"
    with pytest.raises(ValueError, match="no sources"):
        describe([])
