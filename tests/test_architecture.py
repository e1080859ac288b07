"""The import rules of docs/architecture.md, checked on the source (every import
statement, also those inside functions and ``if TYPE_CHECKING`` blocks)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "consent_server"
CLIENT = ROOT / "clients" / "python" / "consent_client"


def _module_name(path: Path, base: Path, package: str) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _imports(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, relative imports resolved to absolute names."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            # `from . import metrics` imports a module, not a name.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _layer(name: str) -> list[tuple[str, set[str]]]:
    folder = SERVER / name
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [SERVER / f"{name}.py"]
    return [
        (str(p.relative_to(ROOT)), _imports(p, _module_name(p, SERVER, "consent_server")))
        for p in files
    ]


def _hits(imported: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in imported if any(m == f or m.startswith(f + ".") for f in forbidden))


# layer -> the modules it must never import (prefixes).
RULES: dict[str, tuple[str, ...]] = {
    # Pure Python: the decisions, no transport, no storage, no wire format.
    "domain": (
        "grpc",
        "google.rpc",
        "redis",
        "fakeredis",
        "aiohttp",
        "httpx",
        "http",
        "prometheus_client",
        "consent_client",
        "consent_server.api",
        "consent_server.store",
        "consent_server.http",
        "consent_server.delivery",
        "consent_server.cli",
        "consent_server.app",
        "consent_server.config",
        "consent_server.metrics",
    ),
    # gRPC <-> domain; storage is reached only through the domain's ports.
    "api": ("consent_server.store", "consent_server.http", "consent_server.delivery", "redis"),
    "store": ("consent_server.api", "consent_server.http", "consent_server.delivery", "grpc"),
    "delivery": ("consent_server.api", "consent_server.http", "grpc"),
    "http": ("consent_server.api", "consent_server.store", "grpc"),
    # consentctl talks to the server through the thin client; only its first-key
    # bootstrap writes straight into the store.
    "cli": ("consent_server.api", "consent_server.http", "consent_server.delivery", "grpc"),
    # Counters and the /metrics listener: used by every layer, so it depends on none.
    "metrics": ("consent_server",),
}


@pytest.mark.parametrize("layer", sorted(RULES))
def test_layer_imports_nothing_it_must_not(layer: str) -> None:
    offenders = {
        path: hits for path, imported in _layer(layer) if (hits := _hits(imported, RULES[layer]))
    }
    assert not offenders, f"{layer} imports what docs/architecture.md forbids: {offenders}"


def test_the_thin_client_never_imports_the_server() -> None:
    offenders = {}
    for path in sorted(CLIENT.rglob("*.py")):
        imported = _imports(path, _module_name(path, CLIENT, "consent_client"))
        if hits := _hits(imported, ("consent_server",)):
            offenders[str(path.relative_to(ROOT))] = hits
    assert not offenders


# Status codes the HTTP edge answers with; the domain says *what* went wrong, http/
# decides the code.
_HTTP_CODES = {200, 201, 202, 204, 301, 302, 303, 304, 400, 401, 403, 404, 405, 409, 410, 413}
_HTTP_CODES |= {415, 422, 429, 500, 502, 503, 504}


def test_domain_raises_no_http_status_codes() -> None:
    offenders = []
    for path in sorted((SERVER / "domain").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Raise) or not isinstance(node.exc, ast.Call):
                continue
            args = [*node.exc.args, *(k.value for k in node.exc.keywords)]
            for arg in args:
                if not isinstance(arg, ast.Constant) or type(arg.value) is not int:
                    continue
                if arg.value in _HTTP_CODES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {arg.value}")
    assert not offenders, offenders


def test_every_module_is_named_in_docs_architecture() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for path in sorted(SERVER.rglob("*.py")):
        if path.name == "__init__.py" and path.parent != SERVER:
            continue
        rel = path.relative_to(SERVER).as_posix()
        if f"`{rel}`" not in doc:
            missing.append(rel)
    assert not missing, f"docs/architecture.md does not name: {missing}"


# Built from pieces so this file does not match itself.
_PROJECT_INTERNALS = re.compile(
    r"\b" + "SP" + r"EC\b|\.\./" + "shared" + r"|\b[Ii]ssues? #?\d+|\b" + "work" + r"streams?\b"
)
_DOCUMENTED = ("consent_server", "clients", "tests", "bench", "scripts", "docs", "proto")
_SUFFIXES = {".py", ".pyi", ".lua", ".md", ".proto", ".toml", ".yaml", ".sh"}


def test_code_and_docs_describe_themselves_in_their_own_words() -> None:
    """No pointers to the planning documents the repository does not contain."""
    paths = [ROOT / "README.md", ROOT / "Makefile", ROOT / "pyproject.toml", ROOT / "buf.yaml"]
    for top in _DOCUMENTED:
        paths += [p for p in (ROOT / top).rglob("*") if p.suffix in _SUFFIXES]
    offenders = []
    for path in paths:
        if "__pycache__" in path.parts:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if _PROJECT_INTERNALS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)
