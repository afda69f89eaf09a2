"""The package layout keeps its rules: layers import only downwards, no import cycles, short
modules that say what they are for, and the paper's scripts call stages and public names only."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "faceaudit"
PAPER_SCRIPT_DIRS = ("Embedding_Computation", "Mated_vs_non-mated", "CASIA_compare")
MAX_LINES = 400

#: lower layers first; a module may import its own layer and the ones below
LAYERS = {
    "errors": 0, "device": 0, "version": 0, "checks": 0,
    "io": 1,
    "models": 2, "faces": 2,
    "embed": 3, "search": 3, "evaluate": 3, "train": 3,
    "report": 4,
    "stages": 5,
    "cli": 6, "__main__": 6,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every faceaudit module ``path`` imports, at module level or inside functions."""
    own = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("faceaudit"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = own.split(".")[:-node.level] if not path.name == "__init__.py" else \
                    own.split(".")[:-1][:len(own.split(".")) - node.level]
                base = ".".join(anchor + ([base] if base else []))
            if not base.startswith("faceaudit"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_belongs_to_a_layer():
    unplaced = [m for m in _modules() if m != "faceaudit" and _layer(m) is None]
    assert not unplaced, f"modules outside every layer: {unplaced}"


def test_layers_import_only_downwards():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        if name == "faceaudit":  # the facade re-exports public names lazily
            continue
        for target in _imports(path, modules):
            if target == "faceaudit":
                upward.append(f"{name} imports the package facade")
            elif _layer(target) > _layer(name):
                upward.append(f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {t for t in _imports(path, modules) if t in modules and t != name}
             for name, path in modules.items() if name != "faceaudit"}
    for package in [m for m in graph if modules[m].name == "__init__.py"]:  # a package imports its parts
        graph[package] = {t for t in graph[package] if not t.startswith(package + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle.extend(stack[stack.index(nxt):] + [nxt])
                return True
            if nxt not in state and visit(nxt, stack + [nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if start not in state and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_short_and_say_what_they_are_for(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines; split it along its jobs"
    if path.name != "__main__.py":
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path}: no opening docstring"


def test_paper_scripts_call_stages_cli_and_public_names_only():
    offences = []
    for folder in PAPER_SCRIPT_DIRS:
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("faceaudit")):
                    continue
                names = node.module.split(".") + [alias.name for alias in node.names]
                private = [name for name in names if name.startswith("_")]
                if private:
                    offences.append(f"{path.relative_to(ROOT)}: imports private {private} from {node.module}")
    assert not offences, "\n".join(offences)


def test_public_names_keep_working():
    import faceaudit
    from faceaudit import leakage, load_embeddings, metrics, search, variability  # noqa: F401
    from faceaudit.embed import embed_dataset

    assert callable(load_embeddings) and callable(embed_dataset)
    assert callable(variability.run) and callable(leakage.run_leakage)
    assert callable(metrics.verification_metrics) and callable(search.best_match)
    with pytest.raises(AttributeError):
        faceaudit.no_such_name  # noqa: B018
