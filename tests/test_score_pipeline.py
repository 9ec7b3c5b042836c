"""Batch scoring end to end on a real local Ray: local and S3 in/out, resume, bad inputs, reports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fer_ray.inference.artifact import load_artifact, save_artifact
from fer_ray.labels import EMOTIONS
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.preprocess import PreprocessConfig, decode_image, face_input
from fer_ray.score.config import ScoreConfig
from fer_ray.score.driver import score
from fer_ray.score.report import write_report
from fer_ray.score.schema import OUTPUT_SCHEMA, PREPARED_SCHEMA
from fer_ray.score.stages import FacePredictor, artifact_files, prepare_images
from fer_ray.score.store import OutputStore
from tests.helpers_score import (
    EXAMPLES,
    assert_exactly_once,
    copy_samples,
    expected,
    photo_bytes,
    prob_columns_sum_to_one,
    samples,
    write_scored,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A freshly initialised artifact: the tests never depend on the trained model."""
    return save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path_factory.mktemp("model") / "model")


def _rows(out: str | Path) -> pd.DataFrame:
    return pd.read_parquet(Path(out) / "rows")


def _rel(df: pd.DataFrame, root: Path) -> pd.DataFrame:
    df = df.copy()
    df["rel"] = df["path"].map(lambda p: os.path.relpath(p, root))
    return df


def _listing(paths: list[Path]) -> pd.DataFrame:
    st = [p.stat() for p in paths]
    return pd.DataFrame(
        {
            "path": [str(p) for p in paths],
            "size": [s.st_size for s in st],
            "mtime": [s.st_mtime for s in st],
            "error": [None] * len(paths),
        }
    )


# -- stages without Ray ------------------------------------------------------------------------------
def test_prepare_images_one_row_per_face_and_predictor_schema(tmp_path, model_dir):
    names = ["photos/group_of_three.jpg", "crops/astronaut.jpg", "other/coffee.jpg"]
    paths = copy_samples(tmp_path, names + ["other/truncated.jpg"])
    table = prepare_images(_listing(paths), preprocess=PreprocessConfig())
    assert table.schema == PREPARED_SCHEMA
    df = table.to_pandas()
    assert df["status"].tolist() == ["ok"] * 4 + ["no_face", "error"]
    assert df["face_index"].tolist()[:4] == [0, 1, 2, 0] and df["faces"].tolist() == [3, 3, 3, 1, 0, 0]
    assert all(len(f) == 48 * 48 for f in df["face"][:4]) and df["face"][4:].isna().all()
    assert "truncated" in df["error"].iloc[5]

    predictor = FacePredictor(artifact_files(model_dir), run_id="r1")
    out = predictor(table)
    assert out.schema == OUTPUT_SCHEMA and out.num_rows == table.num_rows
    scored = out.to_pandas()
    assert prob_columns_sum_to_one(scored)
    assert scored["emotion"][:4].isin(EMOTIONS).all() and scored["emotion"][4:].isna().all()
    # The crop is exactly the shared preprocessing of the detected box: scores equal a direct predict_proba.
    art = load_artifact(model_dir)
    gray = decode_image(paths[0].read_bytes())
    box = tuple(int(v) for v in scored.loc[1, ["x", "y", "w", "h"]])
    direct = art.predict_proba(np.array(face_input(gray, box, art.preprocess)[None]))[0]
    np.testing.assert_allclose(scored.loc[1, [f"p_{e}" for e in EMOTIONS]].to_numpy(float), direct, atol=1e-5)
    # uncertain: the artifact's calibrated cut-off on the row's top probability; no value for no_face/error rows
    cut = art.uncertain_below if art.uncertain_below is not None else 0.0
    assert scored["uncertain"][:4].tolist() == (scored["confidence"][:4] < cut).tolist()
    assert scored["uncertain"][4:].isna().all()

    # batch_size bounds the faces of one forward pass (a fused actor's batch is a whole video segment): same rows
    small = FacePredictor(artifact_files(model_dir), run_id="r1", batch_size=3)
    passes = []
    forward = small.artifact.predict_logits
    small.artifact.predict_logits = lambda faces, device=None: passes.append(len(faces)) or forward(faces, device)
    chunked = small(table).to_pandas()
    views = 2 if small.artifact.flip_tta else 1  # flip TTA passes each face with its mirror image
    assert passes == [3 * views, 1 * views]  # the 4 faces as 3 + 1
    cols = [f"p_{e}" for e in EMOTIONS]
    np.testing.assert_allclose(chunked[cols].to_numpy(float), scored[cols].to_numpy(float), atol=1e-6)


