"""Video input (fer_ray.video): decoding by segment equals one pass, clear errors, tracks, summaries.

Clips are written by the tests with OpenCV's ``mp4v`` writer (its default keyframe every 12
frames, so segments start between keyframes) from the bundled public-domain face crops.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fer_ray.video.config import VideoConfig
from fer_ray.video.decode import VideoError, probe, sample_frames, segments
from fer_ray.video.track import PROB_COLUMNS, Tracker, iou, track_faces, track_summaries
from tests.video_clips import RATE, H, W, make_clips

cv2 = pytest.importorskip("cv2")
av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    return make_clips(tmp_path_factory.mktemp("clips"))


def _single_pass(path: Path, fps: float) -> list[tuple[int, float, np.ndarray]]:
    """The reference: decode every frame with plain PyAV, then pick the frame on screen at each k / fps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    picked = list(range(len(frames)))
    if fps:
        end = frames[-1][0] + 1 / RATE
        on_screen = [
            max(i for i, (t, _) in enumerate(frames) if t <= k / fps + 1e-9) for k in range(math.ceil(end * fps))
        ]
        picked = sorted(set(on_screen))
    return [(round(frames[i][0] * RATE), frames[i][0], frames[i][1]) for i in picked]


def _decode_all(source, cfg: VideoConfig, parallel: bool = False) -> list:
    segs = segments(probe(source), cfg)
    if not parallel:
        return [f for s in segs for f in sample_frames(source, s, cfg)]
    with ThreadPoolExecutor(4) as pool:  # as Ray tasks would: each segment opens the file on its own
        return [f for part in pool.map(lambda s: list(sample_frames(source, s, cfg)), segs) for f in part]


def test_probe(clips):
    info = probe(clips["moving"])
    assert (info.width, info.height, info.frames, info.fps) == (W, H, 5 * RATE, RATE)
    assert info.duration_s == pytest.approx(5.0)
    assert probe(clips["moving"].read_bytes()) == info  # bytes (what an S3 read gives) probe alike


@pytest.mark.parametrize("fps, expected", [(0, 150), (1, 5), (2, 10), (5, 25)])
def test_sampled_frames_equal_a_single_pass(clips, fps, expected):
    ref = _single_pass(clips["moving"], fps)
    got = _decode_all(clips["moving"], VideoConfig(fps=fps, segment_s=600))
    assert len(got) == len(ref) == expected
    assert [(f.index, f.timestamp_s) for f in got] == [(i, t) for i, t, _ in ref]
    if fps:  # sample times k / fps land on frames exactly (30 fps clip)
        assert [f.timestamp_s for f in got] == pytest.approx([k / fps for k in range(expected)])
    assert all(np.array_equal(f.image, img) for f, (_, _, img) in zip(got, ref, strict=True))
    assert got[0].image.shape == (H, W, 3) and got[0].image.dtype == np.uint8


@pytest.mark.parametrize("fps", [0, 1, 2, 5, 7])
@pytest.mark.parametrize("segment_s", [0.7, 1.0])
def test_segments_in_parallel_yield_exactly_one_pass(clips, fps, segment_s):
    one = _decode_all(clips["moving"], VideoConfig(fps=fps, segment_s=600))
    cfg = VideoConfig(fps=fps, segment_s=segment_s)
    assert len(segments(probe(clips["moving"]), cfg)) > 1
    parts = _decode_all(clips["moving"], cfg, parallel=True)
    assert [(f.index, f.timestamp_s) for f in parts] == [(f.index, f.timestamp_s) for f in one]  # no dup, no gap
    assert all(np.array_equal(a.image, b.image) for a, b in zip(parts, one, strict=True))
    decode_all = _decode_all(clips["moving"], VideoConfig(fps=fps, segment_s=segment_s, skip_gops=False))
    assert [f.index for f in decode_all] == [f.index for f in one]


def test_bytes_source_and_gray_frames(clips):
    cfg = VideoConfig(fps=2)
    seg = segments(probe(clips["moving"]), cfg)[0]
    from_bytes = list(sample_frames(clips["moving"].read_bytes(), seg, cfg, pixel_format="gray"))
    from_path = list(sample_frames(str(clips["moving"]), seg, cfg))
    assert [f.index for f in from_bytes] == [f.index for f in from_path]
    assert from_bytes[0].image.shape == (H, W)


def test_segments_cover_the_video_once():
    from fer_ray.video.decode import VideoInfo

    info = VideoInfo(duration_s=130.0, fps=30.0, frames=3900, width=W, height=H, codec="h264")
    segs = segments(info, VideoConfig(segment_s=60))
    assert [(s.index, s.start_s, s.end_s, s.last) for s in segs] == [
        (0, 0.0, 60.0, False),
        (1, 60.0, 120.0, False),
        (2, 120.0, 130.0, True),
    ]
    # a remainder under a tenth of a segment joins the one before
    assert [s.end_s for s in segments(VideoInfo(123.0, 30.0, 3690, W, H, "h264"), VideoConfig(segment_s=60))] == [
        60.0,
        123.0,
    ]


