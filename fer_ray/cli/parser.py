"""Flags generated from the config dataclasses (:func:`config_parser`: type, default, help text and choices
from :func:`fer_ray.config.setting`; old spellings warn), and the config they resolve to (:func:`parse_config`:
defaults < ``--config FILE`` < flags given). Every default shows in ``--help`` the one way :func:`show_default`
words it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

from fer_ray.cli.runner import PROG, Exit, setup
from fer_ray.config import (
    RAY_FLAGS,
    UserError,
    as_user_dict,
    field_choices,
    field_types,
    from_user_dict,
    nested_config,
    read_config_file,
    set_path,
    text_parser,
    unwrap_optional,
)

CONFIG_PREFIX, ACTION_PREFIX = "@", "!"  # argparse dests: a setting's dotted path, or an action's name


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout; hand-written flags show their default as generated ones do."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=120)

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is argparse.SUPPRESS:  # generated flags (and -h) carry their default in the text already
            return action.help or ""
        return _with_default(action.help or "", _esc(show_default(action.default)))


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose mistakes are :class:`UserError`: one line, status 2, like every other error."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        kw.setdefault("formatter_class", HelpFormatter)
        if not kw.get("prog") and sys.argv[0].endswith(".py"):
            kw["prog"] = sys.argv[0]  # `jobs/train.py` as typed, so the hint can be pasted
        super().__init__(*args, **kw)
        self.config_cls: type | None = None
        self.actions_cls: type | None = None
        self.config_defaults: dict[str, Any] = {}
        self.warned: set[str] = set()

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(message, self._did_you_mean(message) or f"see `{self.prog} --help`")

    def _did_you_mean(self, message: str) -> str | None:
        """For "unrecognized arguments: --ouput x": the closest flags (argparse of Python 3.11 offers none)."""
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
        if option_string in self.deprecated and option_string not in parser.warned:
            parser.warned.add(option_string)
            sys.stderr.write(f"{PROG}: warning: {option_string} is deprecated here, use {self.canonical}{self.note}\n")
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
    actions: type | None = None,
) -> Parser:
    """A parser with one flag per field of the config dataclass ``cls`` (nested ``flatten`` configs flat), plus
    ``--config``, ``--print-config``, ``--verbose`` and ``--debug``. ``overlay``: field metadata only the CLI knows
    (e.g. the registered architectures as choices). ``actions``: a dataclass of what the job does this time
    (``--export-only``): flags too, but neither ``--config`` keys nor printed.
    """
    p = Parser(description=description)
    p.config_cls, p.actions_cls, p.config_defaults = cls, actions, dict(defaults or {})
    g = p.add_argument_group("config and output")
    g.add_argument(
        "--config",
        metavar="FILE",
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
    if actions is not None:
        _add_fields(p, actions, (), {}, {}, None, prefix=ACTION_PREFIX)
    return p


def _add_fields(
    p: Parser,
    cls: type,
    path: tuple[str, ...],
    overlay: dict,
    defaults: Mapping[str, Any],
    group_title: str | None,
    prefix: str = CONFIG_PREFIX,
) -> None:
    hints = field_types(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = _merge_meta(f.metadata, overlay.get(f.name, {}))
        title = meta.get("group", group_title)
        sub = nested_config(hints[f.name])
        default = defaults.get(f.name, _default(f))
        if sub is not None and meta.get("flatten"):
            _add_fields(p, sub, (*path, f.name), dict(meta.get("fields", {})), defaults.get(f.name, {}), title, prefix)
            continue
        if "flag" in meta and meta["flag"] is None or meta.get("file") is False:
            continue
        _add_flag(_group(p, title), f, hints[f.name], meta, prefix + ".".join((*path, f.name)), default)


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
    return None if f.default_factory is dataclasses.MISSING else f.default_factory()


def _own_message(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """argparse reports any ValueError as "invalid <type> value"; a :class:`UserError` (a missing --space file, say)
    already says what to fix, so it reaches the user as it is."""

    @functools.wraps(parse)
    def checked(text: str) -> Any:
        try:
            return parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from e

    return checked


def _add_flag(g, f: dataclasses.Field, tp: Any, meta: Mapping[str, Any], dest: str, default: Any) -> None:
    help_text = meta.get("help") or ""
    if not help_text:
        raise TypeError(f"{dest[1:]} has no help text: give it one with fer_ray.config.setting(..., help)")
    inner, optional = unwrap_optional(tp)
    shown = meta.get("default_text", show_default(default))
    kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "action": _Set}
    if meta.get("positional"):
        # INPUT... (a tuple) or one optional ARTIFACT; with a flag, `--model X` works as well (the two add up)
        many = typing.get_origin(inner) is tuple
        metavar = meta.get("metavar", f.name.upper())
        pos_help = _with_default(help_text, shown) if not meta.get("flag") else f"same as {meta['flag']}"
        nargs = "*" if many else "?"
        g.add_argument(dest, metavar=metavar, nargs=nargs, help=_esc(pos_help), default=argparse.SUPPRESS, action=_Set)
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
        kw.update(type=_own_message(meta.get("parse") or text_parser(tp)), metavar=meta.get("metavar"))
        choices = field_choices(f, tp) if "choices" not in meta else tuple(meta["choices"])
        if choices:
            kw["choices"] = choices
            kw["metavar"] = kw["metavar"] or "{" + ",".join(map(str, choices)) + "}"
        kw["metavar"] = kw["metavar"] or f.name.upper()
    deprecated = tuple(meta.get("deprecated", ()))
    aliases = tuple(meta.get("aliases", ()))
    if deprecated:
        help_text += f"; {', '.join(deprecated)}: deprecated spelling"
    kw.update(deprecated=deprecated, canonical=flag, note=meta.get("deprecated_note", ""))
    g.add_argument(flag, *aliases, *deprecated, help=_esc(_with_default(help_text, shown)), **kw)


def _with_default(help_text: str, shown: str) -> str:
    return f"{help_text} ({shown})" if shown == "required" else f"{help_text} (default: {shown})"


def _esc(text: str) -> str:
    return text.replace("%", "%%")


def _dash(name: str) -> str:
    return name.replace("_", "-")


def show_default(v: Any) -> str:
    """A default as ``--help`` shows it: ``none`` when unset (an empty list too), ``on``/``off`` for switches."""
    if v is None:
        return "none"
    if isinstance(v, tuple | list):
        return ",".join(map(str, v)) or "none"  # not "(default: )"
    if isinstance(v, bool):
        return "on" if v else "off"
    return str(v)


def parse_config(
    p: Parser, argv: list[str] | None = None, adjust: Callable[[dict[str, Any]], None] | None = None
) -> tuple[Any, argparse.Namespace]:
    """(the resolved config, the parsed namespace): defaults < ``--config FILE`` < flags given. ``adjust`` may
    fill in derived defaults on the merged mapping (the run name); ``--print-config`` leaves through :class:`Exit`.
    """
    assert p.config_cls is not None, "parse_config needs a parser from config_parser"
    ns = p.parse_args(argv)
    setup(getattr(ns, "verbose", False))
    given: dict[str, Any] = {}
    chosen: dict[str, Any] = {}
    for key, value in vars(ns).items():
        if key.startswith(CONFIG_PREFIX) and not (isinstance(value, list) and not value):
            set_path(given, key[1:].split("."), tuple(value) if isinstance(value, list) else value)
        elif key.startswith(ACTION_PREFIX):
            chosen[key[1:]] = value
    if p.actions_cls is not None:  # every action on the namespace, with its default unless given
        vars(ns).update(dataclasses.asdict(p.actions_cls(**chosen)))
    merged = _deep_merge({}, p.config_defaults)
    where = "settings"
    if ns.config:
        merged = _deep_merge(merged, read_config_file(ns.config))
        where = f"--config {ns.config} with the flags given"
        # unknown keys and bad values in the file, named before any derived default is filled in; with the
        # flags given, since a file may leave to the command line what it requires (INPUT, --out)
        from_user_dict(p.config_cls, _deep_merge(merged, given), where)
    merged = _deep_merge(merged, given)
    if adjust is not None:
        adjust(merged)
    cfg = from_user_dict(p.config_cls, merged, where)
    if ns.print_config:
        print(json.dumps(as_user_dict(cfg), indent=2, default=str))
        raise Exit(0)
    return cfg, ns


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = dict(v) if isinstance(v, Mapping) else v
    return out


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """``--address`` and ``--ray-cpus`` for a parser written by hand (the benchmarks); the config-driven jobs
    get the same flags from their ``ray`` field (jobs/serve.py from ServeRun)."""
    g = p.add_argument_group("ray")
    g.add_argument("--address", default=None, help=_esc(RAY_FLAGS["address"]["help"]))
    g.add_argument("--ray-cpus", type=int, default=None, help=_esc(RAY_FLAGS["num_cpus"]["help"]))
