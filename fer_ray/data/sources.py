"""Where data comes from: local files and S3 buckets of arbitrary images, and fingerprints of sources.

Reading a bucket is two stages. :func:`list_images` runs on the driver and only reads
metadata (names, sizes, modification times); :func:`fetch_bytes` runs inside Ray tasks
and reads the bytes. A file that cannot be read becomes a row with an ``error`` reason,
never a failed task, so the number of rows out always equals the number of files in.

S3 access is configured by one :class:`S3Settings` value that is resolved on the driver
and passed to every task explicitly: environment variables set in the driver after
``ray.init`` never reach workers that are already running, and no request may go to
any endpoint other than the configured one. What travels is the endpoint and region
only: unless a caller puts keys into the settings itself, every process (driver or
worker) takes its credentials from the standard AWS chain (environment, profile files,
instance role), so long runs pick up rotated credentials and no secret rides in a task's
pickled arguments.

A read failure that may pass (throttling, a timeout, a dropped connection, after
botocore's own retries) yields an error message starting with :data:`TRANSIENT_PREFIX`:
batch scoring retries those inputs on its next run, and only those.
"""

from __future__ import annotations

import errno
import functools
import glob
import hashlib
import io
import logging
import math
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from fer_ray.preprocess import PreprocessConfig

if TYPE_CHECKING:  # Ray is imported where it is used: plain-PyTorch training reads without it
    import ray.data

logger = logging.getLogger(__name__)

# Extensions kept when a directory or prefix is listed; an explicitly named file is kept whatever its name.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
)
LIST_FILE_EXTENSIONS: frozenset[str] = frozenset({".txt", ".csv", ".parquet"})
LISTING_COLUMNS = ("path", "size", "mtime", "error")
# Columns of read_images / read_image_folders: SOURCE_COLUMNS plus what a bucket can tell us.
IMAGE_SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("label", pa.int64()),
        ("emotion", pa.string()),
        ("split", pa.string()),
        ("usage", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime", pa.float64()),
        ("error", pa.string()),
    ]
)

