"""Ray Serve online scoring: a real Serve app deployed from serve_config.yaml on the session's local Ray,
real HTTP on 127.0.0.1: API key, routes, content types, limits, the page's HTML, video clips, concurrency and
faults."""

from __future__ import annotations

import io
import json
import re
import secrets
import select
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from fer_ray.labels import EMOTIONS
from fer_ray.preprocess import PreprocessConfig
from fer_ray.score.config import DetectConfig
from fer_ray.score.faces import faces_from_bytes
from fer_ray.serve import API_KEY_ENV, API_KEY_FILE_ENV, ServeConfig, build_app, is_loopback, resolve_api_key
from fer_ray.video.clip import clip_faces, clip_response
from fer_ray.video.config import VideoConfig
from tests.fer_fixtures import absolute_paths
from tests.helpers_score import samples
from tests.video_clips import RATE, make_clips

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "images"
SERVE_CONFIG = ROOT / "serve_config.yaml"
APP = "fer_serve_test"
PREFIX = "/fer-test"
BODY_LIMIT = 1_000_000  # small, so the 413 test needs little data
MAX_FILES = 3
BODY_TIMEOUT_S = 3.0  # short, so the slow-drip test is quick
CLIP_LIMIT = 200_000  # bytes: under BODY_LIMIT, so a clip's own limit is what a multipart upload meets
MAX_CLIP_S = 4.0  # seconds: tests/video_clips.py's 3 s clip passes, its 5 s one does not
MAX_CLIP_FRAMES = 7  # at 2 fps: the 3 s clip's 6 frames pass, the 4 s one's 8 do not (though within MAX_CLIP_S)
TIMEOUT = 60  # seconds per request: the 2-core CI machine may be busy with other Ray work
KEY = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {KEY}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A 57-byte PNG whose header claims 2.5 gigapixels (no pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory) -> Path:
    import torch

    from fer_ray.inference.artifact import save_artifact
    from fer_ray.models.config import ModelConfig
    from fer_ray.models.registry import create_model

    torch.manual_seed(0)
    return save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def artifact(artifact_dir):
    from fer_ray.inference.artifact import load_artifact

    return load_artifact(artifact_dir)


def config_args() -> dict:
    """The ``args`` of the one application in the repo's serve_config.yaml."""
    apps = yaml.safe_load(SERVE_CONFIG.read_text())["applications"]
    assert len(apps) == 1 and apps[0]["import_path"] == "fer_ray.serve:build_app"
    return dict(apps[0]["args"])


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("secret") / "api_key"
    p.write_text(KEY + "\n")
    p.chmod(0o600)
    return p


