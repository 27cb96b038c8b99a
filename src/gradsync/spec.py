"""Strategy and compression specs: ``name``, ``name:value`` or ``name:key=value,key=value``.

``--strategy localsgd:8`` is local SGD averaging every 8 steps, ``--strategy diloco:8,outer_lr=0.5``
DiLoCo with a custom outer learning rate, ``--compress powersgd:rank=4`` PowerSGD of rank 4. A bare
value sets the spec's first parameter. Every spec is checked against a schema when the config is
built, so a typo fails with one line before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from gradsync.errors import ConfigError


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
        if p.type is bool:
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError
            value: Any = raw.lower() in ("1", "true", "yes", "on")
        elif p.type is int:
            value = int(raw)
        else:
            value = p.type(raw)
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
                raise ConfigError(f"{what} '{text}': write options as key=value "
                                  f"(options of {name}: {', '.join(params) or 'none'})")
            key, raw = next(iter(params)), item
        key = key.strip()
        if key not in params:
            raise ConfigError(f"{what} '{text}': unknown option '{key}' for {name} "
                              f"(options: {', '.join(params) or 'none'})")
        values[key] = _convert(f"{what} '{text}'", key, raw.strip(), params[key])
    return Spec(name, values)


def _positive(v: Any) -> bool:
    return v > 0


STRATEGIES: Schema = {
    "auto": {},  # chosen by the cost model at launch (gradsync train), never run as such
    "allreduce": {},
    "bucketed": {},
    "torch-ddp": {},
    "zero1": {},
    "zero2": {},
    "zero3": {},
    "localsgd": {"H": Param(int, 8, _positive, "a positive number of steps")},
    "diloco": {
        "H": Param(int, 8, _positive, "a positive number of steps"),
        "outer_lr": Param(float, 0.7, _positive, "> 0"),
        "momentum": Param(float, 0.9, lambda v: 0 <= v < 1, "in [0, 1)"),
        "nesterov": Param(bool, True),
    },
    "torch-zero1": {},
    "torch-fsdp": {},
}

COMPRESSORS: Schema = {
    "none": {},
    "fp16": {},
    "bf16": {},
    "powersgd": {
        "rank": Param(int, 4, _positive, "a positive integer"),
        "min_numel": Param(int, 1024, lambda v: v >= 0, ">= 0"),
        "warm_start": Param(bool, True),
    },
    "topk": {"ratio": Param(float, 0.01, lambda v: 0 < v <= 1, "in (0, 1]"),
             "warmup": Param(int, 0, lambda v: v >= 0, ">= 0")},
}

# Strategies that a --compress other than 'none' composes with, and the compressors each takes.
COMPOSES = {
    "bucketed": ("fp16", "bf16", "powersgd", "topk"),
    "torch-ddp": ("fp16", "bf16", "powersgd"),  # torch's own communication hooks: the references
}


def check_composition(strategy: Spec, compress: Spec) -> None:
    """Raise unless ``compress`` can run under ``strategy``."""
    if compress.name == "none":
        return
    allowed = COMPOSES.get(strategy.name, ())
    if compress.name not in allowed:
        where = ", ".join(f"{s} ({'/'.join(c)})" for s, c in COMPOSES.items())
        raise ConfigError(f"parallel.compress {compress.name} is not implemented for strategy "
                          f"{strategy.name}; compression composes with {where}")
