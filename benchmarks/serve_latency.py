"""Serve latency and throughput: our app against Serve's own floor, on loopback, in one run.

The floor is the least any two-deployment Serve app pays: a FastAPI ingress that reads the body and awaits a
``@serve.batch`` no-op deployment (same ``max_batch_size``, ``batch_wait_timeout_s``, CPUs and replica counts as
ours). Then ours (``fer_ray.serve.build``, the shipped model) on a 48x48 face and on a ~1 MP photo:

- p50/p95/p99 at concurrency 1 (one keep-alive connection, sequential requests);
- throughput at concurrency 32 on faces, with batching on (``max_batch_size`` as configured) and with
  ``max_batch_size=1``;
- where the time goes: the client's latency minus our ``Server-Timing`` total is proxy + network + handle
  routing; ``read`` (body), ``prep`` (decode + detect + crop) and ``model`` (model-replica call: routing,
  batch wait, forward) come from our ingress.

Targets from the issue (2 cores): face p50 <= 1.3x the floor's p50, face p99 <= 3x the floor's p50, and
batched >= 1.5x unbatched at concurrency 32. The client runs on the same cores as the servers; figures from
a machine busy with other work are not comparable (load average is recorded).

python benchmarks/serve_latency.py                                   # -> benchmarks/results/serve_latency.json
python benchmarks/serve_latency.py --n 10 --n-throughput 64 --warmup 3 --out out/serve_latency_smoke.json  # smoke
"""

# No `from __future__ import annotations`: FastAPI must see the real Request class in the floor route.

import argparse
import dataclasses
import http.client
import io
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import machine_info, write_result  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from ray import serve  # noqa: E402

from fer_ray.cli import add_ray_args, setup  # noqa: E402
from fer_ray.runtime import RayConfig, init_ray  # noqa: E402
from fer_ray.serve import ServeConfig, build  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serve_latency.json"
FACE = ROOT / "examples" / "images" / "crops" / "astronaut.jpg"
PHOTO = ROOT / "examples" / "images" / "photos" / "group_of_three.jpg"
TIMING = re.compile(r"(\w+);dur=([\d.]+)")

# -- the floor: ingress + @serve.batch no-op, nothing else ---------------------------------------
floor_api = FastAPI()


@serve.deployment
class FloorBatch:
    def __init__(self, max_batch_size: int, wait_s: float):
        self.run.set_max_batch_size(max_batch_size)
        self.run.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def run(self, sizes: list[int]) -> list[int]:
        return sizes


@serve.deployment
@serve.ingress(floor_api)
class FloorServer:
    def __init__(self, batch):
        self.batch = batch

    @floor_api.post("/v1/predict")
    async def predict(self, request: Request) -> JSONResponse:
        body = await request.body()
        n = await self.batch.run.remote(len(body))
        return JSONResponse({"bytes": n})


def floor_app(cfg: ServeConfig):
    batch = FloorBatch.options(
        ray_actor_options={"num_cpus": cfg.cpus_per_replica}, max_ongoing_requests=cfg.max_ongoing_requests
    )
    ingress = FloorServer.options(
        ray_actor_options={"num_cpus": cfg.ingress_cpus}, max_ongoing_requests=cfg.ingress_max_ongoing_requests
    )
    return ingress.bind(batch.bind(cfg.max_batch_size, cfg.batch_wait_timeout_s))


# -- the client ----------------------------------------------------------------------------------
def photo_1mp() -> bytes:
    """The bundled 1200x700 group photo scaled to ~1 megapixel, as a JPEG (quality 90)."""
    from PIL import Image

    im = Image.open(PHOTO).convert("RGB")
    scale = (1_000_000 / (im.width * im.height)) ** 0.5
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class Client:
    """One keep-alive HTTP/1.1 connection; ``post`` returns (seconds, Server-Timing stages in seconds)."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: bytes) -> tuple[float, dict[str, float]]:
        t0 = time.perf_counter()
        self.conn.request("POST", path, body=body, headers={"Content-Type": "image/jpeg"})
        r = self.conn.getresponse()
        r.read()
        seconds = time.perf_counter() - t0
        if r.status != 200:
            raise RuntimeError(f"POST {path}: HTTP {r.status}")
        stages = {k: float(v) / 1000 for k, v in TIMING.findall(r.getheader("Server-Timing") or "")}
        return seconds, stages


def percentiles(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def breakdown(times: list[float], stages: list[dict[str, float]]) -> dict[str, float] | None:
    """Medians in ms of where a request's time goes (ours only: the floor sends no Server-Timing)."""
    if not stages or not stages[0]:
        return None
    med = {k: float(np.median([s[k] for s in stages])) * 1000 for k in stages[0]}
    outside = float(np.median([t - s["total"] for t, s in zip(times, stages, strict=True)])) * 1000
    return {
        "proxy_network_routing": round(outside, 2),
        "read_body": round(med["read"], 2),
        "decode_detect_crop": round(med["prep"], 2),
        "model_call": round(med["model"], 2),
        "server_total": round(med["total"], 2),
    }


def sequential(port: int, path: str, body: bytes, n: int, warmup: int) -> dict[str, Any]:
    """Concurrency 1: latency percentiles and the median of each server-side stage."""
    c = Client(port)
    for _ in range(warmup):
        c.post(path, body)
    results = [c.post(path, body) for _ in range(n)]
    times = [t for t, _ in results]
    out = {"n": n, **percentiles(times)}
    if (b := breakdown(times, [s for _, s in results])) is not None:
        out["breakdown_ms"] = b
    return out


