"""Architecture rules, written as tests: what may import what."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One torch-free module per shared mechanism: every caller (training, caches, export, serving) uses these.
TORCH_FREE = ["taidpt.utils.runlock", "taidpt.utils.safe_pickle", "taidpt.utils.pathtext", "taidpt.utils.atomic",
              "taidpt.utils.commands", "taidpt.utils.seeding", "taidpt.methods", "taidpt.images.augment",
              "taidpt.images.preprocess"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_shared_mechanisms_import_without_torch(module):
    code = (f"import sys; sys.modules['torch'] = None; import {module}; "
            "heavy = [m for m in ('torch', 'open_clip', 'torchvision') if sys.modules.get(m) is not None]; "
            "sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_one_lock_one_unpickler_one_path_escaping():
    """Nobody hand-rolls what those modules do: no fcntl/msvcrt locks, no pickle, no ad-hoc escaping."""
    offenders = []
    for path in sorted((ROOT / "taidpt").rglob("*.py")) + sorted((ROOT / "export").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if rel != "taidpt/utils/runlock.py" and ("import fcntl" in text or "import msvcrt" in text):
            offenders.append(f"{rel}: file locking outside taidpt/utils/runlock.py")
        if rel != "taidpt/utils/safe_pickle.py" and ("import pickle" in text or "from pickle" in text):
            offenders.append(f"{rel}: pickle outside taidpt/utils/safe_pickle.py")
        if rel != "taidpt/utils/pathtext.py" and ('"backslashreplace"' in text or "'backslashreplace'" in text):
            offenders.append(f"{rel}: path escaping outside taidpt/utils/pathtext.py")
    assert not offenders, offenders


# ----------------------------------------------------------------------------- deployment: serving vs build side
SERVE_FORBIDDEN = ("torch", "torchvision", "open_clip", "taidpt.engine", "taidpt.networks", "taidpt.methods",
                   "taidpt.export", "taidpt.clip", "export")


SERVE_PACKAGES = ("serve", "app")  # the serving side: deployed models, and the tagging page on them


def _serve_paths() -> list[Path]:
    return sorted(p for package in SERVE_PACKAGES for p in (ROOT / "taidpt" / package).glob("*.py")
                  if p.stem != "__main__")


def _serve_modules() -> list[str]:
    return [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in _serve_paths()]


def _forbidden(name: str) -> bool:
    return any(name == bad or name.startswith(bad + ".") for bad in SERVE_FORBIDDEN)


@pytest.mark.parametrize("module", _serve_modules())
def test_serving_side_import_closure_has_no_torch_training_or_build_code(module):
    """Each serving module imports (with torch made unimportable) without pulling in torch, the training code
    or the build side."""
    code = (f"import sys; sys.modules['torch'] = None; import {module}; "
            f"bad = sorted(m for m, v in sys.modules.items() if v is not None and "
            f"any(m == b or m.startswith(b + '.') for b in {SERVE_FORBIDDEN!r})); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (function bodies too); relative imports resolved."""
    import ast

    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return names


def test_serving_side_never_names_torch_training_or_build_code():
    """Also the imports inside functions, which the import-closure test does not run."""
    offenders = []
    for path in _serve_paths():
        bad = sorted(n for n in _imported_names(path) if _forbidden(n))
        if bad:
            offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders, offenders


