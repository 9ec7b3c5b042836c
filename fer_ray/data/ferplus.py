"""FER+ labels (Barsoum et al., ICMI 2016): ten crowd votes per FER2013 image as one 7-class label, the
usual way past FER2013's wrong labels. The rule is microsoft/FERPlus's ``majority`` mode; images with no
majority, or one for ``unknown``, ``NF`` (not a face) or ``contempt`` (no class in :mod:`fer_ray.labels`),
are left out, counted by reason, as are Parquet rows whose ``csv_index`` (into ``fer2013new.csv``) is
``csv_index_ambiguous`` (a pixel-identical twin whose votes may differ)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_ray.data.s3 import open_text
from fer_ray.labels import EMOTIONS, label_of

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
_VOTE_LABEL = {name: label_of(name) for name in VOTE_COLUMNS[:7]}  # FER+ names are aliases in fer_ray.labels
LABEL_SETS = ("fer2013", "ferplus")
NO_LABEL = -1
CSV_NAME = "fer2013new.csv"  # beside fer2013.parquet under the data root


def majority(votes: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """FERPlus ``majority`` labels for vote rows (N, 10): (labels with -1 where none, reason per row)."""
    v = np.where(votes <= 1, 0, votes)  # a single vote is an outlier (FERPlus's rule)
    total = v.sum(1)
    top = v.argmax(1)
    labels = np.full(len(v), NO_LABEL, dtype=np.int64)
    reasons: list[str | None] = []
    for i in range(len(v)):
        if total[i] == 0:
            reasons.append("no votes")
        elif v[i, top[i]] * 2 <= total[i]:
            reasons.append("no majority")
        elif VOTE_COLUMNS[top[i]] not in _VOTE_LABEL:
            reasons.append(VOTE_COLUMNS[top[i]])  # contempt, unknown, NF
        else:
            labels[i] = _VOTE_LABEL[VOTE_COLUMNS[top[i]]]
            reasons.append(None)
    return labels, reasons


def read_votes(csv_path: str | Path) -> tuple[np.ndarray, list[str | None]]:
    """Majority label and drop reason for every row of ``fer2013new.csv`` (index = FER2013 csv row)."""
    df = pd.read_csv(csv_path, keep_default_na=False)
    missing = [c for c in VOTE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{csv_path}: not a FER+ fer2013new.csv, vote columns {missing} are missing")
    labels, reasons = majority(df[list(VOTE_COLUMNS)].to_numpy(dtype=np.int64))
    # Rows FER+ dropped as non-faces have no image name; their votes are all zero anyway.
    no_name = df["Image name"].astype(str).str.strip() == ""
    labels[no_name.to_numpy()] = NO_LABEL
    reasons = ["not a face (no FER+ image)" if n else r for r, n in zip(reasons, no_name, strict=True)]
    return labels, reasons


def _join_rows(df: pd.DataFrame, labels: np.ndarray, reasons: list[str | None]) -> tuple[np.ndarray, list[str | None]]:
    """FER+ label (or -1) and reason for rows of our Parquet, from ``csv_index`` (and ``csv_index_ambiguous``)."""
    ambiguous = df["csv_index_ambiguous"].to_numpy() if "csv_index_ambiguous" in df else None
    out = np.full(len(df), NO_LABEL, dtype=np.int64)
    why: list[str | None] = []
    for i, idx in enumerate(df["csv_index"].to_numpy(dtype=object)):
        if pd.isna(idx):
            why.append("no csv_index")
        elif ambiguous is not None and bool(ambiguous[i]):
            why.append("csv_index ambiguous")
        elif not 0 <= int(idx) < len(labels):
            why.append("csv_index out of range")
        else:
            out[i] = labels[int(idx)]
            why.append(reasons[int(idx)])
    return out, why


def relabel(batch: pd.DataFrame, labels: np.ndarray, reasons: list[str | None]) -> pd.DataFrame:
    """Replace ``label``/``emotion`` of Parquet rows by FER+ majority labels; rows without one are dropped."""
    new, _ = _join_rows(batch, labels, reasons)
    keep = new != NO_LABEL
    out = batch.loc[keep].copy()
    out["label"] = new[keep]
    out["emotion"] = [EMOTIONS[i] for i in new[keep]]
    return out


def default_csv(parquet: str) -> str:
    """FER+ votes are looked for beside the Parquet (as in ``../shared/data/fer2013/``)."""
    return parquet.rsplit("/", 1)[0] + "/" + CSV_NAME if "/" in parquet else CSV_NAME


def load(parquet: str, csv: str | None = None) -> tuple[np.ndarray, list[str | None]]:
    """Majority labels and reasons of the FER+ CSV for a FER2013 Parquet (local or ``s3://``)."""
    path = csv or default_csv(parquet)
    try:
        with open_text(path) as f:
            return read_votes(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"FER+ labels need {CSV_NAME} (microsoft/FERPlus): none at {path!r}; pass --ferplus-csv"
        ) from None


def labelled_faces(
    parquet: str, usage: str, preprocess: Any, csv: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Faces (N, S, S) of one FER2013 ``usage`` that have a FER+ label, their FER2013 and FER+ labels (one
    model scored against both on the same faces), and the rows left out by reason; from our Parquet directly
    (the generic readers do not carry ``csv_index``)."""
    import pyarrow.parquet as pq

    from fer_ray.data.decode import decode_batch

    plus, reasons = load(parquet, csv)
    cols = ["image", "label", "usage", "csv_index", "csv_index_ambiguous"]
    t = pq.read_table(parquet, columns=cols, filters=[("usage", "=", usage)]).to_pandas()
    new, why = _join_rows(t, plus, reasons)
    keep = new != NO_LABEL
    left_out = dict(collections.Counter(w for w, k in zip(why, keep, strict=True) if not k))
    batch = {
        "image": t["image"].to_numpy()[keep],
        "label": t["label"].to_numpy(dtype=np.int64)[keep],
        "path": t["usage"].to_numpy()[keep],
    }
    out = decode_batch(batch, preprocess)
    ok = np.array([not isinstance(e, str) for e in out["error"]], dtype=bool)
    if (~ok).any():
        left_out["decode error"] = int((~ok).sum())
    return out["face"][ok], batch["label"][ok], new[keep][ok], left_out