def test_score_config_validation():
    with pytest.raises(ValueError, match="no inputs"):
        ScoreConfig(inputs=(), out="x")
    with pytest.raises(ValueError, match="batch_size"):
        ScoreConfig(inputs=("a",), out="x", batch_size=0)
    with pytest.raises(ValueError, match="save_crops"):
        ScoreConfig(inputs=("a",), out="x", save_crops="x/")
    assert ScoreConfig(inputs="a", out="x").inputs == ("a",)
    with pytest.raises(ValueError, match="actors"):
        ScoreConfig(inputs=("a",), out="x", actors=0)


def test_plan_fuses_cpu_inference_on_the_jobs_own_ray(monkeypatch):
    from fer_ray.runtime import RayConfig
    from fer_ray.score.plan import MAX_BLOCK_ROWS, plan_stages

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cores = os.cpu_count() or 1
    cfg = ScoreConfig(inputs="a", out="x")
    many = 10_000 * cores  # enough blocks for every core

    def layout(n, c=cfg, gpus=0.0):
        p = plan_stages(n, c, gpus, cpus=2 * cores)  # the job's own Ray advertises twice the cores
        return p.stages, p.actors

    assert layout(many) == ("fused", cores)  # one single-threaded actor per core
    assert layout(1) == ("fused", 1)  # no actor without a block to score
    assert layout(many, gpus=1) == ("split", 1)  # GPU actors only run the model
    cluster = ScoreConfig(inputs="a", out="x", ray=RayConfig(address="ray://head:10001"))
    assert layout(many, cluster) == ("split", 1)  # Ray Data sizes the CPU stage there
    assert plan_stages(many, cluster, 0, cpus=8).cpu_tasks is None
    assert layout(many, ScoreConfig(inputs="a", out="x", stages="split")) == ("split", 1)
    assert layout(many, ScoreConfig(inputs="a", out="x", stages="fused", actors=3), gpus=1) == ("fused", 3)

    # Blocks: a small collection spread over every CPU, a large one in ~4 blocks per CPU, capped in rows.
    assert plan_stages(40, cfg, 0, cpus=4).block_rows == 10
    assert plan_stages(4_000, cfg, 0, cpus=4).block_rows == 250
    assert plan_stages(10**7, cfg, 0, cpus=4).block_rows == MAX_BLOCK_ROWS
    # Split CPU tasks: the machine's cores, never more than the blocks; a run with nothing to score needs no Ray.
    split = ScoreConfig(inputs="a", out="x", stages="split")
    assert plan_stages(many, split, 0, cpus=2 * cores).cpu_tasks == cores
    assert plan_stages(1, split, 0, cpus=2 * cores).cpu_tasks == 1
    assert plan_stages(0, cfg, 0).block_rows == 1


