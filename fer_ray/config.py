"""What every typed config shares: field metadata (:func:`setting`), the data root, and dict loading.
:func:`from_user_dict` reads a file a person wrote and refuses unknown keys (a typo must never train or
score something else); each config's ``from_dict`` reads what fer_ray stored and ignores them (so what
an older or newer version wrote stays readable)."""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

DATA_ROOT_ENV = "FER_RAY_DATA"
DEFAULT_PARQUET = "fer2013/fer2013.parquet"  # under the data root


# RayConfig (fer_ray.runtime) on the command line of every job that uses Ray: --address, --ray-cpus.
RAY_FLAGS = {
    "address": {
        "help": "Ray cluster to join: host:port, or auto for one started on this machine with `ray start`; "
        "unset: RAY_ADDRESS (set by `ray job submit`), else this job starts its own private Ray",
    },
    "num_cpus": {
        "flag": "--ray-cpus",
        "help": "logical CPUs of the job's own Ray (unset: 2x cores, leaving room for Ray Data next to workers); "
        "a joined cluster's nodes declare their own",
    },
    "num_gpus": {"flag": None},
    "include_dashboard": {"flag": None},
}


class UserError(ValueError):
    """A mistake the person running a job can fix (a path, a config key, a value): ``fer_ray.cli.run_cli``
    prints it as one line, ``fer_ray: error: <what> — <how to fix>``, and exits 2 (no traceback)."""

    def __init__(self, what: str, fix: str | None = None):
        super().__init__(f"{what} — {fix}" if fix else what)
        self.what, self.fix = what, fix


def fer2013_parquet() -> Path | None:
    """The FER2013 Parquet under ``$FER_RAY_DATA``, else ``../shared/data`` beside the repo; ``None`` if absent
    (a job shipped with ``ray job submit --working-dir .`` cannot see ``../shared``: it needs a path)."""
    env = os.environ.get(DATA_ROOT_ENV)
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    p = root / DEFAULT_PARQUET
    return p if p.is_file() else None


POLICIES = ("resumable", "machine", "resources", "bookkeeping")  # what setting() may mark a field with


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    default_factory: Any = dataclasses.MISSING,
    resumable: bool = False,
    machine: bool = False,
    resources: bool = False,
    bookkeeping: bool = False,
    **cli: Any,
) -> Any:
    """A dataclass field with its help text, policy marks and CLI spelling, so each list of fields is a
    query (:func:`fields_where`), never a copy that drifts.

    Policies: ``resumable`` (a resume may change it; anything else would continue the saved weights
    under another question), ``machine`` (a fact of the machine a run ran on; artifacts leave it out),
    ``resources`` (what a run is given to run on; a sweep's rerun may change it and still continue),
    ``bookkeeping`` (where a run is kept and how it was tested; a sweep's best config leaves it out).

    CLI keys: ``flag`` (default ``--field-name``; ``None``: config file only), ``aliases``, ``deprecated``
    (old spellings, with a warning), ``choices``, ``metavar``, ``group`` (``--help`` section), ``file``
    (``False``: not in a config file either), ``parse`` (str -> value), ``default_text``, and for a nested
    config ``flatten`` (its fields become flags) with ``fields`` (per-field overrides of these keys).
    """
    marks = zip(POLICIES, (resumable, machine, resources, bookkeeping), strict=True)
    meta = {"help": help, **{policy: True for policy, on in marks if on}, **cli}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def fields_where(cls: type, policy: str) -> frozenset[str]:
    """The names of ``cls``'s fields marked with ``policy`` (see :func:`setting`)."""
    if policy not in POLICIES:
        raise ValueError(f"unknown field policy {policy!r}; valid: {', '.join(POLICIES)}")
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get(policy))


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a config dataclass (the modules use ``from __future__ import annotations``)."""
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(``X``, True) for ``X | None``; (``tp``, False) otherwise. ``int | str`` stays as it is."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return functools.reduce(operator.or_, args), True
    return tp, False


def field_choices(f: dataclasses.Field, tp: Any) -> tuple[Any, ...] | None:
    """The valid values of a field: ``Literal[...]`` in its type, else ``choices`` in its metadata."""
    inner, _ = unwrap_optional(tp)
    if typing.get_origin(inner) is Literal:
        return typing.get_args(inner)
    choices = f.metadata.get("choices")
    return tuple(choices) if choices is not None else None


def check_choices(cfg: Any) -> None:
    """From ``__post_init__``: the ``Literal`` type (or ``choices`` metadata) is the only list of valid values."""
    hints = field_types(type(cfg))
    for f in dataclasses.fields(cfg):
        choices = field_choices(f, hints[f.name])
        value = getattr(cfg, f.name)
        if choices is not None and value is not None and value not in choices:
            names = [str(c) for c in choices]
            one_of = f"{names[0]} or {names[1]}" if len(names) == 2 else "one of " + ", ".join(names)
            raise ValueError(f"{f.name} must be {one_of}; got {value!r}")


def check_at_least(cfg: object, **bounds: float | tuple[float, str]) -> None:
    """From ``__post_init__``: ``name=lowest`` or ``name=(lowest, note)``; a field that is set may not lie below."""
    for name, bound in bounds.items():
        lowest, note = bound if isinstance(bound, tuple) else (bound, "")
        value = getattr(cfg, name)
        if value is not None and value < lowest:
            raise ValueError(f"{name} must be >= {lowest}{note}, got {value}")


def text_parser(tp: Any) -> Callable[[str], Any]:
    """str -> value of a field of type ``tp`` (CLI flags, ``serve run`` args): ``none``/``null`` clear an
    optional field, tuples are comma-separated, mappings JSON, ``int | str`` an int when all digits."""
    inner, optional = unwrap_optional(tp)
    origin = typing.get_origin(inner)
    if origin is Literal:
        base: Any = type(typing.get_args(inner)[0])
    elif origin is tuple:
        base = functools.partial(_comma_list, typing.get_args(inner)[0])
    elif origin in (Union, types.UnionType):
        base = _int_or_str
    elif inner is bool:
        base = _bool
    elif inner in (int, float, str):
        base = inner
    elif inner in (dict, Mapping) or origin in (dict, Mapping):
        base = _json_mapping
    else:
        base = str

    def parse(text: str) -> Any:
        if optional and text.strip().lower() in ("none", "null", ""):
            return None
        return base(text)

    # argparse names the type in "invalid <name> value: 'x'"
    parse.__name__ = {_comma_list: "comma-separated list", _json_mapping: "JSON object"}.get(
        getattr(base, "func", base), getattr(base, "__name__", "value")
    )
    return parse


def _comma_list(item: type, text: str) -> tuple[Any, ...]:
    return tuple(item(x) for x in text.replace(" ", "").split(",") if x)


def _int_or_str(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"expected true or false, got {text!r}")
    return t in ("1", "true", "yes", "on")


def _json_mapping(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f'expected a JSON object such as {{"min_replicas": 1}}, got {text!r}')
    return value


def replace(cfg: T, **overrides: Any) -> T:
    """``dataclasses.replace`` that names the valid fields when a key is wrong."""
    fields = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {type(cfg).__name__} field(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)  # type: ignore[type-var]


def file_fields(cls: type) -> list[dataclasses.Field]:
    """The fields a user config file may set (those not marked ``file=False``)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("file", True) and f.init]


