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

import pytest

import gradsync

SRC = Path(gradsync.__file__).parent

# Every module's layer (docs/design.md): a module may import its own layer and those below it.
LAYERS: dict[str, int] = {}
for layer, names in enumerate([
    # 0 base: no torch, nothing above
    ["errors", "console", "values", "files", "ring", "buckets", "shapes", "spec", "catalog", "config", "slurm", "args", "runlock", "devices"],
    # 1 runtime: the process group and its launch
    ["dist", "watchdog", "worker", "launch", "script"],
    # 2 engine: models, data, strategies, the trainer and its parts
    ["model", "data", "tasks", "parallel", "optim", "precision", "metrics", "checkpoint", "peak", "sample", "api", "export", "stopping", "trackers", "sharded_checkpoint",
     "evaluation", "checkpointer", "runlog", "train"],
    # 3 planning: the cost model and what feeds it
    ["costmodel", "profile", "plan", "calibrate", "prepare"],
    # 4 commands and the command table
    ["commands", "cli"],
    # 5 helpers for tests and benchmarks
    ["testing"],
]):
    LAYERS.update({n: layer for n in names})
TORCH_FREE = {"errors", "console", "devices", "values", "files", "ring", "buckets", "shapes", "spec", "catalog", "config", "slurm", "args",
              "costmodel", "profile", "plan", "cli"}


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


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else ""
    assert top in LAYERS, f"{module} has no layer: add it to LAYERS and to docs/design.md"
    return LAYERS[top]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        targets = set()
        for imported, _ in _imports(path):
            # `from gradsync.parallel import x` may name a submodule or an attribute
            targets.add(imported if imported in mods else imported.rsplit(".", 1)[0] if
                        imported.rsplit(".", 1)[0] in mods else imported)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def test_every_module_has_a_layer_and_imports_only_downwards() -> None:
    bad = []
    for name, path in _modules().items():
        if name == "gradsync":
            continue
        for imported, _ in _imports(path):
            if imported != "gradsync" and _layer(imported) > _layer(name):
                bad.append(f"{name} (layer {_layer(name)}) imports {imported} (layer {_layer(imported)})")
    assert not bad, "\n".join(bad)


def test_no_gradsync_import_inside_a_function() -> None:
    hidden = [f"{name} imports {imported} inside a function" for name, path in _modules().items()
              for imported, inside in _imports(path) if inside]
    assert not hidden, "\n".join(hidden)


def test_nothing_imports_a_command() -> None:
    users = [f"{name} imports {imported}" for name, path in _modules().items() if not name.startswith(
        "gradsync.commands") for imported, _ in _imports(path) if imported.startswith("gradsync.commands")]
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
                return stack[stack.index(nxt):] + [nxt]
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
    f.write_text("from gradsync.config import Config\n\ndef g():\n    from gradsync.train import Trainer\n")
    assert _imports(f) == [("gradsync.config", False), ("gradsync.train", True)]


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
    return subprocess.run([sys.executable, "-c", _BLOCK_TORCH, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


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


@pytest.mark.parametrize("name", sorted(n for n in LAYERS if n in TORCH_FREE))
def test_torch_free_modules_import_without_torch(name: str) -> None:
    code = _BLOCK_TORCH.split("from gradsync.cli")[0] + f"import gradsync.{name}\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