# -- the Ray Data job ----------------------------------------------------------------------------------
def test_bundled_samples_local_folder(ray_local, tmp_path, model_dir):
    out, crops = tmp_path / "out", tmp_path / "crops"
    res = score(ScoreConfig(inputs=(str(EXAMPLES),), out=str(out), model=str(model_dir), save_crops=str(crops)))
    exp = expected()
    df = _rel(_rows(out), EXAMPLES)
    assert set(df["rel"]) == set(exp)  # images in = image rows out
    assert_exactly_once(df)
    for name, e in exp.items():
        g = df[df["rel"] == name].sort_values("face_index")
        if e.get("status") == "error":
            assert g["status"].tolist() == ["error"] and "truncated" in g["error"].iloc[0]
        elif e["faces"] == 0:
            assert g["status"].tolist() == ["no_face"] and g[["x", "p_happy", "emotion"]].isna().all().all()
        else:
            assert (g["status"] == "ok").all() and len(g) == e["faces"], name
        if "boxes" in e:  # boxes are in upright original-image pixels (EXIF applied), one per pasted face
            found = [tuple(int(v) for v in r) for r in g[["x", "y", "w", "h"]].to_numpy()]
            assert samples().matches(found, [tuple(b) for b in e["boxes"]]), (name, found)
            assert (g["image_width"] == e["size"][0]).all() and (g["image_height"] == e["size"][1]).all()
    crop_rows = df[df["rel"].str.startswith("crops/")]
    assert (crop_rows[["x", "y", "w", "h"]].to_numpy() == [0, 0, 48, 48]).all()
    assert prob_columns_sum_to_one(df)
    art = load_artifact(model_dir)
    assert (df["model_id"] == art.model_id).all() and (df["weights_sha256"] == art.meta["weights_sha256"]).all()
    assert list(pq.read_table(out / "rows").schema.names) == OUTPUT_SCHEMA.names

    s = json.loads((out / "summary.json").read_text())
    n_faces = sum(e["faces"] for e in exp.values())
    assert s["complete"] and s["images_in"] == s["image_rows_out"] == len(exp)
    assert s["faces"] == n_faces == res.summary["faces"] and sum(s["emotions"].values()) == n_faces
    assert s["images_by_status"] == {"ok": len(exp) - 2, "no_face": 1, "error": 1}
    assert s["errors_by_reason"] == {"corrupt or truncated image": 1}
    assert set(s["emotions_by_folder"]) == {"crops", "photos"} and s["model_id"] == art.model_id
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 and "truncated.jpg" in html
    assert len(list(crops.glob("*.png"))) == n_faces  # opt-in crops, one per face
    assert Image.open(next(crops.glob("*.png"))).size == (48, 48)

    # The report can be rebuilt from OUT alone.
    (out / "summary.json").unlink()
    (out / "report.html").unlink()
    rebuilt = write_report(str(out))
    assert rebuilt["complete"] and rebuilt["faces"] == n_faces and (out / "report.html").exists()


