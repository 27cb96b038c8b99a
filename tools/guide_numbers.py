"""The guide's measured numbers, read at build time from the results files benchmarks wrote.

A page never types a measured figure. It writes ``{{ name }}`` and ``docs/numbers.yml`` says
where ``name`` lives: a results file under ``docs/`` that a benchmark wrote, and the place in it
(a JSON path, a row of a Markdown table), or an expression over other names (a ratio). The
build replaces each placeholder with the value as the file has it, so a figure cannot drift
from its file; ``{{ command: name }}`` gives the command that wrote ``name``'s file (every
results file records it), ``{{ table: FILE }}`` inserts a results file written as Markdown
(a benchmark's table, with its command), and ``{{ run: gradsync plan ... }}`` inserts what a (fast, torch-free)
gradsync command prints now. An unknown name, a missing file or an ambiguous row fails the
build. MkDocs loads this module as a hook (``mkdocs.yml``); the tests import it too.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import statistics
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DOCS = Path(__file__).resolve().parent.parent / "docs"
PLACEHOLDER = re.compile(r"\{\{\s*(?:(command|run|table):\s*)?([^{}]+?)\s*\}\}")


def expr_names(expr: str) -> list[str]:
    """The names an ``expr`` reads (not the exponent of a literal such as ``1e6``)."""
    return re.findall(r"(?<![\w.])[A-Za-z_]\w*", expr)


class NumberError(ValueError):
    """A placeholder that cannot be filled from its results file."""


@cache
def registry(docs: Path = DOCS) -> dict[str, dict[str, Any]]:
    return yaml.safe_load((docs / "numbers.yml").read_text(encoding="utf-8"))


@cache
def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@cache
def _tables(path: Path) -> list[list[dict[str, str]]]:
    """Every Markdown table of ``path``, as rows of {header: cell}."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            tables.append([])
        elif not all(set(c) <= set("-: ") for c in cells):
            tables[-1].append(dict(zip(header, cells)))
    return tables