@pytest.fixture(scope="module")
def url(ray_local, artifact_dir, key_file) -> str:
    """Base URL of a real Serve app built from serve_config.yaml's args (test model, small limits, a key file);
    deleted (and Serve shut down) after this module, Ray stays up."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = config_args() | {
        "model": str(artifact_dir),
        "max_batch_size": 8,
        "max_ongoing_requests": 32,
        "max_body_bytes": BODY_LIMIT,
        "max_files": MAX_FILES,
        "body_timeout_s": BODY_TIMEOUT_S,
        "max_clip_bytes": CLIP_LIMIT,
        "max_clip_s": MAX_CLIP_S,
        "max_clip_frames": MAX_CLIP_FRAMES,
        "api_key_file": str(key_file),
    }
    # Replicas log every request at INFO (access logs, useful in production); here they would interleave
    # with pytest's own output, so only warnings and errors are kept.
    serve.run(build_app(args), name=APP, route_prefix=PREFIX, logging_config={"log_level": "WARNING"})
    yield f"http://127.0.0.1:{port}{PREFIX}"
    serve.delete(APP)
    serve.shutdown()


def _post(url: str, data: bytes, content_type: str | None = "image/jpeg", path: str = "/v1/predict", **params):
    headers = dict(AUTH)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(f"{url}{path}", data=data, headers=headers, params=params, timeout=TIMEOUT)


def _batch_scoring(artifact, data: bytes, whole_image: bool = False) -> tuple[list, np.ndarray]:
    """What batch scoring computes for an image: its decode/detect/crop path, then predict_proba."""
    boxes, crops, _ = faces_from_bytes(data, DetectConfig(), artifact.preprocess, whole_image)
    probs = artifact.predict_proba(np.stack(crops)) if crops else np.zeros((0, len(EMOTIONS)))  # (N, K)
    return [None if b is None else [int(v) for v in b] for b in boxes], probs


def _check_ok(body: dict, artifact, data: bytes, n_faces: int, whole_image: bool = False) -> None:
    assert body["status"] == "ok" and body["model_id"] == artifact.model_id
    assert len(body["faces"]) == n_faces
    got = np.array([[f["probabilities"][e] for e in EMOTIONS] for f in body["faces"]])
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    boxes, probs = _batch_scoring(artifact, data, whole_image)
    assert [f["box"] for f in body["faces"]] == boxes  # the same faces as a batch report ...
    np.testing.assert_allclose(got, probs, atol=1e-5)  # ... with the same probabilities
    for f, p in zip(body["faces"], got, strict=True):
        assert f["emotion"] == EMOTIONS[int(p.argmax())] and f["confidence"] == pytest.approx(p.max())


def _crop_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted((EXAMPLES / "crops").glob("*.jpg"))]


# -- config, key and app builder (no Ray needed) ------------------------------------------------
def test_config_from_serve_run_args(artifact_dir):
    cfg = ServeConfig.from_args(
        {"model": str(artifact_dir), "replicas": "2", "max_batch_size": "16", "min_face": "40", "max_pixels": "none"}
    )
    assert (cfg.num_replicas, cfg.max_batch_size, cfg.detect.min_face, cfg.max_pixels) == (2, 16, 40, None)
    auto = ServeConfig.from_args({"autoscaling_config": '{"min_replicas": 1, "max_replicas": 3}', "replicas": "auto"})
    assert auto.autoscaling_config == {"min_replicas": 1, "max_replicas": 3} and auto.num_replicas == "auto"
    with pytest.raises(ValueError, match="unknown argument 'port'.*model"):
        ServeConfig.from_args({"port": "8000"})  # HTTP comes from http_options, not from the app's args
    assert ServeConfig.from_args({"detect_max_side": "320"}).detect.max_side == 320  # a flag's spelling works too
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        ServeConfig(max_batch_size=64, max_ongoing_requests=8)
    with pytest.raises(ValueError, match="num_replicas"):
        ServeConfig(num_replicas="many")
    assert ServeConfig.from_args({"engine": "onnx"}).engine == "onnx"
    assert ServeConfig.from_args({"engine": "null"}).engine is None
    with pytest.raises(ValueError, match="unknown inference engine 'tensorrt'"):
        ServeConfig.from_args({"engine": "tensorrt"})
    with pytest.raises(ValueError, match="max_files"):
        ServeConfig(max_files=0)
    clip = ServeConfig.from_args({"max_clip_s": "10", "max_clip_bytes": "5000000", "clip_fps": "0"})
    assert (clip.max_clip_s, clip.max_clip_bytes, clip.clip_fps) == (10.0, 5_000_000, 0.0)
    assert (ServeConfig().max_clip_s, ServeConfig().clip_fps) == (30.0, VideoConfig().fps)
    tracked = ServeConfig.from_args({"track_max_gap": "0", "track_iou": "0.5"}).clip_video()
    assert (tracked.track_max_gap, tracked.track_iou, tracked.fps, tracked.max_duration_s) == (0, 0.5, 2.0, 30.0)
    assert ServeConfig().clip_video() == VideoConfig(max_duration_s=30.0, max_frames=300)  # scoring's, the limits
    bads = ({"clip_fps": -1}, {"max_clip_s": 0}, {"max_clip_bytes": 0}, {"max_clip_frames": 0}, {"track_iou": 0})
    for bad in (*bads, {"track_max_gap": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServeConfig(**bad)
    with pytest.raises(FileNotFoundError, match="not a fer_ray model artifact"):
        build_app({"model": str(artifact_dir / "missing")})


@pytest.mark.parametrize("name", ["api_key", "API_KEY", "token", "key"])
def test_a_key_is_never_an_app_arg(name):
    # Serve prints application args back (serve config, dashboard): the key must come from elsewhere.
    with pytest.raises(ValueError, match=f"{API_KEY_ENV}.*api_key_file"):
        ServeConfig.from_args({name: KEY})


def test_api_key_from_env_or_file(tmp_path):
    assert resolve_api_key(None, {}) is None  # no key: an open service
    assert resolve_api_key(None, {API_KEY_ENV: f"  {KEY}\n"}) == KEY
    f = tmp_path / "key"
    f.write_text(KEY + "\n")
    other = tmp_path / "other"
    other.write_text("x" * 20)
    assert resolve_api_key(None, {API_KEY_FILE_ENV: str(f), API_KEY_ENV: "y" * 20}) == KEY  # the file wins
    assert resolve_api_key(str(other), {API_KEY_FILE_ENV: str(f)}) == "x" * 20  # the config's file wins
    with pytest.raises(ValueError, match="cannot read the API key file"):
        resolve_api_key(str(tmp_path / "missing"), {})  # a named file that is missing never means "open"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="at least 16"):
        resolve_api_key(str(tmp_path / "empty"), {})
    with pytest.raises(ValueError, match="at least 16"):
        resolve_api_key(None, {API_KEY_ENV: "short"})
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.5", "example.org")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_serve_config_yaml_is_a_valid_serve_deploy_config():
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(SERVE_CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(raw)
    assert schema.http_options.host == "127.0.0.1"  # loopback unless the user opens it up
    cfg = ServeConfig.from_args(config_args())  # every arg is a ServeConfig field, none is a secret
    assert cfg.model is None and cfg.api_key_file is None  # the shipped model; the key stays out of the file
    assert not any(word in name for name in config_args() for word in ("secret", "token", "password"))


def test_app_builder_follows_serve_convention(artifact_dir):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    # What `serve run fer_ray.serve:build_app model=...` does with the command-line args.
    app = call_user_app_builder_with_args_if_necessary(build_app, {"model": str(artifact_dir), "replicas": "1"})
    assert isinstance(app, Application)
    # `serve run fer_ray.serve:app`: the same builder under a plain name, the shipped model without args
    from ray._common.utils import import_attr

    assert isinstance(call_user_app_builder_with_args_if_necessary(import_attr("fer_ray.serve:app"), {}), Application)


# -- the running service ------------------------------------------------------------------------
def test_health_and_model_card(url, artifact, artifact_dir, key_file):
    r = requests.get(f"{url}/healthz", timeout=TIMEOUT)  # no key needed
    assert r.status_code == 200 and r.json() == {"status": "ok", "model_id": artifact.model_id}
    card = requests.get(f"{url}/v1/model", headers=AUTH, timeout=TIMEOUT).json()
    assert card == requests.get(f"{url}/model", headers=AUTH, timeout=TIMEOUT).json()  # the alias
    assert card["model_id"] == artifact.model_id and card["labels"] == list(EMOTIONS)
    assert card["engine"] == artifact.engine_name == "torch"  # the test artifact has no ONNX files
    assert card["preprocess"] == PreprocessConfig().to_dict()
    assert card["model_config"]["name"] == artifact.model_config.name
    assert card["serving"]["max_batch_size"] == 8 and card["serving"]["api_key_required"] is True
    assert "metrics" in card
    # no filesystem paths: neither the model directory nor the key file, nor any absolute path
    text = json.dumps(card)
    assert str(artifact_dir) not in text and str(key_file) not in text and KEY not in text
    assert absolute_paths(card) == []


PROTECTED = {
    "GET /v1/model": lambda u, h: requests.get(f"{u}/v1/model", headers=h, timeout=TIMEOUT),
    "GET /model": lambda u, h: requests.get(f"{u}/model", headers=h, timeout=TIMEOUT),
    "GET /openapi.json": lambda u, h: requests.get(f"{u}/openapi.json", headers=h, timeout=TIMEOUT),
    "POST /v1/predict": lambda u, h: requests.post(
        f"{u}/v1/predict", data=_crop_bytes()[0], headers={**h, "Content-Type": "image/jpeg"}, timeout=TIMEOUT
    ),
    "POST /predict": lambda u, h: requests.post(
        f"{u}/predict", files={"file": ("a.jpg", _crop_bytes()[0], "image/jpeg")}, headers=h, timeout=TIMEOUT
    ),
    "GET /nowhere": lambda u, h: requests.get(f"{u}/nowhere", headers=h, timeout=TIMEOUT),
}


@pytest.mark.parametrize("route", list(PROTECTED))
def test_api_key_required(url, route):
    send = PROTECTED[route]
    wrong = [{}, {"Authorization": "Bearer " + "x" * len(KEY)}, {"Authorization": "Bearer " + KEY[:-1]},
             {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}]  # fmt: skip
    for headers in wrong:
        r = send(url, headers)
        assert r.status_code == 401, (route, headers, r.status_code, r.text)
        assert "API key" in r.json()["error"] and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = send(url, {"Authorization": f"bearer {KEY}"})  # the scheme is case-insensitive
    assert r.status_code == (404 if route == "GET /nowhere" else 200), (route, r.text)


@pytest.mark.parametrize("path", ["/healthz", "/", "/docs", "/static/app.js", "/static/swagger/swagger-ui-bundle.js"])
def test_public_routes_need_no_key(url, path):
    # /healthz for probes; the page shell (no data) must load before a user can type the key
    assert requests.get(f"{url}{path}", timeout=TIMEOUT).status_code == 200


EXTERNAL = re.compile(r"""(?:https?:|wss?:|ftp:)?//[^\s"'<>)]+""", re.IGNORECASE)