def test_whole_image_mode_and_overwrite_via_cli(ray_local, tmp_path, model_dir):
    from jobs.score import main

    copy_samples(tmp_path / "in", ["photos/group_of_three.jpg", "photos/pair_rotated_exif6.jpg"])
    args = [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--model", str(model_dir)]
    assert main([*args, "--whole-image"]) == 0
    df = _rows(tmp_path / "out").sort_values("path")
    assert len(df) == 2 and (df["status"] == "ok").all() and (df["faces"] == 1).all()
    assert df[["x", "y", "w", "h"]].to_numpy().tolist() == [[0, 0, 1200, 700], [0, 0, 700, 1000]]

    # --overwrite drops the earlier rows; without --whole-image the faces are detected.
    assert main([*args, "--overwrite"]) == 0
    df = _rows(tmp_path / "out")
    assert len(df) == 3 + 2 and df["run_id"].nunique() == 1 and (df["faces"] > 1).all()


def test_fused_stages_give_the_rows_of_the_split_pipeline(ray_local, tmp_path, model_dir):
    """--stages fused moves decode/detect into the actors: the same rows, bad files included."""
    frames = {}
    for stages, actors in (("split", 1), ("fused", 2)):
        out = tmp_path / stages
        res = score(ScoreConfig(inputs=(str(EXAMPLES),), out=str(out), model=str(model_dir), stages=stages,
                                actors=actors))  # fmt: skip
        assert res.summary["complete"] and res.summary["images_in"] == res.summary["image_rows_out"] == len(expected())
        assert (res.run["stages"], res.run["actors"]) == (stages, actors)
        frames[stages] = _rel(_rows(out), EXAMPLES).sort_values(["rel", "face_index"]).reset_index(drop=True)
    split, fused = frames["split"], frames["fused"]
    assert_exactly_once(fused)
    keys = ["rel", "face_index", "faces", "status", "error", "x", "y", "w", "h", "emotion"]
    pd.testing.assert_frame_equal(split[keys], fused[keys])
    probs = [f"p_{e}" for e in EMOTIONS]
    np.testing.assert_allclose(split[probs].to_numpy(float), fused[probs].to_numpy(float), atol=1e-6)


def test_real_fer_faces(ray_local, fer2013_path, tmp_path, model_dir):
    """FER2013 test faces (48x48 JPEG) in one folder per emotion: scored whole, as the model was trained."""
    t = pq.read_table(fer2013_path, columns=["image", "emotion", "usage", "source_name"]).slice(0, 600).to_pandas()
    t = t[t["usage"] == "PrivateTest"].groupby("emotion").head(3)
    for r in t.itertuples():
        (tmp_path / "fer" / r.emotion).mkdir(parents=True, exist_ok=True)
        (tmp_path / "fer" / r.emotion / Path(r.source_name).name).write_bytes(r.image)
    res = score(ScoreConfig(inputs=(str(tmp_path / "fer"),), out=str(tmp_path / "out"), model=str(model_dir)))
    df = _rows(tmp_path / "out")
    assert len(df) == len(t) and (df["status"] == "ok").all()
    assert res.summary["images_by_folder"] == t["emotion"].value_counts().to_dict()
    art = load_artifact(model_dir)
    r = df.iloc[0]
    direct = art.predict_proba(np.array([face_input(decode_image(Path(r["path"]).read_bytes()), None, art.preprocess)]))
    np.testing.assert_allclose(r[[f"p_{e}" for e in EMOTIONS]].to_numpy(float), direct[0], atol=1e-5)


def test_engine_detector_and_tta_choices_reach_the_rows(ray_local, tmp_path, model_dir):
    """--engine, --detector and --no-tta go from the CLI through the actors into every row and the run record."""
    import shutil

    from fer_ray.inference.artifact import sha256_file
    from fer_ray.inference.export import export_engines
    from jobs.score import main

    exported = tmp_path / "model"
    shutil.copytree(model_dir, exported)
    rng = np.random.default_rng(0)
    export_engines(exported, rng.integers(0, 256, (32, 48, 48), dtype=np.uint8))  # no validation: never int8 default
    src = tmp_path / "in"
    copy_samples(src, ["photos/group_of_three.jpg", "crops/astronaut.jpg"])
    args = [str(src), "--model", str(exported), "--out"]
    assert main([*args, str(tmp_path / "a"), "--engine", "onnx", "--detector", "haar", "--no-tta"]) == 0
    df = _rows(tmp_path / "a")
    assert (df["engine"] == "onnx").all() and (df["model_sha256"] == sha256_file(exported / "model.onnx")).all()
    assert (df["model_id"] == load_artifact(exported, engine="onnx").model_id).all()
    run = json.loads(next((tmp_path / "a" / "runs").glob("*.json")).read_text())
    assert (run["engine"], run["detector"], run["flip_tta"]) == ("onnx", "haar", False)
    crop = df[df["path"].str.contains("astronaut")].iloc[0]
    face = face_input(decode_image(Path(crop["path"]).read_bytes()), None, PreprocessConfig())
    single = load_artifact(exported, engine="onnx").predict_proba(face[None], flip_tta=False)[0]
    np.testing.assert_allclose(crop[[f"p_{e}" for e in EMOTIONS]].to_numpy(float), single, atol=1e-5)

    # Defaults: the artifact's engine (fp32 ONNX here: int8 has no recorded accuracy) and YuNet.
    assert main([*args, str(tmp_path / "b"), "--engine", "onnx-int8"]) == 0
    assert (_rows(tmp_path / "b")["engine"] == "onnx-int8").all()
    assert main([*args, str(tmp_path / "c")]) == 0
    run = json.loads(next((tmp_path / "c" / "runs").glob("*.json")).read_text())
    assert (run["engine"], run["detector"], run["flip_tta"]) == ("onnx", "yunet", False)  # model_dir: no TTA


def test_resume_incremental_and_half_written_part_file(ray_local, tmp_path, model_dir):
    src = tmp_path / "in"
    first = ["photos/group_of_three.jpg", "crops/grace_hopper.jpg", "other/coffee.jpg"]
    later = [
        "photos/upside_down_exif3.jpg",
        "crops/astronaut_blurred.jpg",
        "crops/grace_hopper_dark.jpg",
    ]
    copy_samples(src, first)
    out = tmp_path / "out"
    # Small batches so that the rows land in several part files.
    cfg = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir), images_per_task=1, batch_size=2)
    r1 = score(cfg)
    assert r1.run["images_scored"] == 3 and r1.summary["complete"]

    copy_samples(src, later)
    r2 = score(cfg)
    assert (r2.run["images_skipped"], r2.run["images_scored"]) == (3, 3)
    df = _rows(out)
    assert df["path"].nunique() == 6 and len(df) == 3 + 1 + 1 + 2 + 1 + 1
    assert_exactly_once(df)
    assert r2.summary["complete"] and r2.summary["images_in"] == 6

    parts = sorted((out / "rows").glob("part-*.parquet"))
    r3 = score(cfg)  # nothing new: no pipeline, no new files
    assert r3.run["images_scored"] == 0 and sorted((out / "rows").glob("part-*.parquet")) == parts

    # A run killed while writing leaves a part file without its footer: the next run deletes it
    # and scores exactly the images whose rows it held.
    victim = max(parts, key=lambda p: pq.read_metadata(p).num_rows)
    lost = pq.read_table(victim, columns=["path"]).column("path").unique().to_pylist()
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    r4 = score(cfg)
    assert [d["file"] for d in r4.run["removed_part_files"]] == [str(victim)]
    assert r4.run["images_scored"] == len(lost) and r4.summary["complete"]
    df = _rows(out)
    assert df["path"].nunique() == 6 and len(df) == 9
    assert_exactly_once(df)
    assert pq.read_table(out / "rows").schema.equals(OUTPUT_SCHEMA)  # files of three runs read as one table