def _matching(rows: list[dict[str, Any]], match: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows whose every ``match`` column holds that value (compared as text)."""
    return [r for r in rows if all(str(r.get(k)) == str(v) for k, v in match.items())]


def _pick(rows: list[dict[str, Any]], match: dict[str, Any], where: str) -> dict[str, Any]:
    found = _matching(rows, match)
    if len(found) != 1:
        raise NumberError(f"{where}: {len(found)} rows match {match}, need exactly 1")
    return found[0]


def _raw(name: str, docs: Path) -> tuple[Any, Path | None]:
    """The value of ``name`` as its source has it, and the source file."""
    spec = registry(docs).get(name)
    if spec is None:
        raise NumberError(f"{{{{ {name} }}}}: no such number in docs/numbers.yml")
    if "expr" in spec:
        names = set(expr_names(spec["expr"])) - {"abs", "min", "max", "round"}
        env = {n: _scaled(n, docs) for n in names}
        first = _raw(sorted(names)[0], docs)[1] if names else None
        return eval(spec["expr"], {"__builtins__": {}, "abs": abs, "min": min, "max": max, "round": round}, env), first
    if "reduce" in spec:
        return _reduced(name, spec, docs)
    path = _file(name, spec["file"], docs)
    if path.suffix == ".json":
        node: Any = _json(path)
        for key in str(spec.get("path", "")).split(".") if spec.get("path") else []:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if "match" in spec:
            node = _pick(node, spec["match"], name)
        if "field" in spec:
            node = node[spec["field"]]
        return node, path
    row = _pick([r for t in _tables(path) for r in t], spec["match"], name)
    if spec["col"] not in row:
        raise NumberError(f"{name}: docs/{spec['file']} has no column {spec['col']!r}")
    return row[spec["col"]], path


def _file(name: str, file: str, docs: Path) -> Path:
    path = docs / file
    if not path.is_file():
        raise NumberError(f"{name}: results file docs/{file} is missing")
    return path


REDUCTIONS = {
    "median_abs": lambda xs: statistics.median(abs(x) for x in xs),
    "max_abs": lambda xs: max(abs(x) for x in xs),
    "count": len,
}


def _reduced(name: str, spec: dict[str, Any], docs: Path) -> tuple[float, Path]:
    """A statistic over the rows of one or more JSON results files (``file`` may be a list):
    ``reduce`` is one of :data:`REDUCTIONS`."""
    files = spec["file"] if isinstance(spec["file"], list) else [spec["file"]]
    xs: list[float] = []
    for file in files:
        rows = _json(_file(name, file, docs))[spec.get("path", "rows")]
        xs += [float(r[spec["field"]]) for r in _matching(rows, spec.get("match", {}))]
    if not xs:
        raise NumberError(f"{name}: no rows to reduce")
    if spec["reduce"] not in REDUCTIONS:
        raise NumberError(f"{name}: unknown reduce {spec['reduce']!r}; known: {', '.join(REDUCTIONS)}")
    return float(REDUCTIONS[spec["reduce"]](xs)), _file(name, files[0], docs)


def _number(value: Any, name: str) -> float:
    """The number ``value`` holds, or a table cell starts with ("1,234.5", "0.98 (torch-ddp)")."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.match(r"\s*([-+]?[\d,]*\.?\d+(?:[eE][-+]?\d+)?)", str(value))
    if m is None:
        raise NumberError(f"{name}: {value!r} is not a number")
    return float(m.group(1).replace(",", ""))


def _scaled(name: str, docs: Path) -> float:
    number = _number(_raw(name, docs)[0], name) * float(registry(docs)[name].get("scale", 1))
    if math.isnan(number):
        raise NumberError(f"{name}: the results file holds NaN")
    return number


def value(name: str, docs: Path = DOCS) -> str:
    """``name`` as the page shows it: the file's text, or formatted by its ``format``."""
    spec = registry(docs).get(name, {})
    if "format" not in spec:
        return str(_raw(name, docs)[0])
    return spec["format"].format(_scaled(name, docs))


def command(name: str, docs: Path = DOCS) -> str:
    """The command that wrote ``name``'s results file (recorded in the file itself)."""
    spec = registry(docs).get(name, {})
    if isinstance(spec.get("file"), list):
        return " ; ".join(command_of_file(_file(name, f, docs), docs) for f in spec["file"])
    _, path = _raw(name, docs)
    if path is None:
        raise NumberError(f"{name}: an expression over no results file has no command")
    return command_of_file(path, docs)


def command_of_file(path: Path, docs: Path = DOCS) -> str:
    """The command a results file records: JSON's ``command``, Markdown's ``command:`` line."""
    if path.suffix == ".json":
        return str(_json(path)["command"])
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("command:"):
            return _recorded_command(line)
    raise NumberError(f"docs/{path.relative_to(docs)} records no 'command:' line")


def _recorded_command(line: str) -> str:
    """The command of a Markdown results file's ``command: ...`` line (with or without backticks)."""
    return line.split(":", 1)[1].strip().strip("`")


def run(cmd: str) -> str:
    """What ``gradsync ...`` prints now (only torch-free commands such as ``plan`` are meant)."""
    argv = shlex.split(cmd)
    if argv[:1] != ["gradsync"]:
        raise NumberError(f"{{{{ run: {cmd} }}}}: only gradsync commands run at build time")
    out = subprocess.run([sys.executable, "-m", "gradsync.cli", *argv[1:]], capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise NumberError(f"{{{{ run: {cmd} }}}} failed: {out.stderr.strip()[-300:]}")
    return out.stdout.strip()


def table(file: str, docs: Path = DOCS) -> str:
    """A Markdown results file as it is, its ``command:`` line shown as code."""
    path = _file(f"{{{{ table: {file} }}}}", file, docs)
    if path.suffix != ".md":
        raise NumberError(f"{{{{ table: {file} }}}}: not a Markdown results file")
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    return "\n".join(f"Command: `{_recorded_command(ln)}`" if ln.startswith("command:") else ln for ln in lines)


def render(markdown: str, docs: Path = DOCS) -> str:
    """``markdown`` with every placeholder filled."""

    def fill(m: re.Match[str]) -> str:
        kind, body = m.group(1), m.group(2)
        if kind == "command":
            return "`" + command(body, docs) + "`"
        if kind == "run":
            return run(body)
        if kind == "table":
            return table(body, docs)
        return value(body, docs)

    return PLACEHOLDER.sub(fill, markdown)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: fill the page's placeholders; a failure stops the build."""
    return render(markdown)
