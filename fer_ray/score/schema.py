"""The columns of scoring's rows, in one place: what the CPU stage hands the actors and what lands in Parquet.

One output schema for every part file, so that files written by different runs (and engines)
always read back as one table with pandas, DuckDB or Spark.
"""

from __future__ import annotations

import pyarrow as pa

from fer_ray.labels import EMOTIONS

PROB_COLUMNS = tuple(f"p_{e}" for e in EMOTIONS)
# ok: one row per face; no_face: one row for an image without a face; error: one row with the reason.
STATUSES = ("ok", "no_face", "error")

# The face's box and the upright image's size, in pixels.
_BOX = [(c, pa.int32()) for c in ("x", "y", "w", "h", "image_width", "image_height")]
# Rows between the CPU stage and the actors: the report columns known before inference plus the crop.
_PREPARED_FIELDS = [
    ("path", pa.string()),
    ("size", pa.int64()),
    ("mtime", pa.float64()),
    ("face_index", pa.int32()),  # 0..faces-1; null on no_face/error rows
    ("faces", pa.int32()),  # faces found in the image (0 on no_face/error rows)
    *_BOX,
    ("status", pa.string()),
    ("error", pa.string()),
]
# Video rows (fer_ray.video): null on images. A segment is the unit of work and of resume; its key adds
# the segment and how the video was cut and sampled, so a rerun at another --fps or --segment-s rescores.
VIDEO_FIELDS = [
    ("segment", pa.int32()),
    ("frame_index", pa.int64()),  # in the video stream, from 0
    ("timestamp_s", pa.float64()),  # of the frame, from the video's start
    ("track_id", pa.int32()),  # the face's track within its segment; tracks/ joins them across segments
    ("sample_fps", pa.float64()),  # --fps of the run (0: every frame)
    ("segment_s", pa.float64()),  # --segment-s of the run
    ("segment_rows", pa.int32()),  # rows of the segment in all: what the exactly-once check counts
]
PREPARED_SCHEMA = pa.schema([*_PREPARED_FIELDS, *VIDEO_FIELDS, ("face", pa.binary())])  # face: uint8 (S, S) bytes

OUTPUT_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("face_index", pa.int32()),
        *_BOX,
        *[(c, pa.float32()) for c in PROB_COLUMNS],
        ("emotion", pa.string()),
        ("confidence", pa.float32()),
        # the top probability is below the artifact's calibrated cut-off (fer_ray.inference.calibration)
        ("uncertain", pa.bool_()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("faces", pa.int32()),
        ("model_name", pa.string()),
        ("model_id", pa.string()),
        ("weights_sha256", pa.string()),
        ("engine", pa.string()),  # torch, onnx or onnx-int8
        ("model_sha256", pa.string()),  # of the file the engine executed (weights.pt or an ONNX file)
        ("scored_at", pa.timestamp("ms", tz="UTC")),
        ("run_id", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        *VIDEO_FIELDS,
    ]
)
