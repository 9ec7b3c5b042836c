"""Inference engines (fer_ray.inference.engine, .export): ONNX Runtime fp32 and int8 agree with PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fer_ray.inference.artifact import (
    DEFAULT_MODEL_DIR,
    META,
    SHIPPED_MODELS,
    WEIGHTS,
    ArtifactIntegrityError,
    default_engine,
    load_artifact,
    resolve_model,
    save_artifact,
    sha256_file,
)
from fer_ray.inference.engine import ENGINES, ONNX_FILES, TorchEngine, model_input
from fer_ray.inference.export import export_engines
from fer_ray.inference.host_check import (
    CHECK_FILE,
    INT16_MAX,
    compare,
    cpu_description,
    int8_pair_bound,
    load_check,
    make_check_faces,
    quantize_int8,
)
from fer_ray.inference.host_check import check_engine as check_on_host
from fer_ray.inference.outputs import softmax
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.preprocess import PreprocessConfig, normalize, preprocess_bytes
from tests.helpers_score import EXAMPLES


def _bundled_faces() -> np.ndarray:
    """The seven bundled face crops (public-domain photos) and their mirror images: real faces, always present."""
    pp = PreprocessConfig()
    faces = np.stack([preprocess_bytes(p.read_bytes(), pp) for p in sorted((EXAMPLES / "crops").glob("*.jpg"))])
    return np.concatenate([faces, faces[..., ::-1]])


def test_model_input_matches_torch_normalize():
    faces = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    pp = PreprocessConfig(mean=0.4, std=0.3)
    x = model_input(faces, pp)
    assert x.shape == (5, 1, 48, 48) and x.dtype == np.float32
    assert np.array_equal(x, normalize(faces, pp).numpy())
    assert np.array_equal(model_input(x, pp), x)  # already normalized: passed through
    with pytest.raises(ValueError, match="expected a batch"):
        model_input(np.zeros((2, 3, 48, 48), np.uint8), pp)


def test_shipped_model_engines_agree_with_torch_on_real_faces():
    """fp32 ONNX reproduces PyTorch's probabilities; every engine returns logits of the same shape."""
    faces = _bundled_faces()
    arts = {e: load_artifact(DEFAULT_MODEL_DIR, engine=e) for e in ENGINES}
    ref = arts["torch"].predict_proba(faces, flip_tta=False)
    for name, art in arts.items():
        assert art.engine_name == name
        assert art.model_sha256 == sha256_file(DEFAULT_MODEL_DIR / (WEIGHTS if name == "torch" else ONNX_FILES[name]))
        logits = art.predict_logits(faces)
        assert logits.shape == (len(faces), 7) and logits.dtype == np.float32
    fp32 = arts["onnx"].predict_proba(faces, flip_tta=False)
    assert np.abs(fp32 - ref).max() <= 1e-4
    tta = arts["onnx"].predict_proba(faces)  # flip TTA (the shipped setting) is applied the same way
    assert np.abs(tta - arts["torch"].predict_proba(faces)).max() <= 1e-4
    # model ids tell the engines apart, and keep the weights hash
    ids = {art.model_id for art in arts.values()}
    assert len(ids) == 3 and all(arts["torch"].model_id in i for i in ids)


def test_shipped_int8_same_top_class_on_private_test(fer2013_path):
    """On any CPU: the int8 files cannot saturate (test_shipped_int8_cannot_saturate), so this agreement,
    measured on a VNNI host, is also what an AVX2-only host gets (bit-identical logits there, docs/RESULTS.md)."""
    from fer_ray.inference.export import labeled_faces

    torch_art = load_artifact(engine="torch")
    int8 = load_artifact(engine="onnx-int8", threads=2)
    assert int8.engine_name == "onnx-int8" and int8.host_check.passed
    faces, labels = labeled_faces(fer2013_path, "test", int8.preprocess, limit=1000, seed=0)
    assert len(faces) == 1000
    ref, got = torch_art.predict_proba(faces), int8.predict_proba(faces)  # the artifact's own flip TTA
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    assert agree >= 0.98, agree  # measured: 98.8% (ae_cnn_attn) on these 1,000 faces, 7-bit weights
    acc_t, acc_q = float((ref.argmax(1) == labels).mean()), float((got.argmax(1) == labels).mean())
    assert abs(acc_q - acc_t) <= 0.006, (acc_t, acc_q)


