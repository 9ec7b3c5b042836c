"""Model files are checked against the hashes ``artifact.json`` records before anything runs them.

A truncated copy or a replaced file would otherwise load and score quietly wrong; the error names the
file, both hashes and what to do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

META = "artifact.json"


class ArtifactIntegrityError(ValueError):
    """A model file differs from the hash ``artifact.json`` records (truncated, empty, replaced)."""


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path, expected: str | None) -> str:
    """sha256 of ``path``, checked against the recorded hash (skipped when none is recorded)."""
    actual = sha256_file(path)
    if expected and actual != expected:
        size = path.stat().st_size
        what = "is empty (0 bytes)" if size == 0 else f"({size:,} bytes) is truncated, damaged or replaced"
        raise ArtifactIntegrityError(
            f"{path} {what}: its sha256 is {actual} but {META} records {expected}; "
            "copy the artifact again (or re-export it) instead of using it"
        )
    return actual