_GLOB_CHARS = re.compile(r"[*?\[]")
DEFAULT_REGION = "us-east-1"
TRANSIENT_PREFIX = "transient: "  # error messages of reads worth retrying (see is_transient_error)
# S3 error codes that say "try again later", not "this object is bad".
_TRANSIENT_S3_CODES = frozenset(
    {
        "SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "TooManyRequestsException",
        "RequestLimitExceeded", "RequestTimeout", "RequestTimeoutException", "InternalError",
        "ServiceUnavailable", "500", "502", "503", "504", "429",
    }
)  # fmt: skip
# Local errors that a later attempt may not hit (network file systems, busy devices).
_TRANSIENT_ERRNOS = frozenset({errno.ETIMEDOUT, errno.EAGAIN, errno.EBUSY, errno.ESTALE, errno.ECONNRESET, errno.EINTR})


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 (or an S3-compatible store such as MinIO); every field is optional.

    ``endpoint_url`` is the full URL (``http://127.0.0.1:9000``); ``None`` means AWS itself.
    Credentials left ``None`` fall back to the AWS SDKs' own chain (for instance an IAM role).
    Secrets are kept out of ``repr`` so settings can be logged.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise ValueError(
                    f"S3 endpoint_url must look like http://host:port or https://host, got {self.endpoint_url!r}"
                )
        if bool(self.access_key) != bool(self.secret_key):
            raise ValueError("S3 access_key and secret_key must be given together (or neither)")

    @classmethod
    def from_env(cls, credentials: bool = True) -> S3Settings:
        """Resolve settings the way the AWS CLI does, once, on the driver.

        Endpoint: ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``. Region: ``AWS_REGION``,
        else ``AWS_DEFAULT_REGION``, else the profile's. Credentials: boto3's chain
        (environment variables, ``AWS_PROFILE`` and the config/credentials files, ...), frozen
        into the settings; ``credentials=False`` leaves them out, so that each process that
        uses the settings resolves the chain itself (what settings sent to Ray tasks should do).
        """
        import boto3

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        session = boto3.Session()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or session.region_name
        if not credentials:
            return cls(endpoint_url=endpoint, region=region)
        creds = session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds is not None else None
        return cls(
            endpoint_url=endpoint,
            region=region,
            access_key=frozen.access_key if frozen else None,
            secret_key=frozen.secret_key if frozen else None,
            session_token=(frozen.token or None) if frozen else None,
        )

    def filesystem(self) -> pafs.S3FileSystem:
        """A pyarrow S3 filesystem for these settings.

        The endpoint is always passed explicitly because pyarrow ignores ``AWS_ENDPOINT_URL``,
        and a region is always set so the SDK never asks the EC2 metadata service for one.
        """
        kw: dict[str, Any] = {"region": self.region or DEFAULT_REGION}
        if self.access_key:
            kw.update(access_key=self.access_key, secret_key=self.secret_key, session_token=self.session_token)
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            kw.update(endpoint_override=u.netloc + u.path.rstrip("/"), scheme=u.scheme)
        return pafs.S3FileSystem(**kw)

    def client(self):
        """A boto3 S3 client for these settings (the endpoint explicitly; environment endpoints ignored)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region or DEFAULT_REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
            # Only these settings decide the endpoint, not AWS_ENDPOINT_URL of whichever process runs this.
            config=Config(ignore_configured_endpoint_urls=True, retries={"max_attempts": 3, "mode": "standard"}),
        )


@functools.lru_cache(maxsize=8)
def _client(settings: S3Settings):
    # One client per worker process and settings: creating one costs tens of milliseconds.
    return settings.client()


def _split_s3(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 URI {uri!r} has no bucket; expected s3://bucket/prefix")
    return bucket, key


def is_s3_uri(path: str) -> bool:
    """True for ``s3://bucket/...``."""
    return path.startswith("s3://")


def _local(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://") :]
    return os.path.abspath(os.path.expanduser(path))


def _check_scheme(path: str) -> None:
    scheme = urlparse(path).scheme
    if "://" in path and scheme not in ("s3", "file"):
        raise ValueError(f"unsupported URI scheme {scheme!r} in {path!r}; use a local path or s3://bucket/prefix")


def resolve_filesystem(uri: str, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path inside it)`` for a local path or an ``s3://`` URI.

    ``settings=None`` resolves :meth:`S3Settings.from_env` for S3 URIs.
    """
    uri = str(uri)
    _check_scheme(uri)
    if is_s3_uri(uri):
        bucket, key = _split_s3(uri)
        return (settings or S3Settings.from_env()).filesystem(), f"{bucket}/{key}".rstrip("/")
    return pafs.LocalFileSystem(), _local(uri)


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _is_image_name(path: str) -> bool:
    return _ext(path) in IMAGE_EXTENSIONS


def _is_hidden(rel: str) -> bool:
    """Dot files and folders (``.DS_Store``, macOS ``._x.jpg`` resource forks, ``.git/``) inside a listing."""
    return any(part.startswith(".") for part in rel.split("/") if part)


def _s3_error_code(e: Exception) -> str:
    response = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell glob -> regex with ``glob(recursive=True)`` semantics (``*`` stays within one ``/`` level)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j].replace("\\", "\\\\")
                out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


class _Lister:
    """Driver-side listing; collects ``(path, size, mtime, error)`` rows."""

    def __init__(self, settings: S3Settings | None, allow_local: bool = False):
        self._settings = settings
        self.allow_local = allow_local
        self.rows: list[tuple[str, int, float | None, str | None]] = []

    @property
    def settings(self) -> S3Settings:
        if self._settings is None:
            # Endpoint and region only: these settings go on to Ray tasks (see the module docstring).
            self._settings = S3Settings.from_env(credentials=False)
        return self._settings

    def _where(self) -> str:
        return f" at endpoint {self.settings.endpoint_url}" if self.settings.endpoint_url else ""

    # -- top-level inputs ------------------------------------------------------------------
    def add_input(self, item: str) -> None:
        item = str(item)
        _check_scheme(item)
        if is_s3_uri(item):
            self._add_s3_input(item)
        else:
            self._add_local_input(item)

    def _add_local_input(self, item: str) -> None:
        path = _local(item)
        if _GLOB_CHARS.search(item) and not os.path.exists(path):
            matches = sorted(glob.glob(path, recursive=True))
            before = len(self.rows)
            for m in matches:
                if os.path.isdir(m):
                    continue  # "dir/**" also matches every directory; the files below are matched too
                if _is_image_name(m) and not os.path.basename(m).startswith("."):
                    self._add_local_file(m)
            if len(self.rows) == before:
                raise FileNotFoundError(
                    f"the pattern {item!r} matched no image files ({len(matches)} paths matched in all); "
                    f"check the pattern, quote it so the shell does not expand it, and note that only "
                    f"{sorted(IMAGE_EXTENSIONS)} files are kept from a pattern"
                )
            return
        if os.path.isdir(path):
            before = len(self.rows)
            self._walk_local(path)
            if len(self.rows) == before:
                raise FileNotFoundError(
                    f"no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {item!r}; "
                    "name files explicitly to read other extensions"
                )
            return
        if os.path.isfile(path):
            if _ext(path) in LIST_FILE_EXTENSIONS:
                self._add_list_file(item, self._read_local_bytes(path))
            else:
                self._add_local_file(path)
            return
        raise FileNotFoundError(
            f"input {item!r} does not exist (resolved to {path}); pass an existing file, directory, "
            "glob pattern, list file (.txt/.csv/.parquet) or s3://bucket/prefix"
        )

    def _add_s3_input(self, uri: str) -> None:
        bucket, key = _split_s3(uri)
        if _GLOB_CHARS.search(key):
            prefix = _GLOB_CHARS.split(key, maxsplit=1)[0].rpartition("/")[0]
            regex = _glob_regex(key)
            n_before = len(self.rows)
            for obj in self._list_s3(bucket, prefix + "/" if prefix else "", uri):
                name = posixpath.basename(obj["Key"])
                if regex.match(obj["Key"]) and _is_image_name(name) and not name.startswith("."):
                    self._add_s3_object(bucket, obj)
            if len(self.rows) == n_before:
                raise FileNotFoundError(
                    f"the pattern {uri!r} matched no image objects{self._where()}; check the pattern "
                    f"(only {sorted(IMAGE_EXTENSIONS)} objects are kept from a pattern)"
                )
            return
        head = self._head_s3(bucket, key) if key and not key.endswith("/") else None
        if head is not None:
            if _ext(key) in LIST_FILE_EXTENSIONS:
                self._add_list_file(uri, self._read_s3_bytes(bucket, key))
            else:
                self.rows.append((uri, int(head["ContentLength"]), head["LastModified"].timestamp(), None))
            return
        prefix = key.rstrip("/") + "/" if key else ""
        n_before = len(self.rows)
        n_objects = 0
        for obj in self._list_s3(bucket, prefix, uri):
            n_objects += 1
            if _is_image_name(obj["Key"]) and not _is_hidden(obj["Key"][len(prefix) :]):
                self._add_s3_object(bucket, obj)
        if len(self.rows) == n_before:
            if n_objects:
                raise FileNotFoundError(
                    f"no image objects ({', '.join(sorted(IMAGE_EXTENSIONS))}) under {uri!r}{self._where()} "
                    f"({n_objects} other objects); name objects explicitly to read other extensions"
                )
            raise FileNotFoundError(
                f"nothing at {uri!r}{self._where()}: bucket {bucket!r} exists but has no object or prefix "
                f"{key!r}; check the path (list it with `aws s3 ls {uri}`)"
            )

    # -- S3 helpers ------------------------------------------------------------------------
    def _head_s3(self, bucket: str, key: str) -> dict | None:
        try:
            return _client(self.settings).head_object(Bucket=bucket, Key=key)
        except Exception as e:
            code = _s3_error_code(e)
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            self._raise_s3(e, bucket, f"s3://{bucket}/{key}")

    def _raise_s3(self, e: Exception, bucket: str, uri: str) -> NoReturn:
        """Re-raise an S3 listing failure as an error that says what to check."""
        code = _s3_error_code(e)
        if code == "NoSuchBucket":
            self._raise_no_bucket(bucket, uri)
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            raise PermissionError(
                f"S3 refused access to {uri!r}{self._where()} ({code}); check the credentials "
                "(AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) and the bucket policy"
            ) from e
        from botocore.exceptions import BotoCoreError

        if isinstance(e, BotoCoreError):  # no S3 answer at all: endpoint unreachable, DNS, TLS, credentials
            raise ConnectionError(
                f"cannot reach S3{self._where()} for {uri!r}: {e}; check AWS_ENDPOINT_URL(_S3) and the network"
            ) from e
        raise e

    def _raise_no_bucket(self, bucket: str, uri: str) -> NoReturn:
        raise FileNotFoundError(
            f"S3 bucket {bucket!r} does not exist{self._where()} (input {uri!r}); check the bucket name, "
            "and AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 if you use S3-compatible storage"
        )

    def _list_s3(self, bucket: str, prefix: str, uri: str) -> Iterable[dict]:
        client = _client(self.settings)
        try:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", ()):
                    if not obj["Key"].endswith("/"):  # "folder" placeholder objects
                        yield obj
        except Exception as e:
            self._raise_s3(e, bucket, uri)

    def _add_s3_object(self, bucket: str, obj: dict) -> None:
        self.rows.append((f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), obj["LastModified"].timestamp(), None))

    def _read_s3_bytes(self, bucket: str, key: str) -> bytes:
        return _client(self.settings).get_object(Bucket=bucket, Key=key)["Body"].read()

    # -- local helpers ---------------------------------------------------------------------
    @staticmethod
    def _read_local_bytes(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def _add_local_file(self, path: str) -> None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.rows.append((path, 0, None, f"not found: {path}"))
            return
        except OSError as e:
            self.rows.append((path, 0, None, f"cannot stat {path}: {e.strerror or e}"))
            return
        self.rows.append((path, int(st.st_size), float(st.st_mtime), None))

    def _walk_local(self, root: str) -> None:
        def onerror(e: OSError) -> None:
            # An unreadable sub-directory is reported as one error row instead of silently skipped.
            self.rows.append((e.filename or root, 0, None, f"cannot list directory: {e.strerror or e}"))

        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if _is_image_name(name) and not name.startswith("."):
                    self._add_local_file(os.path.join(dirpath, name))

    # -- list files --------------------------------------------------------------------------
    def _add_list_file(self, source: str, data: bytes) -> None:
        for entry in _parse_list_file(source, data):
            self._add_listed(entry, source)

    def _add_listed(self, entry: str, list_file: str) -> None:
        """A path named in a list file: kept whatever its extension; a missing one is an error row.

        A list file in a bucket names objects only: whoever can write to the bucket must not be
        able to make the job read files of the machine it runs on. Its local entries become
        error rows unless ``allow_local`` (``--allow-local``).
        """
        _check_scheme(entry)
        local_entry = not is_s3_uri(entry) and (os.path.isabs(os.path.expanduser(entry)) or entry.startswith("file://"))
        if local_entry and is_s3_uri(list_file) and not self.allow_local:
            self.rows.append(
                (
                    entry,
                    0,
                    None,
                    f"refused local path {entry!r} named in the list file {list_file}: a list in a bucket may name "
                    "objects only (rerun with --allow-local if the list is trusted)",
                )
            )
            return
        if is_s3_uri(entry):
            bucket, key = _split_s3(entry)
            try:
                head = self._head_s3(bucket, key) if key else None
            except FileNotFoundError:
                head = None
            except PermissionError:  # S3 answers 403 for a missing key when listing is not allowed
                self.rows.append((entry, 0, None, f"permission denied: {entry}"))
                return
            if head is None:
                self.rows.append((entry, 0, None, f"not found: {entry}"))
            else:
                self.rows.append((entry, int(head["ContentLength"]), head["LastModified"].timestamp(), None))
            return
        if not os.path.isabs(os.path.expanduser(entry)) and not entry.startswith("file://"):
            # Relative entries are relative to the list file, so a list travels with its images.
            if is_s3_uri(list_file):
                bucket, key = _split_s3(list_file)
                key = posixpath.normpath(posixpath.join(posixpath.dirname(key), entry))
                self._add_listed(f"s3://{bucket}/{key.lstrip('/')}", list_file)
                return
            entry = os.path.join(os.path.dirname(_local(list_file)), entry)
        path = _local(entry)
        if os.path.isdir(path):
            self._walk_local(path)
        else:
            self._add_local_file(path)


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
        raise ValueError(
            f"list file {source!r} has no 'path' column (columns: {list(df.columns)}); "
            "a .csv/.parquet list needs a column named path with one file or s3:// URI per row"
        )
    return [str(p).strip() for p in df["path"].tolist() if p is not None and str(p).strip()]


def list_images(
    inputs: Sequence[str] | str, settings: S3Settings | None = None, allow_local: bool = False
) -> pd.DataFrame:
    """List the files named by ``inputs`` on the driver: a DataFrame with ``path, size, mtime, error``.

    Each input may be a local directory (recursive) or file, a glob (``photos/**/*.jpg``),
    ``s3://bucket/prefix`` (recursive) or one S3 object, or a list file (``.txt`` one path
    per line, ``.csv``/``.parquet`` with a ``path`` column; relative entries are relative
    to the list file). Directories, prefixes and globs keep only :data:`IMAGE_EXTENSIONS`
    and skip dot files and folders (``.DS_Store``, macOS ``._*`` forks); a file named
    explicitly is kept whatever its name, so decoding reports what is wrong with it.
    A missing entry of a list file becomes a row with ``error="not found: <path>"``; a
    missing top-level input raises ``FileNotFoundError``. Duplicate paths are listed once.
    A list file on S3 naming a local path (absolute or ``file://``) yields an error row for
    it unless ``allow_local``.
    """
    return list_images_and_settings(inputs, settings, allow_local)[0]


def list_images_and_settings(
    inputs: Sequence[str] | str, settings: S3Settings | None = None, allow_local: bool = False
) -> tuple[pd.DataFrame, S3Settings | None]:
    """:func:`list_images` plus the S3 settings it used: ``settings``, else endpoint and region
    resolved from the environment (no credentials) when an input was on S3, else ``None``.
    Pass them on to :func:`fetch_bytes`."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [str(i) for i in inputs]
    if not inputs:
        raise ValueError("no inputs given; pass at least one file, directory, glob, list file or s3:// URI")
    lister = _Lister(settings, allow_local)
    for item in inputs:
        lister.add_input(item)
    df = pd.DataFrame(lister.rows, columns=list(LISTING_COLUMNS))
    df = df.drop_duplicates("path", keep="first").reset_index(drop=True)
    df["size"] = df["size"].astype(np.int64)
    df["mtime"] = df["mtime"].astype(np.float64)
    df["error"] = pd.Series([e if isinstance(e, str) else None for e in df["error"]], dtype=object)
    df["path"] = pd.Series(df["path"].tolist(), dtype=object)
    return df, lister._settings


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


class _FetchError(Exception):
    """A per-file failure; its message becomes the row's ``error``."""


def is_transient_error(message: str | None) -> bool:
    """True for an ``error`` message of a read that may succeed when tried again."""
    return bool(message) and str(message).startswith(TRANSIENT_PREFIX)


def _is_transient(e: BaseException) -> bool:
    """Throttling, 5xx, timeouts and dropped connections: worth another try on a later run."""
    if _s3_error_code(e) in _TRANSIENT_S3_CODES:
        return True
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # local reads only
        BotoConnectionError = HTTPClientError = ()  # noqa: N806
    if isinstance(e, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return True
    return isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS


def _too_big(size: int, max_bytes: int) -> _FetchError:
    return _FetchError(
        f"file is {size:,} bytes, over the limit of {max_bytes:,} (max_bytes); raise max_bytes if it is a genuine image"
    )


def _fetch_one(path: str, size: int | None, settings: S3Settings | None, max_bytes: int) -> bytes:
    if size is not None and size > max_bytes:
        raise _too_big(size, max_bytes)
    if is_s3_uri(path):
        bucket, key = _split_s3(path)
        try:
            body = _client(settings or S3Settings.from_env()).get_object(Bucket=bucket, Key=key)["Body"]
            data = body.read(max_bytes + 1)
            body.close()
        except Exception as e:
            code = _s3_error_code(e)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise _FetchError(f"not found: {path}") from e
            if code == "NoSuchBucket":
                raise _FetchError(f"not found: {path} (no such bucket {bucket!r})") from e
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId"):
                raise _FetchError(f"permission denied: {path} (S3 {code})") from e
            message = f"S3 error reading {path}: {code or type(e).__name__}: {e}"
            raise _FetchError(TRANSIENT_PREFIX + message if _is_transient(e) else message) from e
    else:
        try:
            with open(path, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError as e:
            raise _FetchError(f"not found: {path}") from e
        except PermissionError as e:
            raise _FetchError(f"permission denied: {path}") from e
        except IsADirectoryError as e:
            raise _FetchError(f"is a directory, not a file: {path}") from e
        except OSError as e:
            message = f"cannot read {path}: {e.strerror or e}"
            raise _FetchError(TRANSIENT_PREFIX + message if _is_transient(e) else message) from e
    if len(data) > max_bytes:  # the file grew since it was listed
        raise _too_big(len(data), max_bytes)
    return data


def fetch_bytes(batch: pd.DataFrame, settings: S3Settings | None, max_bytes: int) -> pd.DataFrame:
    """Add an ``image`` column of file bytes to a listing batch (runs inside Ray tasks).

    Per-file failures (missing, permission, S3 error, larger than ``max_bytes``) set
    ``error`` and leave ``image`` None; rows that arrive with an ``error`` are kept
    untouched. Rows out == rows in, always.
    """
    n = len(batch)
    paths = batch["path"].tolist()
    sizes = batch["size"].tolist() if "size" in batch else [None] * n
    prior = batch["error"].tolist() if "error" in batch else [None] * n
    images: list[bytes | None] = [None] * n
    errors: list[str | None] = [None if _missing(e) or e == "" else str(e) for e in prior]
    for i, path in enumerate(paths):
        if errors[i] is not None:
            continue
        size = None if _missing(sizes[i]) else int(sizes[i])
        try:
            images[i] = _fetch_one(str(path), size, settings, max_bytes)
        except _FetchError as e:
            errors[i] = str(e)
        except Exception as e:  # never fail the task for one file
            message = f"cannot read {path}: {type(e).__name__}: {e}"
            errors[i] = TRANSIENT_PREFIX + message if _is_transient(e) else message
    out = batch.copy()
    out["image"] = pd.Series(images, index=batch.index, dtype=object)
    out["error"] = pd.Series(errors, index=batch.index, dtype=object)
    return out


def _fetch_table(batch: pd.DataFrame, settings: S3Settings | None, max_bytes: int) -> pa.Table:
    # A fixed schema per block, so blocks whose columns happen to be all-None still union cleanly.
    out = fetch_bytes(batch, settings, max_bytes)
    return pa.Table.from_pandas(out[IMAGE_SCHEMA.names], schema=IMAGE_SCHEMA, preserve_index=False)


def dataset_from_listing(
    listing: pd.DataFrame,
    settings: S3Settings | None = None,
    max_bytes: int = PreprocessConfig.max_bytes,
    rows_per_block: int = 128,
) -> ray.data.Dataset:
    """Ray Dataset of :data:`IMAGE_SCHEMA` from a listing (plus optional label columns); bytes are fetched in tasks."""
    df = listing.copy()
    defaults: dict[str, Any] = {"label": -1, "emotion": None, "split": None, "usage": None, "error": None}
    for col, value in defaults.items():
        if col not in df:
            df[col] = pd.Series([value] * len(df), index=df.index, dtype=np.int64 if col == "label" else object)
    df["label"] = df["label"].astype(np.int64)
    df["image"] = None
    df = df[IMAGE_SCHEMA.names]
    # Small blocks so that fetching (I/O bound) spreads over many tasks.
    n_blocks = max(1, math.ceil(len(df) / rows_per_block))
    step = math.ceil(len(df) / n_blocks) if len(df) else 1
    tables = [
        pa.Table.from_pandas(df.iloc[i : i + step], schema=IMAGE_SCHEMA, preserve_index=False)
        for i in range(0, max(len(df), 1), step)
    ]
    import ray.data

    ds = ray.data.from_arrow(tables)
    return ds.map_batches(
        _fetch_table,
        fn_kwargs={"settings": settings, "max_bytes": int(max_bytes)},
        batch_format="pandas",
        batch_size=None,
        udf_modifying_row_count=False,
    )


def read_images(
    inputs: Sequence[str] | str,
    settings: S3Settings | None = None,
    max_bytes: int = PreprocessConfig.max_bytes,
) -> ray.data.Dataset:
    """Arbitrary images from local paths, globs, list files and S3 (see :func:`list_images`) as a Ray Dataset.

    Columns: :data:`~fer_ray.data.decode.SOURCE_COLUMNS` (``label`` -1, ``emotion``,
    ``split`` and ``usage`` None) plus ``size``, ``mtime`` and ``error``. Follow with
    :func:`fer_ray.data.decode.decode`. ``settings=None`` resolves
    :meth:`S3Settings.from_env` on the driver when any input is on S3.
    """
    # The settings resolved while listing go to the tasks, so workers never consult their own environment.
    listing, settings = list_images_and_settings(inputs, settings)
    logger.info("listed %d files (%d with errors)", len(listing), int(listing["error"].notna().sum()))
    return dataset_from_listing(listing, settings, max_bytes)


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