@pytest.mark.parametrize("name", sorted(set(SHIPPED_MODELS) - {"default"}))
def test_shipped_int8_cannot_saturate(name):
    """No pair of u8 x s8 products in the shipped int8 files can pass 32,767, so CPUs without VNNI (16-bit
    pair sums) compute what VNNI/AMX hosts do. The former 8-bit files reached 2 x 255 x 127 = 64,770."""
    art_dir = resolve_model(name)
    bound = int8_pair_bound(art_dir / ONNX_FILES["onnx-int8"])
    assert bound["ops"] >= 15, bound  # every convolution and the head, not a graph it failed to read
    assert bound["max_abs_weight"] <= 64 and bound["max_pair_sum"] <= INT16_MAX, bound
    q = json.loads((art_dir / META).read_text())["onnx_export"]["quantization"]
    assert q["reduce_range"] is True and q["max_pair_sum"] == bound["max_pair_sum"] and q["why"]


def test_pair_bound_catches_8bit_weights(tmp_path):
    """The same fp32 model quantized as before (8-bit weights) fails the bound that the shipped file passes."""
    out = tmp_path / "int8_8bit.onnx"
    quantize_int8(DEFAULT_MODEL_DIR / ONNX_FILES["onnx"], out, _bundled_faces(), PreprocessConfig(), reduce_range=False)
    bound = int8_pair_bound(out)
    assert bound["max_abs_weight"] == 127 and bound["max_pair_sum"] == 2 * 255 * 127 > INT16_MAX, bound


def test_shipped_artifact_records_engines_and_defaults_to_int8():
    meta = json.loads((DEFAULT_MODEL_DIR / META).read_text())
    rec = meta["engines"]
    assert set(rec) == set(ENGINES)
    for name, e in rec.items():
        assert sha256_file(DEFAULT_MODEL_DIR / e["file"]) == e["sha256"], name
        assert 0.6 < e["val_accuracy"] < 0.75, (name, e)
    assert abs(rec["onnx"]["val_accuracy"] - rec["torch"]["val_accuracy"]) < 0.002
    assert meta["engine_validation"]["split"].startswith("val") and meta["engine_validation"]["n"] == 3589
    assert meta["onnx_export"]["calibration"]["split"] == "train"
    check = meta["host_check"]
    assert check["sha256"] == sha256_file(DEFAULT_MODEL_DIR / CHECK_FILE) and check["faces"] == 256
    art = load_artifact()  # CPU default: int8 (within 0.5 pt of fp32 at export), checked on this host
    assert art.engine_name == "onnx-int8" and art.host_check.passed and art.host_check.faces == 256
    assert art.host_check.cpu == cpu_description() and art.host_check.line().startswith("onnx-int8 on ")
    assert default_engine(meta, DEFAULT_MODEL_DIR, "cuda") == "torch"
    total = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir() if p.name != "MODEL_CARD.md")
    assert total <= 20 * 2**20, total


def _degraded_copy(src: Path, dst: Path, factor: float = 1.6) -> Path:
    """``src`` with its int8 file made wrong the way saturation is: the first convolutions' weight
    scales off by ``factor``, hashes updated so only the host check can tell."""
    import shutil

    import onnx
    from onnx import numpy_helper

    shutil.copytree(src, dst)
    f = dst / ONNX_FILES["onnx-int8"]
    m = onnx.load(str(f))
    inits = {t.name: t for t in m.graph.initializer}
    changed = 0
    for node in m.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and changed < 3:
            scale = inits[node.input[1]]
            scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(factor), scale.name))
            changed += 1
    onnx.save(m, str(f))
    meta = json.loads((dst / META).read_text())
    meta["engines"]["onnx-int8"]["sha256"] = sha256_file(f)
    (dst / META).write_text(json.dumps(meta))
    return dst


def test_int8_that_strays_on_this_host_falls_back_to_fp32(tmp_path, caplog):
    """A deliberately degraded int8 file (this host may have VNNI, so saturation is imitated) is caught
    by the host check: fp32 runs instead, with one warning line naming the CPU and the figures."""
    import logging

    path = _degraded_copy(DEFAULT_MODEL_DIR, tmp_path / "degraded")
    with caplog.at_level(logging.WARNING, logger="fer_ray.inference.artifact"):
        art = load_artifact(path)  # the default: int8 by the accuracy recorded at export
    assert art.engine_name == "onnx" and art.model_id.endswith("+onnx") and art.host_check.passed
    lines = [r.getMessage() for r in caplog.records if r.name == "fer_ray.inference.artifact"]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"onnx-int8 on {cpu_description()}: same top class as fp32 on ")
    assert "running onnx (fp32) instead" in lines[0] and "check faces" in lines[0]
    faces = _bundled_faces()
    ref = load_artifact(path, engine="torch").predict_proba(faces)
    assert np.abs(art.predict_proba(faces) - ref).max() <= 1e-4  # what ran is the fp32 model
    raw = load_artifact(path, engine="onnx-int8", verify=False)  # measured as it is: really off
    assert raw.engine_name == "onnx-int8" and np.abs(raw.predict_proba(faces) - ref).max() > 0.02


