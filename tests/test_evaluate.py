"""The paper's evaluation tables on a tiny labelled set with PublicTest and PrivateTest rows, and on a
user's own folders without them."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fer_ray.config import fer2013_parquet
from fer_ray.evaluate.config import EvalConfig
from fer_ray.evaluate.driver import choose_split, evaluate_all
from fer_ray.evaluate.metrics import confusion, per_class
from fer_ray.inference.artifact import load_artifact, save_artifact
from fer_ray.labels import EMOTIONS
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from tests.fer_fixtures import synthetic_face, write_tiny_fer_parquet


def test_per_class_metrics():
    cm = confusion(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert cm[0, 0] == 1 and cm[0, 1] == 1 and cm[1, 1] == 2
    pc = per_class(cm)
    assert pc["angry"]["precision"] == 1.0 and pc["angry"]["recall"] == 0.5
    assert np.isclose(pc["disgust"]["precision"], 2 / 3) and pc["fear"]["support"] == 0


def test_evaluate_all_writes_tables(ray_local, tmp_path):
    data = write_tiny_fer_parquet(
        tmp_path / "d.parquet", n_per_class=3, splits=("Training", "PublicTest", "PrivateTest")
    )
    cfg = ModelConfig(widths=(16, 32), latent_channels=16)
    history = [
        {"epoch": e, "phase": "joint", "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.4, "val_acc": 0.45,
         "lr": 1e-3, "epoch_s": 12.0, "images_per_s": 100.0}
        for e in range(2)
    ]  # fmt: skip
    path = save_artifact(create_model(cfg), cfg, tmp_path / "m", metrics={"history": history}, flip_tta=True)
    from fer_ray.inference.export import export_engines_from_source

    engines = export_engines_from_source(path, data, calib_size=16)  # calibrated on its Training rows
    assert engines["torch"]["val_accuracy"] is not None and engines["onnx-int8"]["sha256"]
    art = load_artifact(path, engine="torch")
    (r,) = evaluate_all([art], str(data), tmp_path / "eval", EvalConfig(iterations=3, sample_size=10))
    assert r["split"] == "PrivateTest" and "never used for training" in r["split_note"]
    assert r["test"]["n"] == 21 and r["public_test"]["n"] == 21 and r["paper_test_7178"]["n"] == 42
    acc = r["test"]["accuracy"]
    assert 0 <= acc <= 1 and np.asarray(r["test"]["confusion"]).sum() == 21
    assert len(r["table4"]["per_iteration"]) == 3
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())[0]["model"] == "ae_cnn_attn"
    assert r["flip_tta"] is True and 0 <= r["test_accuracy_no_tta"] <= 1 and r["trained_on"] == "fer2013"
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "PrivateTest acc without TTA" in md
    assert "| 1 | joint | 1.500 | 40.00% | 1.400 | 45.00% |" in md  # the per-epoch history table
    assert (tmp_path / "eval" / "ae_cnn_attn_confusion_private.png").stat().st_size > 0
    # every engine on PrivateTest, the same faces through each
    assert [e["engine"] for e in r["engines"]] == ["torch", "onnx", "onnx-int8"]
    by = {e["engine"]: e for e in r["engines"]}
    assert by["torch"]["accuracy_flip_tta"] == acc and by["torch"]["accuracy_single"] == r["test_accuracy_no_tta"]
    assert by["onnx"]["top1_agreement_with_first"] == 1.0 and by["onnx"]["n"] == 21
    assert "Inference engines on PrivateTest" in md and "| onnx-int8 | model.int8.onnx |" in md
    assert r["ferplus_private_test"] is None and "FER+ labels" not in md  # no fer2013new.csv beside this Parquet
    assert r["repeats"]["repeats"] == 0 and r["repeats"]["accuracy_rest"] == acc  # random faces: no repeats
    assert "Faces seen in training: 0 of the 21 PrivateTest faces" in md


def test_repeats_of_training_faces_are_counted_apart(ray_local, tmp_path):
    """PrivateTest rows whose image is a Training image's are counted as repeats, the rest apart; each figure is
    the accuracy of the model's own predictions on those rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fer_ray.evaluate.driver import evaluate_artifact
    from fer_ray.evaluate.writing import repeats_markdown
    from fer_ray.inference.export import labeled_faces

    data = write_tiny_fer_parquet(tmp_path / "d.parquet", n_per_class=2, splits=("Training", "PrivateTest"))
    t = pq.read_table(data)
    copies = t.filter(pa.compute.equal(t["usage"], "Training")).slice(0, 3)
    copies = copies.set_column(3, "split", pa.array(["test"] * 3)).set_column(4, "usage", pa.array(["PrivateTest"] * 3))
    pq.write_table(pa.concat_tables([t, copies]), data)
    cfg = ModelConfig(widths=(16, 32), latent_channels=16)
    art = load_artifact(save_artifact(create_model(cfg), cfg, tmp_path / "m"), engine="torch")
    r = evaluate_artifact(art, str(data), EvalConfig(iterations=2, sample_size=5))["repeats"]
    assert r["faces"] == 17 and r["repeats"] == 3
    faces, labels = labeled_faces(str(data), "test", art.preprocess)
    right = art.predict_proba(faces).argmax(1) == labels  # the artifact's flip TTA, as the figure uses
    assert r["accuracy_repeats"] == float(right[-3:].mean()) and r["accuracy_rest"] == float(right[:-3].mean())
    row = {"label": "ae", "repeats": r}
    assert "3 of the 17 PrivateTest faces" in repeats_markdown([{**row, "split": "PrivateTest"}])


