"""FER2013 readers (CSV, image folders, Parquet) on tiny files written by the test, and on the real data."""

from __future__ import annotations

import io
import posixpath
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fer_ray.data import SOURCE_COLUMNS, decode, read_labeled
from fer_ray.data.fer2013 import read_fer_csv, read_fer_parquet, read_image_folders
from fer_ray.labels import EMOTIONS


def basename(path: str) -> str:
    """File name of a local path or an s3:// URI."""
    return posixpath.basename(path)


def grey_level(label: int) -> int:
    """Each class gets its own grey level, so a decoded face shows which file it came from."""
    return 20 + 30 * label


def jpeg(level: int, size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), level).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# Class folder names as they appear on disk (aliases included); index = label.
TRAIN_FOLDERS = ["angry", "disgust", "fear", "happy", "sad", "surprised", "neutral"]
TEST_FOLDERS = ["anger", "disgust", "fear", "happiness", "sad", "surprise", "neutral"]
# File name in test/ per label: PublicTest_ -> val, PrivateTest_ -> test, other names -> test with usage unknown.
TEST_NAMES = ["PublicTest_1.jpg", "PrivateTest_2.jpg", "PublicTest_3.jpg", "PrivateTest_4.jpg", "img5.jpg"]
TEST_NAMES += ["PublicTest_6.jpg", "PrivateTest_7.jpg"]


def write_fer_folders(root: Path) -> Path:
    """14 images: one per class in train/ and one per class in test/."""
    for label in range(7):
        for split, folder, name in (
            ("train", TRAIN_FOLDERS[label], f"Training_{label}.jpg"),
            ("test", TEST_FOLDERS[label], TEST_NAMES[label]),
        ):
            d = root / split / folder
            d.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(jpeg(grey_level(label)))
    return root


def check_folder_rows(df: pd.DataFrame) -> None:
    """Shared by the local and the S3 folder tests (``df``: decoded rows without ``face``)."""
    assert len(df) == 14 and df["error"].isna().all()
    by_name = df.assign(name=df["path"].map(basename)).set_index("name")
    for label in range(7):
        row = by_name.loc[f"Training_{label}.jpg"]
        assert (row["split"], row["usage"], row["label"], row["emotion"]) == (
            "train",
            "Training",
            label,
            EMOTIONS[label],
        )
        row = by_name.loc[TEST_NAMES[label]]
        assert row["label"] == label and row["emotion"] == EMOTIONS[label]
    assert by_name.loc["PublicTest_1.jpg", ["split", "usage"]].tolist() == ["val", "PublicTest"]
    assert by_name.loc["PrivateTest_2.jpg", ["split", "usage"]].tolist() == ["test", "PrivateTest"]
    assert by_name.loc["img5.jpg", "split"] == "test" and pd.isna(by_name.loc["img5.jpg", "usage"])
    assert df["split"].value_counts().to_dict() == {"train": 7, "val": 3, "test": 4}


def test_read_image_folders(ray_local, tmp_path):
    root = write_fer_folders(tmp_path / "fer")
    rows = decode(read_image_folders(str(root))).to_pandas()
    assert set(SOURCE_COLUMNS) - {"image"} <= set(rows.columns) and {"face", "size", "mtime"} <= set(rows.columns)
    check_folder_rows(rows.drop(columns=["face"]))
    for face, label in zip(rows["face"], rows["label"], strict=True):
        assert abs(int(np.asarray(face).mean()) - grey_level(label)) <= 2
    # read_labeled dispatches a directory here; split selection happens before any bytes are read.
    val = read_labeled(root, splits=["val"]).select_columns(["split", "usage"]).to_pandas()
    assert len(val) == 3 and set(val["usage"]) == {"PublicTest"}


def test_read_image_folders_rejects_unknown_folders(tmp_path):
    root = write_fer_folders(tmp_path / "fer")
    (root / "train" / "contempt").mkdir()
    (root / "train" / "contempt" / "x.jpg").write_bytes(jpeg(0))
    with pytest.raises(ValueError, match=r"train/contempt"):
        read_image_folders(str(root))
    with pytest.raises(ValueError, match=r"unknown split folder 'angry'.*not a class folder"):
        read_image_folders(str(root / "train"))
    with pytest.raises(ValueError, match="unknown split"):
        read_image_folders(str(root), splits=["training"])


def write_fer_csv(path: Path, bad_row: int = 7) -> list[tuple[int, str, int]]:
    """20 rows of Kaggle's ``emotion,pixels,Usage``; row ``bad_row`` has 100 values instead of 2,304."""
    usages = ["Training"] * 12 + ["PublicTest"] * 4 + ["PrivateTest"] * 4
    rows = []
    lines = ["emotion,pixels,Usage"]
    for i, usage in enumerate(usages):
        label = i % 7
        level = grey_level(label) + i  # distinct per row
        n = 100 if i == bad_row else 48 * 48
        lines.append(f'{label},"{" ".join([str(level)] * n)}",{usage}')
        rows.append((label, usage, level))
    path.write_text("\n".join(lines) + "\n")
    return rows