def test_scoring_actor_rows_name_the_engine_that_ran(tmp_path):
    """A scoring actor checks int8 on its own host: with the degraded file it scores with fp32, and its
    rows say so (engine, model_id, the hash of the file that ran)."""
    import pandas as pd

    from fer_ray.score.stages import FacePredictor, artifact_files, prepare_images

    path = _degraded_copy(DEFAULT_MODEL_DIR, tmp_path / "degraded")
    crop = EXAMPLES / "crops" / "astronaut.jpg"
    listing = pd.DataFrame({"path": [str(crop)], "size": [crop.stat().st_size], "mtime": [0.0], "error": [None]})
    predictor = FacePredictor(artifact_files(path, "onnx-int8"), run_id="r", engine="onnx-int8")
    rows = predictor(prepare_images(listing, preprocess=PreprocessConfig())).to_pandas()
    assert rows["engine"].tolist() == ["onnx"] and rows["model_id"].iloc[0].endswith("+onnx")
    assert rows["model_sha256"].iloc[0] == sha256_file(path / ONNX_FILES["onnx"])


def test_host_check_bounds_separate_sound_and_saturated_int8():
    """The shipped int8 on this host passes with room; logits as far off as the 8-bit file's on an
    AVX2-only EPYC (mean |dp| 0.021-0.030) fail."""
    faces, reference = load_check(DEFAULT_MODEL_DIR)
    sound = check_on_host(load_artifact(engine="onnx-int8", verify=False).engine, (faces, reference))
    assert sound.passed and sound.agreement >= 0.96 and sound.mean_abs_diff <= 0.006, sound
    noisy = reference + np.random.default_rng(0).normal(0, 0.8, reference.shape).astype(np.float32)
    bad = compare("onnx-int8", noisy, reference)
    assert not bad.passed and bad.mean_abs_diff > 0.02, bad
    assert compare("onnx", reference, reference).passed


def test_check_faces_are_public_domain_faces_in_the_scoring_path():
    """Made from the two bundled photos through YuNet and the crop path, seeded: the stored set is reproducible."""
    faces, _ = load_check(DEFAULT_MODEL_DIR)
    made = make_check_faces(PreprocessConfig())
    assert made.shape == faces.shape == (256, 48, 48) and made.dtype == np.uint8
    assert np.array_equal(made, faces)


@pytest.fixture(scope="module")
def tiny_exported(tmp_path_factory):
    """A tiny random model exported with both ONNX files (calibration and validation on random faces)."""
    torch.manual_seed(0)
    cfg = ModelConfig(widths=(8, 16), latent_channels=8, unpooled_stages=1)  # export covers an unpooled stage
    model = create_model(cfg).eval()
    with torch.no_grad():
        model.classifier.head[-1].weight.normal_(0, 5)  # spread the near-uniform logits of an untrained model
    path = save_artifact(model, cfg, tmp_path_factory.mktemp("tiny") / "a", flip_tta=True)
    rng = np.random.default_rng(0)
    calib = rng.integers(0, 256, (64, 48, 48), dtype=np.uint8)
    val = rng.integers(0, 256, (40, 48, 48), dtype=np.uint8)
    weights_before = sha256_file(path / WEIGHTS)
    engines = export_engines(path, calib, val, rng.integers(0, 7, 40), val_split="val")
    assert sha256_file(path / WEIGHTS) == weights_before  # weights untouched
    return path, engines


def test_export_writes_single_file_models_and_records_them(tiny_exported):
    path, engines = tiny_exported
    assert sorted(p.name for p in path.iterdir()) == sorted([META, WEIGHTS, CHECK_FILE, *ONNX_FILES.values()])
    meta = json.loads((path / META).read_text())
    assert meta["engines"] == engines and meta["engine_validation"] == {"split": "val", "n": 40, "flip_tta": True}
    for name in ENGINES:
        assert engines[name]["sha256"] == sha256_file(path / engines[name]["file"])
        assert (
            0 <= engines[name]["val_accuracy"] <= 1
            and engines[name]["val_accuracy"] == engines[name]["val_accuracy_flip_tta"]
        )
    faces = np.random.default_rng(1).integers(0, 256, (33, 48, 48), dtype=np.uint8)  # a batch size not exported
    ref = load_artifact(path, engine="torch").predict_proba(faces)
    assert np.abs(load_artifact(path, engine="onnx").predict_proba(faces) - ref).max() <= 1e-4