def test_same_architecture_twice_is_told_apart(ray_local, tmp_path):
    """A candidate beside the shipped model of its architecture: rows and plots keep both, named by weights id."""
    data = write_tiny_fer_parquet(tmp_path / "d.parquet", n_per_class=2, splits=("Training", "PrivateTest"))
    cfg = ModelConfig(name="cnn_attn", widths=(16, 32))
    arts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        arts.append(load_artifact(save_artifact(create_model(cfg), cfg, tmp_path / f"m{seed}"), engine="torch"))
    small = EvalConfig(iterations=2, sample_size=5)
    from fer_ray.evaluate.driver import _training_digests

    results = evaluate_all(arts, str(data), tmp_path / "eval", small, engines=False, repeats=False)
    labels = [r["label"] for r in results]
    assert labels == [a.model_id for a in arts] and labels[0] != labels[1] and labels[0].startswith("cnn_attn@")
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert all(md.count(f"| {label} |") == 3 for label in labels)  # accuracy, per-class F1, calibration rows
    assert "repeats" not in results[0] and "Faces seen in training" not in md  # repeats=False (--no-repeats)
    assert all((tmp_path / "eval" / f"{label}_confusion_private.csv").is_file() for label in labels)
    (alone,) = evaluate_all(arts[:1], str(data), tmp_path / "one", small, engines=False)
    assert alone["label"] == "cnn_attn"
    both = evaluate_all(arts, str(data), tmp_path / "both", small, engines=False)
    assert [r["repeats"]["faces"] for r in both] == [14, 14]
    assert _training_digests.cache_info()[:2] == (1, 1)  # hits, misses: models that read faces alike decode it once


def test_choose_split_prefers_private_test_then_test_then_val():
    def pred(usage, split):
        return {"usage": np.array(usage, dtype=object), "split": np.array(split, dtype=object)}

    name, mask = choose_split(pred(["PublicTest", "PrivateTest", None], ["val", "test", "test"]))
    assert name == "PrivateTest" and mask.tolist() == [False, True, False]
    name, mask = choose_split(pred([None, None, None], ["val", "test", "test"]))
    assert name == "test" and mask.tolist() == [False, True, True]
    name, mask = choose_split(pred(["PublicTest", None], ["val", "val"]))
    assert name == "val" and mask.all()
    assert choose_split(pred([], [])) is None  # the caller falls back to train, with a warning


def _write_folders(root: Path, splits: dict[str, int], seed: int = 0) -> Path:
    """A user's own ``<split>/<emotion>/<n>.png`` folders (no Kaggle PrivateTest_ names)."""
    rng = np.random.default_rng(seed)
    for split, n in splits.items():
        for label, emotion in enumerate(EMOTIONS):
            d = root / split / emotion
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(synthetic_face(label, rng)).save(d / f"{i}.png")
    return root