def test_bad_files_raise_a_clear_error(clips, tmp_path):
    data = clips["moving"].read_bytes()
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    writer = cv2.VideoWriter(str(tmp_path / "no_frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), RATE, (W, H))
    writer.release()  # a recording stopped before its first frame
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])  # mp4v writes its index last
    cases = {
        empty: "empty",
        b"": "empty",
        b"\x00not a video" * 100: "cannot open",
        tmp_path / "truncated.mp4": "cannot open",
        tmp_path / "no_frames.mp4": "no video stream",
        tmp_path / "missing.mp4": "no such video file",
    }
    for source, message in cases.items():
        with pytest.raises(VideoError, match=message):
            probe(source)
    seg = segments(probe(clips["moving"]), VideoConfig())[0]
    with pytest.raises(VideoError, match="cannot open"):
        next(sample_frames(b"\x00not a video" * 100, seg, VideoConfig()))


def test_config_rejects_bad_values():
    for kw in ({"fps": -1}, {"segment_s": 0}, {"track_iou": 0}, {"track_max_gap": -1}, {"max_frames": 0}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            VideoConfig(**kw)


def _yunet_tracks(path: Path, fps: float = 5) -> list[list[int]]:
    """Sampled frames -> YuNet boxes (the scoring detector, fer_ray.score.faces) -> track ids per frame."""
    from fer_ray.score.config import DetectConfig
    from fer_ray.score.faces import detect_faces

    cfg = VideoConfig(fps=fps, segment_s=600)
    frames = [f for s in segments(probe(path), cfg) for f in sample_frames(path, s, cfg, pixel_format="gray")]
    return track_faces((detect_faces(f.image, DetectConfig()) for f in frames), cfg)


def test_yunet_track_survives_small_motion(clips):
    ids = _yunet_tracks(clips["moving"])
    assert len(ids) == 25 and all(frame == [0] for frame in ids)


def test_yunet_tracks_split_at_a_cut(clips):
    ids = _yunet_tracks(clips["cut"])
    assert ids == [[0]] * 10 + [[1]] * 10


def test_yunet_two_faces_keep_two_ids(clips):
    ids = _yunet_tracks(clips["two"])
    assert len(ids) == 15 and all(frame == [0, 1] for frame in ids)


def test_tracker_gaps_and_deterministic_ids():
    cfg = VideoConfig(track_max_gap=2)
    box = (100, 100, 50, 50)
    # missing for 2 sampled frames: same track; missing for 3: a new one
    assert track_faces([[box], [], [], [box], [], [], [], [box]], cfg) == [[0], [], [], [0], [], [], [], [1]]
    # two new faces in one frame: ids left to right whatever order the detector gave them
    assert Tracker(cfg).update([(200, 10, 40, 40), (10, 10, 40, 40)]) == [1, 0]
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(1 / 3) and iou((0, 0, 1, 1), (2, 2, 1, 1)) == 0


def test_landmarks_decide_between_equally_overlapping_tracks():
    marks = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], float)  # eyes, nose, mouth corners
    tracker = Tracker(VideoConfig(track_iou=0.3))
    assert tracker.update([(0, 0, 40, 40), (20, 0, 40, 40)], [marks, marks + (20, 0)]) == [0, 1]
    # the next face overlaps both tracks equally (IoU 0.6); its landmarks sit where track 1's were
    assert tracker.update([(10, 0, 40, 40)], [marks + (20, 0)]) == [1]
    with pytest.raises(ValueError, match="landmark"):
        tracker.update([(0, 0, 40, 40)], [])


def _row(track, t, probs, emotion, uncertain, path="a.mp4", status="ok"):
    return {
        "path": path,
        "track_id": track,
        "timestamp_s": t,
        **dict(zip(PROB_COLUMNS, probs, strict=True)),
        "emotion": emotion,
        "uncertain": uncertain,
        "status": status,
    }


