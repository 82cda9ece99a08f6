"""The import graph: no cycles, and imports flow one way (serving -> ckpt -> bas; bas.sort ->
bas core; nothing imports serving), lazy imports inside functions included."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGES = ("bas", "ckpt", "serving")


def _modules() -> dict[str, str]:
    mods = {}
    for pkg in PACKAGES:
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                    mods[name.removesuffix(".__init__")] = path
    return mods


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")
                    pkg = parts if path.endswith("__init__.py") else parts[:-1]
                    base = ".".join(pkg[:len(pkg) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        targets = set()
        for t in found:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__
                targets.add(t)
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_imports_flow_one_way():
    bad = []
    for mod, targets in _graph().items():
        for t in targets:
            top, ttop = mod.split(".")[0], t.split(".")[0]
            if ttop == "serving" and top != "serving":
                bad.append((mod, t))  # nothing imports serving
            if top == "bas" and ttop == "ckpt":
                bad.append((mod, t))  # bas never imports ckpt
            if (top == "bas" and not mod.startswith("bas.sort")
                    and t.startswith("bas.sort")):
                bad.append((mod, t))  # the device layer never imports the sort
    assert bad == []


def test_layers_in_the_tree_hold():
    """ckpt's framework-neutral core and its tiers never import the torch adapters (only the
    package's lazy __getattr__, the CLI, the torch-file reader of convert and the golden-file
    test kit may); bas's contracts never import a backend, wrapper or the BRAID model (the
    registry imports backends by name, lazily, at open)."""
    torch_users = ("ckpt.torch", "ckpt.__main__", "ckpt.testing", "ckpt.convert.torchfile")
    bad = []
    for mod, targets in _graph().items():
        for t in targets:
            if (mod.startswith("ckpt.") and not mod.startswith(torch_users)
                    and t.startswith("ckpt.torch")):
                bad.append((mod, t))
            contract = mod in ("bas.device", "bas.namespace", "bas.errors", "bas.registry")
            if contract and t.startswith(("bas.backends", "bas.wrappers", "bas.braid")):
                bad.append((mod, t))
    assert bad == []
