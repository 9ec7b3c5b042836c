"""Drive the upload page of a running fer_ray service in headless Chromium (Debian's ``chromium``), over the
DevTools protocol: load ``/``, type the API key if there is one, upload a photo, wait for the result,
save a screenshot, upload a video clip if given, then open ``/docs`` and wait for Swagger UI to list the routes.

The browser may resolve no host name but 127.0.0.1 (``--host-resolver-rules``), so a page that needed a CDN
would fail here; every request it makes is recorded and returned.

    FER_RAY_API_KEY=... python tests/browser_check.py --url http://127.0.0.1:8000 \
        --photo examples/images/photos/group_of_three.jpg --screenshot docs/serve_page.png

``tests/test_serve_browser.py`` runs :func:`check_page` against a real Serve app.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The Chromium executable on PATH ($FER_RAY_CHROMIUM wins), or None."""
    env = os.environ.get("FER_RAY_CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class DevTools:
    """A minimal DevTools-protocol client for one page target (commands in, replies and events out)."""

    def __init__(self, ws):
        self.ws = ws
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def eval(self, expression: str) -> Any:
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails'].get('text')}: {expression}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")

    def navigate(self, url: str, timeout: float) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout, f"{url} to load"
        )


def _start_chromium(exe: str, profile: str, width: int, height: int) -> tuple[subprocess.Popen, str]:
    args = [
        exe,
        "--headless=new",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # No name resolves except loopback: anything the page wanted from the internet fails loudly.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            port = int(m.group(1).split(":")[2].split("/")[0])
            return proc, f"http://127.0.0.1:{port}"
    proc.kill()
    raise RuntimeError("Chromium did not start its DevTools endpoint:\n" + "".join(lines[-20:]))


def _page_ws(devtools_http: str) -> str:
    with urllib.request.urlopen(f"{devtools_http}/json/list", timeout=10) as r:  # loopback only
        targets = json.load(r)
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


def check_page(
    url: str,
    photo: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    key: str | None = None,
    timeout: float = 90,
    width: int = 1100,
    height: int = 800,
    clip: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run the page check; returns what happened (status text, faces shown, requests made, errors, docs routes).

    Raises with a reason when a step does not complete in ``timeout`` seconds.
    """
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium on PATH (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="fer_chromium_", ignore_cleanup_errors=True) as profile:
        proc, devtools_http = _start_chromium(exe, profile, width, height)
        try:
            from websockets.sync.client import connect

            with connect(_page_ws(devtools_http), max_size=None, open_timeout=30) as ws:
                page = DevTools(ws)
                metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
                page.call("Emulation.setDeviceMetricsOverride", **metrics)
                return _session(page, url.rstrip("/"), photo, screenshot, key, timeout, clip)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _session(
    page: DevTools,
    url: str,
    photo: str | os.PathLike,
    screenshot: str | os.PathLike | None,
    key: str | None,
    timeout: float,
    clip: str | os.PathLike | None = None,
) -> dict[str, Any]:
    for domain in ("Network", "Page", "Runtime"):
        page.call(f"{domain}.enable")
    out: dict[str, Any] = {}
    page.navigate(url + "/", timeout)
    out["title"] = page.eval("document.title")
    if key is not None:
        out["without_key"] = _upload(page, photo, timeout)  # the page must say that it needs the key
        page.eval(
            f"(() => {{ const k = document.getElementById('key'); k.value = {json.dumps(key)};"
            " k.dispatchEvent(new Event('input')); k.dispatchEvent(new Event('change')); })()"
        )
        out["key_in_session_storage"] = page.eval("sessionStorage.getItem('fer_ray.api_key')") == key
    out.update(_upload(page, photo, timeout))
    if out["state"] != "done":
        return out  # e.g. a wrong key: the status line says why; the docs would fail the same way
    if screenshot is not None:
        shot = page.call("Page.captureScreenshot", format="png")
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        out["screenshot"] = str(screenshot)
    if clip is not None:
        out["clip"] = _upload(page, clip, timeout)
    page.navigate(url + "/docs", timeout)
    routes = page.wait_for(
        "Array.from(document.querySelectorAll('.opblock-summary-path')).map(e => e.textContent.trim()).join(' ')",
        timeout,
        "Swagger UI to list the API routes",
    )
    out["docs_routes"] = routes.split()
    events = {name: [e["params"] for e in page.events if e.get("method") == name] for name in _EVENTS}
    out["requests"] = sorted({p["request"]["url"] for p in events["Network.requestWillBeSent"]})
    out["failed_requests"] = [p.get("errorText") for p in events["Network.loadingFailed"]]
    out["js_errors"] = [p["exceptionDetails"].get("text") for p in events["Runtime.exceptionThrown"]]
    return out


_EVENTS = ("Network.requestWillBeSent", "Network.loadingFailed", "Runtime.exceptionThrown")


def _upload(page: DevTools, photo: str | os.PathLike, timeout: float) -> dict[str, Any]:
    """Choose ``photo`` in the page's file input (as a user would) and wait until the page shows an outcome."""
    page.eval("document.getElementById('status').dataset.state = 'idle'")
    root = page.call("DOM.getDocument")["root"]["nodeId"]
    node = page.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
    page.call("DOM.setFileInputFiles", files=[str(Path(photo).resolve())], nodeId=node)  # fires 'change'
    state = page.wait_for(
        "['done', 'error'].includes(document.getElementById('status').dataset.state) &&"
        " document.getElementById('status').dataset.state",
        timeout,
        "the page to show a result",
    )
    return {
        "state": state,
        "status": page.eval("document.getElementById('status').textContent"),
        "faces_shown": page.eval("document.querySelectorAll('#faces .face').length"),
        "face_titles": page.eval("Array.from(document.querySelectorAll('#faces .face h3')).map(e => e.textContent)"),
        "face_notes": page.eval("Array.from(document.querySelectorAll('#faces .face .note')).map(e => e.textContent)"),
        "canvas": page.eval("[document.getElementById('canvas').width, document.getElementById('canvas').height]"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--photo", default="examples/images/photos/group_of_three.jpg")
    p.add_argument("--screenshot", default="docs/serve_page.png")
    p.add_argument("--timeout", type=float, default=90)
    a = p.parse_args(argv)
    result = check_page(a.url, a.photo, a.screenshot, os.environ.get("FER_RAY_API_KEY") or None, a.timeout)
    print(json.dumps(result, indent=2))
    return 0 if result["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