def taidpt_import_graph() -> dict[str, set[str]]:
    """``module -> the taidpt modules it imports`` (module level and inside functions), read with ``ast``."""
    paths = sorted((ROOT / "taidpt").rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph: dict[str, set[str]] = {}
    for path in paths:
        own = _module_name(path)
        graph[own] = {n for n in _imported_names(path) if n in modules and n != own}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:  # a shortest way back to the first module, inside the component
        start, members = component[0], set(component)
        paths, seen, found = [[start]], {start}, None
        while paths and found is None:
            nxt = []
            for path in paths:
                for w in sorted(graph[path[-1]] & members):
                    if w == start:
                        found = path + [start]
                        break
                    if w not in seen:
                        seen.add(w)
                        nxt.append(path + [w])
                if found:
                    break
            paths = nxt
        cycles.append(found or component)
    return cycles


def test_find_cycles_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_circle_among_taidpt_modules():
    cycles = find_cycles(taidpt_import_graph())
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_library_never_imports_dassl():
    """Dassl is not on PyPI: taidpt/ must run without it (trainers/ and datasets/ adapt it to Dassl)."""
    pattern = re.compile(r"^\s*(import dassl\b|from dassl\b)", re.M)
    offenders = [path.relative_to(ROOT).as_posix() for path in sorted((ROOT / "taidpt").rglob("*.py"))
                 if pattern.search(path.read_text(encoding="utf-8"))]
    assert not offenders, offenders
    assert pattern.search("    from dassl.engine import TRAINER_REGISTRY\n")  # the rule sees an import


def _taidpt_from_imports(path: Path) -> list[tuple[int, str, str]]:
    """``(line, module, name)`` of every ``from taidpt... import name`` in a file, function-level ones included."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.lineno, node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
            and node.module.split(".")[0] == "taidpt" for alias in node.names if alias.name != "*"]


def test_every_taidpt_name_imported_anywhere_exists():
    """A moved or renamed function breaks deferred imports only when they run (a benchmark, a rare CLI
    path); this resolves every ``from taidpt... import name`` in the repository now."""
    import importlib

    files = [p for folder in ("taidpt", "bench", "export", "trainers", "datasets", "tests") for p in
             (ROOT / folder).rglob("*.py")] + [ROOT / "train.py"]
    missing = []
    for path in files:
        for line, module, name in _taidpt_from_imports(path):
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                missing.append(f"{path.relative_to(ROOT)}:{line}: {module} ({exc})")
                continue
            if not hasattr(mod, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ImportError:
                    missing.append(f"{path.relative_to(ROOT)}:{line}: {module} has no {name}")
    assert not missing, "\n".join(missing)


def _weighted_mixes(source: str) -> list[int]:
    """Lines of ``w * a + (1 - w) * b`` style expressions: a product with a ``1 - x`` factor, added to another."""
    import ast

    def one_minus(node: ast.AST) -> bool:
        return (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and isinstance(node.left, ast.Constant)
                and node.left.value in (1, 1.0))

    def weighted(node: ast.AST) -> bool:
        return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (one_minus(node.left) or one_minus(node.right))

    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and (weighted(node.left) or weighted(node.right))]


def test_one_merge_function():
    """The merged score (and any other weighted mix) is computed by taidpt.networks.merge alone."""
    assert _weighted_mixes("s = w * g + (1 - w) * loc\n") == [1]  # the rule sees a mix
    assert _weighted_mixes("s = (1.0 - r) * a + r * b\n") == [1]
    offenders = []
    for folder in ("taidpt", "trainers", "export", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in ("taidpt/networks/merge.py", "taidpt/demo/rendering.py"):  # rendering: alpha compositing
                offenders += [f"{rel}:{line}" for line in _weighted_mixes(path.read_text(encoding="utf-8"))]
    assert not offenders, "weighted mixes outside taidpt/networks/merge.py: " + ", ".join(offenders)


def _method_node_reads(source: str, nodes: set[str]) -> list[int]:
    """Lines that read ``<x>.TRAINER.<NODE>`` or ``<x>.TRAINER["<NODE>"]`` for one of ``nodes``."""
    import ast

    def under_trainer(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "TRAINER"

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in nodes and under_trainer(node.value):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Subscript) and under_trainer(node.value) and isinstance(node.slice, ast.Constant)
              and node.slice.value in nodes):
            lines.append(node.lineno)
    return lines


def test_no_method_config_node_is_read_outside_its_method():
    """Generic code asks the method (taidpt.methods) for its settings; it never reads TRAINER.<node> itself."""
    from taidpt.methods import get_method, method_names

    nodes = {get_method(name).node for name in method_names()}
    assert sorted(_method_node_reads("cfg.TRAINER.TAIDPT.CACHE_DTYPE\nx = c.TRAINER['COOP']\n", nodes)) == [1, 2]
    offenders = []
    for folder in ("taidpt", "trainers", "datasets", "export"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith("taidpt/methods/"):
                offenders += [f"{rel}:{n}" for n in _method_node_reads(path.read_text(encoding="utf-8"), nodes)]
    assert not offenders, "method config nodes read outside taidpt/methods/: " + ", ".join(offenders)


def test_no_module_imports_another_modules_private_names():
    """A name another module needs is public (no leading underscore) or the code moves to its user."""
    offenders = []
    for folder in ("taidpt", "trainers", "datasets", "export", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, module, name in _taidpt_from_imports(path):
                if name.startswith("_") and not name.startswith("__"):
                    offenders.append(f"{path.relative_to(ROOT).as_posix()}:{line} {module}.{name}")
    assert not offenders, "private names imported across modules: " + ", ".join(offenders)


# Module docstrings say what a module is and why in a few lines; manuals live in docs/.
MAX_MODULE_DOCSTRING_LINES = 12


def test_module_docstrings_are_short_and_leave_rules_to_tests():
    """At most MAX_MODULE_DOCSTRING_LINES lines, and no "must not import torch" (a test enforces that)."""
    import ast

    torch_rule = re.compile(r"must\s+(not|never)\s+import\s+torch", re.I)
    assert torch_rule.search("This module must never\nimport torch.")  # the rule sees the sentence
    offenders = []
    for folder in ("taidpt", "export"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
            lines = len(doc.splitlines())
            if lines > MAX_MODULE_DOCSTRING_LINES:
                offenders.append(f"{rel}: module docstring of {lines} lines (at most {MAX_MODULE_DOCSTRING_LINES})")
            if torch_rule.search(doc):
                offenders.append(f"{rel}: module docstring says it must not import torch (a test holds that rule)")
    assert not offenders, "\n".join(offenders)
