"""The layer rule of docs/ARCHITECTURE.md, read from the source: every import of every module (top-level and
inside functions, found with ``ast``) must point at the same layer or one below it, the import graph must have
no cycle, and the shapes world must be reached from one module of bundled defaults only."""
from __future__ import annotations

import ast
from pathlib import Path


import weightscope

PACKAGE = Path(weightscope.__file__).resolve().parent

# (prefix, layer): the longest matching prefix decides; docs/ARCHITECTURE.md states the same table
LAYERS = (
    ("weightscope.core", 0),
    ("weightscope.models", 1),
    ("weightscope.decompose", 2),
    ("weightscope.concepts", 3),
    ("weightscope.analyses", 4),
    ("weightscope.reports", 5),
    ("weightscope.shapes", 6),
    ("weightscope.bundled", 7),
    ("weightscope.commands", 8),
    ("weightscope.cli", 8),
    ("weightscope", 9),
)
SHAPES = "weightscope.shapes"
BUNDLED_DEFAULTS = "weightscope.bundled"


def layer_of(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("weightscope",) + path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _targets(module: str, path: Path) -> set[str]:
    """The weightscope modules ``module`` imports (a name that is a submodule counts as that submodule)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "weightscope"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "weightscope":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in MODULES else source)
    out.discard(module)
    return out


GRAPH = {m: _targets(m, p) for m, p in MODULES.items()}


def test_every_import_names_a_module_that_exists():
    missing = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts if t not in MODULES)
    assert missing == []


def test_no_import_runs_up_the_layer_table():
    upward = sorted(f"{m} (layer {layer_of(m)}) -> {t} (layer {layer_of(t)})"
                    for m, ts in GRAPH.items() for t in ts if layer_of(t) > layer_of(m))
    assert upward == []


def test_the_import_graph_has_no_cycle():
    import networkx as nx

    graph = nx.DiGraph([(m, t) for m, ts in GRAPH.items() for t in ts])
    # a package importing its own children is how re-exports work; a child importing its package back is a cycle
    cycles = [c for c in nx.simple_cycles(graph)]
    assert cycles == []


def test_the_shapes_world_is_reached_from_the_bundled_defaults_module_only():
    reach = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() for t in ts
                   if (t == SHAPES or t.startswith(SHAPES + ".")) and not m.startswith(SHAPES)
                   and m != BUNDLED_DEFAULTS)
    assert reach == []


def test_the_layer_test_catches_an_upward_import_and_a_cycle(tmp_path):
    # the rule above, applied to a planted case, so a broken parser cannot pass it vacuously
    assert layer_of("weightscope.core.linalg") < layer_of("weightscope.analyses.sing.analysis")
    assert layer_of("weightscope.concepts.solvers._fast") == 3
    planted = tmp_path / "m.py"
    planted.write_text("from ...analyses import inspection\nfrom ..linalg import thin_svd\n")
    MODULES.setdefault("weightscope.core.planted.m", planted)
    try:
        targets = _targets("weightscope.core.planted.m", planted)
    finally:
        MODULES.pop("weightscope.core.planted.m")
    assert "weightscope.analyses.inspection" in targets
    assert any(layer_of(t) > 0 for t in targets)
