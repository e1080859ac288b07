"""consentctl migrate: upgrade a round-1 (schema 1) store to the compact layout.

    consentctl migrate --redis-url redis://localhost:6379 [--redis-cluster] [--json]

Talks to Redis directly (the server refuses to start on schema-1 data, so there is no
server to ask). Idempotent and resumable: each recipient moves in one atomic step, and
a second run finishes what an interrupted one left (store/migrate.py). Stop every
server and delivery worker first: the migration is not online.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

import typer

from consent_server.store.connect import open_store
from consent_server.store.migrate import MigrationSummary, migrate

from .common import EXIT_REFUSED, EXIT_USAGE, fail, out, print_json


def run_migrate(
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", envvar="CONSENT_REDIS_URL", help="the store to migrate"),
    ] = None,
    redis_cluster: Annotated[
        bool, typer.Option("--redis-cluster", envvar="CONSENT_REDIS_CLUSTER", help="Redis Cluster")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the summary as JSON")] = False,
) -> None:
    """Upgrade round-1 data to the compact layout (schema 2), then record the schema."""
    if not redis_url:
        fail("--redis-url (or CONSENT_REDIS_URL) is required: migrate talks to Redis", EXIT_USAGE)

    async def go() -> MigrationSummary:
        store = open_store(redis_url, cluster=redis_cluster)
        try:
            return await migrate(store.client)
        finally:
            await store.aclose()

    try:
        summary = asyncio.run(go())
    except ValueError as exc:
        fail(str(exc), EXIT_REFUSED)
    if as_json:
        print_json(dataclasses.asdict(summary))
    else:
        out.print(
            f"migrated {summary.recipients} recipients ({summary.records} records, "
            f"{summary.events} events); {summary.skipped} already migrated",
            markup=False,
        )
        for name in summary.unrecognised:
            out.print(f"not migrated (not a round-1 recipient of 16 partitions): {name}")
        if summary.schema is not None:
            out.print(f"schema {summary.schema} recorded: the server can start", markup=False)
    if summary.schema is None:
        raise typer.Exit(EXIT_REFUSED)


def register(root: typer.Typer) -> None:
    """Mount ``migrate`` on the root command."""
    root.command("migrate")(run_migrate)
