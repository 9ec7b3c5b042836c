"""fer_ray.video.clip, Serve's clip endpoint without Serve: generated clips -> tracks and timelines at the sampling
rate, limits and damaged files as errors that say what to do."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fer_ray.labels import EMOTIONS
from fer_ray.preprocess import PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.video.clip import CLIP_HINT, ClipTooLong, clip_faces, clip_response, is_clip
from fer_ray.video.config import VideoConfig
from fer_ray.video.decode import VideoError, probe
from tests.video_clips import RATE, make_clips

pytest.importorskip("av")
pytest.importorskip("cv2")

UNCERTAIN_BELOW = 0.3


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    return {name: p.read_bytes() for name, p in make_clips(tmp_path_factory.mktemp("clips")).items()}


def _score(data: bytes, fps: float = 2.0, whole_image: bool = False) -> dict:
    """The endpoint's JSON with made-up probabilities (varied, so emotions and summaries differ per face)."""
    faces = clip_faces(data, VideoConfig(fps=fps, max_duration_s=30), DetectConfig(), PreprocessConfig(), whole_image)
    assert faces.crops.shape == (len(faces.faces), 48, 48) and faces.crops.dtype == np.uint8
    probs = np.random.default_rng(0).dirichlet(np.ones(len(EMOTIONS)), len(faces.crops)).astype(np.float32)
    return clip_response(faces, probs, EMOTIONS, UNCERTAIN_BELOW)


