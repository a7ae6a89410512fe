"""The code map's contract (src/peftbench/__init__.py, README "Code map"), checked on the source.

Every module under src/peftbench is parsed with `ast`, and every import of a peftbench module,
at module top or inside a function, is an edge of the import graph:
- each edge goes from a layer to one the layer may import (ORDER and SKIPPED below);
- peftbench modules import each other at module top, never inside a function, so that the graph
  read here is the whole graph;
- the module-top graph has no cycle;
- heavy libraries (torch, transformers, peft, pandas, ...) are imported inside the functions that
  need them, never at module top: `--help`, `compare`, `report` and `status` leave torch
  unimported (checked in fresh interpreters: this test process has imported torch long ago).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import peftbench

PACKAGE_DIR = Path(peftbench.__file__).parent

# The code map's layers in its order. A layer imports itself and the layers above it, less those
# SKIPPED; so nothing imports `commands` (`cli.py` included). A layer's modules are those of the
# package of its name, but for base and commands.
ORDER = ("base", "scoring", "demo", "tasks", "record", "experiment", "training", "analysis", "capabilities",
         "commands")
MEMBERS = {"base": ("peftbench", "peftbench.errors", "peftbench.fs", "peftbench.identity", "peftbench.signals",
                    "peftbench.terminal"),
           "commands": ("peftbench.commands", "peftbench.cli")}
SKIPPED = {
    "demo": {"scoring"},  # the demo's data and model; the tasks that use them grade them
    "analysis": {"training"},  # reading results needs none of the code that makes them (nor torch)
}


def may_import(layer: str) -> set[str]:
    return set(ORDER[:ORDER.index(layer) + 1]) - SKIPPED.get(layer, set())


# Never imported at module top by any peftbench module (imported where used): each takes from a
# tenth of a second (numpy) to seconds (torch), and every command imports every layer it uses.
HEAVY = ("torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes", "safetensors", "vllm", "ray",
         "optuna", "numpy", "pandas", "sympy", "math_verify", "tensorboard", "mlflow", "wandb", "trackio",
         "selenium")
# Packages whose modules must leave torch unimported when they are imported.
LIGHT_PACKAGES = ("peftbench.analysis", "peftbench.scoring", "peftbench.experiment", "peftbench.tasks")


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the module imported: peftbench's or another library's
    line: int
    where: str  # "top" (runs on import), "function" (inside a def), "type-checking" (never runs)

    @property
    def location(self) -> str:
        return f"{module_path(self.module)}:{self.line}"


def all_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = all_modules()


def module_path(module: str) -> str:
    return MODULES[module].relative_to(PACKAGE_DIR.parent.parent).as_posix()


def _targets(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """The modules an import statement loads: `from peftbench.x import y` loads peftbench.x.y when
    that is a module, else peftbench.x (y is a name defined there)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importing module's package
        package = module.split(".") if MODULES[module].name == "__init__.py" else module.split(".")[:-1]
        base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str) -> list[Import]:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    found: list[Import] = []

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.extend(Import(module, t, node.lineno, where) for t in _targets(node, module))
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            where = "function"
        elif isinstance(node, ast.If) and where == "top" and _is_type_checking(node.test):
            for child in node.body:
                visit(child, "type-checking")
            for child in node.orelse:
                visit(child, where)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(tree, "top")
    return found


IMPORTS = [imp for module in MODULES for imp in imports_of(module)]
OURS = [imp for imp in IMPORTS if imp.target == "peftbench" or imp.target.startswith("peftbench.")]


def layer_of(module: str) -> str | None:
    """The layer a module belongs to; None when the code map has no place for it."""
    for layer in ORDER:
        members = MEMBERS.get(layer, (f"peftbench.{layer}",))
        if module in members or any(module.startswith(m + ".") for m in members if m != "peftbench"):
            return layer
    return None


def test_every_module_has_a_layer_of_the_code_map():
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, (f"these modules belong to no layer of the code map: {unplaced}; place the new package or "
                          "module in ORDER/MEMBERS here, in the code map of src/peftbench/__init__.py and in README.md")


def test_each_layer_imports_only_the_layers_the_code_map_allows():
    forbidden = []
    for imp in OURS:
        source, target = layer_of(imp.module), layer_of(imp.target)
        if source is None or target is None:
            continue  # a module of no layer: the test above names it
        if imp.target == "peftbench.cli":
            forbidden.append(f"{imp.module} imports peftbench.cli (nothing imports the command line) at {imp.location}")
        if target not in may_import(source):
            forbidden.append(f"{imp.module} imports {imp.target} (layer {source} may not import layer {target}) "
                             f"at {imp.location}")
    assert not forbidden, "imports against the code map's layers:\n" + "\n".join(sorted(set(forbidden)))