@pytest.mark.parametrize("page", ["/", "/docs"])
def test_pages_load_nothing_from_elsewhere(url, page):
    """The upload page and the docs: every src/href is a path on this app, which serves all of them."""
    r = requests.get(f"{url}{page}", timeout=TIMEOUT)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    html = r.text
    assert EXTERNAL.findall(html) == [], "the page references another origin"
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    assert any(ref.endswith(".js") for ref in refs), refs
    base = re.search(r"""<base href="([^"]+)">""", html).group(1)
    assert base == f"{PREFIX}/"  # relative links resolve under Serve's route prefix
    for ref in refs:
        if ref.startswith("data:") or ref == base:
            continue
        if ref.endswith((".js", ".css")):
            asset = requests.get(f"{url}/{ref}", timeout=TIMEOUT)
            assert asset.status_code == 200, ref
            if ref.startswith("static/") and "swagger" not in ref:  # our own files: no URL to anywhere
                assert EXTERNAL.findall(asset.text) == [], ref


def test_face_crop_raw_body(url, artifact):
    data = (EXAMPLES / "crops" / "astronaut.jpg").read_bytes()
    r = _post(url, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["image_width"], body["image_height"]) == (48, 48)
    assert body["faces"][0]["box"] is None  # a crop is the face: no detection
    _check_ok(body, artifact, data, 1)
    assert "model;dur=" in r.headers["Server-Timing"]
    # application/octet-stream, any image/* type and the unversioned alias give the same answer
    for ct, path in (("application/octet-stream", "/v1/predict"), ("image/png", "/v1/predict"), (None, "/predict")):
        assert _post(url, data, ct or "image/jpeg", path).json() == body


