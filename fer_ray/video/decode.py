"""Video decoding: probe a clip, split it into time segments, sample frames from one segment.

Decoding is PyAV's (``av``): maintained, and it bundles FFmpeg inside its wheel, so mp4, mov,
mkv, webm, avi and m4v decode on any host with no system FFmpeg. ``ray.data.read_videos`` was
not an option: it needs decord, unmaintained since 2021 and without wheels for current Pythons.

Which frames are sampled is a pure function of the stream's timestamps: at ``fps`` > 0, the frame
on screen at each time ``k / fps`` (k = 0, 1, 2, ...; once, however many sample times it spans);
at ``fps == 0``, every frame. A sample time belongs to exactly one segment, so segments decoded
in parallel, on any workers, yield exactly the frames of one pass over the whole video.

Memory stays flat in the video's length: packets are read one keyframe group (GOP) ahead and
frames are yielded one at a time. A segment starts with a seek to the keyframe before it, and
with ``skip_gops`` a group holding no sampled frame is read but never decoded: at 2 fps of a 30
fps video with half-second groups, most groups are decoded only up to the sampled frame's group.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from fer_ray.video.config import VideoConfig

Source = str | os.PathLike | bytes | io.IOBase  # a local path, or the file's bytes (S3 reads give bytes)
# Sample times k / fps are compared with frame times computed from integer timestamps; a frame a
# rounding error after a sample time is still the frame on screen at it.
_EPS = 1e-6


class VideoError(ValueError):
    """A video that cannot be used: unreadable, no video stream, no frames, or undecodable data.

    The message says which and what to do; batch scoring turns it into an error row.
    """


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the first video stream (``frames`` is an estimate)."""

    duration_s: float
    fps: float  # the average frame rate
    frames: int
    width: int
    height: int
    codec: str


@dataclass(frozen=True)
class Segment:
    """Sample times ``start_s <= t < end_s`` of a video; the ``last`` one also owns anything later,
    so frames past a container's (sometimes short) duration are not lost."""

    index: int
    start_s: float
    end_s: float
    last: bool


class VideoFrame(NamedTuple):
    """One sampled frame: its index in the stream, its time in seconds from the start, its pixels."""

    index: int
    timestamp_s: float
    image: np.ndarray  # (H, W, 3) uint8 RGB, or (H, W) for pixel_format="gray"


