"""The paper's evaluation tables on a tiny labelled set with PublicTest and PrivateTest rows."""

import json

import numpy as np

from fer_ray.artifact import load_artifact, save_artifact
from fer_ray.evaluate import EvalConfig, confusion, evaluate_all, per_class
from fer_ray.models import ModelConfig, create_model
from tests.fer_fixtures import write_tiny_fer_parquet


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
    from fer_ray.onnx_export import export_engines_from_source

    engines = export_engines_from_source(path, data, calib_size=16)  # calibrated on its Training rows
    assert engines["torch"]["val_accuracy"] is not None and engines["onnx-int8"]["sha256"]
    art = load_artifact(path, engine="torch")
    (r,) = evaluate_all([art], str(data), tmp_path / "eval", EvalConfig(iterations=3, sample_size=10))
    assert r["private_test"]["n"] == 21 and r["public_test"]["n"] == 21 and r["paper_test_7178"]["n"] == 42
    acc = r["private_test"]["accuracy"]
    assert 0 <= acc <= 1 and np.asarray(r["private_test"]["confusion"]).sum() == 21
    assert len(r["table4_private"]["per_iteration"]) == 3
    assert json.loads((tmp_path / "eval" / "evaluation.json").read_text())[0]["model"] == "ae_cnn_attn"
    assert r["flip_tta"] is True and 0 <= r["private_test_accuracy_no_tta"] <= 1
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "PrivateTest acc without TTA" in md
    assert "| 1 | joint | 1.500 | 40.00% | 1.400 | 45.00% |" in md  # the per-epoch history table
    assert (tmp_path / "eval" / "ae_cnn_attn_confusion_private.png").stat().st_size > 0
    # every engine on PrivateTest, the same faces through each
    assert [e["engine"] for e in r["engines"]] == ["torch", "onnx", "onnx-int8"]
    by = {e["engine"]: e for e in r["engines"]}
    assert (
        by["torch"]["accuracy_flip_tta"] == acc and by["torch"]["accuracy_single"] == r["private_test_accuracy_no_tta"]
    )
    assert by["onnx"]["top1_agreement_with_first"] == 1.0 and by["onnx"]["n"] == 21
    assert "Inference engines on PrivateTest" in md and "| onnx-int8 | model.int8.onnx |" in md
