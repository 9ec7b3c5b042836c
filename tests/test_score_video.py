"""Videos in batch scoring on a real local Ray: frames in = frames out, tracks per person, errors as rows,
resume per segment, S3 input, videos and photos in one run."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fer_ray.inference.artifact import save_artifact
from fer_ray.models.config import ModelConfig
from fer_ray.models.registry import create_model
from fer_ray.score.config import ScoreConfig
from fer_ray.score.driver import score
from fer_ray.score.schema import OUTPUT_SCHEMA
from fer_ray.video.config import VideoConfig
from tests.helpers_score import assert_exactly_once, copy_samples
from tests.video_clips import make_clips

pytest.importorskip("av")
pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A freshly initialised artifact: the tests never depend on the trained model."""
    return save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    return make_clips(tmp_path_factory.mktemp("clips"))


def _folder(tmp_path: Path, clips: dict[str, Path]) -> Path:
    src = tmp_path / "in"
    copy_samples(src, ["crops/astronaut.jpg", "other/coffee.jpg"])
    (src / "clips").mkdir()
    for name in ("moving", "two"):
        os.link(clips[name], src / "clips" / f"{name}.mp4")
    (src / "clips" / "empty.mp4").write_bytes(b"")
    data = clips["cut"].read_bytes()
    (src / "clips" / "cut_short.mov").write_bytes(data[: len(data) // 3])  # truncated: no index
    return src


def _videos(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    v = df[df["segment"].notna() | df["path"].str.contains("/clips/")]
    return {Path(p).name: g.sort_values(["frame_index", "face_index"]) for p, g in v.groupby("path")}


def _closing_progress_line(caplog) -> str:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("scoring: ")][-1]


def test_videos_and_photos_in_one_run(ray_local, tmp_path, clips, model_dir, caplog):
    src = _folder(tmp_path, clips)
    out = tmp_path / "out"
    cfg = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir), video=VideoConfig(fps=2, segment_s=2))
    with caplog.at_level(logging.INFO, logger="fer_ray.progress"):
        res = score(cfg)
    n = res.run["images_scored"]
    assert _closing_progress_line(caplog).startswith(f"scoring: {n}/{n} inputs (100%)")  # photos and segments
    table = pq.read_table(out / "rows")
    assert table.schema.equals(OUTPUT_SCHEMA)
    df = table.to_pandas()

    images = df[df["segment"].isna() & ~df["path"].str.contains("/clips/")]
    assert_exactly_once(images)
    assert images["frame_index"].isna().all() and images["track_id"].isna().all()
    assert sorted(images["status"]) == ["no_face", "ok"]

    v = _videos(df)
    # 5 s at 2 fps: the frames on screen at 0, 0.5, ..., 4.5 s, in 3 segments of 2 s (the last 1 s long)
    moving = v["moving.mp4"]
    assert moving["timestamp_s"].tolist() == pytest.approx([k / 2 for k in range(10)])
    assert moving["frame_index"].tolist() == [15 * k for k in range(10)]
    assert moving["segment"].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert (moving["status"] == "ok").all() and (moving["faces"] == 1).all()
    assert (moving["track_id"] == 0).all() and moving["x"].is_monotonic_increasing
    two = v["two.mp4"]
    assert len(two) == 2 * 6 and (two["faces"] == 2).all()
    assert two.groupby("frame_index")["face_index"].apply(sorted).tolist() == [[0, 1]] * 6
    for name in ("empty.mp4", "cut_short.mov"):
        bad = v[name]
        assert len(bad) == 1 and bad["status"].iloc[0] == "error" and bad["segment"].isna().all(), bad
    assert "empty" in v["empty.mp4"]["error"].iloc[0]

    # one person track per face, joined across the 2 s segments
    tracks = pd.read_parquet(out / "tracks")
    per_video = tracks.groupby(tracks["path"].map(lambda p: Path(p).name))
    assert per_video.size().to_dict() == {"moving.mp4": 1, "two.mp4": 2}
    moving_track = tracks[tracks["path"].str.endswith("moving.mp4")].iloc[0]
    assert (moving_track["frames"], moving_track["start_s"], moving_track["end_s"]) == (10, 0.0, 4.5)
    assert [list(m) for m in moving_track["segment_tracks"]] == [[0, 0], [1, 0], [2, 0]]

    s = res.summary
    assert s["complete"] and s["images_in"] == 2 and s["videos_in"] == 4
    assert (s["video_segments_in"], s["video_segments_out"]) == (3 + 2 + 1 + 1, 3 + 2 + 1 + 1)
    assert s["frames_sampled"] == 10 + 6 and s["tracks"] == 3 and s["video_segments_failed"] == 2
    assert json.loads((out / "summary.json").read_text())["videos_in"] == 4
    page = (out / "report.html").read_text()
    timelines = re.findall(r"<img alt='Timeline of ([^']+)'", page)
    assert sorted(timelines) == ["clips/moving.mp4", "clips/two.mp4"]  # per video, under the input root