def concurrent(port: int, path: str, body: bytes, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    """``concurrency`` clients, each on its own connection, share ``n`` requests: requests/s and latencies."""
    local = threading.local()

    def one(_: int) -> tuple[float, dict[str, float]]:
        if not hasattr(local, "client"):
            local.client = Client(port)
        return local.client.post(path, body)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(max(warmup, concurrency))))
        t0 = time.perf_counter()
        results = list(pool.map(one, range(n)))
        seconds = time.perf_counter() - t0
    times = [t for t, _ in results]
    out = {"n": n, "concurrency": concurrency, "requests_per_s": round(n / seconds, 1), **percentiles(times)}
    if (b := breakdown(times, [s for _, s in results])) is not None:
        out["breakdown_ms"] = b
    return out


def deploy(app, name: str) -> str:
    serve.run(app, name=name, route_prefix=f"/{name}")
    return f"/{name}/v1/predict"


def main(argv: list[str] | None = None) -> int:
    setup()
    d = ServeConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300, help="requests per latency measurement (concurrency 1)")
    p.add_argument("--n-throughput", type=int, default=640, help="requests per throughput measurement")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size)
    p.add_argument("--batch-wait-timeout-s", type=float, default=d.batch_wait_timeout_s)
    p.add_argument("--model", default=None, help="artifact directory (default: the shipped model)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    add_ray_args(p)
    a = p.parse_args(argv)

    cfg = ServeConfig(model=a.model, max_batch_size=a.max_batch_size, batch_wait_timeout_s=a.batch_wait_timeout_s)
    init_ray(RayConfig(address=a.address, num_cpus=a.ray_cpus))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    face, photo = FACE.read_bytes(), photo_1mp()
    res: dict[str, Any] = {"config": {k: v for k, v in cfg.to_dict().items() if k != "detect"}}
    try:
        floor = deploy(floor_app(cfg), "floor")
        print("floor (ingress + @serve.batch no-op) ...", flush=True)
        res["floor_face_c1"] = sequential(port, floor, face, a.n, a.warmup)
        res["floor_face_c32"] = concurrent(port, floor, face, a.n_throughput, a.concurrency, a.warmup)
        serve.delete("floor")

        ours = deploy(build(cfg), "fer")
        print("ours: face, 1 MP photo, concurrency", a.concurrency, "...", flush=True)
        res["ours_face_c1"] = sequential(port, ours, face, a.n, a.warmup)
        res["ours_photo_1mp_c1"] = sequential(port, ours, photo, a.n, a.warmup)
        res["ours_face_c32_batched"] = concurrent(port, ours, face, a.n_throughput, a.concurrency, a.warmup)
        serve.delete("fer")

        unbatched = dataclasses.replace(cfg, max_batch_size=1)
        ours1 = deploy(build(unbatched), "fer1")
        res["ours_face_c32_unbatched"] = concurrent(port, ours1, face, a.n_throughput, a.concurrency, a.warmup)
        serve.delete("fer1")
    finally:
        serve.shutdown()

    floor_p50 = res["floor_face_c1"]["p50_ms"]
    res["ratios"] = {
        "face_p50_over_floor_p50": round(res["ours_face_c1"]["p50_ms"] / floor_p50, 2),
        "face_p99_over_floor_p50": round(res["ours_face_c1"]["p99_ms"] / floor_p50, 2),
        "photo_p50_over_floor_p50": round(res["ours_photo_1mp_c1"]["p50_ms"] / floor_p50, 2),
        "batched_over_unbatched_c32": round(
            res["ours_face_c32_batched"]["requests_per_s"] / res["ours_face_c32_unbatched"]["requests_per_s"], 2
        ),
        "ours_c32_over_floor_c32": round(
            res["ours_face_c32_batched"]["requests_per_s"] / res["floor_face_c32"]["requests_per_s"], 2
        ),
    }
    r = res["ratios"]
    res["targets"] = {
        "face_p50 <= 1.3x floor_p50": r["face_p50_over_floor_p50"] <= 1.3,
        "face_p99 <= 3x floor_p50": r["face_p99_over_floor_p50"] <= 3.0,
        "batched >= 1.5x unbatched at c32": r["batched_over_unbatched_c32"] >= 1.5,
    }
    res["machine"] = machine_info(payload_bytes={"face": len(face), "photo_1mp": len(photo)})
    print_table(res)
    write_result(res, a.out)
    return 0


def print_table(res: dict[str, Any]) -> None:
    print(f"\n{'measurement':34s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s} {'req/s':>8s}")
    for key in ("floor_face_c1", "ours_face_c1", "ours_photo_1mp_c1", "floor_face_c32", "ours_face_c32_batched",
                "ours_face_c32_unbatched"):  # fmt: skip
        m = res[key]
        rps = f"{m['requests_per_s']:8.1f}" if "requests_per_s" in m else f"{'':8s}"
        print(f"{key:34s} {m['p50_ms']:8.2f} {m['p95_ms']:8.2f} {m['p99_ms']:8.2f} {rps}")
    print("\nratios:", res["ratios"])
    print("targets:", {k: "met" if v else "MISSED" for k, v in res["targets"].items()})
    for key in ("ours_face_c1", "ours_photo_1mp_c1", "ours_face_c32_batched", "ours_face_c32_unbatched"):
        print(f"where the time goes ({key}, medians, ms):", res[key].get("breakdown_ms"))


if __name__ == "__main__":
    sys.exit(main())
