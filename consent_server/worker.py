"""``python -m consent_server.worker``: a delivery worker process.

Run any number beside servers started with ``CONSENT_DELIVERY=off``; they share the
outbox consumer group and read the same environment variables as the server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from consent_server import logs, tracing
from consent_server.config import ConfigError, load
from consent_server.delivery.runner import run_worker


def main(argv: Sequence[str] | None = None) -> int:
    """Parse configuration, deliver until SIGTERM, return the exit code (2 = bad config)."""
    try:
        settings = load(argv)
        logs.configure(settings.observability.log_level, settings.observability.log_format)
        tracing.setup("consent-worker")
        return asyncio.run(run_worker(settings))
    except ConfigError as exc:
        logs.release_native_stderr()
        print(f"consent-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    finally:
        logs.release_native_stderr()


if __name__ == "__main__":
    sys.exit(main())
