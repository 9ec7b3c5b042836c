"""Reading the bytes of listed files inside Ray tasks: a file that cannot be read is a row with an ``error``,
never a failed task. A failure that may pass starts with :data:`TRANSIENT_PREFIX`: batch scoring retries
those inputs on its next run, and only those."""

from __future__ import annotations

import errno

import pandas as pd

from fer_ray.data.s3 import (
    CREDENTIALS_FIX,
    DENIED_CODES,
    NOT_FOUND_CODES,
    S3Settings,
    client_for,
    error_code,
    is_no_credentials,
    is_s3_uri,
    split_s3_uri,
)

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


class _FetchError(Exception):
    """A per-file failure; its message becomes the row's ``error``."""


def is_transient_error(message: str | None) -> bool:
    """True for an ``error`` message of a read that may succeed when tried again."""
    return bool(message) and str(message).startswith(TRANSIENT_PREFIX)


def _is_transient(e: BaseException) -> bool:
    """Throttling, 5xx, timeouts, dropped connections, and a worker with no AWS credentials (its
    environment's fault, not the file's): worth another try on a later run."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if error_code(e) in _TRANSIENT_S3_CODES or is_no_credentials(e):
        return True
    if isinstance(e, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return True
    return isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS


def _failure(message: str, e: BaseException) -> _FetchError:
    return _FetchError(TRANSIENT_PREFIX + message if _is_transient(e) else message)


def _too_big(size: int, max_bytes: int) -> _FetchError:
    return _FetchError(
        f"file is {size:,} bytes, over the limit of {max_bytes:,} (max_bytes); raise max_bytes if it is a genuine image"
    )


def _read_s3(path: str, settings: S3Settings | None, max_bytes: int) -> bytes:
    bucket, key = split_s3_uri(path)
    try:
        with client_for(settings or S3Settings.from_env()).get_object(Bucket=bucket, Key=key)["Body"] as body:
            return body.read(max_bytes + 1)
    except Exception as e:
        code = error_code(e)
        if code in NOT_FOUND_CODES:
            raise _FetchError(f"not found: {path}") from e
        if code == "NoSuchBucket":
            raise _FetchError(f"not found: {path} (no such bucket {bucket!r})") from e
        if code in DENIED_CODES:
            raise _FetchError(f"permission denied: {path} (S3 {code})") from e
        if is_no_credentials(e):
            raise _failure(f"no AWS credentials on the worker reading {path}; {CREDENTIALS_FIX}", e) from e
        raise _failure(f"S3 error reading {path}: {code or type(e).__name__}: {e}", e) from e


def _read_local(path: str, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except FileNotFoundError as e:
        raise _FetchError(f"not found: {path}") from e
    except PermissionError as e:
        raise _FetchError(f"permission denied: {path}") from e
    except IsADirectoryError as e:
        raise _FetchError(f"is a directory, not a file: {path}") from e
    except OSError as e:
        raise _failure(f"cannot read {path}: {e.strerror or e}", e) from e


def _fetch_one(path: str, size: int | None, settings: S3Settings | None, max_bytes: int) -> bytes:
    if size is not None and size > max_bytes:
        raise _too_big(size, max_bytes)
    data = _read_s3(path, settings, max_bytes) if is_s3_uri(path) else _read_local(path, max_bytes)
    if len(data) > max_bytes:  # the file grew since it was listed
        raise _too_big(len(data), max_bytes)
    return data


def fetch_bytes(batch: pd.DataFrame, settings: S3Settings | None, max_bytes: int) -> pd.DataFrame:
    """Add an ``image`` column of file bytes to a listing batch; a file that cannot be read (or is larger
    than ``max_bytes``) gets an ``error`` instead, and rows that arrive with one are kept untouched."""
    n = len(batch)
    sizes = batch["size"].tolist() if "size" in batch else [None] * n
    prior = batch["error"].tolist() if "error" in batch else [None] * n
    images: list[bytes | None] = [None] * n
    errors: list[str | None] = [None if pd.isna(e) or e == "" else str(e) for e in prior]
    for i, path in enumerate(batch["path"].tolist()):
        if errors[i] is not None:
            continue
        size = None if pd.isna(sizes[i]) else int(sizes[i])
        try:
            images[i] = _fetch_one(str(path), size, settings, max_bytes)
        except _FetchError as e:
            errors[i] = str(e)
        except Exception as e:  # never fail the task for one file
            errors[i] = str(_failure(f"cannot read {path}: {type(e).__name__}: {e}", e))
    out = batch.copy()
    out["image"] = pd.Series(images, index=batch.index, dtype=object)
    out["error"] = pd.Series(errors, index=batch.index, dtype=object)
    return out
