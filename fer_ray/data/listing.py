"""Listing image files on the driver (local trees, globs, list files, S3 prefixes): one row ``(path, size,
mtime, error)`` per file. One that cannot be listed (a missing list entry, an unreadable sub-directory:
hence ``os.walk``, not pyarrow's ``FileSelector``) is an ``error`` row, so the rows account for every file
named; a wrong input as a whole raises a :class:`~fer_ray.config.UserError` that is also the builtin error
a library caller expects (``FileNotFoundError``, ``PermissionError``, ``ConnectionError``, ``ValueError``)."""

from __future__ import annotations

import glob
import io
import os
import posixpath
import re
from collections.abc import Iterator, Sequence
from typing import NoReturn

import numpy as np
import pandas as pd

from fer_ray.config import UserError
from fer_ray.data.s3 import (
    CREDENTIALS_FIX,
    DENIED_CODES,
    NOT_FOUND_CODES,
    S3Settings,
    check_scheme,
    client_for,
    error_code,
    is_no_credentials,
    is_s3_uri,
    local_path,
    split_s3_uri,
)

# Extensions kept when a directory or prefix is listed; an explicitly named file is kept whatever its name.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)
LIST_FILE_EXTENSIONS: frozenset[str] = frozenset({".txt", ".csv", ".parquet"})
LISTING_COLUMNS = ("path", "size", "mtime", "error")
_GLOB_CHARS = re.compile(r"[*?\[]")
_GLOB_TOKEN = re.compile(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]")
_GLOB_TOKEN_REGEX = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}

Row = tuple[str, int, float | None, str | None]  # LISTING_COLUMNS


class InputNotFoundError(UserError, FileNotFoundError):
    """An input that names nothing to read: no such path, bucket or prefix, no image under it."""


class InputAccessError(UserError, PermissionError):
    """S3 refused the request, or there are no credentials to make it."""


