"""CPU time of a process, to report what one call costs the server.

Throughput on a shared machine moves with the neighbours' load; CPU time per call
moves much less, and it is what bounds a server that saturates its one event loop.
"""

from __future__ import annotations

import os
from pathlib import Path


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds used so far by ``pid`` (all threads); None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which may itself contain spaces and brackets.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
