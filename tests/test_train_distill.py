"""Knowledge distillation: the loss, the frozen teacher ensemble, and a plain run that learns from one."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from fer_ray.inference.artifact import load_artifact
from fer_ray.preprocess import PreprocessConfig
from fer_ray.train.config import TrainConfig
from fer_ray.train.distill import distill_loss, load_teacher
from fer_ray.train.loop import LossConfig, compute_loss
from fer_ray.train.plain import train_plain
from tests.test_train_plain import _cfg, tiny_parquet  # noqa: F401  (the module-scoped fixture)


def test_distill_loss_is_zero_only_where_the_student_agrees():
    torch.manual_seed(0)
    logits = torch.randn(8, 7)
    same = F.softmax(logits / 2.0, dim=1)
    assert distill_loss(logits, same, 2.0).abs() < 1e-5
    other = F.softmax(torch.randn(8, 7), dim=1)
    assert distill_loss(logits, other, 2.0) > 0.01


def test_distillation_weight_splits_the_loss_between_labels_and_teacher():
    torch.manual_seed(0)
    out = {"logits": torch.randn(4, 7)}
    x, y = torch.zeros(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    soft = F.softmax(torch.randn(4, 7), dim=1)
    losses = {}
    for w in (0.0, 0.5, 1.0):
        cfg = LossConfig(label_smoothing=0.0, distill_weight=w, distill_temperature=3.0)
        losses[w], parts = compute_loss(out, x, y, cfg, "joint", soft)
    assert torch.isclose(losses[0.0], parts["ce"]) and torch.isclose(losses[1.0], parts["kd"])
    assert torch.isclose(losses[0.5], (parts["ce"] + parts["kd"]) / 2)
    # pre-training (reconstruction only) ignores the teacher as it ignores the labels
    pre, _ = compute_loss({**out, "recon": x}, x, y, LossConfig(distill_weight=1.0), "pretrain", soft)
    assert float(pre) == 0.0


def test_teacher_averages_the_shipped_models_and_stays_frozen():
    teacher = load_teacher(("ae_cnn_attn", "cnn_attn"), PreprocessConfig())
    assert teacher.ids == [load_artifact(n, engine="torch").model_id for n in ("ae_cnn_attn", "cnn_attn")]
    models = [a.model for a in teacher.artifacts]
    assert not any(m.training for m in models)  # batch norm keeps its running statistics
    assert not any(p.requires_grad for m in models for p in m.parameters())
    x = torch.randn(5, 1, 48, 48)
    probs = teacher.probabilities(x, 1.0)
    each = [F.softmax(m(x)["logits"], dim=1) for m in models]
    assert torch.allclose(probs, (each[0] + each[1]) / 2, atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(5))


def test_int8_teachers_with_flip_tta_average_both_views_of_each_model():
    teacher = load_teacher(("ae_cnn_attn", "cnn_attn"), PreprocessConfig(), engine="onnx-int8", flip_tta=True)
    assert teacher.ids == [load_artifact(n, engine="onnx-int8").model_id for n in ("ae_cnn_attn", "cnn_attn")]
    assert all(i.endswith("+onnx-int8") for i in teacher.ids)  # the run records which engine taught it
    x = torch.randn(6, 1, 48, 48)
    probs = teacher.probabilities(x, 2.0)
    views = [x, x.flip(-1)]
    each = [F.softmax(torch.from_numpy(a.predict_logits(v)) / 2.0, dim=1) for a in teacher.artifacts for v in views]
    assert torch.allclose(probs, torch.stack(each).mean(0), atol=1e-6)
    # and close to the PyTorch teachers' (int8 quantisation moves probabilities by about a percent)
    fp32 = load_teacher(("ae_cnn_attn", "cnn_attn"), PreprocessConfig(), flip_tta=True).probabilities(x, 2.0)
    assert (probs - fp32).abs().max() < 0.05


def test_a_teacher_that_reads_faces_differently_is_refused():
    with pytest.raises(ValueError, match="must read the student's input"):
        load_teacher(("cnn_attn",), dataclasses.replace(PreprocessConfig(), std=0.25))


def test_a_plain_run_distils_records_its_teachers_and_refuses_others_on_resume(
    tmp_path,
    tiny_parquet,  # noqa: F811
    monkeypatch,
):
    import fer_ray.train.distill as distill

    reads = []
    real_load = distill.load_artifact
    monkeypatch.setattr(distill, "load_artifact", lambda p, **kw: reads.append(p) or real_load(p, **kw))
    res = train_plain(_cfg(tmp_path, tiny_parquet, epochs=1, teachers=("cnn_attn",), distill_weight=0.7))
    assert reads == ["cnn_attn"]  # loaded once: the run's record takes the loaded teacher's id
    art = load_artifact(res.artifact_dir)
    assert art.meta["metrics"]["counts"]["teachers"] == [load_artifact("cnn_attn", engine="torch").model_id]
    assert art.meta["train_config"]["teachers"] == ["cnn_attn"]
    assert res.history[-1]["train_loss"] > 0
    with pytest.raises(ValueError, match="teachers"):
        train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, teachers=("ae_cnn_attn",), distill_weight=0.7))
    # the same weights found elsewhere (copied aside before a new model ships under the name) resume
    moved = tmp_path / "elsewhere" / "cnn_oc_e30"
    shutil.copytree(load_artifact("cnn_attn").path, moved)
    res = train_plain(_cfg(tmp_path, tiny_parquet, epochs=2, teachers=(str(moved),), distill_weight=0.7))
    meta = load_artifact(res.artifact_dir).meta
    assert meta["metrics"]["segments"][-1]["changed"] == ["epochs", "teachers"]
    assert meta["train_config"]["teachers"] == ["cnn_oc_e30"]  # by directory name: no path of this machine
    assert meta["metrics"]["counts"]["teachers"] == [load_artifact("cnn_attn", engine="torch").model_id]


def test_a_plain_run_learns_from_int8_teachers_with_flip_tta(tmp_path, tiny_parquet):  # noqa: F811
    cfg = _cfg(tmp_path, tiny_parquet, epochs=1, teachers=("cnn_attn",), teacher_engine="onnx-int8", teacher_tta=True)
    res = train_plain(cfg)
    art = load_artifact(res.artifact_dir)
    assert art.meta["metrics"]["counts"]["teachers"] == [load_artifact("cnn_attn", engine="onnx-int8").model_id]
    assert (art.meta["train_config"]["teacher_engine"], art.meta["train_config"]["teacher_tta"]) == ("onnx-int8", True)
    assert res.history[-1]["train_loss"] > 0


def test_teachers_come_from_the_command_line():
    import importlib

    from fer_ray.cli import parse_config

    train_job = importlib.import_module("jobs.train")
    argv = ["--teachers", "ae_cnn_attn,cnn_attn", "--distill-weight", "0.6", "--cpu-bf16"]
    argv += ["--teacher-engine", "onnx-int8", "--teacher-tta"]
    cfg, _ = parse_config(train_job.get_args_parser(), argv)
    assert (cfg.teachers, cfg.distill_weight, cfg.cpu_bf16) == (("ae_cnn_attn", "cnn_attn"), 0.6, True)
    assert (cfg.teacher_engine, cfg.teacher_tta) == ("onnx-int8", True)
    # stored configs (JSON lists) read back equal, so a resume does not see a changed recipe
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="distill_weight"):
        TrainConfig(distill_weight=1.5)