def test_photo_multipart_one_entry_per_face(url, artifact):
    expected = json.loads((EXAMPLES / "expected.json").read_text())["photos/group_of_three.jpg"]
    data = (EXAMPLES / "photos" / "group_of_three.jpg").read_bytes()
    files = {"file": ("group_of_three.jpg", data, "image/jpeg")}
    r = requests.post(f"{url}/v1/predict", files=files, headers=AUTH, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [body["image_width"], body["image_height"]] == expected["size"]
    _check_ok(body, artifact, data, expected["faces"])
    found = [tuple(f["box"]) for f in body["faces"]]  # each pasted face found once, as test_score_faces checks it
    assert samples().matches(found, [tuple(b) for b in expected["boxes"]]), (found, expected["boxes"])
    # whole_image=true skips detection: one centre-cropped face
    whole = _post(url, data, whole_image="true").json()
    assert whole["faces"][0]["box"] is None
    _check_ok(whole, artifact, data, 1, whole_image=True)


def test_several_files_one_result_each(url, artifact):
    photo = (EXAMPLES / "photos" / "group_of_three.jpg").read_bytes()
    crop = _crop_bytes()[0]
    files = [("file", ("p.jpg", photo, "image/jpeg")), ("file", ("bad.jpg", b"no image", "image/jpeg")),
             ("file", ("c.jpg", crop, "image/jpeg"))]  # fmt: skip
    r = requests.post(f"{url}/v1/predict", files=files, headers=AUTH, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["filename"] for x in body["results"]] == ["p.jpg", "bad.jpg", "c.jpg"]
    p, bad, c = body["results"]
    _check_ok({**p, "model_id": body["model_id"]}, artifact, photo, 3)
    _check_ok({**c, "model_id": body["model_id"]}, artifact, crop, 1)
    assert bad["status"] == "error" and NOT_IMAGE in bad["error"]  # a bad file is an entry, not a failed request
    too_many = [("file", (f"{i}.jpg", crop, "image/jpeg")) for i in range(MAX_FILES + 1)]
    r = requests.post(f"{url}/v1/predict", files=too_many, headers=AUTH, timeout=TIMEOUT)
    assert r.status_code == 413 and f"at most {MAX_FILES}" in r.json()["error"]


def test_no_face(url, artifact):
    r = _post(url, (EXAMPLES / "other" / "coffee.jpg").read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "no_face" and body["faces"] == [] and body["model_id"] == artifact.model_id


def _upload(url: str, data: bytes, field: str = "file") -> requests.Response:
    files = {field: ("a.jpg", data, "image/jpeg")}
    return requests.post(f"{url}/v1/predict", files=files, headers=AUTH, timeout=TIMEOUT)


def _chunked(url: str, data: bytes, content_type: str = "image/jpeg") -> requests.Response:
    """A body with no Content-Length (chunked transfer): the limit must hold while streaming."""
    chunks = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    headers = {**AUTH, "Content-Type": content_type}
    return requests.post(f"{url}/v1/predict", data=iter(chunks), headers=headers, timeout=TIMEOUT)


NOT_IMAGE = "not a recognised image"
RANDOM_BYTES = np.random.default_rng(0).bytes(5000)
CROP = (EXAMPLES / "crops" / "astronaut.jpg").read_bytes()
BAD_INPUTS = {
    "empty body": (lambda u: _post(u, b""), 400, "empty"),
    "empty upload": (lambda u: _upload(u, b""), 400, "empty"),
    "no file field": (lambda u: _upload(u, b"x", field="photo"), 400, "'file'"),
    "truncated jpeg": (lambda u: _post(u, (EXAMPLES / "other" / "truncated.jpg").read_bytes()), 422, "truncated"),
    "random bytes": (lambda u: _post(u, RANDOM_BYTES, "application/octet-stream"), 422, NOT_IMAGE),
    "text as an image": (lambda u: _post(u, b"hello, I am not a picture\n" * 20, "image/jpeg"), 422, NOT_IMAGE),
    "text/plain": (lambda u: _post(u, b"hello\n" * 20, "text/plain"), 415, "text/plain"),
    "json": (lambda u: _post(u, b'{"image": "x"}', "application/json"), 415, "application/json"),
    "form-urlencoded (curl -d)": (lambda u: _post(u, CROP, "application/x-www-form-urlencoded"), 415, "image/jpeg"),
    "no content type": (lambda u: _post(u, CROP, None), 415, "no Content-Type"),
    "decompression bomb": (lambda u: _post(u, _bomb_png(), "image/png"), 422, "bomb"),
    "oversized body": (lambda u: _post(u, b"\xff" * (BODY_LIMIT + 1)), 413, "limit"),
    "oversized chunked body": (lambda u: _chunked(u, b"\xff" * (BODY_LIMIT + 1)), 413, "limit"),
    "oversized upload": (lambda u: _upload(u, b"\xff" * (BODY_LIMIT + 1)), 413, "limit"),
    "bad query": (lambda u: _post(u, b"x", whole_image="maybe"), 422, "whole_image"),
    "wrong method": (lambda u: requests.get(f"{u}/v1/predict", headers=AUTH, timeout=TIMEOUT), 405, "not allowed"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_with_a_reason(url, case):
    send, status, reason = BAD_INPUTS[case]
    r = send(url)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert reason.lower() in r.json()["error"].lower(), r.json()


def test_png_with_alpha_upload(url, artifact):
    """A crop-sized RGBA PNG goes through the same decode path (alpha composited on white)."""
    rgba = Image.new("RGBA", (40, 40), (90, 60, 30, 128))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    data = buf.getvalue()
    r = requests.post(f"{url}/v1/predict", files={"file": ("x.png", data, "image/png")}, headers=AUTH, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    _check_ok(r.json(), artifact, data, 1)


# -- video clips --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, bytes]:
    import cv2

    pytest.importorskip("av")
    d = tmp_path_factory.mktemp("clips")
    cv2.VideoWriter(str(d / "no_frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), RATE, (320, 240)).release()
    return {p.stem: p.read_bytes() for p in [*make_clips(d).values(), d / "no_frames.mp4"]}


def _check_clip(body: dict, artifact, data: bytes) -> None:
    """What the library computes for the clip, with the artifact's probabilities: same frames, tracks, boxes."""
    faces = clip_faces(data, VideoConfig(max_duration_s=MAX_CLIP_S), DetectConfig(), artifact.preprocess)
    want = clip_response(faces, artifact.predict_proba(faces.crops), artifact.labels, artifact.uncertain_below)
    assert body["model_id"] == artifact.model_id and body["status"] == want["status"] == "ok"
    assert body["video"] == want["video"] and body["frames"] == want["frames"]
    assert [t["track_id"] for t in body["tracks"]] == [t["track_id"] for t in want["tracks"]]
    for got, exp in zip(body["tracks"], want["tracks"], strict=True):
        where = [[(p["frame_index"], p["timestamp_s"], p["box"]) for p in t["timeline"]] for t in (got, exp)]
        assert where[0] == where[1] and (got["start_s"], got["end_s"]) == (exp["start_s"], exp["end_s"])
        probs = [[[p["probabilities"][e] for e in EMOTIONS] for p in t["timeline"]] for t in (got, exp)]
        np.testing.assert_allclose(probs[0], probs[1], atol=1e-5)


def test_clip_gets_per_track_timelines(url, artifact, clips):
    r = _post(url, clips["two"], "video/mp4")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["tracks"]) == 2 and body["video"]["frames_sampled"] == 6  # 3 s at the default 2 fps
    assert all(t["frames"] == len(t["timeline"]) == 6 for t in body["tracks"])
    _check_clip(body, artifact, clips["two"])
    assert "model;dur=" in r.headers["Server-Timing"]
    # a multipart upload, typed by its name under a generic type, gets the same answer
    files = {"file": ("two.mov", clips["two"], "application/octet-stream")}
    multipart = requests.post(f"{url}/v1/predict", files=files, headers=AUTH, timeout=TIMEOUT)
    assert multipart.status_code == 200, multipart.text
    _check_clip(multipart.json(), artifact, clips["two"])
    # a raw body without a type (curl --data-binary's usual -H) is a clip by its first bytes
    untyped = _post(url, clips["two"], "application/octet-stream")
    assert untyped.status_code == 200, untyped.text
    _check_clip(untyped.json(), artifact, clips["two"])
    spec = requests.get(f"{url}/openapi.json", headers=AUTH, timeout=TIMEOUT).json()
    body_spec = spec["paths"]["/v1/predict"]["post"]["requestBody"]
    assert "video/*" in body_spec["content"] and "clip" in body_spec["description"]


def _upload_clip(url: str, *files: tuple[str, bytes, str]) -> requests.Response:
    parts = [("file", f) for f in files]
    return requests.post(f"{url}/v1/predict", files=parts, headers=AUTH, timeout=TIMEOUT)


BATCH_HINT = "jobs/score.py"
OVER = b"\x00" * (CLIP_LIMIT + 1)  # under the image limit, over the clip's
CLIP_ERRORS = {
    "long clip": (lambda u, c: _post(u, c["moving"], "video/mp4"), 413, f"over the limit of {MAX_CLIP_S:g} s"),
    "long clip upload": (lambda u, c: _upload_clip(u, ("m.mp4", c["moving"], "video/mp4")), 413, "5.0 s long"),
    "many frames": (lambda u, c: _post(u, c["cut"], "video/mp4"), 413, f"score, over the limit of {MAX_CLIP_FRAMES};"),
    "oversized clip": (lambda u, c: _post(u, OVER, "video/mp4"), 413, f"over the limit of {CLIP_LIMIT:,} bytes"),
    "oversized chunked clip": (lambda u, c: _chunked(u, OVER, "video/webm"), 413, f"{CLIP_LIMIT:,} bytes"),
    "oversized clip upload": (lambda u, c: _upload_clip(u, ("m.mkv", OVER, "video/x-matroska")), 413, "the clip is"),
    "corrupt clip": (lambda u, c: _post(u, RANDOM_BYTES, "video/mp4"), 422, "cannot open the video"),
    "truncated clip": (lambda u, c: _post(u, c["cut"][: len(c["cut"]) // 3], "video/quicktime"), 422, "cannot open"),
    "clip without frames": (lambda u, c: _post(u, c["no_frames"], "video/mp4"), 422, "no video stream"),
    "empty clip": (lambda u, c: _post(u, b"", "video/mp4"), 400, "empty"),
    "clip and a photo": (lambda u, c: _upload_clip(u, ("t.mp4", c["two"], "video/mp4"), ("a.jpg", CROP, "image/jpeg")),
                         400, "alone"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CLIP_ERRORS))
def test_clip_errors_are_4xx_with_a_reason(url, clips, case):
    send, status, reason = CLIP_ERRORS[case]
    r = send(url, clips)
    assert r.status_code == status, (case, r.status_code, r.text)
    error = r.json()["error"]
    assert reason.lower() in error.lower(), error
    assert (BATCH_HINT in error) == (status == 413), error  # too long or too big: batch scoring takes it


# -- concurrency and faults ---------------------------------------------------------------------
def _healthy(url: str, within_s: float = 60) -> None:
    """/healthz answers 200 within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(f"{url}/healthz", timeout=10)
            if last.status_code == 200:
                return
        except requests.RequestException as e:
            last = e
        time.sleep(0.5)
    raise AssertionError(f"/healthz not 200 within {within_s} s: {getattr(last, 'text', last)}")


def test_concurrent_requests_and_bad_neighbours(url, artifact):
    from ray import serve

    crops = _crop_bytes()
    photo = (EXAMPLES / "photos" / "group_of_three.jpg").read_bytes()
    good = [crops[i % len(crops)] for i in range(12)] + [photo] * 2
    bad = [(EXAMPLES / "other" / "truncated.jpg").read_bytes(), b"not an image"]
    jobs = [(d, True) for d in good] + [(d, False) for d in bad]
    with ThreadPoolExecutor(len(jobs)) as pool:
        responses = list(pool.map(lambda job: _post(url, job[0]), jobs))
    for (data, ok), r in zip(jobs, responses, strict=True):
        if ok:
            assert r.status_code == 200, r.text
            _check_ok(r.json(), artifact, data, 3 if data is photo else 1)
        else:
            assert r.status_code == 422 and r.json()["error"]
    # the service is still healthy afterwards, and @serve.batch put several requests into one call
    assert requests.get(f"{url}/healthz", timeout=TIMEOUT).json()["status"] == "ok"
    stats = serve.get_deployment_handle("FERModel", app_name=APP).stats.remote().result(timeout_s=TIMEOUT)
    assert stats["batches"] < stats["requests"] and stats["largest_batch"] <= 8, stats


def test_500_requests_16_in_flight_no_errors(url, artifact):
    crops = _crop_bytes()
    photo = (EXAMPLES / "photos" / "group_of_three.jpg").read_bytes()
    inputs = [photo if i % 50 == 0 else crops[i % len(crops)] for i in range(500)]  # 10 photos, 490 faces
    local = threading.local()

    def send(data: bytes) -> requests.Response:
        if not hasattr(local, "session"):  # keep-alive connections, one per client thread
            local.session = requests.Session()
        headers = {**AUTH, "Content-Type": "image/jpeg"}
        return local.session.post(f"{url}/v1/predict", data=data, headers=headers, timeout=TIMEOUT)

    t0 = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(send, inputs))
    seconds = time.monotonic() - t0
    errors = [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    assert errors == [], f"{len(errors)} of 500 failed, e.g. {errors[:3]}"
    expected = {}  # what batch scoring gives each distinct input
    for data, r in zip(inputs, responses, strict=True):
        body = r.json()
        if id(data) not in expected:
            _check_ok(body, artifact, data, 3 if data is photo else 1)
            expected[id(data)] = np.array([[f["probabilities"][e] for e in EMOTIONS] for f in body["faces"]])
        got = np.array([[f["probabilities"][e] for e in EMOTIONS] for f in body["faces"]])
        np.testing.assert_allclose(got, expected[id(data)], atol=1e-5)  # batch neighbours do not change a result
    print(f"500 requests at 16 in flight: {seconds:.1f} s, {500 / seconds:.0f} requests/s (no figure: shared CPU)")
    _healthy(url)


def _raw_request(url: str, body_length: int) -> socket.socket:
    """An open socket that has sent the headers of a POST /v1/predict announcing ``body_length`` bytes."""
    host_port, _, prefix = url.removeprefix("http://").partition("/")
    host, port = host_port.split(":")
    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    head = (
        f"POST /{prefix}/v1/predict HTTP/1.1\r\nHost: {host_port}\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: image/jpeg\r\nContent-Length: {body_length}\r\n\r\n"
    )
    sock.sendall(head.encode())
    return sock


def test_client_disconnecting_mid_upload_leaves_the_server_healthy(url, artifact):
    for _ in range(3):
        sock = _raw_request(url, 500_000)
        sock.sendall(b"\xff\xd8" + b"\x00" * 100_000)  # a fifth of the announced body, then gone
        sock.close()
    _healthy(url)
    data = _crop_bytes()[0]
    r = _post(url, data)
    assert r.status_code == 200, r.text
    _check_ok(r.json(), artifact, data, 1)


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP/1.1 response with a Content-Length (headers and body may arrive in separate packets)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _content_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _content_length(data: bytes) -> int:
    m = re.search(rb"(?im)^content-length:\s*(\d+)", data)
    return int(m.group(1)) if m else 0


def test_slow_drip_body_gets_408_and_the_server_stays_healthy(url):
    sock = _raw_request(url, 10_000)
    t0 = time.monotonic()
    reply = b""
    try:
        for _ in range(int(4 * BODY_TIMEOUT_S / 0.25)):  # one byte every 0.25 s: would take 40 minutes
            try:
                sock.sendall(b"\x00")
            except OSError:  # the server may close the connection once it has answered
                pass
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                reply = _read_response(sock)
                break
    finally:
        sock.close()
    seconds = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply[:300]
    assert b"did not arrive within" in reply
    assert BODY_TIMEOUT_S - 0.5 <= seconds <= BODY_TIMEOUT_S + 5, seconds
    _healthy(url)


def test_request_while_the_model_replica_restarts(url, artifact):
    """Kill the model replica: a request meanwhile gets a result or a 503 with a reason, never a hang or a 500;
    Serve starts a new replica and /healthz is 200 again."""
    import ray

    replicas = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "FERModel" in a["name"] and APP in a["name"] and a["name"].startswith("SERVE_REPLICA")
    ]
    assert len(replicas) == 1, replicas
    ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=True)
    data = _crop_bytes()[0]
    r = _post(url, data)
    assert r.status_code in (200, 503), (r.status_code, r.text)
    if r.status_code == 503:
        assert "model unavailable" in r.json()["error"] and r.headers.get("Retry-After")
    else:
        _check_ok(r.json(), artifact, data, 1)
    _healthy(url, within_s=90)
    r = _post(url, data)
    assert r.status_code == 200, r.text
    _check_ok(r.json(), artifact, data, 1)
