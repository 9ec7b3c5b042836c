"""The upload page in a real browser: headless Chromium against a real Serve app (the shipped model, deployed
from serve_config.yaml with an API key), through tests/browser_check.py. Skips when Chromium is not installed
(`.ci/run` installs it, so CI always runs this)."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest
import requests
import yaml

from tests.browser_check import check_page, find_chromium
from tests.video_clips import make_clips

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="Chromium not installed (apt-get install chromium)"),
]

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "images" / "photos" / "group_of_three.jpg"
APP = "fer_browser_test"
PREFIX = "/fer-page"
KEY = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def url(ray_local, tmp_path_factory) -> str:
    from ray import serve

    from fer_ray.serve import build_app

    key_file = tmp_path_factory.mktemp("secret") / "api_key"
    key_file.write_text(KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app({**args, "api_key_file": str(key_file)}), name=APP, route_prefix=PREFIX)
    yield f"http://127.0.0.1:{port}{PREFIX}"
    serve.delete(APP)
    serve.shutdown()


def _api(url: str, path: Path, content_type: str) -> dict:
    """What the API itself answers for the file the page was given."""
    files, auth = {"file": (path.name, path.read_bytes(), content_type)}, {"Authorization": f"Bearer {KEY}"}
    return requests.post(f"{url}/v1/predict", files=files, headers=auth, timeout=60).json()


def test_upload_page_in_chromium(url, tmp_path):
    shot = tmp_path / "page.png"
    clip = make_clips(tmp_path)["two"]  # two people side by side
    result = check_page(url, PHOTO, shot, key=KEY, timeout=120, clip=clip)
    # without the key the page says what is missing; with it, the key is kept in the tab's sessionStorage
    assert result["without_key"]["state"] == "error" and "401" in result["without_key"]["status"]
    assert "API key" in result["without_key"]["status"]
    assert result["key_in_session_storage"]
    assert result["state"] == "done", result["status"]
    # the page shows what the API returns for the same photo: one card per face, same emotions, in order
    api = _api(url, PHOTO, "image/jpeg")
    assert result["faces_shown"] == len(api["faces"]) == 3
    for title, face in zip(result["face_titles"], api["faces"], strict=True):
        assert f"{face['emotion']} {round(100 * face['confidence'])}%" in title
    assert result["canvas"][0] == 640  # the 1200x700 photo drawn at the preview width
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a clip: one card per person the API follows through it, with that person's dominant emotion and time span
    api = _api(url, clip, "video/mp4")
    shown = result["clip"]
    assert shown["state"] == "done" and f"{clip.name}: 2 people in" in shown["status"], shown["status"]
    assert shown["faces_shown"] == len(api["tracks"]) == 2
    for title, note, track in zip(shown["face_titles"], shown["face_notes"], api["tracks"], strict=True):
        emotion = track["dominant_emotion"]
        assert f"{emotion} {round(100 * track['mean_probabilities'][emotion])}%" in title
        assert note.startswith(f"mostly {emotion}, {track['start_s']:.1f}-{track['end_s']:.1f} s"), note
    assert shown["canvas"] == [320, 240]  # the clip's frame size, under the preview width
    # Swagger UI rendered from local files and read the spec with the key
    assert {"/v1/predict", "/v1/model", "/healthz"} <= set(result["docs_routes"])
    # everything came from the app itself; the browser could not have reached anything else
    origin = url.split(PREFIX)[0]
    assert [u for u in result["requests"] if not u.startswith((origin + "/", "data:", "blob:"))] == []
    assert result["failed_requests"] == [] and result["js_errors"] == []