@pytest.mark.parametrize("fps", [2, 5])
def test_one_moving_face_is_one_track_sampled_at_fps(clips, fps):
    body = _score(clips["moving"], fps)
    n = 5 * fps  # 5 s
    assert body["status"] == "ok"
    assert body["video"] == {"duration_s": 5.0, "fps": RATE, "width": 320, "height": 240, "sample_fps": fps,
                             "frames_sampled": n, "faces": n}  # fmt: skip
    assert [f["timestamp_s"] for f in body["frames"]] == pytest.approx([k / fps for k in range(n)])
    assert [f["frame_index"] for f in body["frames"]] == [k * RATE // fps for k in range(n)]
    (track,) = body["tracks"]
    timeline = track["timeline"]
    assert (track["track_id"], track["frames"], track["start_s"]) == (0, n, 0.0)
    assert track["end_s"] == track["duration_s"] == pytest.approx((n - 1) / fps)
    assert [p["frame_index"] for p in timeline] == [f["frame_index"] for f in body["frames"]]
    xs = [p["box"][0] for p in timeline]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 100  # the face moved right across the picture
    for p in timeline:  # each point says what the image endpoint says of a face
        probs = [p["probabilities"][e] for e in EMOTIONS]
        assert p["emotion"] == EMOTIONS[int(np.argmax(probs))] and p["confidence"] == pytest.approx(max(probs))
        assert p["uncertain"] == (max(probs) < UNCERTAIN_BELOW)
    mean = np.mean([[p["probabilities"][e] for e in EMOTIONS] for p in timeline], axis=0)
    np.testing.assert_allclose([track["mean_probabilities"][e] for e in EMOTIONS], mean, rtol=1e-5)
    counts = Counter(p["emotion"] for p in timeline)
    assert counts[track["dominant_emotion"]] == max(counts.values())
    assert track["uncertain_share"] == pytest.approx(np.mean([p["uncertain"] for p in timeline]))


def test_a_cut_splits_tracks_and_two_faces_are_two_tracks(clips):
    cut = _score(clips["cut"])
    assert [(t["track_id"], t["start_s"], t["end_s"], t["frames"]) for t in cut["tracks"]] == [
        (0, 0.0, 1.5, 4),
        (1, 2.0, 3.5, 4),
    ]
    assert [f["faces"] for f in cut["frames"]] == [1] * 8
    assert cut["tracks"][0]["timeline"][0]["box"][0] < 100 < cut["tracks"][1]["timeline"][0]["box"][0]
    two = _score(clips["two"])
    left, right = two["tracks"]
    assert (left["frames"], right["frames"], [f["faces"] for f in two["frames"]]) == (6, 6, [2] * 6)
    assert all(a["box"][0] < 160 < b["box"][0] for a, b in zip(left["timeline"], right["timeline"], strict=True))


def test_whole_image_is_one_face_per_frame(clips):
    body = _score(clips["two"], whole_image=True)
    (track,) = body["tracks"]
    assert track["frames"] == 6 and all(p["box"] is None for p in track["timeline"])


def test_no_face_clip(tmp_path):
    from tests.video_clips import scene, write_clip

    body = _score(write_clip(tmp_path / "empty_room.mp4", (scene([]) for _ in range(RATE))).read_bytes())
    assert body["status"] == "no_face" and body["tracks"] == [] and [f["faces"] for f in body["frames"]] == [0, 0]


def test_damaged_or_empty_clips_are_video_errors(clips, tmp_path):
    import cv2

    no_frames = tmp_path / "no_frames.mp4"  # a recording stopped before its first frame
    cv2.VideoWriter(str(no_frames), cv2.VideoWriter_fourcc(*"mp4v"), RATE, (320, 240)).release()
    cases = {
        "random bytes": (np.random.default_rng(0).bytes(20_000), "cannot open the video"),
        "truncated": (clips["cut"][: len(clips["cut"]) // 3], "cannot open the video"),
        "no frames": (no_frames.read_bytes(), "no video stream"),
        "empty": (b"", "empty"),
    }
    for name, (data, reason) in cases.items():
        with pytest.raises(VideoError, match=reason) as e:
            clip_faces(data, VideoConfig(), DetectConfig(), PreprocessConfig())
        assert not isinstance(e.value, ClipTooLong), name


def test_over_the_duration_limit_says_use_batch_scoring(clips):
    with pytest.raises(ClipTooLong, match=r"5\.0 s long, over the limit of 4 s") as e:
        clip_faces(clips["moving"], VideoConfig(max_duration_s=4), DetectConfig(), PreprocessConfig())
    assert CLIP_HINT in str(e.value) and "jobs/score.py" in CLIP_HINT
    assert (Path(__file__).resolve().parents[1] / "jobs" / "score.py").is_file()  # the hint names a real job
    # at the limit is within it
    assert len(clip_faces(clips["moving"], VideoConfig(max_duration_s=5), DetectConfig(), PreprocessConfig()).frames)


def test_over_the_frame_limit_says_sample_fewer(clips):
    """Every frame of a short clip can be more work than a request should hold: the limit is on frames to score."""
    every = VideoConfig(fps=0, max_duration_s=30, max_frames=20)
    info = probe(clips["moving"])
    assert every.samples_in(info.duration_s, info.fps) > 20  # the clip: 5 s at its own frame rate
    with pytest.raises(ClipTooLong, match=r"frames to score, over the limit of 20; sample fewer .*clip_fps") as e:
        clip_faces(clips["moving"], every, DetectConfig(), PreprocessConfig())
    assert CLIP_HINT in str(e.value)
    few = clip_faces(
        clips["moving"], VideoConfig(fps=2, max_duration_s=30, max_frames=10), DetectConfig(), PreprocessConfig()
    )
    assert len(few.frames) == 10  # 5 s at 2 fps: at the limit is within it


@pytest.mark.parametrize(
    ("content_type", "filename", "clip"),
    [
        ("video/mp4", None, True),
        ("video/quicktime; codecs=x", None, True),
        ("Video/X-Matroska", None, True),
        ("application/octet-stream", "talk.MKV", True),
        (None, "booth.m4v", True),
        ("image/jpeg", "odd.mp4", False),  # the client's type wins over the name
        ("image/jpeg", None, False),
        ("application/octet-stream", "photo.jpg", False),
        ("application/octet-stream", None, False),
    ],
)
def test_is_clip(content_type, filename, clip):
    assert is_clip(content_type, filename) is clip


MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00"


@pytest.mark.parametrize(
    ("content_type", "head", "clip"),
    [
        ("application/octet-stream", MP4_HEAD, True),
        ("application/octet-stream", b"\x00\x00\x00\x14ftypqt  ", True),  # QuickTime
        (None, b"\x00\x00\x00\x08wide\x00\x00", True),  # an older QuickTime file
        ("application/octet-stream", b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", True),  # Matroska / WebM
        ("application/octet-stream", b"RIFF\x00\x10\x00\x00AVI LIST", True),
        ("application/octet-stream", b"RIFF\x00\x10\x00\x00WEBPVP8 ", False),  # a WebP photo
        ("application/octet-stream", b"\x00\x00\x00\x18ftypheic\x00\x00", False),  # a HEIC photo
        ("application/octet-stream", b"\x00\x00\x00\x1cftypavif\x00\x00", False),  # an AVIF photo
        ("application/octet-stream", b"\xff\xd8\xff\xe0\x00\x10JFIF", False),
        ("image/jpeg", MP4_HEAD, False),  # the client's type wins over the bytes
    ],
)
def test_is_clip_by_first_bytes(content_type, head, clip):
    assert is_clip(content_type, None, head) is clip


def test_first_bytes_of_the_generated_clips_and_photos(clips):
    from tests.helpers_score import EXAMPLES

    assert all(is_clip("application/octet-stream", None, data[:16]) for data in clips.values())
    photos = [p for p in EXAMPLES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".heic", ".webp")]
    assert photos and not any(is_clip("application/octet-stream", None, p.read_bytes()[:16]) for p in photos)