def test_bad_inputs_become_error_rows(ray_local, tmp_path, model_dir):
    d = tmp_path / "bad"
    d.mkdir()
    good = copy_samples(d, ["crops/astronaut.jpg"])[0]
    (d / "zero.jpg").write_bytes(b"")
    (d / "truncated.jpg").write_bytes((EXAMPLES / "photos/group_of_three.jpg").read_bytes()[:700])
    (d / "noise.png").write_bytes(np.random.default_rng(0).bytes(3000))
    (d / "notes.txt").write_text("not an image\n")
    (d / "drawing.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    Image.new("L", (2000, 1000), 128).save(d / "huge.png")  # over max_pixels below
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (200, 300), np.uint8)).save(d / "big.bmp")
    names = ["zero.jpg", "truncated.jpg", "noise.png", "notes.txt", "drawing.svg", "huge.png", "big.bmp", "missing.jpg"]
    (d / "list.txt").write_text("\n".join([str(good.relative_to(d)), *names]) + "\n")
    cfg = ScoreConfig(inputs=(str(d / "list.txt"),), out=str(tmp_path / "out"), model=str(model_dir),
                      max_pixels=1_000_000, max_bytes=50_000)  # fmt: skip
    res = score(cfg)
    table = pq.read_table(tmp_path / "out" / "rows")
    assert table.schema.equals(OUTPUT_SCHEMA)
    df = table.to_pandas()
    df.index = df["path"].map(lambda p: Path(p).name)
    assert len(df) == 9 and df.loc[good.name, "status"] == "ok", df.loc[good.name, "error"]
    assert (df.loc[names, "status"] == "error").all() and df.loc[names, "error"].str.len().gt(0).all()
    s = res.summary
    assert s["complete"] and s["images_in"] == s["image_rows_out"] == 9
    assert s["errors_by_reason"] == {
        "empty file (0 bytes)": 1,
        "corrupt or truncated image": 1,
        "not an image / unsupported format": 3,
        "too many pixels (decompression bomb)": 1,
        "file too large (max_bytes)": 1,
        "file not found": 1,
    }