class EndpointError(UserError, ConnectionError):
    """No answer from S3 at all: endpoint unreachable, DNS, TLS."""


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell glob -> regex with ``glob(recursive=True)`` semantics (``*`` stays within one ``/`` level)."""
    out, last = [], 0
    for m in _GLOB_TOKEN.finditer(pattern):
        token = m.group()
        if token.startswith("["):
            body = token[1:-1].replace("\\", "\\\\")
            token = "[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]"
        else:
            token = _GLOB_TOKEN_REGEX[token]
        out += [re.escape(pattern[last : m.start()]), token]
        last = m.end()
    return re.compile("".join(out) + re.escape(pattern[last:]) + r"\Z")


def _parse_list_file(source: str, data: bytes) -> list[str]:
    ext = _ext(source)
    if ext == ".txt":
        lines = data.decode("utf-8-sig").splitlines()
        return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]
    if ext == ".csv":
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    else:
        df = pd.read_parquet(io.BytesIO(data))
    if "path" not in df.columns:
        raise UserError(
            f"list file {source!r} has no 'path' column (columns: {list(df.columns)}); "
            "a .csv/.parquet list needs a column named path with one file or s3:// URI per row"
        )
    return [str(p).strip() for p in df["path"].tolist() if p is not None and str(p).strip()]


def _stat_row(path: str) -> Row:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (path, 0, None, f"not found: {path}")
    except OSError as e:
        return (path, 0, None, f"cannot stat {path}: {e.strerror or e}")
    return (path, int(st.st_size), float(st.st_mtime), None)


def _head_row(uri: str, head: dict) -> Row:
    return (uri, int(head["ContentLength"]), head["LastModified"].timestamp(), None)


def _object_row(bucket: str, obj: dict) -> Row:
    return (f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), obj["LastModified"].timestamp(), None)


class _Lister:
    """Rows for each input; S3 settings resolved (endpoint and region only) on the first S3 request."""

    def __init__(
        self, settings: S3Settings | None, allow_local: bool = False, extensions: frozenset[str] = IMAGE_EXTENSIONS
    ):
        self._settings = settings
        self.allow_local = allow_local
        self.extensions = extensions
        self.noun = "image" if extensions <= IMAGE_EXTENSIONS else "image or video"

    def _keep(self, rel: str) -> bool:
        """Whether a file found under a directory, prefix or pattern is listed: a wanted extension, and no dot
        file or folder (``.DS_Store``, macOS ``._x.jpg`` resource forks, ``.git/``) on its way down from there."""
        return _ext(rel) in self.extensions and not any(part.startswith(".") for part in rel.split("/") if part)

    def _walk_local(self, root: str) -> list[Row]:
        rows: list[Row] = []

        def onerror(e: OSError) -> None:
            # An unreadable sub-directory is reported as one error row instead of silently skipped.
            rows.append((e.filename or root, 0, None, f"cannot list directory: {e.strerror or e}"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rows.extend(_stat_row(os.path.join(dirpath, name)) for name in sorted(filenames) if self._keep(name))
        return rows

    @property
    def settings(self) -> S3Settings:
        if self._settings is None:
            # Endpoint and region only: these settings go on to Ray tasks (see fer_ray.data.s3).
            self._settings = S3Settings.from_env(credentials=False)
        return self._settings

    def rows(self, item: str) -> list[Row]:
        """The rows of one top-level input; raises when the input as a whole is wrong."""
        check_scheme(item)
        return self._s3_input(item) if is_s3_uri(item) else self._local_input(item)

    def _local_input(self, item: str) -> list[Row]:
        path = local_path(item)
        if _GLOB_CHARS.search(item) and not os.path.exists(path):
            matches = sorted(glob.glob(path, recursive=True))
            # "dir/**" also matches every directory; the files below are matched too.
            rows = [_stat_row(m) for m in matches if not os.path.isdir(m) and self._keep(os.path.basename(m))]
            if not rows:
                raise InputNotFoundError(
                    f"the pattern {item!r} matched no {self.noun} files ({len(matches)} paths matched in all); "
                    f"check the pattern, quote it so the shell does not expand it, and note that only "
                    f"{sorted(self.extensions)} files are kept from a pattern"
                )
            return rows
        if os.path.isdir(path):
            rows = self._walk_local(path)
            if not rows:
                raise InputNotFoundError(
                    f"no {self.noun} files ({', '.join(sorted(self.extensions))}) under {item!r}; "
                    "name files explicitly to read other extensions"
                )
            return rows
        if os.path.isfile(path):
            if _ext(path) in LIST_FILE_EXTENSIONS:
                with open(path, "rb") as f:
                    return self._list_file(item, f.read())
            return [_stat_row(path)]
        raise InputNotFoundError(
            f"input {item!r} does not exist (resolved to {path}); pass an existing file, directory, "
            "glob pattern, list file (.txt/.csv/.parquet) or s3://bucket/prefix"
        )

    def _s3_input(self, uri: str) -> list[Row]:
        bucket, key = split_s3_uri(uri)
        where = self.settings.where()
        if _GLOB_CHARS.search(key):
            base = _GLOB_CHARS.split(key, maxsplit=1)[0].rpartition("/")[0]
            base = base + "/" if base else ""
            regex = _glob_regex(key)
            objects = self._list_s3(bucket, base, uri)
            kept = (o for o in objects if regex.match(o["Key"]) and self._keep(o["Key"][len(base) :]))
            rows = [_object_row(bucket, o) for o in kept]
            if not rows:
                raise InputNotFoundError(
                    f"the pattern {uri!r} matched no {self.noun} objects{where}; check the pattern "
                    f"(only {sorted(self.extensions)} objects are kept from a pattern)"
                )
            return rows
        head = self._head_s3(bucket, key) if key and not key.endswith("/") else None
        if head is not None:
            if _ext(key) in LIST_FILE_EXTENSIONS:
                return self._list_file(uri, self._read_s3(bucket, key))
            return [_head_row(uri, head)]
        prefix = key.rstrip("/") + "/" if key else ""
        rows, n_objects = [], 0
        for o in self._list_s3(bucket, prefix, uri):  # streamed: a bucket may hold millions of objects
            n_objects += 1
            if self._keep(o["Key"][len(prefix) :]):
                rows.append(_object_row(bucket, o))
        if rows:
            return rows
        if n_objects:
            raise InputNotFoundError(
                f"no {self.noun} objects ({', '.join(sorted(self.extensions))}) under {uri!r}{where} "
                f"({n_objects} other objects); name objects explicitly to read other extensions"
            )
        raise InputNotFoundError(
            f"nothing at {uri!r}{where}: bucket {bucket!r} exists but has no object or prefix "
            f"{key!r}; check the path (list it with `aws s3 ls {uri}`)"
        )

    def _list_file(self, source: str, data: bytes) -> list[Row]:
        return [row for entry in _parse_list_file(source, data) for row in self._listed(entry, source)]

    def _listed(self, entry: str, list_file: str) -> list[Row]:
        """A path named in a list file, relative to it (a list travels with its images), kept whatever its
        extension; a missing one is an error row. A list in a bucket names objects only (whoever can write
        there must not make the job read this machine's files): its local entries are error rows unless
        ``allow_local``."""
        check_scheme(entry)
        on_s3 = is_s3_uri(entry)
        absolute = not on_s3 and (entry.startswith("file://") or os.path.isabs(os.path.expanduser(entry)))
        if absolute and is_s3_uri(list_file) and not self.allow_local:
            reason = (
                f"refused local path {entry!r} named in the list file {list_file}: a list in a bucket may name "
                "objects only (rerun with --allow-local if the list is trusted)"
            )
            return [(entry, 0, None, reason)]
        if not on_s3 and not absolute:
            if is_s3_uri(list_file):
                bucket, key = split_s3_uri(list_file)
                key = posixpath.normpath(posixpath.join(posixpath.dirname(key), entry))
                entry, on_s3 = f"s3://{bucket}/{key.lstrip('/')}", True
            else:
                entry = os.path.join(os.path.dirname(local_path(list_file)), entry)
        if on_s3:
            return [self._s3_entry_row(entry)]
        path = local_path(entry)
        return self._walk_local(path) if os.path.isdir(path) else [_stat_row(path)]

    def _s3_entry_row(self, uri: str) -> Row:
        bucket, key = split_s3_uri(uri)
        try:
            head = self._head_s3(bucket, key) if key else None
        except FileNotFoundError:  # no such bucket
            head = None
        except PermissionError as e:
            if is_no_credentials(e.__cause__):  # a problem of the whole run, not of this entry
                raise
            return (uri, 0, None, f"permission denied: {uri}")  # S3 answers 403 for a missing key without List
        return _head_row(uri, head) if head is not None else (uri, 0, None, f"not found: {uri}")

    def _head_s3(self, bucket: str, key: str) -> dict | None:
        try:
            return client_for(self.settings).head_object(Bucket=bucket, Key=key)
        except Exception as e:
            if error_code(e) in NOT_FOUND_CODES:
                return None
            self._raise_s3(e, f"s3://{bucket}/{key}")

    def _read_s3(self, bucket: str, key: str) -> bytes:
        try:
            return client_for(self.settings).get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:
            self._raise_s3(e, f"s3://{bucket}/{key}")

    def _list_s3(self, bucket: str, prefix: str, uri: str) -> Iterator[dict]:
        try:
            pages = client_for(self.settings).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    if not obj["Key"].endswith("/"):  # "folder" placeholder objects
                        yield obj
        except Exception as e:
            self._raise_s3(e, uri)

    def _raise_s3(self, e: Exception, uri: str) -> NoReturn:
        """Re-raise an S3 failure while listing as an error that says what to check."""
        from botocore.exceptions import BotoCoreError

        code, where, bucket = error_code(e), self.settings.where(), split_s3_uri(uri)[0]
        if code == "NoSuchBucket":
            raise InputNotFoundError(
                f"S3 bucket {bucket!r} does not exist{where} (input {uri!r}); check the bucket name, "
                "and AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 if you use S3-compatible storage"
            ) from e
        if code in NOT_FOUND_CODES:
            raise InputNotFoundError(f"{uri!r} not found{where} (deleted while listing?)") from e
        if code in DENIED_CODES:
            raise InputAccessError(
                f"S3 refused access to {uri!r}{where} ({code}); check the credentials "
                "(AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and the bucket policy"
            ) from e
        if is_no_credentials(e):
            raise InputAccessError(f"no AWS credentials found to read {uri!r}{where}; {CREDENTIALS_FIX}") from e
        if isinstance(e, BotoCoreError):  # no S3 answer at all: endpoint unreachable, DNS, TLS
            raise EndpointError(
                f"cannot reach S3{where} for {uri!r}: {e}; check AWS_ENDPOINT_URL(_S3) and the network"
            ) from e
        raise e


def list_images(
    inputs: Sequence[str] | str, settings: S3Settings | None = None, allow_local: bool = False
) -> pd.DataFrame:
    """A DataFrame ``path, size, mtime, error`` of the files named by ``inputs``: local directories
    (recursive), files, globs (``photos/**/*.jpg``), ``s3://bucket/prefix`` or one object, list files
    (``.txt`` one path a line, ``.csv``/``.parquet`` with a ``path`` column). Directories, prefixes and
    globs keep :data:`IMAGE_EXTENSIONS` without dot files and folders; a file named explicitly is kept
    whatever its name, so decoding says what is wrong with it. Duplicate paths are listed once."""
    return list_images_and_settings(inputs, settings, allow_local)[0]


def list_images_and_settings(
    inputs: Sequence[str] | str,
    settings: S3Settings | None = None,
    allow_local: bool = False,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
) -> tuple[pd.DataFrame, S3Settings | None]:
    """:func:`list_images` and the S3 settings it used, for :func:`fer_ray.data.fetch.fetch_bytes`:
    ``settings``, else endpoint and region from the environment when an input was on S3, else ``None``.
    ``extensions``: what directories, prefixes and patterns keep (scoring adds the video containers)."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise UserError("no inputs given; pass at least one file, directory, glob, list file or s3:// URI")
    lister = _Lister(settings, allow_local, extensions)
    rows = [row for item in inputs for row in lister.rows(item)]
    df = pd.DataFrame(rows, columns=list(LISTING_COLUMNS), dtype=object)  # None stays None, not NaN
    df = df.drop_duplicates("path").reset_index(drop=True).astype({"size": np.int64, "mtime": np.float64})
    return df, lister._settings
