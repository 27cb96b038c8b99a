"""Turning text (a command-line flag, a spec option) or a TOML value into a typed value.

One place for the rules, so that ``--train.progress=off`` and ``diloco:nesterov=off`` accept the
same words: booleans are 1/0, true/false, yes/no, on/off (any case); integers refuse floats with a
fraction and booleans; floats refuse booleans.
"""

from __future__ import annotations

from typing import Any

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def coerce(value: Any, typ: type) -> Any:
    """``value`` as ``typ`` (bool, int, float or str); ValueError if it is not one."""
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in TRUE:
            return True
        if isinstance(value, str) and value.lower() in FALSE:
            return False
        raise ValueError(f"not a boolean: {value!r}")
    if typ is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"not an integer: {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(f"not a number: {value!r}")
        return float(value)
    if typ is str:
        return str(value)
    raise TypeError(f"unsupported type {typ}")