def test_read_fer_csv(ray_local, tmp_path):
    csv = tmp_path / "fer2013.csv"
    expected = write_fer_csv(csv, bad_row=7)
    ds = read_fer_csv(str(csv), chunk_rows=8)  # several blocks
    assert set(SOURCE_COLUMNS) | {"pixels", "error"} <= set(ds.columns())
    rows = decode(ds).to_pandas()
    assert len(rows) == 20
    rows = rows.set_index(rows["path"].map(lambda p: int(p.rsplit("#row=", 1)[1]))).sort_index()
    assert rows["path"].iloc[0] == f"{csv}#row=0"
    for i, (label, usage, level) in enumerate(expected):
        row = rows.loc[i]
        assert (row["label"], row["emotion"], row["usage"]) == (label, EMOTIONS[label], usage)
        assert row["split"] == {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}[usage]
        if i == 7:
            assert "malformed pixels" in row["error"] and "100 values" in row["error"]
        else:
            assert pd.isna(row["error"]) and np.all(np.asarray(row["face"]) == level)
    test_only = read_labeled(csv, splits=["test"]).select_columns(["usage"]).to_pandas()
    assert test_only["usage"].tolist() == ["PrivateTest"] * 4


def test_read_fer_csv_errors(tmp_path):
    bad = tmp_path / "other.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="no 'pixels' column"):
        read_fer_csv(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_fer_csv(str(tmp_path / "missing.csv"))


PARQUET_USAGES = ["Training", "Training", "PublicTest", "PrivateTest"]
PARQUET_LABELS = [0, 3, 5, 6]


def write_fer_parquet(path: Path) -> Path:
    """4 rows with the schema of ``../shared/data/fer2013/fer2013.parquet``."""
    labels, usages = PARQUET_LABELS, PARQUET_USAGES
    table = pa.table(
        {
            "image": pa.array([jpeg(grey_level(x)) for x in labels], pa.binary()),
            "label": pa.array(labels, pa.int8()),
            "emotion": [EMOTIONS[x] for x in labels],
            "split": ["train", "train", "test", "test"],
            "usage": usages,
            "source_name": [
                f"x/{EMOTIONS[x]}/{u}_{i}.jpg" for i, (x, u) in enumerate(zip(labels, usages, strict=True))
            ],
            "csv_index": pa.array([0, None, 2, 3], pa.int32()),
            "csv_index_ambiguous": [False, False, True, False],
        }
    )
    pq.write_table(table, path)
    return path


def test_read_fer_parquet_with_the_real_schema(ray_local, tmp_path):
    labels, usages = PARQUET_LABELS, PARQUET_USAGES
    path = write_fer_parquet(tmp_path / "fer2013.parquet")
    rows = decode(read_fer_parquet(str(path))).to_pandas().sort_values("label")
    assert str(rows["label"].dtype).startswith("int64") and rows["label"].tolist() == labels  # int8 on disk
    assert rows["split"].tolist() == ["train", "train", "val", "test"]
    assert rows["usage"].tolist() == usages and rows["error"].isna().all()
    for face, label in zip(rows["face"], rows["label"], strict=True):
        assert abs(int(np.asarray(face).mean()) - grey_level(label)) <= 2
    assert read_fer_parquet(str(path), splits=["val"]).count() == 1


# -- the real FER2013, when present ---------------------------------------------------------------

TRAIN_COUNTS = {
    "angry": 3995,
    "disgust": 436,
    "fear": 4097,
    "happy": 7215,
    "neutral": 4965,
    "sad": 4830,
    "surprise": 3171,
}
TEST_COUNTS = {"angry": 958, "disgust": 111, "fear": 1024, "happy": 1774, "neutral": 1233, "sad": 1247, "surprise": 831}


def test_real_fer2013_counts(ray_local, fer2013_path):
    # Label columns only: the image bytes never come to the driver.
    df = read_fer_parquet(str(fer2013_path)).select_columns(["label", "emotion", "split", "usage"]).to_pandas()
    train = df[df["split"] == "train"]
    paper_test = df[df["split"].isin(["val", "test"])]  # the paper's "test" = PublicTest + PrivateTest
    assert len(train) == 28709 and len(paper_test) == 7178
    assert train["emotion"].value_counts().to_dict() == TRAIN_COUNTS
    assert paper_test["emotion"].value_counts().to_dict() == TEST_COUNTS
    assert df["usage"].value_counts().to_dict() == {"Training": 28709, "PublicTest": 3589, "PrivateTest": 3589}
    assert (df.loc[df["usage"] == "PublicTest", "split"] == "val").all()
    assert [EMOTIONS[x] for x in df["label"]] == df["emotion"].tolist()