def test_s3_in_and_out(ray_local, s3_server, tmp_path, model_dir):
    from fer_ray.data.s3 import S3Settings

    settings = S3Settings.from_env()
    s3 = settings.client()
    s3.create_bucket(Bucket="fer-in")
    s3.create_bucket(Bucket="fer-out")
    for name in ["photos/group_of_three.jpg", "photos/phone_photo.heic", "crops/astronaut.jpg"]:
        s3.put_object(Bucket="fer-in", Key=name, Body=(EXAMPLES / name).read_bytes())
    s3.put_object(
        Bucket="fer-in",
        Key="more/two.png",
        Body=photo_bytes((900, 500), [(100, 150, 200, 200), (550, 120, 220, 220)], "PNG"),
    )
    s3.put_object(Bucket="fer-in", Key="more/broken.jpg", Body=b"\xff\xd8\xff\xe0 not really a jpeg")
    s3.put_object(Bucket="fer-in", Key="lists/extra.txt", Body=b"s3://fer-in/more/broken.jpg\ns3://fer-in/gone.jpg\n")
    inputs = ("s3://fer-in/photos/", "s3://fer-in/crops", "s3://fer-in/more/*.png", "s3://fer-in/lists/extra.txt")
    cfg = ScoreConfig(inputs=inputs, out="s3://fer-out/reports/run", model=str(model_dir))
    res = score(cfg)
    assert res.summary["complete"] and res.summary["images_in"] == 6
    assert res.summary["faces"] == 3 + 2 + 1 + 2

    fs = settings.filesystem()
    df = pq.read_table("fer-out/reports/run/rows", filesystem=fs).to_pandas()
    assert_exactly_once(df)
    by_path = df.groupby("path")["status"].first()
    assert by_path["s3://fer-in/more/broken.jpg"] == "error" and by_path["s3://fer-in/gone.jpg"] == "error"
    assert df[df["path"] == "s3://fer-in/gone.jpg"]["error"].iloc[0].startswith("not found")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="fer-out", Prefix="reports/run/")["Contents"]}
    assert {"reports/run/summary.json", "reports/run/report.html", "reports/run/inputs.parquet"} <= keys
    summary = json.loads(s3.get_object(Bucket="fer-out", Key="reports/run/summary.json")["Body"].read())
    assert summary["complete"] and summary["faces"] == res.summary["faces"]

    again = score(cfg)
    assert again.run["images_scored"] == 0 and again.summary["rows"] == len(df)
    store = OutputStore(cfg.out, settings)
    assert store.scan(store.read_inputs()).files == len(store.part_files())


