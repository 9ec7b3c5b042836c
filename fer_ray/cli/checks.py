"""Checks before Ray starts: inputs that exist, outputs that can be written, artifacts that load, buckets
that answer, ports that are free; each failure a :class:`~fer_ray.config.UserError` saying how to fix it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fer_ray.config import DATA_ROOT_ENV, DEFAULT_PARQUET, UserError, fer2013_parquet
from fer_ray.storage import is_remote


def checked_scheme(path: str | os.PathLike, flag: str) -> str:
    """``path`` as text, ``file://`` dropped; another scheme than ``s3://`` is refused, as every reader would."""
    s = str(path)
    if "://" in s and not is_remote(s) and not s.startswith("file://"):
        scheme = s.split("://", 1)[0]
        raise UserError(f"{flag} {s}: unsupported URI scheme {scheme!r}", "use a local path or s3://bucket/prefix")
    return s.removeprefix("file://")


def submitted_working_dir(environ: dict[str, str] | None = None) -> bool:
    """True in the entrypoint of `ray job submit --working-dir DIR`: it runs in Ray's temporary copy of DIR
    (under /tmp/ray/session_*), which holds only the files git does not ignore and is deleted at `ray stop`."""
    raw = (os.environ if environ is None else environ).get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    try:
        return bool(raw) and bool((json.loads(raw).get("runtime_env") or {}).get("working_dir"))
    except (ValueError, AttributeError):
        return False


_UPLOADED = "`ray job submit --working-dir` uploads only files git does not ignore (out/, runs/ and data are not)"


def check_input_path(path: str | os.PathLike, flag: str, fix: str) -> None:
    """A local input that must exist (globs are left to their readers; s3://: its bucket answers)."""
    s = checked_scheme(path, flag)
    if is_remote(s):
        check_bucket(s, flag)
        return
    if any(c in s for c in "*?[") or Path(s).expanduser().exists():
        return
    if not Path(s).expanduser().is_absolute() and submitted_working_dir():
        raise UserError(f"{flag} {s}: no such file in the job's copy of --working-dir ({_UPLOADED})", fix_abs(flag))
    raise UserError(f"{flag} {s}: no such file or directory", fix)


def fix_abs(flag: str) -> str:
    return f"pass {flag} as an absolute path that exists on the cluster's nodes, or s3://bucket/..."


def check_output_dir(path: str | os.PathLike, flag: str) -> None:
    """A local output directory that may not exist yet, but must not be (or sit under) a file; in a submitted
    job, not a relative one (it would land in Ray's temporary copy of the working dir and vanish)."""
    s = checked_scheme(path, flag)
    if is_remote(s):
        check_bucket(s, flag, output=True)
        return
    p = Path(s).expanduser()
    if not p.is_absolute() and submitted_working_dir():
        raise UserError(
            f"{flag} {s} is relative, and this job runs in Ray's temporary copy of --working-dir (deleted at "
            "`ray stop`)",
            fix_abs(flag),
        )
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                what = f"{flag} {s} is a file" if q == p else f"{flag} {s}: {q} is a file"
                raise UserError(what, f"pass a directory ({flag} is created if missing), or move {q} away")
            if not os.access(q, os.W_OK):
                raise UserError(f"{flag} {s}: {q} is not writable", "pick a directory you can write to")
            _try_to_create(p, q, f"{flag} {s}")
            return


def _try_to_create(path: Path, existing: Path, what: str) -> None:
    """Create the missing directories down to ``path`` and remove them again: some places a permission check calls
    writable refuse new directories (``/proc`` as root, read-only mounts), and the job would fail only at its end."""
    missing = [d for d in (path, *path.parents) if d != existing and existing in d.parents]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what}: cannot create it ({e.strerror})", "pick a directory you can write to") from None
    for d in missing:  # deepest first; only what this check made
        d.rmdir()


