"""Video scoring speed and memory: the Ray job vs a plain loop vs ``fer``'s ``Video.analyze``, on one generated clip.

Issue #33's benchmark. A 720p 30 fps clip of two faces drifting a little is generated into --work (outside the
repository; kept for reruns, the same bytes each time with the same OpenCV): head-and-shoulders copies of the
two public-domain portraits the example images come from (``examples/make_samples.py``) on its smooth
backdrop, written with OpenCV's ``mp4v`` writer at its default keyframe interval. On the same machine:

(a) ``jobs/score.py`` as a user runs it (a subprocess starting its own local Ray, every default) at --fps on
    the --minutes clip and at every frame (``--fps 0``) on the --every-frame-minutes clip: video-seconds per
    second, sampled frames/s, faces, person tracks. Each run goes twice: once unobserved for its time, once
    with the process tree's memory sampled (summed PSS, ``common.tree_memory``) for its peak;
(b) a plain single-process loop with the job's decoder (``fer_ray.video.decode.sample_frames``), detector
    (``fer_ray.score.faces.faces_in_frame``), tracker and engine (the artifact's default, as scoring loads it),
    the job's batch size and --threads engine threads, at --fps, with a profile of where its time goes;
(c) the job at --fps on a --memory-minutes clip and a --longer-minutes clip against (a)'s --minutes clip: peak
    memory must not grow with length. An actor's memory rises over its first two segments or so (ONNX Runtime's
    and FFmpeg's buffers warming up) and then stays flat, so the flatness target compares the --minutes run with the
    longer one, whose actors are both warmed up; the short clip's actors score a segment or two each and are not.
    A clip of one segment (60 s by default) gets one actor, a long one an actor per core, so when the counts
    differ the short clip is scored once more cut into as many segments as the long run had actors;
(d) ``fer`` 25.10's ``Video.analyze`` in a virtualenv of its own (--fer-python) on the --minutes clip: every
    15th frame (2 fps at 30 fps), no frames, video or images saved, only the ``analyze`` call timed.

The job's video-seconds per second use its own pipeline timer (``runs/<id>.json``'s ``pipeline_s``: actors
started, frames decoded, faces scored, rows written; not Python's and Ray's start-up, listing nor the report),
as fer's exclude its imports and model load; whole-process figures of both are recorded beside them. Aims
(issue #33): (a) >= 3x (d) at 2 fps with every face tracked, (a) >= 1.0x (b), and flat memory in (c).

fer's virtualenv (fer 25.10.3 pulls TensorFlow and, through facenet-pytorch, PyTorch with its CUDA wheels:
about 8 GB; its ``fer.fer`` still imports ``pkg_resources``, gone from setuptools 81):

    python3 -m venv ~/.cache/fer_ray/fer-venv
    ~/.cache/fer_ray/fer-venv/bin/pip install fer==25.10.3 "setuptools<81"

python benchmarks/score_video.py                              # -> benchmarks/results/score_video.json
python benchmarks/score_video.py --minutes 0.25 --every-frame-minutes 0.1 --memory-minutes 0.1 --longer-minutes 0.5 \\
    --out /tmp/score_video_smoke.json                         # smoke test: checks that it works, nothing more
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without install
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_info, tree_memory, write_result  # noqa: E402

from fer_ray.cli import add_ray_args, setup  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "score_video.json"
DEFAULT_WORK = Path.home() / ".cache" / "fer_ray" / "score_video"
DEFAULT_FER_PYTHON = Path.home() / ".cache" / "fer_ray" / "fer-venv" / "bin" / "python"
FER_SETUP = (
    "python3 -m venv ~/.cache/fer_ray/fer-venv && "
    '~/.cache/fer_ray/fer-venv/bin/pip install fer==25.10.3 "setuptools<81"'
)

W, H, RATE = 1280, 720, 30
# (portrait, face box x, y, side): two people side by side, faces ~200 px (100 px where YuNet looks: 640x360)
PEOPLE = (("astronaut", 260, 230, 200), ("grace_hopper", 820, 240, 190))
CLIP_VERSION = 1  # bump when the picture changes, so cached clips are rebuilt

# Runs in fer's virtualenv: argv = clip, frequency. Counting subclass: frames analysed and faces found, nothing else.
FER_SCRIPT = r"""
import json, sys, tempfile, time
t0 = time.perf_counter()
import fer
from fer.classes import Video
from fer.fer import FER  # 25.10.3's `from fer import FER` (its README) fails: the package exports nothing

