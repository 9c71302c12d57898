"""Packaging contracts: light imports, the dependency direction of DESIGN.md, the CLI entry point."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "vllm", "ray", "trl", "langgraph", "transformers")

# DESIGN.md "Dependency direction": package -> loopwright packages it may import.
ALLOWED = {
    "sdk": set(),
    "tools": {"sdk"},
    "agents": {"sdk", "tools"},
    "judges": {"sdk", "trainers"},
    "trainers": {"sdk", "modeling"},
    "modeling": {"kernels"},
    "kernels": set(),
}
COMPOSITION_ROOTS = {ROOT / "sdk" / "cli.py"}


def test_import_loopwright_is_light():
    code = (
        "import sys, loopwright, loopwright.sdk\n"
        "from loopwright.sdk import SamplingParams, Verdict, Generator, Judge, Filter, Tool, Searcher\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing loopwright loaded heavy modules: {out.stdout.strip()}"


def _imported_packages(path: Path, package: str) -> set[str]:
    """loopwright top-level packages imported by a file (absolute `loopwright.x` and escaping relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    depth_of_file = len(path.relative_to(ROOT / package).parts)  # 1 for package/x.py
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level >= depth_of_file + 1:  # climbs above the package: ..x from package/x.py
                mod = (node.module or "").split(".")[0]
                names = [f"loopwright.{mod}"] if mod else [f"loopwright.{a.name}" for a in node.names]
            else:
                continue
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "loopwright" and len(parts) > 1 and parts[1] in ALLOWED:
                found.add(parts[1])
    found.discard(package)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependency_direction(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path in COMPOSITION_ROOTS:
            continue
        extra = _imported_packages(path, package) - ALLOWED[package]
        if extra:
            bad.append(f"{path.relative_to(ROOT)} imports {sorted(extra)}")
    assert not bad, "dependency direction violated (DESIGN.md):\n" + "\n".join(bad)


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "loopwright.sdk.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for cmd in ("run", "resume", "recipes", "sandbox", "judge", "tools", "coa"):
        assert cmd in out.stdout


def test_console_script_installed():
    exe = Path(sys.executable).parent / "loopwright"
    assert exe.exists(), "the `loopwright` console script is not installed (pip install -e .)"


_GPU_BOX_PACKAGES = {"torch", "triton", "transformers", "loopwright", "__future__"}


@pytest.mark.parametrize("package", ["modeling", "kernels"])
def test_modeling_and_kernels_import_only_torch_triton_transformers(package):
    """DESIGN.md: modeling/ and kernels/ must run on a GPU box that has nothing but torch, triton and transformers."""
    import sys

    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in _GPU_BOX_PACKAGES and top not in sys.stdlib_module_names:
                    bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "third-party imports outside torch/triton/transformers:\n" + "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_graph() -> dict[str, set[str]]:
    """Module -> loopwright modules it imports, counting lazy (in-function) and TYPE_CHECKING imports too."""
    paths = {_module_name(p): p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    head = base[: len(base) - node.level + 1]
                    mod = ".".join(head + ([node.module] if node.module else []))
                elif (node.module or "").startswith("loopwright."):
                    mod = node.module.removeprefix("loopwright.")
                else:
                    continue
                targets = [mod, *(f"{mod}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("loopwright.") for a in node.names if a.name.startswith("loopwright.")]
            deps.update(t for t in targets if t in paths and t != name)
        graph[name] = deps
    return graph


def test_no_import_cycles_between_modules():
    """Issue 15: no module reaches itself through imports, lazy ones included (a package ``__init__`` that
    re-exports its children is not counted: it is the package's face, not a part)."""
    graph = _module_graph()
    inits = {n for n in graph if (ROOT / n.replace(".", "/") / "__init__.py").is_file()}
    graph = {n: d - inits for n, d in graph.items() if n not in inits}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)