def _machine_paths(onnx_file) -> list[str]:
    """Node/graph annotations of an ONNX file, and any absolute path of the exporting machine in its bytes."""
    import onnx

    m = onnx.load(str(onnx_file))
    notes = [f"{n.op_type}: {p.key}" for n in m.graph.node for p in n.metadata_props]
    notes += [f"{n.op_type}: doc_string" for n in m.graph.node if n.doc_string]
    raw = Path(onnx_file).read_bytes()
    notes += [
        s for s in ("site-packages", str(Path.home()), str(Path(__file__).resolve().parent.parent)) if s.encode() in raw
    ]
    return notes


def test_exported_files_hold_no_exporter_stack_traces(tiny_exported):
    path, _ = tiny_exported
    for file in ONNX_FILES.values():
        assert _machine_paths(path / file) == [], file


@pytest.mark.parametrize("name", sorted(set(SHIPPED_MODELS) - {"default"}))  # "default" is one of them again
def test_shipped_onnx_files_hold_no_machine_paths(name):
    art_dir = resolve_model(name)
    for file in ONNX_FILES.values():
        assert _machine_paths(art_dir / file) == [], f"{name}/{file}: re-export with jobs/export_onnx.py"


def test_default_engine_follows_recorded_accuracy(tiny_exported):
    path, _ = tiny_exported
    meta = json.loads((path / META).read_text())
    rec = meta["engines"]
    rec["torch"]["val_accuracy"], rec["onnx-int8"]["val_accuracy"] = 0.660, 0.656  # 0.4 pt below: int8
    assert default_engine(meta, path) == "onnx-int8"
    rec["onnx-int8"]["val_accuracy"] = 0.650  # 1 pt below: fp32 ONNX
    assert default_engine(meta, path) == "onnx"
    rec["onnx-int8"]["val_accuracy"] = None  # no validation split: never int8 by default
    assert default_engine(meta, path) == "onnx"
    assert default_engine({}, path) == "torch"  # an artifact exported before the engines existed
    rec["onnx-int8"]["val_accuracy"] = 0.656
    (path / CHECK_FILE).rename(path / "moved")  # exported before the host check: int8 cannot be verified
    try:
        assert default_engine(meta, path) == "onnx"
    finally:
        (path / "moved").rename(path / CHECK_FILE)
    assert default_engine(meta, path, "cuda:0") == "torch"


def test_damaged_model_files_fail_with_one_clear_error(tiny_exported, tmp_path):
    import shutil

    src, _ = tiny_exported
    for name, file, damage in [
        ("torch", WEIGHTS, b""),
        ("torch", WEIGHTS, (src / WEIGHTS).read_bytes()[:1000]),
        ("onnx", ONNX_FILES["onnx"], (src / ONNX_FILES["onnx"]).read_bytes()[:-10]),
        ("onnx-int8", ONNX_FILES["onnx-int8"], b""),
    ]:
        path = tmp_path / f"{name}-{len(damage)}"
        shutil.copytree(src, path)
        expected = sha256_file(path / file)
        (path / file).write_bytes(damage)
        with pytest.raises(ArtifactIntegrityError) as e:
            load_artifact(path, engine=name)
        msg = str(e.value)
        assert file in msg and expected in msg and sha256_file(path / file) in msg, msg
        assert ("empty (0 bytes)" in msg) == (len(damage) == 0), msg


def test_unknown_or_missing_engine(tiny_exported, tmp_path):
    import shutil

    with pytest.raises(ValueError, match="unknown inference engine 'tensorrt'.*torch"):
        load_artifact(tiny_exported[0], engine="tensorrt")
    path = tmp_path / "no_int8"
    shutil.copytree(tiny_exported[0], path)
    (path / ONNX_FILES["onnx-int8"]).unlink()
    with pytest.raises(FileNotFoundError, match="export_onnx.py"):
        load_artifact(path, engine="onnx-int8")
    assert load_artifact(path).engine_name == "onnx"  # the default falls back to the file that is there


def test_onnx_engines_load_and_score_without_importing_torch():
    """Scoring actors and Serve replicas on ONNX Runtime skip torch's ~2 s import; the PyTorch
    model is still there, built from the checked weights on first use, and agrees with them."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from fer_ray.inference.artifact import load_artifact\n"
        "from fer_ray.score.driver import score\n"
        "a = load_artifact('default', engine='onnx-int8')\n"
        "p = a.predict_proba(np.full((3, 48, 48), 128, np.uint8))\n"
        "assert p.shape == (3, 7) and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
    art = load_artifact("default", engine="onnx")
    faces = _bundled_faces()
    logits = TorchEngine(art.model, art.preprocess, None, None).logits(faces)  # the model built late
    assert np.abs(softmax(logits, art.temperature) - art.predict_proba(faces, flip_tta=False)).max() <= 1e-4