def from_user_dict(cls: type[T], d: Mapping[str, Any], where: str = "config") -> T:
    """A config from a mapping a person wrote (nested mappings, lists for tuples); unknown keys at any
    level, or a bad value, raise :class:`UserError` naming them. Fields left out keep their defaults."""
    unknown = unknown_keys(cls, d)
    if unknown:
        valid = ", ".join(f.name for f in file_fields(cls))
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}", f"valid keys: {valid}")
    try:
        return build(cls, d)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}", "fix that value (`--help` describes every setting)") from None


def unknown_keys(cls: type, d: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Sorted, dotted for nested configs."""
    hints = field_types(cls)
    fields = {f.name: f for f in file_fields(cls)}
    bad = []
    for key, value in d.items():
        if key not in fields:
            bad.append(prefix + str(key))
            continue
        sub = nested_config(hints[key])
        if sub is not None and isinstance(value, Mapping):
            bad += unknown_keys(sub, value, f"{prefix}{key}.")
    return sorted(bad)


def nested_config(tp: Any) -> type | None:
    """The config dataclass a field holds (``X`` or ``X | None``), else ``None``."""
    inner, _ = unwrap_optional(tp)
    return inner if dataclasses.is_dataclass(inner) and isinstance(inner, type) else None


def build(cls: type[T], d: Mapping[str, Any]) -> T:
    """``cls(**d)`` with nested configs' mappings built into their dataclasses first, lists into tuples."""
    hints = field_types(cls)
    kw: dict[str, Any] = {}
    for key, value in d.items():
        sub = nested_config(hints[key])
        if sub is not None and isinstance(value, Mapping):
            value = build(sub, value)
        elif isinstance(value, list) and typing.get_origin(unwrap_optional(hints[key])[0]) is tuple:
            value = tuple(value)
        kw[key] = value
    return cls(**kw)


def flat_keys(cls: type, path: tuple[str, ...] = ()) -> dict[str, tuple[tuple[str, ...], Any]]:
    """Key -> (field path, field type) for every field of ``cls`` (nested ``flatten`` configs flat), under its name
    and, but for switches, its flag's spelling (``replicas``): the ``key=value`` args of ``serve run``."""
    keys: dict[str, tuple[tuple[str, ...], Any]] = {}
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        sub = nested_config(hints[f.name])
        if sub is not None and f.metadata.get("flatten"):
            keys.update(flat_keys(sub, (*path, f.name)))
            continue
        keys[f.name] = ((*path, f.name), hints[f.name])
        flag = f.metadata.get("flag")
        if flag and unwrap_optional(hints[f.name])[0] is not bool:  # a switch's flag spells its negation
            keys.setdefault(flag.lstrip("-").replace("-", "_"), keys[f.name])
    return keys


def set_path(d: dict[str, Any], path: Sequence[str], value: Any) -> None:
    """``d[path[0]][path[1]]... = value``, making the nested mappings on the way."""
    for key in path[:-1]:
        d = d.setdefault(key, {})
    d[path[-1]] = value


def as_user_dict(cfg: Any) -> dict[str, Any]:
    """``cfg`` as the nested mapping :func:`from_user_dict` reads back (tuples as lists): ``--print-config``."""
    out: dict[str, Any] = {}
    for f in file_fields(type(cfg)):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = as_user_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif isinstance(v, Mapping):
            v = dict(v)
        out[f.name] = v
    return out


def read_config_file(path: str | os.PathLike, what: str = "--config") -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or JSON file holding one mapping; :class:`UserError` otherwise."""
    p = Path(path).expanduser()
    kind = "YAML" if p.suffix.lower() in (".yaml", ".yml") else "JSON"
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"{what} {path}: no such file", "check the path") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory", "pass a YAML or JSON file") from None
    try:
        if kind == "YAML":
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: one message either way
        reason = " ".join(str(e).split())
        raise UserError(f"{what} {path}: not valid {kind} ({reason})", f"fix the {kind} syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"{what} {path} holds a {type(data).__name__}", "write a mapping of setting names to values (key: value)"
        )
    return data