def _open(source: Source):
    import av

    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoError("the video file is empty (0 bytes); re-export or re-upload it")
        source = io.BytesIO(source)
    elif not isinstance(source, io.IOBase):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise VideoError(f"no such video file: {path}")
        if os.path.getsize(path) == 0:
            raise VideoError(f"the video file is empty (0 bytes): {path}; re-export or re-upload it")
    try:
        container = av.open(source, mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError(f"cannot open the video ({e}); is it a complete mp4/mov/mkv/webm/avi file?") from e
    if not container.streams.video:
        container.close()
        raise VideoError("the file has no video stream (an empty recording, or audio only); pass a video file")
    return container


def _frame_rate(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(source: Source) -> VideoInfo:
    """Duration, frame rate, frame count estimate and size of ``source``'s first video stream.

    Raises :class:`VideoError` for a file that cannot be opened, has no video stream or no frames.
    """
    container = _open(source)
    try:
        stream = container.streams.video[0]
        fps = _frame_rate(stream)
        if stream.duration:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        else:
            duration = 0.0
        frames = stream.frames or (round(duration * fps) if fps else 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        if frames <= 0 or duration <= 0:
            raise VideoError("the video has no frames (zero length); re-export or re-record it")
        if not width or not height:
            raise VideoError("the video stream has no picture size; the file is probably damaged")
        return VideoInfo(duration, fps, int(frames), int(width), int(height), stream.codec_context.name)
    finally:
        container.close()


def segments(info: VideoInfo, cfg: VideoConfig) -> list[Segment]:
    """Consecutive ``segment_s`` pieces covering ``[0, duration)`` once; a remainder shorter than a
    tenth of a segment joins the one before, so no task is spent on a sliver."""
    n = max(1, math.ceil(info.duration_s / cfg.segment_s - 0.1))
    starts = [i * cfg.segment_s for i in range(n)]
    # Each end is the next segment's start, the same float: no sample time falls between two segments.
    ends = [*starts[1:], info.duration_s]
    return [Segment(i, s, e, i == n - 1) for i, (s, e) in enumerate(zip(starts, ends, strict=True))]


def sample_frames(
    source: Source, segment: Segment, cfg: VideoConfig, pixel_format: str = "rgb24"
) -> Iterator[VideoFrame]:
    """The sampled frames of ``segment``, in order (see the module docstring for which they are).

    ``pixel_format="gray"`` skips the colour conversion when only detection and the (grayscale)
    model will look at the frame. Raises :class:`VideoError` when the video cannot be opened or
    its data cannot be decoded.
    """
    import av

    container = _open(source)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        ctx.thread_count = cfg.decode_threads
        if cfg.decode_threads != 1:
            ctx.thread_type = "AUTO"
        clock = _Clock(stream)
        wanted: dict[int, int] = {}  # pts -> frame index; a decoder may return a frame groups later
        try:
            for group, owned, n_decode in _groups(container, stream, clock, segment, cfg):
                wanted.update(owned)
                for packet in group.packets[:n_decode]:
                    yield from _emit(ctx.decode(packet), wanted, clock, pixel_format)
            yield from _emit(ctx.decode(None), wanted, clock, pixel_format)  # frames the decoder held back
        except av.FFmpegError as e:
            raise VideoError(f"cannot decode the video near {segment.start_s:.1f} s ({e}); the file is damaged") from e
        if wanted:  # every sampled frame must come out as a frame or as an error, never silently vanish
            first = clock.seconds(min(wanted))
            raise VideoError(
                f"{len(wanted)} sampled frame(s) from {first:.2f} s could not be decoded; the file is damaged"
            )
    finally:
        container.close()


class _Clock:
    """Stream timestamps (integer pts) <-> seconds from the stream's start."""

    def __init__(self, stream):
        self.time_base = stream.time_base or Fraction(1, 90_000)
        self.start = stream.start_time or 0
        self.rate = _frame_rate(stream)
        # One nominal frame in pts: how long the last frame stays on screen.
        self.frame_pts = max(1, round(1 / (self.rate * self.time_base))) if self.rate else 1

    def seconds(self, pts: int) -> float:
        return float((pts - self.start) * self.time_base)

    def pts(self, seconds: float) -> int:
        return self.start + math.floor(Fraction(seconds) / self.time_base)

    def index(self, pts: int) -> int:
        """The frame's position in a constant-rate stream (what cameras and encoders write); for a
        variable-rate video an estimate, and ``timestamp_s`` is the exact time."""
        return round(self.seconds(pts) * self.rate) if self.rate else 0


@dataclass
class _Group:
    """The packets of one keyframe group and their pts, both in decode order."""

    packets: list
    pts: list[int]
    next_pts: int | None = None  # the pts of the frame after this group's last, once known

    @property
    def open(self) -> bool:
        """Frames shown before the keyframe: they reference the previous group, which must be decoded."""
        return bool(self.pts) and min(self.pts) < _packet_pts(self.packets[0])


def _packet_pts(packet) -> int:
    pts = packet.pts if packet.pts is not None else packet.dts
    if pts is None:
        raise VideoError("the video's packets carry no timestamps; remux it (ffmpeg -i in -c copy out.mp4)")
    return pts


def _demux(container, stream, clock: _Clock, segment: Segment) -> Iterator[_Group]:
    """Keyframe groups from (just before) the segment's start, each with the next one's first pts."""
    if segment.start_s > 0:
        _seek(container, stream, clock, segment.start_s)
    group: _Group | None = None
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's end-of-stream marker
            continue
        if packet.is_keyframe and group is not None and group.pts:
            yield group
            group = None
        if group is None:
            group = _Group([], [])
        group.packets.append(packet)
        group.pts.append(_packet_pts(packet))
    if group is not None and group.pts:
        yield group


def _seek(container, stream, clock: _Clock, start_s: float) -> None:
    """To a keyframe at or before the frame on screen at ``start_s``.

    Demuxers seek by decode time; with B-frames a keyframe decoded before ``start_s`` may be shown
    after it, so the seek backs off until the first keyframe found is shown no later than it (at
    worst from the start of the stream).
    """
    target = clock.pts(start_s)
    for back_s in (1.0, 5.0, 30.0):
        offset = max(clock.start, clock.pts(start_s - back_s))
        container.seek(offset, stream=stream, backward=True, any_frame=False)
        first = next((p for p in container.demux(stream) if p.size), None)
        if first is not None and _packet_pts(first) <= target:
            container.seek(offset, stream=stream, backward=True, any_frame=False)
            return
        if offset == clock.start:
            break
    container.seek(clock.start, stream=stream, backward=True, any_frame=False)


def _groups(
    container, stream, clock: _Clock, segment: Segment, cfg: VideoConfig
) -> Iterator[tuple[_Group, dict[int, int], int]]:
    """(group, its sampled frames, how many of its packets to decode), one group behind the demuxer:
    a group's last frame needs the next group's first pts, and an open next group needs all of this one."""
    end = math.inf if segment.last else segment.end_s
    prev: _Group | None = None
    for group in _demux(container, stream, clock, segment):
        if prev is not None:
            prev.next_pts = min(group.pts)
            owned = _owned(prev, clock, segment, cfg)
            yield prev, owned, _packets_to_decode(prev, owned, cfg, group.open)
            if clock.seconds(min(group.pts)) >= end:
                return  # every frame from here on is shown after the segment
        prev = group
    if prev is not None:
        prev.next_pts = max(prev.pts) + clock.frame_pts
        owned = _owned(prev, clock, segment, cfg)
        yield prev, owned, _packets_to_decode(prev, owned, cfg, False)


def _packets_to_decode(group: _Group, owned: dict[int, int], cfg: VideoConfig, next_open: bool) -> int:
    """All packets, or (``skip_gops``) those up to the last sampled frame's: a frame only references
    frames decoded before it, so what follows it in decode order is needed by nothing we keep."""
    if not cfg.skip_gops or next_open:
        return len(group.packets)
    return max((i + 1 for i, p in enumerate(group.pts) if p in owned), default=0)


def _owned(group: _Group, clock: _Clock, segment: Segment, cfg: VideoConfig) -> dict[int, int]:
    """{pts: frame index} of the group's frames that are sampled and whose sample time is in ``segment``."""
    pts = sorted(set(group.pts))
    nexts = [*pts[1:], group.next_pts if group.next_pts is not None else pts[-1] + clock.frame_pts]
    end = math.inf if segment.last else segment.end_s
    owned: dict[int, int] = {}
    for p, q in zip(pts, nexts, strict=True):
        t = clock.seconds(p)
        if cfg.fps == 0:
            sample_t = t
        else:
            # The first sample time at or after the frame appears; the frame is on screen at it when
            # the next frame appears later.
            k = math.ceil(t * cfg.fps - _EPS)
            sample_t = k / cfg.fps
            if clock.seconds(q) <= sample_t + _EPS / cfg.fps:
                continue
        if segment.start_s <= sample_t < end:
            owned[p] = clock.index(p)
    return owned


def _emit(frames, wanted: dict[int, int], clock: _Clock, pixel_format: str) -> Iterator[VideoFrame]:
    for frame in frames:
        pts = frame.pts
        if pts is None or pts not in wanted:
            continue
        index = wanted.pop(pts)
        yield VideoFrame(index, clock.seconds(pts), frame.to_ndarray(format=pixel_format))


__all__ = ["Segment", "VideoError", "VideoFrame", "VideoInfo", "probe", "sample_frames", "segments"]
