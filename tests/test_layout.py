"""The code's shape, as docs/architecture.md states it: short functions, and a training loop with
no nested functions (its helpers take explicit arguments)."""

import ast
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "gankit"
MAX_LINES = 120


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_is_longer_than_a_screenful_or_two():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for fn in _functions(ast.parse(path.read_text())):
            length = fn.end_lineno - fn.lineno + 1
            if length > MAX_LINES:
                long.append(f"{path.relative_to(SRC)}:{fn.lineno} {fn.name} ({length} lines)")
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_the_training_loop_has_no_nested_functions_and_no_nonlocal():
    tree = ast.parse((SRC / "train.py").read_text())
    nested = [f"{outer.name} > {inner.name}" for outer in _functions(tree)
              for inner in _functions(outer) if inner is not outer]
    nested += [f"lambda at line {n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Lambda)]
    assert not nested, f"nested definitions in train.py: {nested}"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Nonlocal)]


def test_architecture_doc_names_every_module():
    table = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    modules = [p.name for p in SRC.glob("*.py") if p.stem not in ("__init__", "__main__")]
    packages = [f"{p.name}/" for p in SRC.iterdir() if (p / "__init__.py").is_file()]
    missing = [name for name in modules + packages if f"`{name}`" not in table]
    assert not missing, f"docs/architecture.md's table does not say who owns {missing}"


def test_the_lower_layers_do_not_import_the_training_code():
    training = {"gankit.train", "gankit.state", "gankit.runlog", "gankit.tblog", "gankit.cli"}
    offenders = []
    for package in ("data", "models", "metrics"):
        for path in sorted((SRC / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(SRC)} imports {n}" for n in names if n in training]
    assert not offenders, offenders