def test_track_summaries_on_hand_made_rows():
    from fer_ray.score.schema import PROB_COLUMNS as SCHEMA_PROBS

    assert PROB_COLUMNS == SCHEMA_PROBS
    happy = [0, 0, 0, 0.8, 0, 0, 0.2]  # angry disgust fear happy sad surprise neutral
    neutral = [0, 0, 0, 0.2, 0, 0, 0.8]
    rows = [
        _row(1, 0.5, neutral, "neutral", True),
        _row(0, 0.0, happy, "happy", False),
        _row(0, 0.5, happy, "happy", True),
        _row(0, 1.0, neutral, "neutral", False),
        _row(None, 1.0, [0] * 7, "", False, status="no_face"),
        _row(0, 2.0, happy, "happy", False, path="b.mp4"),
    ]
    a0, a1, b0 = track_summaries(rows)
    assert (a0["path"], a0["track_id"], a0["start_s"], a0["end_s"], a0["duration_s"], a0["frames"]) == (
        "a.mp4", 0, 0.0, 1.0, 1.0, 3,
    )  # fmt: skip
    assert a0["dominant_emotion"] == "happy" and a0["uncertain_share"] == pytest.approx(1 / 3)
    assert a0["p_happy"] == pytest.approx(0.6) and a0["p_neutral"] == pytest.approx(0.4)
    assert (a1["track_id"], a1["duration_s"], a1["frames"], a1["dominant_emotion"]) == (1, 0.0, 1, "neutral")
    assert a1["uncertain_share"] == 1.0
    assert (b0["path"], b0["frames"]) == ("b.mp4", 1)
    # a tie in frames goes to the higher mean probability
    tie = track_summaries([_row(0, 0, happy, "happy", False), _row(0, 1, [0, 0, 0, 0.1, 0, 0, 0.9], "neutral", False)])
    assert tie[0]["dominant_emotion"] == "neutral"


def test_tracks_join_across_segments_as_one_pass_would():
    """Segments are tracked apart (ids from 0 in each); a face that goes on over the boundary in the same
    place is one person track, one that starts elsewhere or after a gap is another."""
    happy = [0, 0, 0, 0.8, 0, 0, 0.2]

    def row(segment, track, t, x):
        return {**_row(track, t, happy, "happy", False), "segment": segment, "x": x, "y": 50, "w": 100, "h": 100}

    cfg = VideoConfig(fps=2, segment_s=1, track_max_gap=0)
    rows = [row(0, 0, 0.0, 10), row(0, 0, 0.5, 12), row(0, 1, 0.5, 200)]  # segment 0: two faces
    rows += [row(1, 0, 1.0, 14), row(1, 0, 1.5, 16), row(1, 1, 1.5, 200)]  # face 1 missed the sample at 1.0 s
    rows += [row(2, 0, 2.0, 18)]
    summaries = track_summaries(reversed(rows), cfg)  # row order does not matter
    assert [(s["track_id"], s["frames"], s["start_s"], s["end_s"]) for s in summaries] == [
        (0, 5, 0.0, 2.0),
        (1, 1, 0.5, 0.5),
        (2, 1, 1.5, 1.5),
    ]
    assert summaries[0]["segment_tracks"] == [[0, 0], [1, 0], [2, 0]]
    # with a gap of one sample allowed, face 1 goes on over the boundary as it would in one pass
    joined = track_summaries(rows, VideoConfig(fps=2, segment_s=1, track_max_gap=1))
    assert [s["segment_tracks"] for s in joined] == [[[0, 0], [1, 0], [2, 0]], [[0, 1], [1, 1]]]
    assert track_summaries([{**r, "x": r["x"] + 150 * r["segment"]} for r in rows], cfg)[0]["frames"] == 2  # moved


def test_a_rerun_cuts_unchanged_videos_as_recorded_without_probing(clips, tmp_path):
    """OUT's recorded inputs stand in for probing when the video and the cut are the same; anything else is probed."""
    import pandas as pd

    from fer_ray.video.stage import expand_segments

    video = tmp_path / "moving.mp4"
    video.write_bytes(clips["moving"].read_bytes())
    st = video.stat()
    listing = pd.DataFrame({"path": [str(video)], "size": [st.st_size], "mtime": [st.st_mtime], "error": [None]})
    cfg = VideoConfig(fps=2, segment_s=2)
    first = expand_segments(listing, cfg, None)
    assert first["segment"].tolist() == [0, 1, 2] and first["last"].tolist() == [False, False, True]  # 5 s
    video.unlink()  # a probe would now fail: a reused cut proves that nothing was probed
    again = expand_segments(listing, cfg, None, known=first)
    pd.testing.assert_frame_equal(again, first)
    for other in (VideoConfig(fps=4, segment_s=2), VideoConfig(fps=2, segment_s=1), VideoConfig(fps=2, max_frames=99)):
        assert expand_segments(listing, other, None, known=first)["error"].str.contains("no such video file").all()
    changed = listing.assign(size=st.st_size + 1)
    assert expand_segments(changed, cfg, None, known=first)["error"].notna().all()
    assert (
        expand_segments(listing, VideoConfig(fps=2, segment_s=2, max_duration_s=4), None, known=first)["error"]
        .notna()
        .all()
    )  # 5 s: over the limit, so probed (and here: gone)
