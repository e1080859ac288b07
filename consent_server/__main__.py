"""``python -m consent_server`` / ``consent-server``: start the gRPC server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from consent_server import logs
from consent_server.app import serve
from consent_server.config import ConfigError, load


def main(argv: Sequence[str] | None = None) -> int:
    """Parse configuration, run the server, return the exit code (2 = bad configuration)."""
    try:
        settings = load(argv)
    except ConfigError as exc:
        print(f"consent-server: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.observability.log_level, settings.observability.log_format)
    try:
        return asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"consent-server: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
