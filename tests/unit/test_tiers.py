"""The `slow` list in tests/conftest.py names tests that exist: a renamed test must not silently
leave the slow tier (and slow down the fast loop CONTRIBUTING.md promises)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import SLOW, TIER_OF_FOLDER

ROOT = Path(__file__).resolve().parents[2]


def test_every_slow_entry_names_a_test_file_or_function() -> None:
    missing = []
    for entry in sorted(SLOW):
        path, _, name = entry.partition("::")
        file = ROOT / path
        if not file.is_file():
            missing.append(entry)
            continue
        if name:
            defined = {n.name for n in ast.walk(ast.parse(file.read_text())) if isinstance(n, ast.FunctionDef)}
            if name not in defined:
                missing.append(entry)
    assert not missing, f"tests/conftest.py SLOW names what does not exist: {missing}"


def test_every_test_folder_has_a_tier() -> None:
    folders = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders - {"unit"} == set(TIER_OF_FOLDER), folders
