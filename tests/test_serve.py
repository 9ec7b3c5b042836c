"""Ray Serve online scoring: a real Serve app on the session's local Ray, real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from fer_ray.labels import EMOTIONS
from fer_ray.preprocess import PreprocessConfig, decode_image, face_input
from fer_ray.serve import ServeConfig, build, build_app

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"
APP = "fer_serve_test"
PREFIX = "/fer-test"
BODY_LIMIT = 1_000_000  # small, so the 413 test needs little data
TIMEOUT = 60  # seconds per request: the 2-core CI machine may be busy with other Ray work


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


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


@pytest.fixture(scope="module")
def artifact_dir(tmp_path_factory) -> Path:
    import torch

    from fer_ray.artifact import save_artifact
    from fer_ray.models import ModelConfig, create_model

    torch.manual_seed(0)
    return save_artifact(create_model(ModelConfig()), ModelConfig(), tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def artifact(artifact_dir):
    from fer_ray.artifact import load_artifact

    return load_artifact(artifact_dir)


@pytest.fixture(scope="module")
def url(ray_local, artifact_dir) -> str:
    """Base URL of a real Serve app; deleted (and Serve shut down) after this module, Ray stays up."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    cfg = ServeConfig(model=str(artifact_dir), max_batch_size=8, max_ongoing_requests=32, max_body_bytes=BODY_LIMIT)
    serve.run(build(cfg), name=APP, route_prefix=PREFIX)
    yield f"http://127.0.0.1:{port}{PREFIX}"
    serve.delete(APP)
    serve.shutdown()


def _post(url: str, data: bytes, content_type: str = "image/jpeg", **params) -> requests.Response:
    return requests.post(
        f"{url}/predict", data=data, headers={"Content-Type": content_type}, params=params, timeout=TIMEOUT
    )


def _expected_probs(artifact, data: bytes, boxes) -> np.ndarray:
    """What batch scoring computes for these faces: the one preprocessing path, then predict_proba."""
    gray = decode_image(data)
    faces = np.stack([face_input(gray, None if b is None else tuple(b), artifact.preprocess) for b in boxes])
    return artifact.predict_proba(faces)  # (N, K)


def _check_ok(body: dict, artifact, data: bytes, n_faces: int) -> None:
    assert body["status"] == "ok" and body["model_id"] == artifact.model_id
    assert len(body["faces"]) == n_faces
    got = np.array([[f["probabilities"][e] for e in EMOTIONS] for f in body["faces"]])
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, _expected_probs(artifact, data, [f["box"] for f in body["faces"]]), atol=1e-5)
    for f, p in zip(body["faces"], got, strict=True):
        assert f["emotion"] == EMOTIONS[int(p.argmax())] and f["confidence"] == pytest.approx(p.max())


def _crop_bytes() -> list[bytes]:
    return [p.read_bytes() for p in sorted((EXAMPLES / "crops").glob("*.jpg"))]


# -- config and app builder (no Ray needed) -----------------------------------------------------
def test_config_from_serve_run_args(artifact_dir):
    cfg = ServeConfig.from_args(
        {"model": str(artifact_dir), "replicas": "2", "max_batch_size": "16", "min_face": "40", "max_pixels": "none"}
    )
    assert (cfg.num_replicas, cfg.max_batch_size, cfg.detect.min_face, cfg.max_pixels) == (2, 16, 40, None)
    auto = ServeConfig.from_args({"autoscaling_config": '{"min_replicas": 1, "max_replicas": 3}', "replicas": "auto"})
    assert auto.autoscaling_config == {"min_replicas": 1, "max_replicas": 3} and auto.num_replicas == "auto"
    with pytest.raises(ValueError, match="unknown argument 'port'.*model"):
        ServeConfig.from_args({"port": "8000"})
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        ServeConfig(max_batch_size=64, max_ongoing_requests=8)
    with pytest.raises(ValueError, match="num_replicas"):
        ServeConfig(num_replicas="many")
    with pytest.raises(FileNotFoundError, match="not a fer_ray model artifact"):
        build_app({"model": str(artifact_dir / "missing")})


def test_app_builder_follows_serve_convention(artifact_dir):
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application

    # What `serve run fer_ray.serve:build_app model=...` does with the command-line args.
    app = call_user_app_builder_with_args_if_necessary(build_app, {"model": str(artifact_dir), "replicas": "1"})
    assert isinstance(app, Application)