def test_video_resume_per_segment_and_rescore_on_change(ray_local, tmp_path, clips, model_dir, caplog):
    src = tmp_path / "in"
    src.mkdir()
    video = src / "moving.mp4"
    video.write_bytes(clips["moving"].read_bytes())
    out = tmp_path / "out"
    # one segment per task and per part file, so a lost file loses exactly its segment
    cfg = ScoreConfig(inputs=(str(src),), out=str(out), model=str(model_dir), video=VideoConfig(fps=2, segment_s=1),
                      images_per_task=1, rows_per_file=1)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="fer_ray.progress"):
        first = score(cfg)
    assert first.run["images_scored"] == 5  # five segments
    assert _closing_progress_line(caplog).startswith("scoring: 5/5 video segments (100%)")
    rows = pd.read_parquet(out / "rows")
    assert len(rows) == 10

    # a run killed while writing leaves a part file without its footer: only its segment is scored again
    victim = next(p for p in sorted((out / "rows").glob("part-*.parquet")) if pq.read_metadata(p).num_rows)
    lost = set(pq.read_table(victim, columns=["segment"]).column("segment").to_pylist())
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fer_ray.video.stage"):
        again = score(cfg)
    assert again.run["images_scored"] == len(lost) == 1
    assert "1 videos: 0 probed, 1 cut as OUT's inputs record" in caplog.text  # the rerun did not probe it again
    rows = pd.read_parquet(out / "rows")
    assert len(rows) == 10 and rows["frame_index"].is_unique
    assert score(cfg).run["images_scored"] == 0

    # a changed video (new mtime) is scored again, its old rows dropped; so is one sampled at another rate
    os.utime(video, (video.stat().st_atime, video.stat().st_mtime + 10))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fer_ray.video.stage"):
        assert score(cfg).run["images_scored"] == 5
    assert "1 videos: 1 probed, 0 cut" in caplog.text
    assert len(pd.read_parquet(out / "rows")) == 10
    faster = score(ScoreConfig(**{**cfg.__dict__, "video": VideoConfig(fps=4, segment_s=1)}))
    assert faster.run["images_scored"] == 5
    rows = pd.read_parquet(out / "rows")
    # the frames on screen at k / 4 s of a 30 fps clip
    assert len(rows) == 20 and sorted(rows["frame_index"]) == [int(k * 30 / 4) for k in range(20)]


def test_every_frame_and_s3_video(ray_local, s3_server, tmp_path, clips, model_dir):
    from fer_ray.data.s3 import S3Settings

    settings = S3Settings.from_env()
    s3 = settings.client()
    s3.create_bucket(Bucket="fer-video")
    s3.put_object(Bucket="fer-video", Key="clips/two.mp4", Body=clips["two"].read_bytes())
    out = tmp_path / "out"
    cfg = ScoreConfig(inputs=("s3://fer-video/clips/",), out=str(out), model=str(model_dir), video=VideoConfig(fps=0))
    res = score(cfg)
    df = pd.read_parquet(out / "rows")
    assert res.summary["complete"] and res.summary["frames_sampled"] == 90  # 3 s at 30 fps, every frame
    assert len(df) == 180 and df["frame_index"].nunique() == 90 and set(df["track_id"]) == {0, 1}
    assert (df["path"] == "s3://fer-video/clips/two.mp4").all()
