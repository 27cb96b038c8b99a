"""The shape of the code, enforced: layers import downwards only, no import cycle, no gradsync
import hidden inside a function, nothing imports a command, and the planning commands run
without torch."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gradsync

SRC = Path(gradsync.__file__).parent

# The layers, lowest first (docs/design.md): each is a folder of src/gradsync/ (or, at the top,
# the module api.py or cli.py), and a folder may import only itself and the folders before it, so
# no two import each other.
LAYERS: list[tuple[str, ...]] = [
    ("core",),  # base: no torch (errors, config, specs and the catalog, ring and bucket arithmetic)
    ("runtime",),  # the process group, node groups, launching workers, the worker entry
    ("checkpoint",),  # checkpoints on disk: the file format, sharded (DCP) checkpoints, state slices
    ("data",),  # corpora, tokenizers, shards, batches
    ("model",),  # GPT, BERT, ConvNet, generation, activation checkpointing
    ("tasks",),  # the workload seam (model + data + loss + metrics), loading and exporting trained ones
    ("optim",),  # the optimizer factory and the learning-rate schedule
    ("parallel",),  # the strategies and what they are built from
    ("training",),  # the trainer and its parts
    ("api",),  # parallelize: your own loop
    ("planning",),  # cost model, calibration, planner, the pre-launch check
    ("commands", "cli"),  # the commands and their table
    ("testing",),  # helpers for tests and benchmarks
]
LAYER = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# torch-free: every module of the base, and what `gradsync plan` and `--help` need above it
TORCH_FREE_ABOVE_CORE = ["planning.costmodel", "planning.calibration_profile", "planning.plan", "cli"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(("gradsync", *parts))] = path
    return out


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(gradsync module imported, whether the import is inside a function) for every import."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("gradsync"):
                if child.module == "gradsync":
                    found.extend((f"gradsync.{a.name}", in_function) for a in child.names)
                else:
                    found.append((child.module, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.startswith("gradsync"))
            visit(child, inner)

    visit(tree, False)
    return found


def _unit(module: str) -> str:
    """The folder (or top-level module) of ``gradsync.X.Y...``: X."""
    return module.split(".")[1] if module.count(".") else ""


def _layer(module: str) -> int:
    assert _unit(module) in LAYER, f"{module} is in no layer: add its folder to LAYERS and to docs/design.md"
    return LAYER[_unit(module)]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imported, _ in _imports(path):
            # `from gradsync.parallel import x` may name a submodule or an attribute
            targets.add(
                imported
                if imported in mods
                else imported.rsplit(".", 1)[0]
                if imported.rsplit(".", 1)[0] in mods
                else imported
            )
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def test_every_folder_has_a_layer_and_imports_only_downwards() -> None:
    bad = []
    for name, path in _modules().items():
        if name == "gradsync":
            continue
        for imported, _ in _imports(path):
            if imported != "gradsync" and _layer(imported) > _layer(name):
                bad.append(
                    f"{name} ({_unit(name)}, layer {_layer(name)}) imports {imported} "
                    f"({_unit(imported)}, layer {_layer(imported)})"
                )
    assert not bad, "\n".join(bad)


def test_no_two_folders_import_each_other() -> None:
    edges = {
        (_unit(a), _unit(b))
        for a, targets in _graph().items()
        for b in targets
        if a != "gradsync" and b != "gradsync" and _unit(a) != _unit(b)
    }
    both = sorted(f"{a} <-> {b}" for a, b in edges if (b, a) in edges and a < b)
    assert not both, "folders that import each other: " + ", ".join(both)


def test_the_folders_are_the_layers() -> None:
    # every folder and top-level module of the package is in LAYERS, and every name there exists
    units = {
        p.name if p.is_dir() else p.stem
        for p in SRC.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")
    }
    assert units == set(LAYER), f"only in the package: {units - set(LAYER)}; only in LAYERS: {set(LAYER) - units}"


def test_no_gradsync_import_inside_a_function() -> None:
    hidden = [
        f"{name} imports {imported} inside a function"
        for name, path in _modules().items()
        for imported, inside in _imports(path)
        if inside
    ]
    assert not hidden, "\n".join(hidden)


def test_nothing_imports_a_command() -> None:
    users = [
        f"{name} imports {imported}"
        for name, path in _modules().items()
        if not name.startswith("gradsync.commands")
        for imported, _ in _imports(path)
        if imported.startswith("gradsync.commands")
    ]
    assert not users, "\n".join(users)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a path that ends where it starts), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_walker_sees_hidden_imports(tmp_path: Path) -> None:
    # the checks above can fail: the walker sees imports at module level and inside functions
    f = tmp_path / "m.py"
    f.write_text(
        "from gradsync.core.config import Config\n\ndef g():\n    from gradsync.training.trainer import Trainer\n"
    )
    assert _imports(f) == [("gradsync.core.config", False), ("gradsync.training.trainer", True)]


_BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
            return None
    sys.meta_path.insert(0, NoTorch())
    from gradsync.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _without_torch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GRADSYNC_CACHE=str(cwd / "cache"))
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_TORCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_plan_runs_without_torch(tmp_path: Path) -> None:
    helped = _without_torch("plan", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "--devices" in helped.stdout, helped.stderr
    r = _without_torch("plan", "--model", "124m", "--devices", "8", "--plot", "", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "recommendation:" in r.stdout and "| zero3 |" in r.stdout
    top = _without_torch("--help", cwd=tmp_path)
    assert top.returncode == 0 and "calibrate" in top.stdout
    # and the block works: a command that needs torch fails to import
    blocked = _without_torch("train", "--help", cwd=tmp_path)
    assert blocked.returncode != 0 and "torch is blocked" in blocked.stderr


def test_torch_free_modules_import_without_torch() -> None:
    names = [m for m in _modules() if _unit(m) == "core"] + [f"gradsync.{m}" for m in TORCH_FREE_ABOVE_CORE]
    code = _BLOCK_TORCH.split("from gradsync.cli")[0] + "".join(f"import {name}\n" for name in names)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