def _html_table_rows(html: str) -> list[list[str]]:
    import re

    table = html.split("<table class='sortable'>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1])]


def test_report_image_table_least_confident_first_and_bounded(tmp_path):
    rng = np.random.default_rng(0)
    # 60 images: most with one face, some with two or none; confidences all distinct
    confs = rng.permutation(np.linspace(0.2, 0.99, 100)).round(4).tolist()
    images: list[list[float]] = []
    for i in range(60):
        n = 0 if i % 11 == 0 else (2 if i % 5 == 0 else 1)
        images.append([confs.pop() for _ in range(n)])
    write_scored(tmp_path / "out", images)
    summary = write_report(str(tmp_path / "out"), max_rows=10)

    with_faces = [(min(c), f"/photos/img{i:04d}.jpg", c) for i, c in enumerate(images) if c]
    want = sorted(with_faces)[:10]
    table = summary["least_confident"]
    assert table["images_with_faces"] == len(with_faces) and table["max_rows"] == 10
    assert [r["path"] for r in table["rows"]] == [p for _, p, _ in want]
    assert [r["confidence"] for r in table["rows"]] == [round(c, 4) for c, _, _ in want]
    assert all(r["faces"] == len(c) for r, (_, _, c) in zip(table["rows"], want, strict=True))

    html = (tmp_path / "out" / "report.html").read_text()
    rows = _html_table_rows(html)
    # paths are shown under the input root (the deepest folder holding every image)
    assert len(rows) == 10 and [r[0] for r in rows] == [p.removeprefix("/photos/") for _, p, _ in want]
    assert [float(r[3]) for r in rows] == sorted(float(r[3]) for r in rows)  # least confident first
    assert "holds every image" in html and "<script>" in html and "src=" not in html.split("<script>", 1)[1]
    assert "least_confident" not in json.loads((tmp_path / "out" / "summary.json").read_text())

    # a cap above the number of images lists all of them; 0 leaves the table out
    assert len(write_report(str(tmp_path / "out"), max_rows=1000)["least_confident"]["rows"]) == len(with_faces)
    write_report(str(tmp_path / "out"), max_rows=0)
    assert "<table class='sortable'>" not in (tmp_path / "out" / "report.html").read_text()


def test_noop_rerun_does_not_start_ray(ray_local, tmp_path, model_dir, monkeypatch):
    """A rerun with nothing new rewrites the report without Ray (its start-up would be most of the job);
    a changed input brings Ray back."""
    import fer_ray.score.driver as driver

    src, out = tmp_path / "in", tmp_path / "out"
    copy_samples(src, ["crops/astronaut.jpg", "crops/astronaut_blurred.jpg"])
    cfg = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir))
    first = score(cfg)
    assert first.run["images_scored"] == 2

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for a rerun with nothing to score")

    monkeypatch.setattr(driver, "init_ray", no_ray)
    again = score(cfg)
    assert again.run["images_scored"] == 0 and again.run["images_skipped"] == 2 and again.summary["complete"]
    assert again.summary["last_run"]["run_id"] == again.run["run_id"]  # the report is this run's
    (src / "astronaut.jpg").touch()  # changed mtime: rescored, so Ray is needed
    with pytest.raises(AssertionError, match="Ray was started"):
        score(cfg)


def test_cli_run_prints_no_error_level_line(tmp_path):
    """What a newcomer sees (`make demo`: the shipped model, whose ONNX files make the actors' constructor
    arguments large): a successful scoring run on its own local Ray prints no Ray error line (ray#53727's
    core_worker line needs restartable actors) and no traceback; the table and the report path."""
    import re
    import subprocess
    import sys

    src = tmp_path / "in"
    copy_samples(src, ["crops/astronaut.jpg", "photos/group_of_three.jpg"])
    repo = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        [sys.executable, str(repo / "jobs" / "score.py"), str(src), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if re.search(r" E \d+ \d+\]|\bERROR\b|Traceback", line)]
    assert errors == [], errors
    assert "complete: yes" in res.stdout and "report.html" in res.stdout
    # The rows' `uncertain` flags are counted in the summary, the table and the report.
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    rows = _rows(tmp_path / "out")
    assert summary["uncertain_faces"] == int(rows["uncertain"].fillna(False).astype(bool).sum())
    assert ("below the model's calibrated confidence cut-off" in res.stdout) == (summary["uncertain_faces"] > 0)
    page = (tmp_path / "out" / "report.html").read_text()
    assert f"faces ({100 * summary['uncertain_faces'] / summary['faces']:.0f}%) are uncertain" in page
    # The shipped model's per-emotion test accuracy, with its caution, in the table and the report.
    assert "accuracy   per emotion" in res.stdout and "FER2013 PrivateTest" in res.stdout
    assert "found (recall)" in page and "photos from elsewhere read worse" in page
