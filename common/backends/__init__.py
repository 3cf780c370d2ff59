"""Pluggable storage backends: one small interface, implementations registered by name, and a
manager that picks one per namespace by regex (first match wins), like Kraken's
lib/backend client and manager.

Every backend stores opaque objects under keys (see `keys`): blobs under
`blobs/sha256/<2 hex>/<hex>`, tags under `tags/<repo>/<tag>`. The namespace travels with
each call because some backends need it (an upstream registry addresses blobs per
repository) and because it chooses the backend."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from common.errors import ConfigError, NotFound, Unavailable

__all__ = ["Backend", "BackendError", "Manager", "NotFound", "ReadOnly", "register", "create"]


class BackendError(Unavailable):
    """The backend could not be reached or answered with an error (retry later)."""


class ReadOnly(BackendError):
    """The backend does not accept writes (e.g. an upstream registry)."""


class Backend(ABC):
    """Every method raises `NotFound` for a key the backend does not hold and
    `BackendError` when the backend cannot answer."""

    name = ""

    @abstractmethod
    def stat(self, namespace: str, key: str) -> int:
        """Size of the object in bytes."""

    @abstractmethod
    def upload(self, namespace: str, key: str, src: BinaryIO, size: int | None = None) -> None:
        """Stores the object atomically: readers see all of it or nothing."""

    @abstractmethod
    def download(self, namespace: str, key: str, dst: BinaryIO) -> int:
        """Writes the object to `dst`; returns the byte count."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys starting with `prefix`, in lexical order."""

    def get_bytes(self, namespace: str, key: str) -> bytes:
        import io

        buf = io.BytesIO()
        self.download(namespace, key, buf)
        return buf.getvalue()

    def put_bytes(self, namespace: str, key: str, data: bytes) -> None:
        import io

        self.upload(namespace, key, io.BytesIO(data), len(data))

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        pass


_REGISTRY: dict[str, Callable[..., Backend]] = {}


def register(name: str):
    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def create(kind: str, options: dict | None = None) -> Backend:
    """A backend from its registered name and its options (the config's map)."""
    _load_builtin()
    try:
        cls = _REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown storage backend {kind!r} (known: {', '.join(sorted(_REGISTRY))})") from None
    options = dict(options or {})
    bandwidth = options.pop("bandwidth", None)
    try:
        backend = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"backend {kind!r}: {exc}") from None
    if bandwidth:
        from common.backends.bandwidth import Throttled

        backend = Throttled(backend, **bandwidth)
    return backend


def _load_builtin() -> None:
    # Imported here so that a component pays for boto3 only when it uses s3.
    from common.backends import fs, http  # noqa: F401

    if "s3" not in _REGISTRY:
        from common.backends import s3  # noqa: F401
    if "registry" not in _REGISTRY:
        from common.backends import registry  # noqa: F401


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern
    backend: Backend


class Manager:
    """Chooses a backend per namespace: the first rule whose regex matches the whole
    namespace wins. No match means the namespace has no backend (None)."""

    def __init__(self, rules: list[tuple[str, Backend]] | None = None):
        self.rules = [Rule(re.compile(p), b) for p, b in rules or []]

    @classmethod
    def from_config(cls, entries) -> Manager:
        """`entries`: a list of maps {namespace: regex, backend: name, <backend>: options}
        or {namespace, backend, options}."""
        rules = []
        for entry in entries or ():
            entry = dict(entry)
            try:
                pattern, kind = entry.pop("namespace"), entry.pop("backend")
            except KeyError as exc:
                raise ConfigError(f"storage rule needs {exc.args[0]!r}: {entry}") from None
            options = entry.pop("options", None) or entry.pop(kind, None) or {}
            if "bandwidth" in entry:
                options = {**options, "bandwidth": entry.pop("bandwidth")}
            if entry:
                raise ConfigError(f"storage rule: unknown keys {sorted(entry)}")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"storage rule: bad namespace regex {pattern!r}: {exc}") from None
            rules.append((pattern, create(kind, options)))
        return cls(rules)

    def get(self, namespace: str) -> Backend | None:
        for rule in self.rules:
            if rule.pattern.fullmatch(namespace):
                return rule.backend
        return None

    def __bool__(self) -> bool:
        return bool(self.rules)

    def close(self) -> None:
        for rule in self.rules:
            rule.backend.close()
