"""The package's imports follow the data flow (DESIGN.md): models -> pipeline -> atlas -> site -> cli, and inside
pipeline/ the subsystems before the stages that use them and the stages before the build. No module imports one
downstream of it, and no import cycle exists, counting the imports inside functions too."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "builder"

# Rank of each group of modules: a module may import its own group or a group of lower rank only.
RANKS = {
    "errors": 0, "jsonio": 1, "geneids": 1, "parse": 1, "pausepoint": 1, "losscurve": 1, "fsutil": 2,
    "models": 10,
    "pipeline": 20, "pipeline.cache": 20, "pipeline.engine": 20, "pipeline.multitest": 20, "pipeline.codes": 20,
    "pipeline.heldout": 20, "pipeline.targets": 25,
    "pipeline.model": 21, "pipeline.annotation": 21, "pipeline.graphs": 21,
    "pipeline.sae": 22,            # encodes an extract's activations (model/)
    "pipeline.statistics": 23,     # reads encoded codes (sae/)
    "pipeline.interventions": 24, "pipeline.perturbation": 24,
    "pipeline.stage": 30, "pipeline.stages": 31, "pipeline.build": 32,
    "pipeline.links": 33,          # reads the plan and stream stages' results of finished builds
    "atlas": 40, "site": 50, "options": 60, "cli": 70,
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def group(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 1 else parts[0]


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every builder module `module` imports, at the top or inside a function."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)  # `if TYPE_CHECKING:` imports
                   and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif (node.module or "").startswith("builder"):
                target = node.module.removeprefix("builder").lstrip(".")
            else:
                continue
            for alias in node.names:  # `from . import x` names a module
                sub = f"{target}.{alias.name}".strip(".")
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("builder.") for a in node.names if a.name.startswith("builder.")}
    return {m for m in found if m in known and m and m != module}


GRAPH = {m: imports(m, p, set(modules())) for m, p in modules().items()}


def test_every_module_has_a_rank():
    assert sorted(m for m in GRAPH if m and group(m) not in RANKS) == []


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m))
def test_no_import_against_the_flow(module):
    bad = [t for t in sorted(GRAPH[module]) if group(t) != group(module) and RANKS[group(t)] >= RANKS[group(module)]]
    assert bad == [], f"{module} ({group(module)}, rank {RANKS[group(module)]}) imports {bad}"


def test_no_import_cycle():
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(GRAPH[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert cycles == []
