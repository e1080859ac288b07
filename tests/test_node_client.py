"""The TypeScript client (clients/node) passes its own tests against the real server.

Node's test runner does the work (``npm test``: compile, then ``node --test``, which
starts ``python -m consent_server`` itself); this wrapper puts the result in the suite's
summary and shows node's report when it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NODE_CLIENT = Path(__file__).resolve().parent.parent / "clients" / "node"

# One node process that itself runs three servers: keep it off the other worker's cores.
pytestmark = pytest.mark.xdist_group("node-client")


def test_node_client_suite_passes() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm not found: install Node.js 20+ (the TypeScript client's tests need it)")
    if not (NODE_CLIENT / "node_modules" / ".installed").exists():
        pytest.fail("clients/node/node_modules is missing: run `make install`")
    # The same interpreter (and so the same installed server) as this test run.
    env = {**os.environ, "CONSENT_PYTHON": sys.executable}
    proc = subprocess.run(
        [npm, "test", "--silent"],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"npm test failed ({proc.returncode}):\n{report[-12000:]}"
    # A runner that found no tests would also exit 0.
    assert "# fail 0" in report and "# pass 0" not in report, report[-4000:]