def check_model(spec: str | None, flag: str = "--model", engine: str | None = None) -> None:
    """``spec`` names a model artifact that loads: a directory with artifact.json and weights.pt whose hashes
    match (and the ``engine``'s file when one is asked for), or a shipped name. s3:// artifacts: the bucket only."""
    if spec is not None and is_remote(checked_scheme(spec, flag)):
        check_bucket(str(spec), flag)
        return
    from fer_ray.inference.artifact import META, WEIGHTS, load_artifact, resolve_model
    from fer_ray.inference.shipped import SHIPPED

    p = resolve_model(spec)
    spec = spec if spec is not None else "default"  # what the messages call it
    if not p.exists():
        raise UserError(f"{flag} {spec}: no such artifact directory", f"pass an artifact directory or one of {SHIPPED}")
    missing = [n for n in (META, WEIGHTS) if not (p / n).is_file()]
    if missing:
        raise UserError(
            f"{flag} {spec}: {p} is not a model artifact (no {' or '.join(missing)})",
            f"pass the artifact directory (jobs/train.py writes runs/<name>/artifact) or one of {SHIPPED}",
        )
    try:
        load_artifact(p, engine=engine)  # hashes, format, label map, the engine's file: the messages say what to do
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"{flag} {spec}: {e}") from e


def local_artifact_dir(spec: str | None, verb: str) -> str:
    """The local artifact directory a job updates in place (``spec`` may be a shipped name)."""
    if spec is None:
        raise UserError(f"no model to {verb}", "pass the artifact directory (or a shipped name) as ARTIFACT or --model")
    if is_remote(spec):
        raise UserError(f"--model {spec}: this job updates an artifact in place", "copy it to a local directory first")
    check_model(spec)
    from fer_ray.inference.artifact import resolve_model

    return str(resolve_model(spec))


def check_data(data: str | None, flag: str = "--data", need: str = "labelled FER2013 data") -> str:
    """The labelled data source: ``data`` when it exists, else the data root's Parquet; else a UserError."""
    fix = f"pass {flag} (FER2013 .parquet, fer2013.csv or train/<emotion>/ folders) or set {DATA_ROOT_ENV}"
    if data:
        check_input_path(data, flag, fix)
        return str(data)
    source = fer2013_parquet()
    if source is None:
        raise UserError(f"no {need} found (no {DEFAULT_PARQUET} under the data root)", fix)
    return str(source)


def check_bucket(url: str, flag: str, output: bool = False) -> None:
    """An ``s3://bucket/...`` whose bucket exists and whose credentials work (one HEAD request); the error
    codes and the credentials fix are :mod:`fer_ray.data.s3`'s, as when listing and fetching."""
    if not is_remote(url):
        return
    bucket = url[len("s3://") :].split("/", 1)[0]
    if not bucket:
        raise UserError(f"{flag} {url}: no bucket name", "write s3://bucket/prefix")
    from botocore.exceptions import BotoCoreError, ClientError

    from fer_ray.data import s3

    try:
        settings = s3.S3Settings.from_env()
    except ValueError as e:
        raise UserError(f"{flag} {url}: {e}", "fix AWS_ENDPOINT_URL (e.g. http://127.0.0.1:9000)") from None
    where = settings.where()
    try:
        s3.client_for(settings).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as e:
        code = s3.error_code(e)
        if s3.is_no_credentials(e):
            what, fix = "no S3 credentials found", f"{s3.CREDENTIALS_FIX}; for MinIO etc. also AWS_ENDPOINT_URL"
        elif code == "NoSuchBucket" or code in s3.NOT_FOUND_CODES:  # HEAD has no body: a missing bucket is a bare 404
            endpoint = f" --endpoint-url {settings.endpoint_url}" if settings.endpoint_url else ""
            what = f"bucket {bucket} not found{where}"
            fix = f"create it: aws s3 mb s3://{bucket}{endpoint}" if output else "check the bucket name and endpoint"
        elif code in s3.DENIED_CODES:
            what = f"access to bucket {bucket}{where} denied ({code})"
            fix = "check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and the bucket policy"
        elif code:
            what, fix = f"S3 answered {code}{where}", "check the bucket, endpoint and credentials"
        else:
            what, fix = f"cannot reach S3{where} ({e})", "check AWS_ENDPOINT_URL and the network"
        raise UserError(f"{flag} {url}: {what}", fix) from None


def check_port_free(host: str, port: int) -> None:
    """``host:port`` can be bound (for a job that starts its own Ray and Serve proxy on it)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the Serve proxy does: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(
                f"cannot listen on {host}:{port} ({e.strerror})",
                "pick another --port, or stop what holds it (e.g. `serve shutdown` or an earlier jobs/serve.py)",
            ) from None
