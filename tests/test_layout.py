"""The package's layout: one room per idea, display code only in `peftlab/explore/`, no import circles."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import peftlab

ROOT = Path(peftlab.__file__).parent
DISPLAY = ("ipywidgets", "IPython", "matplotlib.pyplot")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file (module level or inside a function),
    relative imports resolved to absolute names."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import lora` names a module
    return found


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {m: {i for i in _imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def _in_explore(module: str) -> bool:
    return module == "peftlab.explore" or module.startswith("peftlab.explore.")


def test_no_import_circle_inside_peftlab():
    # the package face (__init__) hands names on and is imported by everyone; leave it out
    graph = {m: {i for i in deps if i != "peftlab"} for m, deps in GRAPH.items() if m != "peftlab"}
    state, circles = {}, []

    def visit(m, path):
        state[m] = "open"
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == "open":
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, f"import circles: {circles}"


def test_only_explore_imports_display_libraries():
    offenders = {m: sorted(i for i in _imports(p) if i.split(".")[0] in ("ipywidgets", "IPython") or i in DISPLAY)
                 for m, p in MODULES.items() if not _in_explore(m)}
    assert not {m: v for m, v in offenders.items() if v}


def test_nothing_outside_explore_imports_explore():
    offenders = {m: sorted(d for d in deps if _in_explore(d)) for m, deps in GRAPH.items() if not _in_explore(m)}
    assert not {m: v for m, v in offenders.items() if v}


def test_method_modules_import_the_virtual_token_base_not_each_other():
    for m in ("peftlab.prompt", "peftlab.prefix", "peftlab.ptuning"):
        assert "peftlab.virtual_tokens" in GRAPH[m]
        assert not GRAPH[m] & {"peftlab.prompt", "peftlab.prefix", "peftlab.ptuning"}, m


def test_measure_imports_no_method():
    methods = {"peftlab.lora", "peftlab.qlora", "peftlab.adapters", "peftlab.prompt", "peftlab.prefix",
               "peftlab.ptuning", "peftlab.methods"}
    assert not GRAPH["peftlab.measure"] & methods


def test_command_line_modules_load_no_display_library():
    code = ("import sys, peftlab.self_instruct, peftlab.teacher, peftlab.bench, peftlab.studies\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'IPython')"
            " or m == 'matplotlib.pyplot'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_no_committed_notebook_holds_stderr_output():
    """nbval compares stderr too, and under pytest a warning is captured instead of printed: a notebook
    committed with a warning or a C library's log line on stderr fails on every other run."""
    import json
    root = Path(__file__).resolve().parent.parent / "notebooks"
    found = [(path.name, i) for path in sorted(root.glob("*.ipynb"))
             for i, cell in enumerate(json.loads(path.read_text())["cells"])
             for out in cell.get("outputs", []) if out.get("output_type") == "stream" and out.get("name") == "stderr"]
    assert not found, f"stderr outputs in committed notebooks (cell indices): {found}"


def test_every_notebook_runs_whole_and_pictures_its_explorer():
    """No cell is skipped under nbval: the explorer cells run too (tagged nbval-ignore-output), so the
    suite sees what a learner running all cells sees, and the root conftest.py holds each notebook to
    its time limit. Each notebook has one explorer cell, and the markdown cell right above it shows a
    committed picture of that explorer (scripts/explorer_pictures.py), for a reader on a code host or
    before running."""
    import json
    root = Path(__file__).resolve().parent.parent / "notebooks"
    for path in sorted(root.glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        tags = [cell.get("metadata", {}).get("tags", []) for cell in cells]
        assert not [i for i, t in enumerate(tags) if "nbval-skip" in t], f"{path.name} skips cells under nbval"
        explorers = [i for i, t in enumerate(tags) if "explorer" in t]
        assert len(explorers) == 1, f"{path.name}: {len(explorers)} cells tagged explorer, expected one"
        i = explorers[0]
        assert "nbval-ignore-output" in tags[i] and cells[i]["cell_type"] == "code"
        picture = f"figures/{path.name[:2]}_explorer.png"
        above = cells[i - 1]
        assert above["cell_type"] == "markdown" and f"]({picture})" in "".join(above["source"]), \
            f"{path.name}: the cell above the explorer does not show {picture}"
        png = (root / picture).read_bytes()
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the IHDR chunk
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and width >= 300 and height >= 30, f"{picture} is not a picture"


# Issue 13's notebooks once their studies ship: every verdict comes from `compare` (the study's claim table) or
# `evidence.exact`, never a literal, a comparison against a threshold, or a bare boolean. Add a notebook when its
# study lands.
ON_STUDIES = ("01_full_fine_tuning", "03_lora", "09_instruction_tuning", "10_pretraining_vs_finetuning_data",
              "12_combining_lora_adapters", "13_adapter_fusion", "19_self_instruct")


@pytest.mark.parametrize("name", ON_STUDIES)
def test_notebooks_on_studies_have_no_literal_or_threshold_verdicts(name):
    source = (ROOT.parent / "notebooks" / "src" / f"{name}.py").read_text()
    tree = ast.parse(source)
    calls = {getattr(n.func, "id", getattr(n.func, "attr", "")) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert {"load_results", "require_inside", "claim_table"} <= calls, f"{name} must load its study, check its " \
        "live run against the band and show the study's claim table"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "claim_check":
            for row in (e for arg in node.args if isinstance(arg, ast.List) for e in arg.elts):
                verdict = row.elts[-1]
                assert (isinstance(verdict, ast.Attribute) and verdict.attr == "verdict"
                        and isinstance(verdict.value, ast.Call)
                        and getattr(verdict.value.func, "id", "") in ("exact", "compare")), (
                    f"{name}, claim_check row at line {row.lineno}: the verdict is {ast.unparse(verdict)!r}; take it "
                    f"from exact(...).verdict or compare(...).verdict")
