"""YAML configuration with defaults held in frozen dataclasses.

A file may say `extends: base.yaml` (relative to itself): maps are merged key by key, lists
and scalars replaced, like Kraken's configutil. Environment overrides are ONE explicit list
(ENV_OVERRIDES) so that nobody has to guess which variables matter.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import ConfigError

T = TypeVar("T")

# Environment variable -> dotted config key. Applied after the files, before validation.
ENV_OVERRIDES = {
    "KRAKEN_REDIS_ADDR": "redis.addr",
    "KRAKEN_LOG_LEVEL": "log.level",
    "KRAKEN_STORE_ROOT": "store.root",
}


def load_yaml(path: str | os.PathLike, _seen: tuple = ()) -> dict:
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"extends cycle: {' -> '.join(map(str, _seen + (path,)))}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a map")
    parents = data.pop("extends", None)
    if parents is None:
        return data
    base: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        base = merge(base, load_yaml(path.parent / parent, _seen + (path,)))
    return merge(base, data)


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_env(data: dict, environ=os.environ) -> dict:
    for var, dotted in ENV_OVERRIDES.items():
        if var not in environ:
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = environ[var]
    return data


def build(cls: type[T], data: dict | None, where: str = "") -> T:
    """Builds dataclass `cls` from a plain dict, converting nested dataclasses and refusing
    unknown keys (a typo in a config file should fail loudly, not be ignored)."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a map, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown keys {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _convert(hint, value, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list")
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return tuple(_convert(item, v, where) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a map")
        return dict(value)
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number")
        try:
            return hint(value)
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not a number") from None
    if hint is bool:
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)
    if hint is str:
        return str(value)
    return value


def load(cls: type[T], path: str | os.PathLike | None, environ=os.environ) -> T:
    data = load_yaml(path) if path else {}
    return build(cls, apply_env(data, environ))


def to_dict(obj) -> dict:
    """The inverse of build, for writing generated configs."""
    return _plain(dataclasses.asdict(obj))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
