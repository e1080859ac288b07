"""The documentation names the tests that prove its claims: every `tests/...py::test_...`
reference in README.md and docs/*.md must name a file and a test function that exist.

A reference may continue the previous one on its line: in
"`tests/test_a.py::test_one`, `::test_two`" the second names `tests/test_a.py` too."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A file reference, optionally followed by ::Class::test; or a bare ::test continuing
# the last file named on the same line.
_REF = re.compile(
    r"(?P<file>tests/[\w/]+\.py)(?:::(?P<names>[\w:]+))?|(?<![\w/.])::(?P<cont>test_\w+)"
)


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@cache
def _test_names(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text())
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    )


def references(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, file, test name or None) for every reference in ``text``."""
    found: list[tuple[int, str, str | None]] = []
    for number, line in enumerate(text.splitlines(), 1):
        last_file: str | None = None
        for match in _REF.finditer(line):
            if match["file"]:
                last_file = match["file"]
                names = match["names"]
                found.append((number, last_file, names.split("::")[-1] if names else None))
            elif last_file is not None:
                found.append((number, last_file, match["cont"]))
            else:
                found.append((number, "<no file before it on the line>", match["cont"]))
    return found


def test_references_parse_files_names_and_continuations() -> None:
    line = "see `tests/test_a.py::test_one`, `::test_two` and tests/test_b.py; ::test_x"
    assert references(line) == [
        (1, "tests/test_a.py", "test_one"),
        (1, "tests/test_a.py", "test_two"),
        (1, "tests/test_b.py", None),
        (1, "tests/test_b.py", "test_x"),
    ]
    assert references("tests/test_c.py::TestK::test_m")[0][1:] == ("tests/test_c.py", "test_m")
    assert references("`::test_orphan`")[0][1] == "<no file before it on the line>"


def test_every_test_the_docs_name_exists() -> None:
    problems: list[str] = []
    count = 0
    for doc in _documents():
        for number, file, name in references(doc.read_text()):
            count += 1
            where = f"{doc.relative_to(ROOT)}:{number}"
            path = ROOT / file
            if not path.is_file():
                problems.append(f"{where}: {file} does not exist")
            elif name is not None and name not in _test_names(path):
                problems.append(f"{where}: {file} has no test {name}")
    assert not problems, "\n".join(problems)
    # The docs do name their proofs: a parser that found nothing would pass vacuously.
    assert count > 50


def test_every_guarantee_page_names_its_proofs() -> None:
    for page in ("guarantees", "decision-rule", "inbound", "delivery", "security", "operations"):
        text = (ROOT / "docs" / f"{page}.md").read_text()
        assert any(name for _, _, name in references(text)), f"docs/{page}.md names no test"
