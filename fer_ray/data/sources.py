"""Where data comes from: fingerprints of sources (recorded in model artifacts)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fingerprint(source: str | os.PathLike) -> str:
    """A short, stable identity of a data source: sha256 of a file, or of a local tree's names and sizes.

    Remote sources (``s3://``) are identified by their URI only: hashing them would read the bucket.
    """
    s = str(source)
    p = Path(s)
    h = hashlib.sha256()
    if "://" in s:
        h.update(s.encode())
        return "uri:" + h.hexdigest()[:16]
    if p.is_file():
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        return "sha256:" + h.hexdigest()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(f"{f.relative_to(p)}\0{f.stat().st_size}\n".encode())
    return "tree:" + h.hexdigest()[:16]
