"""clients/python/README.md is true: every Python block compiles, and the blocks marked
``<!-- readme-test: run -->`` (and the root README's Python client example) run as
written against the real server (its address and a fresh tenant put in place of
``127.0.0.1:50051`` and ``acme``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from .support import ServerProcess

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "clients" / "python" / "README.md"
_BLOCK = re.compile(r"(<!-- readme-test: run -->\n)?```python\n(.*?)```", re.S)


def _blocks(path: Path) -> list[tuple[bool, str]]:
    return [(bool(m.group(1)), m.group(2)) for m in _BLOCK.finditer(path.read_text())]


def _python_client_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Python client\n")
    return text[start : text.index("\n## ", start + 1)]


def test_every_python_block_compiles() -> None:
    blocks = _blocks(README)
    assert len(blocks) >= 8
    section = _BLOCK.findall(_python_client_section())
    assert section, "the root README's Python client section shows code"
    for _, code in blocks + [(False, c) for _, c in section]:
        ast.parse(code)
        compile(code, str(README), "exec")


def test_the_quick_start_is_ten_lines() -> None:
    run, quick = _blocks(README)[0]
    assert run and len(quick.strip().splitlines()) <= 11  # ten lines and the import gap


def test_marked_blocks_run_against_the_server(
    server: ServerProcess, tenant: str, capsys: pytest.CaptureFixture[str]
) -> None:
    runnable = [code for run, code in _blocks(README) if run]
    assert len(runnable) >= 6
    runnable += [code for _, code in _BLOCK.findall(_python_client_section())]
    for n, code in enumerate(runnable):
        live = code.replace('"127.0.0.1:50051"', repr(server.target)).replace(
            '"acme"', repr(tenant)
        )
        exec(compile(live, f"{README.name}[run {n}]", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert "False RECIPIENT_OPTED_OUT" in out  # the quick start's check
    assert any(line.startswith("not sent: RECIPIENT_OPTED_OUT") for line in out)
    assert "['recipient.address']" in out  # the client refused the empty address
    assert "1 ['recipients[1].address']" in out  # the batch's bad item
    assert "accepted" in out  # the async send: MessageState.ACCEPTED prints its value
    assert out[-1].endswith(" accepted")  # the root README's send after the opt-in
