"""The one command-line layer of every job in ``jobs/``: flags generated from the config dataclasses,
``--config FILE``, and errors a person can act on.

- :func:`config_parser` turns a config dataclass into flags: each field's type, default, help text
  and choices come from the dataclass (see :func:`fer_ray.config.setting`), nested configs marked
  ``flatten`` become flat flags (``--widths``, ``--address``), old spellings keep working with a warning.
- :func:`parse_config` resolves defaults < ``--config FILE`` (YAML or JSON, unknown keys refused) <
  flags given on the command line; ``--print-config`` prints the result as JSON and exits.
- :func:`run_cli` wraps a job's ``main``: a :class:`UserError` (or a wrong flag) prints
  ``fer_ray: error: <what> — <how to fix>`` to stderr and exits 2; ``--debug`` adds the traceback.
- ``check_*`` helpers test paths, artifacts, buckets and ports before Ray starts.

Kept free of heavy imports: ``--help`` and most user errors answer before torch or Ray load.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import sys
import traceback
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fer_ray.config import (  # noqa: F401  (MODEL_HELP: for jobs)
    MODEL_HELP,
    RAY_FLAGS,
    UserError,
    as_user_dict,
    field_choices,
    field_types,
    from_user_dict,
    nested_config,
    read_config_file,
    text_parser,
    unwrap_optional,
)

__all__ = ["UserError", "Parser", "config_parser", "parse_config", "run_cli", "setup"]

PROG = "fer_ray"
SHIPPED = "default, ae_cnn_attn, cnn_attn"


class Exit(Exception):
    """Leave a job early with a status (e.g. after ``--print-config``); :func:`run_cli` returns it."""

    def __init__(self, code: int = 0):
        self.code = code


# ---------------------------------------------------------------- running a job
def setup(verbose: bool = False) -> None:
    """Logging for CLIs: our INFO lines, other libraries' warnings only (botocore's "Found credentials ..." is
    noise to a user); ``verbose``: everything at DEBUG. Usage stats stay off unless the user opted in."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("fer_ray").setLevel(logging.DEBUG if verbose else logging.INFO)


def before_ray(ns: argparse.Namespace) -> None:
    """Once the checks passed and just before Ray starts: Ray's own log lines only with ``--verbose``."""
    from fer_ray.runtime import configure_logging

    configure_logging(verbose=bool(getattr(ns, "verbose", False)))


# What the `train` extra adds to the lean install (pyproject.toml).
TRAIN_EXTRA = ("torch", "onnx", "onnxscript")


