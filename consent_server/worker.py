"""``python -m consent_server.worker``: a delivery worker process.

Run any number beside servers started with ``CONSENT_DELIVERY=off``; they share the
outbox consumer group and read the same environment variables as the server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence

from consent_server import logs, tracing
from consent_server.config import ConfigError, load
from consent_server.delivery.runner import run_worker


def run_main(program: str, body: Callable[[], int]) -> int:
    """Run an entry point's ``body`` and return its exit code; a configuration error is
    one ``PROGRAM: configuration error: ...`` line on stderr and exit code 2. Native
    stderr is given back however ``body`` ends (the server's entry point uses this too)."""
    try:
        return body()
    except ConfigError as exc:
        # gRPC core's own lines about the failure first, then the one line that says it.
        logs.release_native_stderr()
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        logs.release_native_stderr()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse configuration, deliver until SIGTERM, return the exit code (2 = bad config)."""

    def run() -> int:
        settings = load(argv)
        logs.configure(settings.observability.log_level, settings.observability.log_format)
        tracing.setup("consent-worker")
        return asyncio.run(run_worker(settings))

    return run_main("consent-worker", run)


if __name__ == "__main__":
    sys.exit(main())
