"""The import graph of tftrain/, read from the source with `ast`: no import cycle among tftrain's
modules, and the lower layers (schedules, layers, initializers, models, problems, data, the loop and
the loggers it calls) reach nothing of the config layer (tftrain.schema, tftrain.config, Hydra,
OmegaConf), neither directly nor through other tftrain modules: they raise their own errors, and
the config layer maps them to keys.

Every `import` counts, function-local and `if TYPE_CHECKING:` ones included: a lazy import is still
a dependency. `from pkg import name` is an edge to `pkg.name` when that is a module of the tree,
else to `pkg` (the package's __init__). Importing a submodule runs its parents' __init__ too, but
that is not counted as an edge (it would make every package __init__ that imports its own
submodules a cycle). Dynamic imports (`importlib.import_module`) are not seen.

The checker's functions take the package directory, so the planted-tree tests below run the very
same code on a tiny fake package."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "tftrain"

# Prefixes of dotted module names; "a.b" matches "a.b" and "a.b.c", not "a.bc".
LOWER = ("tftrain.schedules", "tftrain.layers", "tftrain.initializers", "tftrain.models", "tftrain.problems",
         "tftrain.data", "tftrain.loop", "tftrain.loggers", "tftrain.optim", "tftrain.diagnose")
CONFIG_LAYER = ("tftrain.schema", "tftrain.config", "omegaconf", "hydra")


@dataclass(frozen=True)
class Edge:
    target: str  # dotted module name: a module of the tree, or an outside module as written
    line: int
    text: str  # the import statement, as in the source


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_files(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `package_dir` (a package is its __init__)."""
    package_dir = Path(package_dir)
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _base_of(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names (relative ones resolved against `module`)."""
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]  # the importing module's package
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph(package_dir: Path) -> dict[str, list[Edge]]:
    """Module -> its direct imports, for every module of the package at `package_dir`."""
    files = module_files(package_dir)
    root = Path(package_dir).name
    graph: dict[str, list[Edge]] = {}
    for module, path in files.items():
        source = path.read_text()
        lines = source.splitlines()
        is_package = path.name == "__init__.py"
        edges = []
        for node in ast.walk(ast.parse(source, str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            text = " ".join(" ".join(lines[node.lineno - 1: node.end_lineno]).split())  # the statement, one line
            if isinstance(node, ast.Import):
                for alias in node.names:
                    # `import a.b.c` binds a.b.c: the deepest of its prefixes that is a module of the tree.
                    name = alias.name
                    while name not in files and "." in name and _within(name, (root,)):
                        name = name.rsplit(".", 1)[0]
                    edges.append(Edge(name, node.lineno, text))
            elif isinstance(node, ast.ImportFrom):
                base = _base_of(node, module, is_package)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    edges.append(Edge(sub if sub in files else base, node.lineno, text))
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """One cycle (its modules in import order, the first repeated at the end) per strongly connected
    component of the tree's modules that has one; [] for an acyclic graph."""
    inner = {m: sorted({e.target for e in edges if e.target in graph}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan; the trees are small, recursion depth is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in inner[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in inner[v]:
                components.append(sorted(component))

    for v in sorted(inner):
        if v not in index:
            connect(v)

    cycles = []
    for component in sorted(components):
        members, start = set(component), component[0]
        # Shortest path start -> ... -> start inside the component.
        previous: dict[str, str] = {}
        frontier, end = [start], None
        while frontier and end is None:
            following = []
            for v in frontier:
                for w in inner[v]:
                    if w == start:
                        end = v
                        break
                    if w in members and w not in previous:
                        previous[w] = v
                        following.append(w)
                if end is not None:
                    break
            frontier = following
        path = [end]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append(path[::-1] + [start])
    return cycles


def layer_violations(graph: dict[str, list[Edge]], lower: tuple[str, ...],
                     forbidden: tuple[str, ...]) -> dict[str, list[tuple[str, Edge]]]:
    """Lower module -> the shortest import chain by which it reaches a forbidden module (a list of
    (importing module, import) pairs, the last one's target forbidden); only lower modules that do."""
    out = {}
    for source in sorted(m for m in graph if _within(m, lower)):
        previous: dict[str, tuple[str, Edge]] = {}
        frontier, seen, hit = [source], {source}, None
        while frontier and hit is None:
            following = []
            for v in frontier:
                for edge in graph.get(v, []):
                    if _within(edge.target, forbidden):
                        hit = (v, edge)
                        break
                    if edge.target in graph and edge.target not in seen:
                        seen.add(edge.target)
                        previous[edge.target] = (v, edge)
                        following.append(edge.target)
                if hit is not None:
                    break
            frontier = following
        if hit is not None:
            chain = [hit]
            while chain[-1][0] != source:
                chain.append(previous[chain[-1][0]])
            out[source] = chain[::-1]
    return out


def _describe_chain(chain: list[tuple[str, Edge]]) -> str:
    return " -> ".join(f"{module} (line {edge.line}: {edge.text})" for module, edge in chain) + \
        f" -> {chain[-1][1].target}"


# --- the real tree ---------------------------------------------------------------------------------


def test_the_real_tree_is_read():
    """The graph has the modules and edges the checks rely on (an empty graph would pass them)."""
    graph = import_graph(PACKAGE)
    assert {"tftrain", "tftrain.loop.trainer", "tftrain.schema.trainer", "tftrain.config.factory"} <= set(graph)
    factory = {e.target for e in graph["tftrain.config.factory"]}
    # Module-level and function-local imports both count.
    assert {"omegaconf", "tftrain.schema.data", "tftrain.loop.controller", "tftrain.loop.trainer"} <= factory
    # `from tftrain.sweep import aggregate, summary as sweep` is two module edges.
    assert {"tftrain.sweep.aggregate", "tftrain.sweep.summary"} <= {e.target for e in graph["tftrain.report.render"]}


def test_tftrain_has_no_import_cycle():
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles among tftrain modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_lower_layers_reach_nothing_of_the_config_layer():
    graph = import_graph(PACKAGE)
    assert [m for m in graph if _within(m, LOWER)], "no lower-layer module found: LOWER is stale"
    bad = layer_violations(graph, LOWER, CONFIG_LAYER)
    assert not bad, "lower-layer modules that reach the config layer:\n" + "\n".join(
        f"{m}: {_describe_chain(chain)}" for m, chain in bad.items())


# --- a planted tree: the same functions catch what they must -----------------------------------------


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "pkg"
    for rel, text in files.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


PLANTED = {
    "__init__.py": "from pkg.api import run\n",  # a package __init__ importing its submodule: no cycle
    "api.py": "from pkg import low\nfrom pkg.conf import build\n\ndef run():\n    return build()\n",
    # a cycle through a relative import and a function-local one
    "ping.py": "from . import pong\n",
    "pong.py": "def f():\n    from pkg.ping import g\n",
    "conf/__init__.py": "",
    "conf/build.py": "import omegaconf\n\ndef build():\n    pass\n",
    # the planted violation: a lower module importing a config module inside a function
    "low/__init__.py": "",
    "low/sneaky.py": "import os\n\ndef load():\n    from ..conf import build\n    return build\n",
    # transitively: through a neutral module that imports hydra
    "low/indirect.py": "from pkg.util import helper\n",
    "util.py": "import json\n\ndef helper():\n    import hydra.utils\n",
    # clean lower modules: an outside import, a sibling, a name (not a module) from a package
    "low/clean.py": "import math\nfrom .pure import VALUE\n",
    "low/pure.py": "VALUE = 1\nfrom pkg import errors\n",
    "errors.py": "class Error(Exception):\n    pass\n",
}


def test_the_graph_resolves_relative_local_and_from_imports(tmp_path):
    graph = import_graph(_plant(tmp_path, PLANTED))
    targets = {m: {e.target for e in edges} for m, edges in graph.items()}
    assert targets["pkg"] == {"pkg.api"}
    assert targets["pkg.api"] == {"pkg.low", "pkg.conf.build"}  # `from pkg import low`: the package
    assert targets["pkg.ping"] == {"pkg.pong"}
    assert targets["pkg.pong"] == {"pkg.ping"}  # `from pkg.ping import g`: g is no module
    assert targets["pkg.low.sneaky"] == {"os", "pkg.conf.build"}
    assert targets["pkg.low.pure"] == {"pkg.errors"}
    assert targets["pkg.util"] == {"json", "hydra.utils"}
    assert targets["pkg.conf"] == set() and targets["pkg.low"] == set()  # no implicit parent edges


def test_the_check_catches_a_planted_cycle(tmp_path):
    assert find_cycles(import_graph(_plant(tmp_path, PLANTED))) == [["pkg.ping", "pkg.pong", "pkg.ping"]]


def test_the_check_catches_a_longer_cycle_and_a_self_import(tmp_path):
    package = _plant(tmp_path, {"__init__.py": "", "a.py": "import pkg.b\n", "b.py": "from pkg import c\n",
                                "c.py": "def f():\n    from .a import x\n", "d.py": "import pkg.d\n",
                                "e.py": "import pkg.a\n"})
    assert find_cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"], ["pkg.d", "pkg.d"]]


def test_the_check_catches_a_planted_violation(tmp_path):
    graph = import_graph(_plant(tmp_path, PLANTED))
    bad = layer_violations(graph, ("pkg.low",), ("pkg.conf", "omegaconf", "hydra"))
    assert {m: [(module, e.line, e.text, e.target) for module, e in chain] for m, chain in bad.items()} == {
        "pkg.low.sneaky": [("pkg.low.sneaky", 4, "from ..conf import build", "pkg.conf.build")],
        "pkg.low.indirect": [("pkg.low.indirect", 1, "from pkg.util import helper", "pkg.util"),
                             ("pkg.util", 4, "import hydra.utils", "hydra.utils")],
    }
    assert "pkg.low.sneaky" in _describe_chain(bad["pkg.low.sneaky"])
    # Without the lazy import the lower layer is clean.
    (tmp_path / "pkg" / "low" / "sneaky.py").write_text("import os\n")
    (tmp_path / "pkg" / "util.py").write_text("import json\n")
    assert layer_violations(import_graph(tmp_path / "pkg"), ("pkg.low",), ("pkg.conf", "omegaconf", "hydra")) == {}


def test_the_real_lists_catch_a_violation_and_a_cycle_planted_in_a_copy_of_tftrain(tmp_path):
    """LOWER and CONFIG_LAYER as the real-tree tests use them, on a copy of tftrain/ with one lazy
    config import added to the loop and one import added to tftrain.errors."""
    import shutil

    copy = tmp_path / "tftrain"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "loop" / "pacing.py", "a") as f:
        f.write("\n\ndef _planted():\n    from tftrain.config.files import config_dir\n")
    with open(copy / "errors.py", "a") as f:
        f.write("\n\ndef _planted():\n    from tftrain.loop import checkpoints\n")
    graph = import_graph(copy)
    bad = layer_violations(graph, LOWER, CONFIG_LAYER)
    # pacing itself, and what imports it (the controller, and the loop package through it).
    assert {"tftrain.loop.pacing", "tftrain.loop.controller", "tftrain.loop"} <= set(bad)
    assert [(m, e.text) for m, e in bad["tftrain.loop.pacing"]] == [
        ("tftrain.loop.pacing", "from tftrain.config.files import config_dir")]
    assert bad["tftrain.loop.controller"][-1][0] == "tftrain.loop.pacing"
    assert ["tftrain.errors", "tftrain.loop.checkpoints", "tftrain.errors"] in find_cycles(graph)
