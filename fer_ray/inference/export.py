"""Export an artifact's model for ONNX Runtime: ``model.onnx`` (fp32) and ``model.int8.onnx`` (static int8),
with ``host_check.npz`` and each engine's file, sha256 and validation accuracy, which ``default_engine`` decides by.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fer_ray.inference import host_check
from fer_ray.inference.artifact import WEIGHTS, Artifact, load_artifact, resolve_model, sha256_file, write_meta
from fer_ray.inference.engine import ENGINES, INPUT_NAME, ONNX_FILES, OUTPUT_NAME
from fer_ray.labels import USAGE_TO_SPLIT
from fer_ray.preprocess import PreprocessConfig

logger = logging.getLogger(__name__)


def export_fp32(model, image_size: int, out: Path) -> None:
    """``torch.onnx.export`` of the logits, one self-contained file, any batch size."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):  # (B, 1, S, S) -> (B, K)
            return self.m(x)["logits"]

    wrapped = Logits(model.cpu().float().eval()).eval()
    dummy = torch.zeros(2, 1, image_size, image_size)
    # The exporter prints its progress and logs every optimisation pass at INFO: not for users.
    levels = {q: q.level for q in map(logging.getLogger, ("onnx_ir", "onnxscript", "onnxruntime"))}
    for q in levels:
        q.setLevel(logging.WARNING)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            wrapped,
            (dummy,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,  # torch 2.14 otherwise writes the weights to a .onnx.data file beside it
            verbose=False,
        )
    for q, level in levels.items():
        q.setLevel(level)


def strip_provenance(path: Path) -> None:
    """Drop the exporter's per-node debugging metadata in place: stack traces and module paths name the
    exporting machine's absolute paths, and the graph does not need them."""
    import onnx

    model = onnx.load(str(path))

    def strip(items) -> None:
        for item in items:
            del item.metadata_props[:]
            item.doc_string = ""

    def clean(graph) -> None:
        strip([*graph.node, *graph.input, *graph.output, *graph.value_info, *graph.initializer, graph])
        for attr in (a for node in graph.node for a in node.attribute):
            if attr.type == onnx.AttributeProto.GRAPH:
                clean(attr.g)
            for g in attr.graphs:
                clean(g)

    clean(model.graph)
    strip(n for fn in model.functions for n in fn.node)
    model.doc_string = ""
    onnx.save(model, str(path))


