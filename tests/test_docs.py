"""The docs against the suite: every test a doc names exists, and docs/reliability.md's table
states what its tests run (how many cases, how many hypothesis examples, the constants it
quotes). A renamed test, a changed count or a new fault test without its row fails here."""

import ast
import importlib
import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
RELIABILITY = ROOT / "docs" / "reliability.md"
# `tests/file.py`, `tests/file.py::name` (a parametrised case's [id] allowed), or a bare `test_name`
# (lower case: the placeholder `tests/FILE.py::NAME` is not a reference)
TEST_REFERENCE = re.compile(r"`(tests/[a-z0-9_/]+\.py)(?:::(\w+)(?:\[[^\]`]*\])?)?`|`(test_\w+)`")
ROW_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _defined_tests(path: Path) -> set[str]:
    """The module-level functions and the test methods of the classes a test file defines."""
    tree = ast.parse(path.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        names |= {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return names


def _all_tests() -> set[str]:
    return set().union(*(_defined_tests(p) for p in (ROOT / "tests").glob("test_*.py")))


def _rows() -> list[list[str]]:
    """The cells of each row of the "Faults tried" table."""
    section = RELIABILITY.read_text().split("## Faults tried", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in section.splitlines() if line.startswith("|")]
    assert lines[0] == "| fault | times | test | what was lost |" and lines[1].startswith("| ---")
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]
    assert rows and all(len(row) == 4 for row in rows), [row for row in rows if len(row) != 4]
    return rows


def _cases(fn) -> int:
    """How many test cases pytest makes of a test function (its parametrisations multiplied)."""
    counts = []
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            values = mark.kwargs["argvalues"] if "argvalues" in mark.kwargs else mark.args[1]
            counts.append(len(list(values)))
    return math.prod(counts)


@pytest.mark.parametrize("doc", sorted([*ROOT.glob("docs/*.md"), ROOT / "README.md"]), ids=lambda p: p.name)
def test_every_test_a_doc_names_exists(doc):
    everywhere, missing = _all_tests(), []
    for match in TEST_REFERENCE.finditer(doc.read_text()):
        path, name, bare = match.groups()
        if bare is not None:
            if bare not in everywhere:
                missing.append(bare)
        elif not (ROOT / path).is_file():
            missing.append(path)
        elif name is not None and name not in _defined_tests(ROOT / path):
            missing.append(f"{path}::{name}")
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_every_reliability_row_names_its_tests_and_states_what_they_run():
    for fault, times, tests, lost in _rows():
        named = ROW_TEST.findall(tests)
        assert named, f"row {fault!r} names no test as `tests/FILE.py::NAME`"
        assert ROW_TEST.sub("", tests).replace(",", "").strip() == "", \
            f"row {fault!r}: the test column holds something other than `tests/FILE.py::NAME`s: {tests}"
        modules, functions = [], []
        for path, name in named:
            assert name in _defined_tests(ROOT / path), f"row {fault!r}: no test {path}::{name}"
            module = importlib.import_module(Path(path).stem)  # tests/ is on sys.path
            modules.append(module)
            functions.append(getattr(module, name))

        stated = re.match(r"(\d+) tests?\b", times)
        assert stated, f"row {fault!r}: the times column must start with 'N test(s)': {times!r}"
        assert int(stated[1]) == sum(_cases(fn) for fn in functions), \
            f"row {fault!r} says {stated[0]}; its tests make {sum(_cases(fn) for fn in functions)} cases"

        examples = [fn._hypothesis_internal_use_settings.max_examples
                    for fn in functions if getattr(fn, "is_hypothesis_test", False)]
        said = re.search(r"((?:\d+ \+ )*\d+) examples", times)
        assert ([int(n) for n in said[1].split(" + ")] if said else []) == examples, \
            f"row {fault!r} says {said[0] if said else 'no examples'}; its hypothesis tests run {examples}"

        for name, value in re.findall(r"`([A-Z][A-Z0-9_]*)` = (\d+)", " ".join((times, lost))):
            actual = [getattr(m, name) for m in modules if hasattr(m, name)]
            assert actual, f"row {fault!r} quotes `{name}`, which none of its test modules defines"
            assert actual[0] == int(value), f"row {fault!r} says `{name}` = {value}; the test has {actual[0]}"


def test_every_fault_test_has_its_row():
    """tests/test_reliability.py is the fault tests' own file: each of them is in the table."""
    named = {name for _, _, tests, _ in _rows() for path, name in ROW_TEST.findall(tests)
             if path == "tests/test_reliability.py"}
    defined = {name for name in _defined_tests(ROOT / "tests" / "test_reliability.py") if name.startswith("test_")}
    assert defined - named == set(), f"fault tests missing from docs/reliability.md: {sorted(defined - named)}"
