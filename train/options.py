"""Reading options into a Config: the dataclass defaults, then an optional YAML file
(`--config FILE`), then flags; `parse_config` validates the result (train/config.py).

Every problem is a one-line `ConfigError` naming the option and what it accepts: an unknown
key or flag (with the closest name), a duplicate key, a wrong type.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
from typing import Any

import yaml

from train.config import (
    DESCRIPTION,
    FIELDS,
    REMOVED,
    Config,
    ConfigError,
    coerce,
    expected,
    saved_missing,
    validate,
    value_type,
)

# YAML 1.2's core schema, not PyYAML's YAML 1.1: `010` is ten (not eight), `yes` is a string
# (not true), `1e-2` is a number: what the flags read (one meaning per value, YAML or flag).
INT = re.compile(r"[-+]?[0-9]+")
FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                   r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)")
BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading YAML 1.2 core scalars (above), refusing duplicate keys
    (PyYAML keeps the last one silently) and aliases (`*name`: a config needs none, and an
    alias bomb expands to gigabytes)."""

    yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag.rsplit(":", 1)[-1] not in ("bool", "int", "float")]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML's hook
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConfigError(f"a YAML alias (*name) at line {mark.line + 1}: not accepted in "
                              "a config")
        return super().compose_node(parent, index)


_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(f"^(?:{BOOL.pattern})$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(f"^(?:{INT.pattern})$"),
                              list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(f"^(?:{FLOAT.pattern})$"),
                              list("-+0123456789."))
_Loader.add_constructor("tag:yaml.org,2002:int",
                        lambda loader, node: int(loader.construct_scalar(node), 10))


def _yaml_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node)
        if key in out:
            raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _yaml_mapping)


def read_bounded(path: str, limit: int, what: str, is_what: str) -> str:
    """The UTF-8 text of a file, read no further than `limit` bytes (a file from outside may
    be of any size); one-line ConfigError for a larger, unreadable or non-UTF-8 one."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
        if len(raw) > limit:
            raise ConfigError(f"{what} {path}: larger than {limit} bytes; {is_what}")
        return raw.decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path}: not UTF-8 text (byte {e.start})") from None


def load_yaml(path: str, warn: Any = None, what: str = "--config") -> dict[str, Any]:
    """Read a YAML mapping of config keys; every problem is a one-line ConfigError.
    Keys removed in this release are dropped, with a warning through `warn`."""
    text = read_bounded(path, MAX_CONFIG_BYTES, what, "a config file is a mapping of option: "
                        "value")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{what} {path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{what} {path}: not valid YAML{where}") from None
    except RecursionError:
        raise ConfigError(f"{what} {path}: nested too deeply") from None
    except (ValueError, TypeError) as e:  # a tag's value it cannot be (!!int abc), a list key
        why = str(e).strip().splitlines()[0][:80] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{what} {path}: not a valid config ({why})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a mapping of option: value, "
                          f"got {type(data).__name__}")
    removed = [k for k in data if k in REMOVED]
    if removed and warn is not None:
        warn(f"{what} {path}: ignoring {', '.join(removed)} (removed; faults for tests are "
             "injected with the TRAIN_FAULT environment variable)")
    for key in data:
        if key not in FIELDS and key not in REMOVED:
            raise ConfigError(f"{what} {path}: unknown key {key!r}{_suggest(str(key))}")
    if "config" in data:
        raise ConfigError(f"{what} {path}: a config file cannot name another (config: ...)")
    return {k: coerce(k, v) for k, v in data.items() if k not in REMOVED}


def load_saved(path: str, warn: Any = None) -> dict[str, Any]:
    """A run folder's config.yaml, with what an older release's implied for the options it
    lacks (config.saved_missing): the base a resume, predict or export starts from."""
    return {**saved_missing(), **load_yaml(path, warn, "the run's config")}


def refuse_changes(cfg: Config, given: set[str], base: dict[str, Any]) -> None:
    """A resume's flags against the run's config.yaml, when they made it invalid: an option
    that must not change on resume (`resume: refuse`) and differs is named, rather than what
    its change implies. Files are compared by identity (the fingerprint), not by spelling."""
    changed = [f"{n} {base[n]!r} -> {getattr(cfg, n)!r}" for n in sorted(given)
               if n in FIELDS and FIELDS[n].metadata["resume"] == "refuse" and n in base
               and n not in ("data", "eval_data") and getattr(cfg, n) != base[n]]
    if changed:
        raise ConfigError(f"cannot resume: the config differs from the run's in "
                          f"{', '.join(changed)}; start a new run with another --out")


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.lstrip("-"), list(FIELDS), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{hint}; accepted: {', '.join(FIELDS)}"


def _bool(text: str) -> bool:
    value = {"true": True, "false": False, "1": True, "0": False}.get(text.lower())
    if value is None:
        raise ValueError(text)
    return value


_bool.__name__ = "bool"  # argparse names the type in "invalid bool value"


def _int(text: str) -> int:
    """A decimal integer, as YAML 1.2 reads one (`010` is 10; `1_000` is not a number)."""
    if not INT.fullmatch(text.strip()):
        raise ValueError(text)
    return int(text, 10)


def _float(text: str) -> float:
    """A number, as YAML 1.2 reads one."""
    if not (FLOAT.fullmatch(text.strip()) or INT.fullmatch(text.strip())):
        raise ValueError(text)
    return float(text.strip().lower().replace(".inf", "inf").replace(".nan", "nan"))


def _mapping(text: str) -> dict[str, Any]:
    """A YAML/JSON mapping on the command line (`{width: 16}`), read as a config file is."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ConfigError, RecursionError, ValueError, TypeError):
        raise ValueError(text) from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(text)
    return value