def test_peftbench_modules_are_imported_at_module_top_never_inside_a_function():
    inside = sorted({f"{imp.location}: {imp.module} imports {imp.target}" for imp in OURS if imp.where == "function"})
    assert not inside, ("peftbench modules imported inside a function (import them at module top; only heavy "
                        "libraries are imported where they are used):\n" + "\n".join(inside))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules that import each other in a circle, one sorted list per circle: the strongly
    connected components of more than one module, or a module that imports itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def test_the_module_top_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for imp in OURS:
        if imp.where == "top":
            graph.setdefault(imp.module, set()).add(imp.target)
    cycles = _cycles(graph)
    assert not cycles, ("import cycles at module top (move the shared part into a module both can import):\n"
                        + "\n".join(" <-> ".join(c) for c in cycles))


def test_the_cycle_finder_finds_a_cycle_and_the_layer_check_names_the_edge():
    # the checks above must be able to fail
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"a"}}) == [["a"]] and _cycles({"a": {"b"}, "b": set()}) == []
    assert layer_of("peftbench.record.runkey") == "record" and layer_of("peftbench.cli") == "commands"
    assert layer_of("peftbench") == "base" and layer_of("peftbench.scoring") == "scoring"
    assert may_import("record") == {"base", "scoring", "demo", "tasks", "record"}
    assert "training" not in may_import("analysis") and may_import("demo") == {"base", "demo"}
    assert all("commands" not in may_import(layer) for layer in ORDER if layer != "commands")


def test_heavy_libraries_are_imported_inside_the_functions_that_use_them():
    at_top = sorted({f"{imp.location}: {imp.module} imports {imp.target}" for imp in IMPORTS
                     if imp.where == "top" and imp.target.split(".")[0] in HEAVY})
    assert not at_top, ("heavy libraries imported at module top (every command imports its layers: import them "
                        "inside the function that needs them):\n" + "\n".join(at_top))


_IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
heavy, light, found = {heavy!r}, {light!r}, {{}}
for name in light:
    package = importlib.import_module(name)
    for info in [package, *pkgutil.walk_packages(package.__path__, prefix=name + ".")]:
        module = getattr(info, "name", None) or info.__name__
        before = set(sys.modules)
        importlib.import_module(module)
        for h in heavy:
            if h in sys.modules and h not in before:
                found[h] = module  # the first module whose import brought it in
print(json.dumps({{"found": found, "modules": len(sys.modules)}}))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def test_importing_every_analysis_scoring_experiment_and_tasks_module_never_imports_torch():
    proc = _python(_IMPORT_EVERY_MODULE.format(heavy=("torch",), light=LIGHT_PACKAGES))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])["found"]
    assert not found, (f"these light modules import a heavy library at import time: {found}; "
                       "import it inside the function that needs it (see the code map in peftbench/__init__.py)")


def test_compare_and_report_on_the_published_results_leave_torch_unimported(published_results, tmp_path):
    report = tmp_path / "report.html"
    code = (
        "import sys\n"
        "from peftbench.cli import main\n"
        f"assert main(['compare', {str(published_results)!r}]) == 0\n"
        f"assert main(['compare', {str(published_results)!r}, '--format', 'json', '--filter', 'test_acc > 0.4']) == 0\n"
        f"assert main(['report', {str(published_results)!r}, '-o', {str(report)!r}]) == 0\n"
        "print('HEAVY', [m for m in ('torch',) if m in sys.modules])\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []", proc.stdout[-500:]
    assert report.is_file()


def test_status_with_a_warm_plan_cache_leaves_torch_unimported(tiny_suite):
    code = ("import sys\nfrom peftbench.cli import main\nmain(['status', sys.argv[1]])\n"
            "print('HEAVY', [m for m in ('torch', 'peft') if m in sys.modules])\n")
    first = _python(code, str(tiny_suite))  # fills the plan cache (resolving the configs loads peft)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "lora/tiny-r4" in first.stdout
    again = _python(code, str(tiny_suite))
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.strip().splitlines()[-1] == "HEAVY []", again.stdout[-500:]


@pytest.mark.parametrize("command", [["compare", "--list-columns"], ["--help"]])
def test_cli_entry_points_that_read_nothing_leave_torch_unimported(command):
    code = ("import sys\nfrom peftbench.cli import main\n"
            f"try:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', [m for m in ('torch',) if m in sys.modules])\n")
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY []"