counts = {"frames_analyzed": 0, "faces": 0}

class CountingFER(FER):
    def detect_emotions(self, img, face_rectangles=None):
        faces = super().detect_emotions(img, face_rectangles)
        counts["frames_analyzed"] += 1
        counts["faces"] += len(faces)
        return faces

detector = CountingFER()  # its defaults: OpenCV's Haar cascade, the TF Lite model
video = Video(sys.argv[1], outdir=tempfile.mkdtemp(prefix="fer_bench_"))
setup_s = time.perf_counter() - t0
t0 = time.perf_counter()
df = video.analyze(detector, display=False, frequency=int(sys.argv[2]), save_frames=False, save_video=False,
                   annotate_frames=False, zip_images=False, output="pandas")
seconds = time.perf_counter() - t0
print("FER_RESULT " + json.dumps({"fer": fer.__version__, "analyze_s": round(seconds, 3), "setup_s": round(setup_s, 3),
                                  "frames_with_faces": len(df), **counts}))
"""


# -- the clip ----------------------------------------------------------------------------------------------
def _samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "examples" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_clip(work: Path, seconds: float) -> Path:
    """The ``seconds``-long clip in ``work`` (written once; a shorter clip is the longer one's start)."""
    import cv2
    import numpy as np

    frames = round(seconds * RATE)
    path = work / f"two_faces_{W}x{H}_{frames}f.mp4"
    manifest = path.with_suffix(".json")
    want = {"version": CLIP_VERSION, "frames": frames, "size": [W, H], "rate": RATE, "opencv": cv2.__version__}
    if path.is_file() and manifest.is_file() and json.loads(manifest.read_text()) == want:
        return path
    work.mkdir(parents=True, exist_ok=True)
    samples = _samples_module()
    backdrop = samples.background(W, H, seed=0)
    heads = []
    for name, x, y, side in PEOPLE:
        region, mask, (ox, oy) = samples.Source(samples.ORIGINALS / f"{name}.jpg").head(side)
        heads.append((region, mask, x - ox, y - oy))
    t0 = time.perf_counter()
    tmp = path.with_suffix(".part.mp4")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), RATE, (W, H))
    for i in range(frames):
        t, canvas = i / RATE, backdrop.copy()
        for k, (region, mask, x, y) in enumerate(heads):
            # slight, smooth drift: +-16 px across, +-8 px up and down, each face on its own phase
            dx, dy = 16 * math.sin(2 * math.pi * t / 7 + k), 8 * math.sin(2 * math.pi * t / 5 + 2 * k)
            canvas.paste(region, (round(x + dx), round(y + dy)), mask)
        writer.write(np.asarray(canvas)[:, :, ::-1])  # RGB -> BGR
    writer.release()
    tmp.replace(path)
    manifest.write_text(json.dumps(want))
    print(f"clip   : {path.name}, {frames:,} frames written in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def clip_facts(path: Path) -> dict[str, Any]:
    """Duration, frames, codec and the keyframe interval the writer chose (read from the packets)."""
    import av

    from fer_ray.video.decode import probe

    info = probe(path)
    with av.open(str(path)) as container:
        keyframes = [p.is_keyframe for p in container.demux(container.streams.video[0]) if p.size]
    return {
        "file": path.name,
        "duration_s": round(info.duration_s, 3),
        "frames": len(keyframes),
        "fps": info.fps,
        "size": [info.width, info.height],
        "codec": f"{info.codec} (OpenCV VideoWriter 'mp4v', default keyframe interval)",
        "keyframe_interval": round(len(keyframes) / max(1, sum(keyframes)), 2),
        "mb": round(path.stat().st_size / 2**20, 1),
    }


# -- running things in subprocesses, memory sampled or not --------------------------------------------------
def run_watched(cmd: list[str], log: Path, sample_s: float | None, env: dict | None = None, cwd=None) -> dict:
    """Run ``cmd`` (output to ``log``); its wall time, exit status and, if ``sample_s``, its tree's peak PSS."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd or ROOT)
        if not sample_s:
            proc.wait()
        while proc.poll() is None:
            peak = max(peak, tree_memory(proc.pid))
            try:
                proc.wait(timeout=sample_s)
            except subprocess.TimeoutExpired:
                pass
    out = {"wall_s": round(time.perf_counter() - t0, 3), "returncode": proc.returncode}
    if sample_s:
        out["peak_tree_pss_mb"] = round(peak / 2**20, 1)
    return out


def _fail(what: str, log: Path, returncode: int) -> None:
    tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
    raise SystemExit(f"{what} exited with status {returncode}; the end of {log}:\n{tail}")


def _env() -> dict[str, str]:
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}


# -- (a), (c): the job -----------------------------------------------------------------------------------
def job_command(clip: Path, out: Path, fps: float, a: argparse.Namespace, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = [sys.executable, str(ROOT / "jobs" / "score.py"), str(clip), "--out", str(out), "--overwrite"]
    cmd += ["--fps", f"{fps:g}"]
    passed = {"--model": a.model, "--engine": a.engine, "--address": a.address, "--ray-cpus": a.ray_cpus}
    for flag, value in passed.items():
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(a.job_arg or []) + list(extra)


def run_job(
    clip: Path, duration_s: float, fps: float, name: str, a: argparse.Namespace, sample_s: float | None, extra=()
) -> dict:
    """``jobs/score.py`` on ``clip`` at ``fps``; its own records (summary.json, runs/<id>.json) give the counts."""
    out, log = a.work / "out" / name, a.work / "logs" / f"{name}.log"
    proc = run_watched(job_command(clip, out, fps, a, extra), log, sample_s, _env())
    if proc["returncode"] != 0:
        _fail(f"jobs/score.py ({name})", log, proc["returncode"])
    summary = json.loads((out / "summary.json").read_text())
    runs = sorted((out / "runs").glob("*.json"), key=lambda p: p.stat().st_mtime)
    run = json.loads(runs[-1].read_text())
    if not summary["complete"] or summary.get("video_segments_failed"):
        raise SystemExit(f"the job's run {name} was incomplete or had failed segments: see {out}/summary.json")
    frames, pipeline_s = summary["frames_sampled"], run["pipeline_s"]
    r = {
        "fps": fps,
        "video_s": round(duration_s, 3),
        "segments": summary["video_segments_in"],
        "frames_sampled": frames,
        "faces": summary["video_faces"],
        "tracks": summary["tracks"],
        "pipeline_s": pipeline_s,
        "process_wall_s": proc["wall_s"],
        "video_s_per_s": round(duration_s / pipeline_s, 2),
        "frames_per_s": round(frames / pipeline_s, 2),
        "video_s_per_s_whole_process": round(duration_s / proc["wall_s"], 2),
        "stages": run["stages"],
        "actors": run["actors"],
        "engine": run["engine"],
        "flip_tta": run["flip_tta"],
    }
    if sample_s:
        r["peak_tree_pss_mb"] = proc["peak_tree_pss_mb"]
    return r


def timed_and_measured(clip: Path, duration_s: float, fps: float, name: str, a: argparse.Namespace) -> dict:
    """Time one run unobserved, then the peak memory of a second: sampling the PSS of a dozen Ray processes
    several times a second slows them (see ``common.timed_then_measured``)."""
    r = run_job(clip, duration_s, fps, name, a, None)
    r["peak_tree_pss_mb"] = run_job(clip, duration_s, fps, name, a, a.memory_interval_s)["peak_tree_pss_mb"]
    return r


# -- (b): the plain loop (run in a subprocess of its own: its memory is its own) ---------------------------------
def plain_loop(clip: str, fps: float, threads: int, batch_size: int, model: str | None, engine: str | None) -> dict:
    """Decode -> detect + crop -> track -> model in batches, one process, one pass over the whole clip."""
    import numpy as np

    from fer_ray.inference.artifact import load_artifact
    from fer_ray.score.config import DetectConfig
    from fer_ray.score.faces import faces_in_frame
    from fer_ray.video.config import VideoConfig
    from fer_ray.video.decode import Segment, probe, sample_frames
    from fer_ray.video.track import Tracker

    art = load_artifact(model, engine=engine, threads=threads)
    cfg, detect, clock = VideoConfig(fps=fps), DetectConfig(), time.perf_counter
    info = probe(clip)
    tracker, pending = Tracker(cfg), []
    spent = dict.fromkeys(("decode", "detect_crop", "track", "model"), 0.0)
    frames = faces = 0

    def forward(crops: list) -> int:
        t = clock()
        n = len(art.predict_proba(np.stack(crops)))  # the artifact's own TTA mode, as the job's actors
        spent["model"] += clock() - t
        return n

    t0 = clock()
    it = sample_frames(clip, Segment(0, 0.0, info.duration_s, True), cfg, pixel_format="gray")
    while True:
        t = clock()
        frame = next(it, None)
        spent["decode"] += clock() - t
        if frame is None:
            break
        frames += 1
        t = clock()
        boxes, crops, marks = faces_in_frame(frame.image, detect, art.preprocess)
        spent["detect_crop"] += clock() - t
        t = clock()
        h, w = frame.image.shape[:2]
        tracker.update([b or (0, 0, w, h) for b in boxes], marks)
        spent["track"] += clock() - t
        pending.extend(crops)
        if len(pending) >= batch_size:
            faces, pending = faces + forward(pending), []
    if pending:
        faces += forward(pending)
    seconds = clock() - t0
    spent["other"] = seconds - sum(spent.values())
    return {
        "fps": fps,
        "video_s": round(info.duration_s, 3),
        "frames_sampled": frames,
        "faces": faces,
        "tracks": tracker.next_id,
        "seconds": round(seconds, 3),
        "video_s_per_s": round(info.duration_s / seconds, 2),
        "frames_per_s": round(frames / seconds, 2),
        "profile_s": {k: round(v, 3) for k, v in spent.items()},
        "profile_share": {k: round(v / seconds, 3) for k, v in spent.items()},
        "engine": art.engine_name,
        "flip_tta": art.flip_tta,
        "threads": threads,
        "batch_size": batch_size,
    }


def run_plain_loop(clip: Path, a: argparse.Namespace) -> dict:
    log = a.work / "logs" / "plain_loop.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plain-loop", str(clip), "--fps", f"{a.fps:g}"]
    cmd += ["--threads", str(a.threads), "--batch-size", str(a.batch_size)]
    cmd += [x for flag, v in (("--model", a.model), ("--engine", a.engine)) if v is not None for x in (flag, v)]
    proc = run_watched(cmd, log, a.memory_interval_s, _env())
    if proc["returncode"] != 0:
        _fail("the plain loop", log, proc["returncode"])
    line = [x for x in log.read_text().splitlines() if x.startswith("PLAIN_LOOP_RESULT ")][-1]
    return {
        **json.loads(line.split(" ", 1)[1]),
        "process_wall_s": proc["wall_s"],
        "peak_tree_pss_mb": proc["peak_tree_pss_mb"],
    }


# -- (d): fer ----------------------------------------------------------------------------------------------
def run_fer(clip: Path, duration_s: float, a: argparse.Namespace) -> dict:
    frequency = round(RATE / a.fps)
    python = Path(a.fer_python).expanduser()
    if not python.is_file():
        print(f"fer    : skipped, no {python}; create its virtualenv with:\n    {FER_SETUP}", flush=True)
        return {"skipped": f"no fer virtualenv at {python}", "setup": FER_SETUP}
    log, cwd = a.work / "logs" / "fer.log", a.work / "fer_cwd"  # whatever fer writes stays in --work
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**_env(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = run_watched([str(python), "-c", FER_SCRIPT, str(clip), str(frequency)], log, a.memory_interval_s, env, cwd)
    if proc["returncode"] != 0:
        _fail(f"fer's Video.analyze ({python})", log, proc["returncode"])
    line = [x for x in log.read_text().splitlines() if x.startswith("FER_RESULT ")][-1]
    r = json.loads(line.split(" ", 1)[1])
    return {
        **r,
        "fps": a.fps,
        "call": f"Video.analyze(FER(), frequency={frequency}, display/save_frames/save_video/annotate_frames/"
        "zip_images=False, output='pandas')",
        "video_s": round(duration_s, 3),
        "video_s_per_s": round(duration_s / r["analyze_s"], 2),
        "frames_per_s": round(r["frames_analyzed"] / r["analyze_s"], 2),
        "process_wall_s": proc["wall_s"],
        "video_s_per_s_whole_process": round(duration_s / proc["wall_s"], 2),
        "peak_tree_pss_mb": proc["peak_tree_pss_mb"],
    }


def say(who: str, r: dict, extra: str) -> None:
    rate = "every frame" if r["fps"] == 0 else f"{r['fps']:g} fps"
    print(f"{who}: {r['video_s_per_s']:.2f} video-s/s, {r['frames_per_s']:.1f} frames/s at {rate}; {extra}", flush=True)


# -- putting it together -------------------------------------------------------------------------------------
def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the main clip (the job at --fps, fer)")
    p.add_argument(
        "--every-frame-minutes",
        type=float,
        default=1.0,
        help="length of the clip scored at every frame (--fps 0); all 18,000 frames of 10 minutes take long on 2 cores",
    )
    p.add_argument(
        "--memory-minutes",
        type=float,
        default=1.0,
        help="a short clip whose peak memory is reported beside the main one's",
    )
    p.add_argument(
        "--longer-minutes", type=float, default=20.0, help="the long clip whose peak memory must equal the main one's"
    )
    p.add_argument(
        "--fps", type=float, default=2.0, help="sampling rate of the job, the plain loop and fer (30/fps-th frames)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="engine threads of the plain loop (default: the job's in all: one per actor, one actor per core)",
    )
    p.add_argument(
        "--batch-size", type=int, default=256, help="faces per forward pass in the plain loop (the job's default)"
    )
    p.add_argument("--model", default=None, help="artifact directory (default: the shipped model)")
    p.add_argument("--engine", default=None, help="torch, onnx or onnx-int8 (default: the artifact's)")
    p.add_argument(
        "--job-arg",
        action="append",
        metavar="ARG",
        help="an extra jobs/score.py argument (repeatable, e.g. --job-arg=--segment-s=30)",
    )
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="generated clips, the job's outputs and logs")
    p.add_argument("--fer-python", default=str(DEFAULT_FER_PYTHON), help="the python of fer's own virtualenv")
    p.add_argument("--memory-interval-s", type=float, default=0.5, help="how often memory runs sample the process tree")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON result path")
    p.add_argument("--plain-loop", metavar="CLIP", help=argparse.SUPPRESS)  # (b) in its own process
    add_ray_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    setup()
    a = get_args_parser().parse_args(argv)
    if a.plain_loop:
        r = plain_loop(a.plain_loop, a.fps, a.threads, a.batch_size, a.model, a.engine)
        print("PLAIN_LOOP_RESULT " + json.dumps(r), flush=True)
        return 0
    if a.fps <= 0 or abs(RATE / a.fps - round(RATE / a.fps)) > 1e-9:
        sys.exit(f"--fps must divide {RATE} (fer analyses every ({RATE}/fps)-th frame), e.g. 2; got {a.fps}")
    if min(a.minutes, a.every_frame_minutes, a.memory_minutes) <= 0 or a.longer_minutes <= a.minutes:
        sys.exit("--minutes, --every-frame-minutes and --memory-minutes must be > 0, --longer-minutes > --minutes")
    a.work = a.work.expanduser().resolve()
    import av
    import cv2
    import onnxruntime

    lengths = {a.minutes, a.every_frame_minutes, a.memory_minutes, a.longer_minutes}
    clips = {m: make_clip(a.work, m * 60) for m in sorted(lengths)}
    facts = {m: clip_facts(c) for m, c in clips.items()}
    main_clip, main_s = clips[a.minutes], facts[a.minutes]["duration_s"]
    listed = ", ".join(f"{f['file']} ({f['mb']} MB)" for f in facts.values())
    print(f"clips  : {listed} in {a.work}", flush=True)

    plain = run_plain_loop(main_clip, a)
    say("plain  ", plain, f"time shares {plain['profile_share']}")
    fer = run_fer(main_clip, main_s, a)
    if "skipped" not in fer:
        say(
            "fer    ", fer, f"{fer['faces']} faces in {fer['frames_analyzed']} frames, analyze {fer['analyze_s']:.1f} s"
        )
    job = timed_and_measured(main_clip, main_s, a.fps, f"fps{a.fps:g}_{a.minutes:g}min", a)
    say("ray job", job, f"{job['faces']} faces, {job['tracks']} tracks, peak {job['peak_tree_pss_mb']:.0f} MB")
    m = a.every_frame_minutes
    every = timed_and_measured(clips[m], facts[m]["duration_s"], 0.0, f"fps0_{m:g}min", a)
    say("ray job", every, f"{every['faces']} faces, peak {every['peak_tree_pss_mb']:.0f} MB")
    m, short_s = a.memory_minutes, facts[a.memory_minutes]["duration_s"]
    memory = {"short": run_job(clips[m], short_s, a.fps, f"fps{a.fps:g}_{m:g}min", a, a.memory_interval_s)}
    if memory["short"]["actors"] < job["actors"]:
        # A clip of one segment runs one actor; the long one runs one per core. Each actor holds a model and
        # a segment's rows, so the control cuts the short clip into as many segments as the long run had actors.
        seg = ("--segment-s", f"{short_s / job['actors']:g}")
        name = f"fps{a.fps:g}_{m:g}min_{job['actors']}actors"
        memory["short_same_actors"] = run_job(clips[m], short_s, a.fps, name, a, a.memory_interval_s, seg)
        memory["short_same_actors"]["job_args_added"] = list(seg)
    same = memory.get("short_same_actors", memory["short"])
    growth = round(job["peak_tree_pss_mb"] / same["peak_tree_pss_mb"], 3)
    memory["long_over_short_same_actors"] = growth
    memory["long_over_short_as_run"] = round(job["peak_tree_pss_mb"] / memory["short"]["peak_tree_pss_mb"], 3)
    print(
        f"memory : {m:g} min {memory['short']['peak_tree_pss_mb']:.0f} MB ({memory['short']['actors']} actors), "
        f"{same['peak_tree_pss_mb']:.0f} MB ({same['actors']}); {a.minutes:g} min {job['peak_tree_pss_mb']:.0f} MB "
        f"({job['actors']}): {growth:.2f}x at the same actors",
        flush=True,
    )
    m = a.longer_minutes
    longer = run_job(clips[m], facts[m]["duration_s"], a.fps, f"fps{a.fps:g}_{m:g}min", a, a.memory_interval_s)
    memory["longer"] = longer
    flat = memory["longer_over_long"] = round(longer["peak_tree_pss_mb"] / job["peak_tree_pss_mb"], 3)
    print(
        f"memory : {m:g} min {longer['peak_tree_pss_mb']:.0f} MB ({longer['actors']} actors): {flat:.2f}x",
        flush=True,
    )

    ratios = {
        "job_over_plain_loop": round(job["video_s_per_s"] / plain["video_s_per_s"], 3),
        "job_over_plain_loop_whole_process": round(plain["process_wall_s"] / job["process_wall_s"], 3),
        "memory_long_over_short_same_actors": growth,
        "memory_longer_over_long": flat,
    }
    if "skipped" not in fer:
        ratios["job_over_fer"] = round(job["video_s_per_s"] / fer["video_s_per_s"], 3)
        ratios["job_over_fer_whole_process"] = round(fer["process_wall_s"] / job["process_wall_s"], 3)
    result = {
        "benchmark": "video scoring: Ray job vs plain loop vs fer Video.analyze (issue #33)",
        "command": " ".join(["python benchmarks/score_video.py", *(argv if argv is not None else sys.argv[1:])]),
        # shorter runs only check that the benchmark works
        "valid_for_comparison": a.minutes >= 10
        and a.every_frame_minutes >= 1
        and a.memory_minutes >= 1
        and a.longer_minutes >= 2 * a.minutes,
        "every_frame_bounded": f"every frame (--fps 0) is measured on the {a.every_frame_minutes:g}-minute clip "
        f"(--every-frame-minutes), not the {a.minutes:g}-minute one",
        "clips": {f"{m:g}_min": f for m, f in facts.items()},
        "ray_job": {f"fps_{a.fps:g}": job, "every_frame": every},
        "memory_vs_length": {
            "long_minutes": a.minutes,
            "short_minutes": a.memory_minutes,
            "longer_minutes": a.longer_minutes,
            **memory,
        },
        "plain_loop": plain,
        "fer": fer,
        "ratios": ratios,
        "targets": {
            "job >= 3x fer at --fps": ratios.get("job_over_fer", 0) >= 3.0 if "skipped" not in fer else None,
            "job >= 1.0x plain loop": ratios["job_over_plain_loop"] >= 1.0,
            "every face tracked (tracks == people)": job["tracks"] == len(PEOPLE),
            "flat memory (longer clip <= 1.1x the main one)": flat <= 1.1,
        },
        "settings": {
            "fps": a.fps,
            "fer_frequency": round(RATE / a.fps),
            "plain_loop_threads": a.threads,
            "plain_loop_batch_size": a.batch_size,
            "job_args": job_command(Path("CLIP"), Path("OUT"), a.fps, a)[2:],
            "memory": f"summed PSS of the process tree, sampled every {a.memory_interval_s:g} s "
            "(the job: a second run; its time comes from an unobserved one)",
        },
        "machine": machine_info(onnxruntime=onnxruntime.__version__, av=av.__version__, opencv=cv2.__version__),
    }
    print("ratios :", ratios)
    print(
        "targets:", {k: {True: "met", False: "MISSED", None: "not measured"}[v] for k, v in result["targets"].items()}
    )
    write_result(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
