"""Strategy and compression specs: ``name``, ``name:value`` or ``name:key=value,key=value``.

``--strategy localsgd:8`` is local SGD averaging every 8 steps, ``--strategy diloco:8,outer_lr=0.5``
DiLoCo with a custom outer learning rate, ``--compress powersgd:rank=4`` PowerSGD of rank 4. A bare
value sets the spec's first parameter. Every spec is checked against a schema when the config is
built, so a typo fails with one line before any worker starts. The schemas are the options of the
entries of :mod:`gradsync.core.catalog`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gradsync.core.errors import ConfigError
from gradsync.core.values import coerce


@dataclass(frozen=True)
class Param:
    """One option of a spec: its type, default and the condition a value must meet."""

    type: type
    default: Any
    check: Callable[[Any], bool] = lambda v: True
    must: str = ""  # what ``check`` requires, for the error message


@dataclass(frozen=True)
class Spec:
    name: str
    options: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.options[key]

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.options.items())


Schema = Mapping[str, Mapping[str, Param]]


def _convert(what: str, key: str, raw: str, p: Param) -> Any:
    try:
        value = coerce(raw, p.type)
    except ValueError:
        raise ConfigError(f"{what}: {key} must be of type {p.type.__name__}, got {raw!r}") from None
    if not p.check(value):
        raise ConfigError(f"{what}: {key} must be {p.must}, got {raw}")
    return value


def parse_spec(text: str, schema: Schema, what: str) -> Spec:
    """Parse ``text`` against ``schema`` ({name: {option: Param}}); ``what`` names the setting in
    errors (e.g. ``parallel.strategy``)."""
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    if name not in schema:
        raise ConfigError(f"{what} '{name}' is unknown; choose one of {', '.join(schema)}")
    params = schema[name]
    values = {k: p.default for k, p in params.items()}
    items = [s.strip() for s in rest.split(",")] if rest.strip() else []
    for i, item in enumerate(items):
        key, eq, raw = item.partition("=")
        if not eq:
            if i > 0 or not params:
                raise ConfigError(
                    f"{what} '{text}': write options as key=value (options of {name}: {', '.join(params) or 'none'})"
                )
            key, raw = next(iter(params)), item
        key = key.strip()
        if key not in params:
            raise ConfigError(
                f"{what} '{text}': unknown option '{key}' for {name} (options: {', '.join(params) or 'none'})"
            )
        values[key] = _convert(f"{what} '{text}'", key, raw.strip(), params[key])
    return Spec(name, values)


def positive(v: Any) -> bool:
    return v > 0