_int.__name__, _float.__name__, _mapping.__name__ = "int", "float", "mapping"
_FLAG_TYPES = {int: _int, float: _float, str: str, dict: _mapping}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and no usage dump (the contract is: one line, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("unrecognized arguments:"):
            bad = message.split(":", 1)[1].split()[0]
            message = f"unknown option {bad}{_suggest(bad)}"
        elif m := re.match(r"argument --(\w+): invalid \w+ value: (.*)", message):
            message = f"--{m[1]}: expected {expected(m[1])}, got {m[2]}"
        elif m := re.match(r"argument --(\w+): expected one argument", message):
            message = f"--{m[1]}: expected {expected(m[1])} after it"
        raise ConfigError(message)


def build_parser(prog: str = "msdp fit", description: str | None = None) -> _Parser:
    """The command line: one flag per Config field (--config among them), defaults unset."""
    p = _Parser(prog=prog, description=description or DESCRIPTION,
                argument_default=argparse.SUPPRESS, allow_abbrev=False)
    for name, f in FIELDS.items():
        help_ = f"{f.metadata['help']} (default: {shown_default(f)})".replace("`", "")
        help_ = help_.replace("%", "%%")  # argparse formats help strings
        if name == "config":
            p.add_argument("--config", metavar="FILE", help=help_)
        elif value_type(name) is bool:  # `--quiet` alone means true; `--standardize false` explicit
            p.add_argument(f"--{name}", nargs="?", const=True, type=_bool, help=help_,
                           metavar="true|false")
        else:
            choices = f.metadata.get("choices")  # checked by validate(), shown by --help
            shown = [*choices, "MODULE:NAME"] if f.metadata.get("imports") else choices
            p.add_argument(f"--{name}", type=_FLAG_TYPES[value_type(name)], help=help_,
                           metavar="{" + ",".join(shown) + "}" if choices else name.upper())
    return p


def parse_config(argv: list[str] | None = None, parser: _Parser | None = None,
                 base: dict[str, Any] | None = None, warn: Any = None, check: bool = True,
                 **overrides: Any) -> tuple[Config, argparse.Namespace]:
    """defaults < `base` < YAML < `overrides` < flags; returns the validated (unless not
    `check`) config and flags. `ns.given` holds the keys set by YAML, overrides or flags."""
    parser = parser or build_parser()
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = dict(base or {})
    given: dict[str, Any] = {}
    if getattr(ns, "config", None):
        given.update(load_yaml(ns.config, warn))
    given.update(overrides)
    given.update({k: v for k, v in vars(ns).items() if k in FIELDS})
    values.update(given)
    ns.given = set(given)
    try:
        cfg = Config(**values)
    except TypeError as e:  # a base (a saved config.yaml) with a key this release lacks
        raise ConfigError(f"config: {e}") from None
    return (validate(cfg, ns.given) if check else cfg), ns


def shown_default(f: dataclasses.Field) -> str:
    """A field's default as docs/options.md and --help show it."""
    if "shown" in f.metadata:
        return f.metadata["shown"]
    if isinstance(f.default, bool):
        return "true" if f.default else "off"
    return f"{f.default}"


def options_table() -> str:
    """docs/options.md's option table, from the fields (tests/test_config.py checks it)."""
    rows = ["| flag | default | on `--resume` | meaning |", "|---|---|---|---|"]
    resume = {"refuse": "refused", "allow": "may change"}
    for name, f in FIELDS.items():
        m = f.metadata
        shown = shown_default(f)
        default = shown if shown in ("none", "off") or " " in shown or "`" in shown \
            else f"`{shown}`"
        where = {"synthetic": "synthetic source only: ", "file": "`--data` only: ",
                 "both": ""}[m["source"]]
        on_resume = "-" if m["invocation"] else resume[m["resume"]]
        rows.append(f"| `--{name}` | {default} | {on_resume} | {where}{m['help']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":  # `msdp config --markdown`'s table (the rest of msdp config needs
    # train.plan, which imports this module: train/cli.py holds it)
    if sys.argv[1:] != ["--markdown"]:
        print("error: python -m train.options takes --markdown only (the options table); the "
              "resolved config of a run: msdp config [training flags]", file=sys.stderr)
        sys.exit(2)
    print(options_table(), end="")
