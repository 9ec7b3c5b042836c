"""FER+ majority labels: the FERPlus rule, the join to our Parquet, and training on them."""

from __future__ import annotations

import collections

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fer_ray.config import fer2013_parquet
from fer_ray.data import ferplus
from fer_ray.data.fer2013 import parquet_columns, parquet_rows
from fer_ray.labels import LABEL_OF, USAGE_TO_SPLIT
from tests.fer_fixtures import write_tiny_fer_parquet

#           neutral happy surprise sad anger disgust fear contempt unknown NF
VOTES = [
    [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],  # neutral 6 of 8 after dropping single votes
    [0, 0, 0, 0, 4, 5, 0, 0, 1, 0],  # disgust 5 of 9: majority
    [5, 5, 0, 0, 0, 0, 0, 0, 0, 0],  # tie: no majority
    [0, 0, 0, 0, 0, 0, 0, 9, 1, 0],  # contempt: not in our label map
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],  # only single votes: all outliers
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 9],  # not a face
]


def test_majority_follows_ferplus_rule():
    labels, reasons = ferplus.majority(np.array(VOTES))
    assert labels.tolist() == [LABEL_OF["neutral"], LABEL_OF["disgust"], -1, -1, -1, -1]
    assert reasons == [None, None, "no majority", "contempt", "no votes", "NF"]


def join_counts(meta: pd.DataFrame, labels: np.ndarray, reasons: list[str | None]) -> dict:
    """Per split of ``meta``: FER+ class counts of the joined rows and the count of rows left out by reason."""
    new, why = ferplus._join_rows(meta, labels, reasons)
    why = np.asarray(why, dtype=object)
    result = {}
    for split in sorted(meta["split"].unique()):
        m = (meta["split"] == split).to_numpy()
        kept = m & (new != ferplus.NO_LABEL)
        result[split] = {
            "rows": int(m.sum()),
            "labelled": np.bincount(new[kept], minlength=7).tolist(),
            "left_out": dict(collections.Counter(why[m & ~kept])),
        }
    return result


