"""Run outputs on a local disk or in ``s3://bucket/prefix`` (shared by every node) through one small set of
file operations: a job submitted to a cluster runs in a working dir deleted with the job."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.fs as pafs

from fer_ray.data.s3 import is_s3_uri, resolve_filesystem

Location = str | os.PathLike  # a local path or an s3:// URI


def is_remote(location: Location) -> bool:
    """True for ``s3://`` URIs (the only remote scheme; others are rejected where they are used)."""
    return is_s3_uri(str(location))


def join(base: Location, *parts: str) -> str | Path:
    """``base/part/...``: a URI string for remote bases, a :class:`Path` for local ones."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])
    return Path(base).joinpath(*parts)


def exists(location: Location) -> bool:
    fs, path = resolve_filesystem(str(location))
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_bytes(location: Location, data: bytes, filesystem: pafs.FileSystem | None = None) -> None:
    """Write a whole file (parent directories created as needed; S3 has none); with ``filesystem``,
    ``location`` is a path inside it (a run's storage as Ray Train resolved it)."""
    fs, path = (filesystem, str(location)) if filesystem else resolve_filesystem(str(location))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_text(location: Location, text: str) -> None:
    write_bytes(location, text.encode())


def delete_dir(location: Location) -> None:
    """Remove a directory and all it holds; nothing to do when it is absent."""
    fs, path = resolve_filesystem(str(location))
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def read_text(location: Location) -> str:
    """Read a whole text file; :class:`FileNotFoundError` names the location when it is missing."""
    fs, path = resolve_filesystem(str(location))
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{location} not found")
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def upload_dir(local_dir: Location, location: Location) -> str | Path:
    """Copy a local directory to ``location`` (replacing files of the same names); returns ``location``."""
    fs, path = resolve_filesystem(str(location))
    fs.create_dir(path, recursive=True)
    pafs.copy_files(str(Path(local_dir).resolve()), path, pafs.LocalFileSystem(), fs)
    return location if is_remote(location) else Path(path)


def download_dir(location: Location, local_dir: Location) -> Path:
    """Copy the directory at ``location`` into ``local_dir``; :class:`FileNotFoundError` if it is absent."""
    fs, path = resolve_filesystem(str(location))
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"{location} is not a directory")
    out = Path(local_dir)
    out.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(out.resolve()), fs, pafs.LocalFileSystem())
    return out


def local_artifact(location: Location | None) -> Path | None:
    """A local directory holding the artifact at ``location`` (``None``: the shipped model): an ``s3://`` one
    is downloaded once to a temporary directory removed when the process exits."""
    if location is None or not is_remote(location):
        return None if location is None else Path(location)
    tmp = tempfile.mkdtemp(prefix="fer_ray_artifact_")
    atexit.register(shutil.rmtree, tmp, True)
    return download_dir(location, tmp)