def run_cli(main: Callable[[list[str]], int]) -> Callable[[list[str] | None], int]:
    """``main`` with user errors as one line on stderr and status 2 (the traceback only with ``--debug``)."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        try:
            return main(args)
        except Exit as e:
            return e.code
        except UserError as e:
            if "--debug" in args:
                traceback.print_exc()
            print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
            return 2
        except ModuleNotFoundError as e:
            if e.name not in TRAIN_EXTRA:
                raise
            if "--debug" in args:
                traceback.print_exc()
            print(
                f"{PROG}: error: this job needs {e.name}, which the lean install (scoring, reports, Serve) leaves "
                "out — pip install -e '.[train]' (or `make test`) adds training, export and evaluation",
                file=sys.stderr,
            )
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # `... | head`: the reader left; say nothing more
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141

    return wrapper


def warn(message: str) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- the parser
class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the module docstring's layout; hand-written flags show their default like generated ones."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=120)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes are :class:`UserError`: one line, status 2, like every other error."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", HelpFormatter)
        if not kw.get("prog") and sys.argv[0].endswith(".py"):
            kw["prog"] = sys.argv[0]  # `jobs/train.py` as typed, so the hint can be pasted
        super().__init__(*args, **kw)
        self.config_cls: type | None = None
        self.config_defaults: dict[str, Any] = {}
        self.warned: set[str] = set()

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(message, self._did_you_mean(message) or f"see `{self.prog} --help`")

    def _did_you_mean(self, message: str) -> str | None:
        """For "unrecognized arguments: --ouput x": the closest flags this parser knows (argparse of Python 3.11
        offers none)."""
        import difflib

        if not message.startswith("unrecognized arguments:"):
            return None
        known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        hints = []
        for arg in message.split(":", 1)[1].split():
            flag = arg.split("=", 1)[0]
            if flag.startswith("--"):
                close = difflib.get_close_matches(flag, known, n=2, cutoff=0.6)
                if close:
                    hints.append(f"{flag}: did you mean {' or '.join(close)}?")
        return "; ".join(hints) + f" (see `{self.prog} --help`)" if hints else None


class _Set(argparse.Action):
    """Stores a value (or ``const`` for switches) and warns once when a deprecated spelling is used."""

    def __init__(self, option_strings, dest, deprecated=(), canonical="", note="", extend=False, **kw):
        super().__init__(option_strings, dest, **kw)
        self.deprecated, self.canonical, self.note, self.extend = tuple(deprecated), canonical, note, extend

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.deprecated and option_string not in getattr(parser, "warned", set()):
            parser.warned.add(option_string)
            warn(f"{option_string} is deprecated here, use {self.canonical}{self.note}")
        if values is None and not option_string:  # an optional positional left out
            return
        if self.extend or (isinstance(values, list) and not option_string):
            values = [*getattr(namespace, self.dest, []), *(values if isinstance(values, list) else [values])]
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def config_parser(
    cls: type,
    description: str | None = None,
    *,
    overlay: Mapping[str, Mapping[str, Any]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    config_help: str | None = None,
) -> Parser:
    """A parser with one flag per field of the config dataclass ``cls`` (and of nested configs marked
    ``flatten``), plus ``--config``, ``--print-config``, ``--verbose`` and ``--debug``.

    ``overlay`` adds or overrides field metadata by field name (what only the CLI knows, e.g. the registered
    architectures as choices; the ``fields`` of nested configs merge); ``defaults`` (a nested mapping)
    replaces the dataclass defaults for this job.
    """
    p = Parser(description=description)
    p.config_cls, p.config_defaults = cls, dict(defaults or {})
    g = p.add_argument_group("config and output")
    g.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=config_help
        or f"YAML or JSON file of {cls.__name__} settings (the keys of --print-config); flags given override it",
    )
    g.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as JSON (a valid --config file) and exit before any work",
    )
    g.add_argument("--verbose", action="store_true", help="debug logging, Ray's own messages included")
    g.add_argument("--debug", action="store_true", help="show the traceback of an error")
    _add_fields(p, cls, (), dict(overlay or {}), p.config_defaults, None)
    return p


def _add_fields(
    p: Parser, cls: type, path: tuple[str, ...], overlay: dict, defaults: Mapping[str, Any], group_title: str | None
) -> None:
    hints = field_types(cls)
    groups: dict[str | None, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = _merge_meta(f.metadata, overlay.get(f.name, {}))
        title = meta.get("group", group_title)
        if title not in groups:
            groups[title] = _group(p, title)
        sub = nested_config(hints[f.name])
        default = defaults.get(f.name, _default(f))
        if sub is not None and meta.get("flatten"):
            _add_fields(p, sub, (*path, f.name), dict(meta.get("fields", {})), defaults.get(f.name, {}), title)
            continue
        if "flag" in meta and meta["flag"] is None or meta.get("file") is False:
            continue
        _add_flag(groups[title], f, hints[f.name], meta, (*path, f.name), default)


def _merge_meta(meta: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """A field's metadata with a job's overlay on top; the per-field ``fields`` of nested configs merge too."""
    out = {**meta, **top}
    if "fields" in meta and "fields" in top:
        inner, over = meta["fields"], top["fields"]
        out["fields"] = {k: _merge_meta(inner.get(k, {}), over.get(k, {})) for k in {**inner, **over}}
    return out


def _group(p: Parser, title: str | None):
    if title is None:
        return p
    for g in p._action_groups:
        if g.title == title:
            return g
    return p.add_argument_group(title)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _add_flag(g, f: dataclasses.Field, tp: Any, meta: Mapping[str, Any], path: tuple[str, ...], default: Any) -> None:
    dest = "@" + ".".join(path)
    help_text = meta.get("help") or ""
    if not help_text:
        raise TypeError(f"{'.'.join(path)} has no help text: give it one with fer_ray.config.setting(..., help)")
    inner, optional = unwrap_optional(tp)
    shown = meta.get("default_text", _show(default))
    kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "action": _Set}
    if meta.get("positional"):
        # INPUT... (a tuple) or one optional ARTIFACT; with a flag, `--model X` works as well (the two add up)
        many = typing.get_origin(inner) is tuple
        metavar = meta.get("metavar", f.name.upper())
        pos_help = _with_default(help_text, shown) if not meta.get("flag") else f"same as {meta['flag']}"
        g.add_argument(dest, metavar=metavar, nargs="*" if many else "?", help=_esc(pos_help), **_no_dest(kw))
        if not meta.get("flag"):
            return
        kw.update(extend=many, metavar=metavar, type=str)
        g.add_argument(meta["flag"], help=_esc(_with_default(help_text, shown)), **kw)
        return
    flag = meta.get("flag")
    if nested_config(tp) is not None or inner is bool:
        # a switch: --x sets True, --no-x sets False, and --no-augment sets a nested config to None
        if flag is None:
            flag = "--no-" + _dash(f.name) if default is True else "--" + _dash(f.name)
        off = flag.startswith("--no-")
        kw.update(nargs=0, const=None if nested_config(tp) is not None else not off)
        if not (inner is bool and optional):  # a tri-state bool (None: the artifact decides) says so itself
            help_text += "; this flag turns it off" if off else ""
            shown = meta.get("default_text", "off" if default in (None, False) else "on")
    else:
        flag = flag or "--" + _dash(f.name)
        kw.update(type=meta.get("parse") or text_parser(tp), metavar=meta.get("metavar"))
        choices = field_choices(f, tp) if "choices" not in meta else tuple(meta["choices"])
        if choices:
            kw["choices"] = choices
            kw["metavar"] = kw["metavar"] or "{" + ",".join(map(str, choices)) + "}"
        kw["metavar"] = kw["metavar"] or _dash(f.name).upper().replace("-", "_")
    deprecated = tuple(meta.get("deprecated", ()))
    aliases = tuple(meta.get("aliases", ()))
    if deprecated:
        help_text += f"; {', '.join(deprecated)}: deprecated spelling"
    kw.update(deprecated=deprecated, canonical=flag, note=meta.get("deprecated_note", ""))
    g.add_argument(flag, *aliases, *deprecated, help=_esc(_with_default(help_text, shown)), **kw)


def _with_default(help_text: str, shown: str) -> str:
    return f"{help_text} (default: {shown})"


def _no_dest(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if k != "dest"}


def _esc(text: str) -> str:
    return text.replace("%", "%%")


def _dash(name: str) -> str:
    return name.replace("_", "-")


def _show(v: Any) -> str:
    if v is None:
        return "unset"
    if isinstance(v, tuple | list):
        return ",".join(map(str, v)) or "none"  # not "(default: )"
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


# ---------------------------------------------------------------- resolving the config
def parse_config(
    p: Parser, argv: list[str] | None = None, adjust: Callable[[dict[str, Any]], None] | None = None
) -> tuple[Any, argparse.Namespace]:
    """(the resolved config, the parsed namespace): defaults < ``--config FILE`` < flags given.

    ``adjust`` may fill in derived defaults on the merged mapping before the config is built (e.g. the
    run name from the architecture when neither the file nor a flag named one). ``--print-config``
    prints the result and leaves through :class:`Exit`.
    """
    assert p.config_cls is not None, "parse_config needs a parser from config_parser"
    ns = p.parse_args(argv)
    setup(getattr(ns, "verbose", False))
    merged = _deep_merge({}, p.config_defaults)
    where = "settings"
    if ns.config:
        data = read_config_file(ns.config)
        from_user_dict(p.config_cls, data, f"--config {ns.config}")  # unknown keys and bad values, named early
        merged = _deep_merge(merged, data)
        where = f"--config {ns.config} with the flags given"
    given: dict[str, Any] = {}
    for key, value in vars(ns).items():
        if key.startswith("@") and not (isinstance(value, list) and not value):
            _set_path(given, key[1:].split("."), tuple(value) if isinstance(value, list) else value)
    merged = _deep_merge(merged, given)
    if adjust is not None:
        adjust(merged)
    cfg = from_user_dict(p.config_cls, merged, where)
    if ns.print_config:
        print(json.dumps(as_user_dict(cfg), indent=2, default=str))
        raise Exit(0)
    return cfg, ns


def _set_path(d: dict[str, Any], path: list[str], value: Any) -> None:
    for k in path[:-1]:
        d = d.setdefault(k, {})
    d[path[-1]] = value


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = dict(v) if isinstance(v, Mapping) else v
    return out


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """``--address`` and ``--ray-cpus`` for a parser written by hand (jobs/serve.py, benchmarks); the
    config-driven jobs get the same flags from their ``ray`` field."""
    g = p.add_argument_group("ray")
    g.add_argument("--address", default=None, help=_esc(RAY_FLAGS["address"]["help"]))
    g.add_argument("--ray-cpus", type=int, default=None, help=_esc(RAY_FLAGS["num_cpus"]["help"]))


# ---------------------------------------------------------------- training and tuning
def _model_names() -> tuple[str, ...]:
    from fer_ray.models import MODELS

    return tuple(sorted(MODELS))


def train_overlay(model_flag_note: str = " (--model names a trained artifact in score, serve and evaluate)") -> dict:
    """``--arch`` (TrainConfig's ``model.name``, spelled in ``fer_ray.train.config.MODEL_FLAGS``) for train and
    tune: the registered architectures as its choices, and why its old spelling ``--model`` warns."""
    return {"model": {"fields": {"name": {"choices": _model_names(), "deprecated_note": model_flag_note}}}}


def default_run_name(train: dict[str, Any]) -> None:
    """A run named by neither the file nor ``--run-name`` is named after its architecture."""
    from fer_ray.models.config import ModelConfig

    if "run_name" not in train:
        train["run_name"] = (train.get("model") or {}).get("name", ModelConfig().name)


def train_parser(description: str | None = None) -> Parser:
    """The flags of jobs/train.py (TrainConfig's fields)."""
    from fer_ray.train.config import TrainConfig

    return config_parser(TrainConfig, description, overlay=train_overlay())


def tune_parser(description: str | None = None) -> Parser:
    """The flags of jobs/tune.py: SweepConfig's fields, the training ones flat (``--epochs``: 4 by default)."""
    from fer_ray.tune.config import SweepConfig

    return config_parser(
        SweepConfig,
        description,
        overlay={"base": {"fields": train_overlay()}},
        defaults={"base": {"epochs": 4}},  # a sweep's trials are short; the winner is trained longer afterwards
        config_help="YAML or JSON file of the sweep's settings, training ones under base: (the keys of "
        "--print-config); flags given override it",
    )


def load_config_file(path: str | os.PathLike, cls: type | None = None) -> Any:
    """A config (default TrainConfig) from a user's YAML/JSON file; unknown keys are an error naming them."""
    if cls is None:
        from fer_ray.train.config import TrainConfig

        cls = TrainConfig
    return from_user_dict(cls, read_config_file(path), f"--config {path}")


# ---------------------------------------------------------------- checks before Ray starts
def is_remote(path: str | os.PathLike | None) -> bool:
    return path is not None and "://" in str(path)


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
    """A local input that must exist (globs and s3:// are left to their readers)."""
    s = str(path)
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
    """A local output directory that may not exist yet, but must not be (or sit under) a file.

    In a submitted job a relative one would land in Ray's temporary copy of the working dir and vanish
    at `ray stop` without a word: refused with the fix instead."""
    s = str(path)
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
            return


def check_model(spec: str | None, flag: str = "--model", engine: str | None = None) -> None:
    """``spec`` names a model artifact that loads: a directory with artifact.json and weights.pt whose hashes
    match (and the ``engine``'s file when one is asked for), or a shipped name. s3:// artifacts: the bucket only."""
    if is_remote(spec):
        check_bucket(str(spec), flag)
        return
    from fer_ray.inference.artifact import META, WEIGHTS, load_artifact, resolve_model

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
    from fer_ray.config import DATA_ROOT_ENV, DEFAULT_PARQUET, fer2013_parquet

    fix = f"pass {flag} (FER2013 .parquet, fer2013.csv or train/<emotion>/ folders) or set {DATA_ROOT_ENV}"
    if data:
        check_input_path(data, flag, fix)
        return str(data)
    source = fer2013_parquet()
    if source is None:
        raise UserError(f"no {need} found (no {DEFAULT_PARQUET} under the data root)", fix)
    return str(source)


def check_bucket(url: str, flag: str, output: bool = False) -> None:
    """An ``s3://bucket/...`` whose bucket exists and whose credentials work; one HEAD request.

    The error codes and the credentials fix are :mod:`fer_ray.data.s3`'s, as when listing and fetching.
    """
    if not url.startswith("s3://"):
        return
    bucket = url[len("s3://") :].split("/", 1)[0]
    if not bucket:
        raise UserError(f"{flag} {url}: no bucket name", "write s3://bucket/prefix")
    from botocore.exceptions import BotoCoreError, ClientError

    from fer_ray.data.s3 import (
        CREDENTIALS_FIX,
        DENIED_CODES,
        NOT_FOUND_CODES,
        S3Settings,
        client_for,
        error_code,
        is_no_credentials,
    )

    try:
        settings = S3Settings.from_env()
    except ValueError as e:
        raise UserError(f"{flag} {url}: {e}", "fix AWS_ENDPOINT_URL (e.g. http://127.0.0.1:9000)") from None
    where = settings.where()
    try:
        client_for(settings).head_bucket(Bucket=bucket)
    except (BotoCoreError, ClientError) as e:
        code = error_code(e)
        if is_no_credentials(e):
            what, fix = "no S3 credentials found", f"{CREDENTIALS_FIX}; for MinIO etc. also AWS_ENDPOINT_URL"
        elif code == "NoSuchBucket" or code in NOT_FOUND_CODES:  # HEAD has no body: a missing bucket is a bare 404
            endpoint = f" --endpoint-url {settings.endpoint_url}" if settings.endpoint_url else ""
            what = f"bucket {bucket} not found{where}"
            fix = f"create it: aws s3 mb s3://{bucket}{endpoint}" if output else "check the bucket name and endpoint"
        elif code in DENIED_CODES:
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