def _tiny_with_votes(tmp_path):
    """A tiny Parquet whose rows point into a FER+ CSV that relabels every row with the next class."""
    path = write_tiny_fer_parquet(tmp_path / "fer2013.parquet", n_per_class=3)
    t = pq.read_table(path).to_pandas()
    t["csv_index"] = np.arange(len(t), dtype=np.int32)
    t["csv_index_ambiguous"] = False
    t.loc[0, "csv_index_ambiguous"] = True  # left out of the join
    pq.write_table(pa.Table.from_pandas(t, preserve_index=False), path)
    order = ["neutral", "happy", "surprise", "sad", "angry", "disgust", "fear"]  # FER+ vote column order
    votes = np.zeros((len(t), 10), dtype=int)
    for i, label in enumerate(t["label"]):
        votes[i, order.index(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"][(label + 1) % 7])] = 8
    votes[1] = [0] * 7 + [8, 0, 0]  # contempt
    csv = pd.DataFrame(votes, columns=list(ferplus.VOTE_COLUMNS))
    csv.insert(0, "Image name", [f"fer{i:07d}.png" for i in range(len(t))])
    csv.insert(0, "Usage", t["usage"])
    csv.to_csv(tmp_path / ferplus.CSV_NAME, index=False)
    return path, t


def test_parquet_rows_swap_in_ferplus_labels(tmp_path):
    path, t = _tiny_with_votes(tmp_path)
    votes = ferplus.load(str(path))  # finds fer2013new.csv beside the Parquet
    rows = parquet_rows(
        pq.read_table(path, columns=parquet_columns(str(path), labels="ferplus")).to_pandas(), None, votes
    )
    assert len(rows) == len(t) - 2  # the ambiguous row and the contempt row are left out
    expected = (t["label"].to_numpy()[2:] + 1) % 7
    assert rows["label"].tolist() == expected.tolist()
    meta = t.assign(split=t["usage"].map(USAGE_TO_SPLIT))
    counts = join_counts(meta, *votes)
    assert counts["train"]["left_out"] == {"csv_index ambiguous": 1, "contempt": 1}
    assert sum(counts["train"]["labelled"]) + sum(counts["val"]["labelled"]) == len(t) - 2


def test_plain_training_on_ferplus_labels(tmp_path):
    from fer_ray.models.config import ModelConfig
    from fer_ray.train.config import TrainConfig
    from fer_ray.train.plain import train_plain

    path, t = _tiny_with_votes(tmp_path)
    cfg = TrainConfig(
        model=ModelConfig(name="cnn_attn", widths=(8,), latent_channels=8),
        data=str(path),
        labels="ferplus",
        epochs=1,
        batch_size=16,
        backend="plain",
        storage_path=str(tmp_path / "runs"),
        torch_threads=1,
    )
    res = train_plain(cfg)
    assert res.counts["labels"] == "ferplus"
    assert sum(res.counts["train"]) == int((t["usage"] == "Training").sum()) - 2
    # the artifact's engines and confidence are measured against the labels it learnt
    from fer_ray.inference.artifact import load_artifact
    from fer_ray.inference.calibration import calibrate_artifact
    from fer_ray.inference.export import export_engines_from_source

    assert load_artifact(res.artifact_dir).label_set == "ferplus"
    public = int((t["usage"] == "PublicTest").sum())  # every PublicTest row has a FER+ majority here
    record = calibrate_artifact(res.artifact_dir, str(path))
    assert (record["fitted_on"], record["faces"]) == ("val (PublicTest, FER+ labels)", public)
    export_engines_from_source(res.artifact_dir, str(path), calib_size=8)
    assert load_artifact(res.artifact_dir).meta["engine_validation"]["split"] == "val (PublicTest, FER+ labels)"


def test_missing_votes_file_says_what_to_pass(tmp_path):
    path = write_tiny_fer_parquet(tmp_path / "x.parquet", n_per_class=1)
    with pytest.raises(FileNotFoundError, match="--ferplus-csv"):
        ferplus.load(str(path))


@pytest.mark.skipif(fer2013_parquet() is None, reason="full FER2013 (../shared/data/fer2013) not present")
def test_join_counts_on_the_real_data():
    p = str(fer2013_parquet())
    labels, reasons = ferplus.load(p)
    assert len(labels) == 35_887 and reasons.count("not a face (no FER+ image)") == 173
    meta = pq.read_table(p, columns=["usage", "csv_index", "csv_index_ambiguous"]).to_pandas()
    counts = join_counts(meta.assign(split=meta["usage"].map(USAGE_TO_SPLIT)), labels, reasons)
    # angry, disgust, fear, happy, sad, surprise, neutral
    assert counts["train"]["labelled"] == [1909, 92, 440, 6982, 2789, 2294, 8393]
    assert counts["val"]["labelled"] == [287, 20, 56, 863, 347, 389, 1172]
    assert counts["test"]["labelled"] == [266, 18, 81, 889, 380, 382, 1089]
    assert counts["train"]["left_out"]["csv_index ambiguous"] == 2344
    assert all(c["rows"] == sum(c["labelled"]) + sum(c["left_out"].values()) for c in counts.values())


def test_ray_reader_takes_ferplus_labels(ray_local, tmp_path):
    from fer_ray.data import read_labeled

    path, t = _tiny_with_votes(tmp_path)
    got = read_labeled(str(path), labels="ferplus").to_pandas()
    assert sorted(got["label"].tolist()) == sorted(((t["label"].to_numpy()[2:] + 1) % 7).tolist())
    with pytest.raises(ValueError, match="Parquet"):
        read_labeled(str(tmp_path), labels="ferplus")


@pytest.mark.skipif(fer2013_parquet() is None, reason="full FER2013 (../shared/data/fer2013) not present")
def test_private_test_faces_with_both_label_sets():
    """Evaluation on FER+ labels scores the PrivateTest faces that have one, beside their original labels."""
    from fer_ray.data.ferplus import labelled_faces
    from fer_ray.preprocess import PreprocessConfig

    faces, original, plus, left_out = labelled_faces(str(fer2013_parquet()), "PrivateTest", PreprocessConfig())
    assert faces.shape == (3105, 48, 48) and faces.dtype == np.uint8 and len(original) == len(plus) == 3105
    assert left_out == {
        "no majority": 406, "csv_index ambiguous": 35, "contempt": 16, "no csv_index": 16, "unknown": 10, "NF": 1,
    }  # fmt: skip
    assert sum(left_out.values()) + 3105 == 3589
    assert np.bincount(plus, minlength=7).tolist() == [266, 18, 81, 889, 380, 382, 1089]
    assert int((original == plus).sum()) == 2091  # FER2013 and FER+ agree on 67% of these faces