def proba_both(artifact, faces: np.ndarray, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """``Artifact.predict_proba_both`` over ``faces`` in batches: (single-pass, flip-TTA) probabilities."""
    parts = [artifact.predict_proba_both(faces[i : i + batch_size]) for i in range(0, len(faces), batch_size)]
    return np.concatenate([s for s, _ in parts]), np.concatenate([t for _, t in parts])


def engine_accuracies(
    path: Path, names: Iterable[str], faces: np.ndarray, labels: np.ndarray, threads: int | None = None
) -> Iterator[tuple[Artifact, dict[str, float], float]]:
    """(artifact, single-pass and flip-TTA accuracy, top-1 agreement with the first engine) per engine, each
    measured as it runs on this CPU (``verify=False``: even an engine the host check would replace)."""
    reference = None
    for name in names:
        art = load_artifact(path, engine=name, threads=threads, verify=False)
        single, tta = (p.argmax(1) for p in proba_both(art, faces))
        top = tta if art.flip_tta else single  # as scoring and Serve compute it
        reference = top if reference is None else reference
        acc = {"val_accuracy": top, "val_accuracy_single": single, "val_accuracy_flip_tta": tta}
        yield art, {k: float((v == labels).mean()) for k, v in acc.items()}, float((top == reference).mean())


def export_engines(
    artifact_dir: str | os.PathLike,
    calib_faces: np.ndarray,
    val_faces: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    *,
    val_split: str = "val",
    calibration: dict[str, Any] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx`` and ``model.int8.onnx`` into ``artifact_dir``; returns the ``engines`` record.

    ``calib_faces``: ``uint8`` (N, S, S) TRAINING faces for the int8 calibration, never validation or test
    faces (``calibration`` says where they came from). Without validation faces (PublicTest for FER2013)
    the accuracies are ``None`` and the int8 engine is not chosen by default.
    """
    import onnx
    import onnxruntime
    import torch

    path = resolve_model(artifact_dir)  # a shipped name is upgraded where it ships
    art = load_artifact(path, engine="torch")
    calib_faces = np.asarray(calib_faces)
    if calib_faces.ndim != 3 or len(calib_faces) == 0 or calib_faces.dtype != np.uint8:
        raise ValueError(f"calib_faces must be uint8 faces (N, S, S) with N >= 1, got {calib_faces.shape}")
    with tempfile.TemporaryDirectory(prefix="fer_ray_onnx_", dir=path) as tmp:
        fp32, int8 = Path(tmp) / ONNX_FILES["onnx"], Path(tmp) / ONNX_FILES["onnx-int8"]
        export_fp32(art.model, art.preprocess.image_size, fp32)
        host_check.quantize_int8(fp32, int8, calib_faces, art.preprocess)
        bound = host_check.int8_pair_bound(int8)
        if bound["max_pair_sum"] > host_check.INT16_MAX:  # pragma: no cover - reduce_range guarantees it
            raise RuntimeError(f"int8 weights up to {bound['max_abs_weight']} can saturate CPUs without VNNI: {bound}")
        for f in (fp32, int8):
            strip_provenance(f)
            os.replace(f, path / f.name)  # same filesystem: atomic
    check_faces = host_check.make_check_faces(art.preprocess)
    reference = art.predict_logits(check_faces)  # the PyTorch model's logits: what every engine must match
    host_check.save_check(path, check_faces, reference)
    meta = art.meta
    engines: dict[str, Any] = {"torch": {"file": WEIGHTS, "sha256": meta["weights_sha256"]}}
    for name, file in ONNX_FILES.items():
        engines[name] = {"file": file, "sha256": sha256_file(path / file), "bytes": (path / file).stat().st_size}
    meta["engines"] = engines
    opsets = onnx.load(str(path / ONNX_FILES["onnx"])).opset_import
    meta["onnx_export"] = {
        "opset": int(max(o.version for o in opsets if o.domain in ("", "ai.onnx"))),
        "quantization": {
            **host_check.QUANTIZATION,
            "max_pair_sum": bound["max_pair_sum"],
            "int16_max": host_check.INT16_MAX,
        },
        "calibration": {"faces": int(len(calib_faces)), "split": "train", **(calibration or {})},
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta["host_check"] = {
        "file": host_check.CHECK_FILE,
        "sha256": sha256_file(path / host_check.CHECK_FILE),
        "faces": int(len(check_faces)),
        "photos": list(host_check.PHOTOS),
        "reference": "torch fp32 logits, single pass",
    }
    write_meta(path, meta)  # hashes first: load_artifact verifies them below
    logits = {name: load_artifact(path, engine=name, verify=False).predict_logits(check_faces) for name in ONNX_FILES}
    checked = {name: asdict(host_check.compare(name, z, reference)) for name, z in logits.items()}
    meta["host_check"]["export_host"] = {**checked, "cpu": host_check.cpu_description()}

    if val_faces is not None and val_labels is not None and len(val_faces):
        val_labels = np.asarray(val_labels, dtype=np.int64)
        for art_e, acc, agree in engine_accuracies(path, ENGINES, np.asarray(val_faces), val_labels, threads):
            engines[art_e.engine_name].update(acc, top1_agreement_with_torch=agree)
        meta["engine_validation"] = {"split": val_split, "n": int(len(val_labels)), "flip_tta": art.flip_tta}
    else:
        logger.warning("%s: no validation faces; engine accuracies are not recorded (int8 is not the default)", path)
        for name in ENGINES:
            engines[name].update(val_accuracy=None)
        meta["engine_validation"] = {"split": None, "n": 0, "flip_tta": art.flip_tta}
    write_meta(path, meta)
    return engines


def labeled_faces(
    source: str | os.PathLike,
    split: str,
    preprocess: PreprocessConfig,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``uint8`` faces (N, S, S) and labels of one split (train/val/test) of any labelled source; ``limit``: a
    seeded random sample (image-folder layouts are sorted by class: the first rows would be one expression)."""
    from fer_ray.data.decode import decode_batch

    s = str(source)
    if s.endswith(".parquet") and not s.startswith("s3://"):
        import pyarrow.parquet as pq

        usages = [u for u, sp in USAGE_TO_SPLIT.items() if sp == split]
        t = pq.read_table(s, columns=["image", "label", "usage"], filters=[("usage", "in", usages)])
        if limit is not None and limit < t.num_rows:
            idx = np.sort(np.random.default_rng(seed).choice(t.num_rows, size=limit, replace=False))
            t = t.take(idx)
        rows = t.to_pandas().rename(columns={"usage": "path"})
        out = decode_batch({c: rows[c].to_numpy() for c in rows.columns}, preprocess)
        faces, labels, errors = out["face"], out["label"], out["error"]
    else:
        from fer_ray.data import decode, read_labeled

        ds = read_labeled(s, splits=(split,))
        if limit is not None:
            n = ds.count()
            if n > limit:
                ds = ds.random_sample(min(1.0, 2.0 * limit / n), seed=seed)
        parts = list(decode(ds, preprocess).iter_batches(batch_size=1024, batch_format="numpy"))
        if not parts:
            return np.zeros((0, preprocess.image_size, preprocess.image_size), np.uint8), np.zeros(0, np.int64)
        faces, labels, errors = (np.concatenate([p[k] for p in parts]) for k in ("face", "label", "error"))
        if limit is not None and len(faces) > limit:
            keep = np.sort(np.random.default_rng(seed).choice(len(faces), size=limit, replace=False))
            faces, labels, errors = faces[keep], labels[keep], errors[keep]
    ok = np.array([not isinstance(e, str) for e in errors], dtype=bool)
    return faces[ok], np.asarray(labels, dtype=np.int64)[ok]


def validation_faces(
    source: str | os.PathLike, preprocess: PreprocessConfig, labels: str = "fer2013"
) -> tuple[np.ndarray, np.ndarray, str]:
    """The validation split's faces, labels and name in the label set a model learnt (its artifact's
    ``label_set``): a FER+ model's engines are compared and its confidence calibrated against FER+
    majority votes (the PublicTest faces that have one), not against FER2013 labels it never saw."""
    if labels == "ferplus":
        from fer_ray.data import ferplus

        faces, _, plus, _ = ferplus.labelled_faces(str(source), "PublicTest", preprocess)
        return faces, plus, "val (PublicTest, FER+ labels)"
    faces, y = labeled_faces(source, "val", preprocess)
    return faces, y, "val (PublicTest)" if str(source).endswith((".parquet", ".csv")) else "val"


def export_engines_from_source(
    artifact_dir: str | os.PathLike,
    source: str | os.PathLike,
    *,
    calib_size: int = host_check.CALIBRATION_FACES,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """:func:`export_engines` with ``calib_size`` training faces and the whole validation split of ``source``."""
    art = load_artifact(artifact_dir, engine="torch")
    calib, _ = labeled_faces(source, "train", art.preprocess, limit=calib_size, seed=seed)
    if len(calib) == 0:
        raise ValueError(f"{source} has no training faces to calibrate the int8 model on")
    val_faces, val_labels, val_split = validation_faces(source, art.preprocess, art.label_set)
    return export_engines(
        artifact_dir,
        calib,
        val_faces,
        val_labels,
        val_split=val_split,
        calibration={"seed": seed, "source": Path(str(source)).name},
        threads=threads,
    )
