"""Video input: recorded clips -> sampled frames -> faces linked into tracks (issue #33).

    from fer_ray.video.config import VideoConfig
    from fer_ray.video.decode import probe, sample_frames, segments
    info = probe("clip.mp4")
    for segment in segments(info, VideoConfig()):
        for frame in sample_frames("clip.mp4", segment, VideoConfig()):
            ...

- :mod:`~fer_ray.video.config`: :class:`VideoConfig` and the video file extensions;
- :mod:`~fer_ray.video.decode`: probe, split into segments, sample frames (PyAV);
- :mod:`~fer_ray.video.track`: link faces across sampled frames, per-track summaries.

Only the config is imported here, so importing the package does not load FFmpeg.
"""

from fer_ray.video.config import VIDEO_EXTENSIONS, VideoConfig

__all__ = ["VIDEO_EXTENSIONS", "VideoConfig"]
