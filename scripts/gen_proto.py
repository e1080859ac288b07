"""Regenerate the committed Python code for proto/ (``make proto``).

protoc names generated modules after the proto package (``consent.v1``); we ship
them inside the thin client as ``consent_client.v1`` so server and client import
one copy. Like temporalio/sdk-python's gen_protos.py, we generate into a scratch
directory and rewrite the imports. The output must be byte-for-byte reproducible:
CI regenerates and fails on any diff.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path

import google.rpc  # googleapis-common-protos ships google/rpc/*.proto
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "clients" / "python" / "consent_client" / "v1"

# Only import statements and the builder's module name are rewritten: the
# serialized descriptor must keep the wire package name "consent.v1".
_IMPORT_RE = re.compile(r"^(from |import )consent\.v1\b", re.MULTILINE)
_MODULE_RE = re.compile(r"'consent\.v1\.(\w+_pb2)'")


def _include_dirs() -> list[str]:
    grpc_tools_protos = Path(protoc.__file__).parent / "_proto"
    googleapis = Path(next(iter(google.rpc.__path__))).parent.parent
    return [str(PROTO_DIR), str(grpc_tools_protos), str(googleapis)]


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ["grpc_tools.protoc", *(f"-I{d}" for d in _include_dirs())]
        args += [f"--python_out={tmp}", f"--grpc_python_out={tmp}"]
        bindir = Path(sys.executable).parent
        args += [f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}"]
        args += [f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}"]
        args += [f"--mypy_out={tmp}", f"--mypy_grpc_out={tmp}", *protos]
        if protoc.main(args) != 0:
            print("protoc failed", file=sys.stderr)
            return 1
        generated = Path(tmp) / "consent" / "v1"
        if OUT_DIR.exists():
            shutil.rmtree(OUT_DIR)
        OUT_DIR.mkdir(parents=True)
        for src in sorted(generated.iterdir()):
            if src.suffix not in (".py", ".pyi"):
                continue
            text = _IMPORT_RE.sub(r"\1consent_client.v1", src.read_text())
            text = _MODULE_RE.sub(r"'consent_client.v1.\1'", text)
            (OUT_DIR / src.name).write_text(text)
        (OUT_DIR / "__init__.py").write_text(
            '"""Generated from proto/consent/v1 by `make proto`. Do not edit."""\n'
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
