"""Where a path points (a local file or ``s3://bucket/key``) and how S3 is reached.

One :class:`S3Settings`, resolved on the driver, goes to every task (variables set after ``ray.init`` never
reach workers). Unless a caller adds keys it holds endpoint and region only: each process takes credentials
from the AWS chain, so rotated ones are picked up and no secret rides in task arguments. Images are listed
and fetched with boto3 (:func:`client_for`), whose error codes say what went wrong (pyarrow, with no
credentials, signs nothing and gets "access denied") and which needs one GET per object (pyarrow adds a HEAD).
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlparse

import pyarrow.fs as pafs

from fer_ray.config import UserError

DEFAULT_REGION = "us-east-1"
# S3 error codes, as botocore reports them, that mean "no such object" and "not allowed".
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
DENIED_CODES = frozenset(
    {"403", "AccessDenied", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)
CREDENTIALS_FIX = (
    "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance role provides them"
)


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 or a store like MinIO (``endpoint_url`` ``http://127.0.0.1:9000``; ``None``: AWS itself).
    Credentials left ``None`` fall back to the AWS SDKs' chain; secrets stay out of ``repr`` (settings are logged)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            if u.scheme not in ("http", "https") or not u.netloc:
                raise UserError(
                    f"S3 endpoint_url must look like http://host:port or https://host, got {self.endpoint_url!r}"
                )
        if bool(self.access_key) != bool(self.secret_key):
            raise UserError("S3 access_key and secret_key must be given together (or neither)")

    @classmethod
    def from_env(cls, credentials: bool = True) -> S3Settings:
        """Settings as the AWS CLI resolves them, with boto3's credentials frozen in; ``credentials=False``
        leaves them out, so each process resolves the chain itself (what settings sent to Ray tasks do)."""
        import boto3

        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        session = boto3.Session()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or session.region_name
        creds = session.get_credentials() if credentials else None
        if creds is None:
            return cls(endpoint_url=endpoint, region=region)
        frozen = creds.get_frozen_credentials()
        return cls(endpoint, region, frozen.access_key, frozen.secret_key, frozen.token or None)

    def where(self) -> str:
        """`` at endpoint <url>`` for messages about a non-AWS store; empty for AWS itself."""
        return f" at endpoint {self.endpoint_url}" if self.endpoint_url else ""

    def filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem, endpoint explicit (pyarrow ignores ``AWS_ENDPOINT_URL``) and a region set
        (else the SDK asks the EC2 metadata service)."""
        kw: dict[str, Any] = {"region": self.region or DEFAULT_REGION}
        if self.access_key:
            kw.update(access_key=self.access_key, secret_key=self.secret_key, session_token=self.session_token)
        if self.endpoint_url:
            u = urlparse(self.endpoint_url)
            kw.update(endpoint_override=u.netloc + u.path.rstrip("/"), scheme=u.scheme)
        return pafs.S3FileSystem(**kw)

    def client(self):
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
def client_for(settings: S3Settings):
    """The boto3 client of ``settings``, one per process: creating one costs tens of milliseconds."""
    return settings.client()


def error_code(e: BaseException) -> str:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchBucket``, ``403``, ...); empty for anything else."""
    response = getattr(e, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_no_credentials(e: BaseException) -> bool:
    """True when boto3 found no credentials at all (raised before any request is sent)."""
    from botocore.exceptions import NoCredentialsError

    return isinstance(e, NoCredentialsError)


def is_s3_uri(path: str) -> bool:
    return path.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; ``key`` may be empty."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise UserError(f"S3 URI {uri!r} has no bucket; expected s3://bucket/prefix")
    return bucket, key


def local_path(path: str) -> str:
    """The absolute local path of ``path`` (``~`` expanded, ``file://`` dropped)."""
    return os.path.abspath(os.path.expanduser(path.removeprefix("file://")))


def check_scheme(path: str) -> None:
    """Refuse URIs other than ``s3://`` and ``file://`` with a message that says what is accepted."""
    scheme = urlparse(path).scheme
    if "://" in path and scheme not in ("s3", "file"):
        raise UserError(f"unsupported URI scheme {scheme!r} in {path!r}; use a local path or s3://bucket/prefix")


def resolve_filesystem(uri: str, settings: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path inside it)`` for a local path or an ``s3://`` URI."""
    uri = str(uri)
    check_scheme(uri)
    if is_s3_uri(uri):
        bucket, key = split_s3_uri(uri)
        return (settings or S3Settings.from_env()).filesystem(), f"{bucket}/{key}".rstrip("/")
    return pafs.LocalFileSystem(), local_path(uri)


def open_text(path: str, settings: S3Settings | None = None) -> IO[str]:
    """Open a local or ``s3://`` text file for reading (the caller closes it)."""
    fs, p = resolve_filesystem(path, settings)
    return io.TextIOWrapper(fs.open_input_stream(p), encoding="utf-8")