# -- the running service ------------------------------------------------------------------------
def test_health_and_model_card(url, artifact):
    r = requests.get(f"{url}/healthz", timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {"status": "ok", "model_id": artifact.model_id}
    card = requests.get(f"{url}/model", timeout=TIMEOUT).json()
    assert card["model_id"] == artifact.model_id and card["labels"] == list(EMOTIONS)
    assert card["preprocess"] == PreprocessConfig().to_dict()
    assert card["model_config"]["name"] == artifact.model_config.name
    assert card["serving"]["max_batch_size"] == 8 and "metrics" in card


def test_face_crop_raw_body(url, artifact):
    data = (EXAMPLES / "crops" / "happy_PrivateTest_33571817.jpg").read_bytes()
    r = _post(url, data)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["image_width"], body["image_height"]) == (48, 48)
    assert body["faces"][0]["box"] is None  # a crop is the face: no detection
    _check_ok(body, artifact, data, 1)
    # application/octet-stream and curl's default form content type are read as the raw image too
    for ct in ("application/octet-stream", "application/x-www-form-urlencoded"):
        assert _post(url, data, ct).json() == body


def test_photo_multipart_one_entry_per_face(url, artifact):
    expected = json.loads((EXAMPLES / "expected.json").read_text())["photos/group_of_three.jpg"]
    data = (EXAMPLES / "photos" / "group_of_three.jpg").read_bytes()
    files = {"file": ("group_of_three.jpg", data, "image/jpeg")}
    r = requests.post(f"{url}/predict", files=files, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [body["image_width"], body["image_height"]] == expected["size"]
    _check_ok(body, artifact, data, expected["faces"])
    for want, face in zip(expected["boxes"], body["faces"], strict=True):  # both left to right
        assert _iou(want, face["box"]) > 0.5, (want, face["box"])
    # whole_image=true skips detection: one centre-cropped face
    whole = _post(url, data, whole_image="true").json()
    assert whole["faces"][0]["box"] is None
    _check_ok(whole, artifact, data, 1)


def test_no_face(url, artifact):
    r = _post(url, (EXAMPLES / "other" / "coffee.jpg").read_bytes())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "no_face" and body["faces"] == [] and body["model_id"] == artifact.model_id


def _upload(url: str, data: bytes, field: str = "file") -> requests.Response:
    return requests.post(f"{url}/predict", files={field: ("a.jpg", data, "image/jpeg")}, timeout=TIMEOUT)


def _chunked(url: str, data: bytes) -> requests.Response:
    """A body with no Content-Length (chunked transfer): the limit must hold while streaming."""
    chunks = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    return requests.post(f"{url}/predict", data=iter(chunks), timeout=TIMEOUT)


NOT_IMAGE = "not a recognised image"
RANDOM_BYTES = np.random.default_rng(0).bytes(5000)
BAD_INPUTS = {
    "empty body": (lambda u: _post(u, b""), 400, "empty"),
    "empty upload": (lambda u: _upload(u, b""), 400, "empty"),
    "no file field": (lambda u: _upload(u, b"x", field="photo"), 400, "'file'"),
    "truncated jpeg": (lambda u: _post(u, (EXAMPLES / "other" / "truncated.jpg").read_bytes()), 422, "truncated"),
    "random bytes": (lambda u: _post(u, RANDOM_BYTES, "application/octet-stream"), 422, NOT_IMAGE),
    "text": (lambda u: _post(u, b"hello, I am not a picture\n" * 20, "text/plain"), 422, NOT_IMAGE),
    "decompression bomb": (lambda u: _post(u, _bomb_png(), "image/png"), 422, "bomb"),
    "oversized body": (lambda u: _post(u, b"\xff" * (BODY_LIMIT + 1)), 413, "limit"),
    "oversized chunked body": (lambda u: _chunked(u, b"\xff" * (BODY_LIMIT + 1)), 413, "limit"),
    "oversized upload": (lambda u: _upload(u, b"\xff" * (BODY_LIMIT + 1)), 413, "limit"),
    "bad query": (lambda u: _post(u, b"x", whole_image="maybe"), 422, "whole_image"),
    "wrong method": (lambda u: requests.get(f"{u}/predict", timeout=TIMEOUT), 405, "not allowed"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_4xx_with_a_reason(url, case):
    send, status, reason = BAD_INPUTS[case]
    r = send(url)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert reason.lower() in r.json()["error"].lower(), r.json()


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


def test_png_with_alpha_upload(url, artifact):
    """A crop-sized RGBA PNG goes through the same decode path (alpha composited on white)."""
    rgba = Image.new("RGBA", (40, 40), (90, 60, 30, 128))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    data = buf.getvalue()
    r = requests.post(f"{url}/predict", files={"file": ("x.png", data, "image/png")}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    _check_ok(r.json(), artifact, data, 1)
