"""``python -m consent_server`` / ``consent-server``: start the gRPC server.

With ``CONSENT_PROCESSES`` above 1 this process is the supervisor of that many server
processes (``consent_server.supervisor``); each of them runs this module again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from consent_server import logs, tracing
from consent_server.app import serve
from consent_server.config import load
from consent_server.supervisor import supervise, supervised
from consent_server.worker import run_main

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run ``main`` on uvloop when asked for and installed, else on asyncio's loop."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # an optional speed-up: asyncio's own loop serves the same
            pass
        else:
            factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse configuration, run the server, return the exit code (2 = bad configuration)."""
    args = sys.argv[1:] if argv is None else list(argv)
    child = supervised()

    def run() -> int:
        settings = load(args)
        logs.configure(settings.observability.log_level, settings.observability.log_format)
        if child is not None or settings.processes == 1:
            # The supervisor serves no calls; each of its processes traces its own.
            tracing.setup("consent-server")
        if child is not None:
            return run_loop(serve(settings, on_serving=child[1]), settings.server.uvloop)
        if settings.processes > 1:
            return asyncio.run(supervise(settings, args))
        return run_loop(serve(settings), settings.server.uvloop)

    return run_main("consent-server", run)


if __name__ == "__main__":
    sys.exit(main())