def test_evaluate_own_folders_without_private_test(ray_local, tmp_path, caplog):
    cfg = ModelConfig(widths=(16, 32), latent_channels=16)
    art = load_artifact(save_artifact(create_model(cfg), cfg, tmp_path / "m"), engine="torch")
    tiny = EvalConfig(iterations=2, sample_size=5)

    # train/ and test/: the tables are on test/, and say so
    data = _write_folders(tmp_path / "mine", {"train": 2, "test": 3})
    (r,) = evaluate_all([art], str(data), tmp_path / "eval", tiny, engines=True, progress=False)
    assert r["split"] == "test" and r["test"]["n"] == 21 and np.asarray(r["test"]["confusion"]).sum() == 21
    assert "paper_test_7178" not in r and "public_test" not in r
    assert [e["split"] for e in r["engines"]] == ["test"] and r["engines"][0]["n"] == 21
    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text())[0]
    assert saved["split"] == "test" and saved["split_note"].startswith("the test split")
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert md.startswith("Evaluated on test:") and "| test acc (21) |" in md and "paper test" not in md
    assert (tmp_path / "eval" / "ae_cnn_attn_confusion_test.png").stat().st_size > 0

    # train/ only: evaluated on train with a warning that says why that is optimistic
    data = _write_folders(tmp_path / "only_train", {"train": 2})
    with caplog.at_level("WARNING", logger="fer_ray.evaluate"):
        (r,) = evaluate_all([art], str(data), tmp_path / "eval2", tiny, engines=False, progress=False)
    assert r["split"] == "train" and r["test"]["n"] == 14 and "optimistic" in r["split_note"]
    assert any("no test or validation rows" in m for m in caplog.messages)
    assert "Evaluated on train:" in (tmp_path / "eval2" / "evaluation.md").read_text()


@pytest.mark.skipif(fer2013_parquet() is None, reason="full FER2013 (../shared/data/fer2013) not present")
def test_shipped_model_on_ferplus_labels():
    """The FER+ evaluation scores the 3,105 PrivateTest faces that have a FER+ label against both label sets, with the
    artifact's own TTA setting, from the same predictions."""
    from fer_ray.data.ferplus import labelled_faces
    from fer_ray.evaluate.driver import ferplus_metrics
    from fer_ray.evaluate.writing import ferplus_markdown
    from fer_ray.inference.calibration import ece

    art = load_artifact("cnn_attn", engine="torch")
    f = ferplus_metrics(art, str(fer2013_parquet()))
    assert f["ferplus"]["n"] == 3105 and sum(f["left_out"].values()) == 3589 - 3105
    faces, original, plus, _ = labelled_faces(str(fer2013_parquet()), "PrivateTest", art.preprocess)
    preds = art.predict_proba(faces).argmax(1)  # flip TTA, as the artifact records
    assert f["ferplus"]["accuracy"] == float((preds == plus).mean())
    assert f["fer2013_accuracy_same_faces"] == float((preds == original).mean())
    assert f["labels_agree"] == float((original == plus).mean())
    assert f["ferplus_ece"] == ece(art.predict_proba(faces), plus)
    row = {"label": "cnn_attn", "trained_on": "fer2013", "ferplus_private_test": f}
    assert f"| cnn_attn | fer2013 | {f['ferplus']['accuracy']:.2%} |" in ferplus_markdown([row])


@pytest.mark.skipif(fer2013_parquet() is None, reason="full FER2013 (../shared/data/fer2013) not present")
def test_shipped_model_on_private_test_faces_not_in_training(ray_local):
    """FER2013 repeats 288 PrivateTest faces in Training (``benchmarks/label_noise.py`` finds the same 288 from the
    JPEG pixels); a model reads the faces it may have remembered better than the rest."""
    from fer_ray.evaluate.driver import evaluate_artifact

    small = EvalConfig(iterations=2, sample_size=5)
    r = evaluate_artifact(load_artifact("cnn_attn", engine="onnx"), str(fer2013_parquet()), small)["repeats"]
    assert r["faces"] == 3589 and r["repeats"] == 288
    assert r["accuracy_repeats"] > r["accuracy_rest"] + 0.1
