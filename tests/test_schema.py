"""The store's schema version: recorded in a new store, checked at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from consent_server.store import keys
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import SchemaMismatch, check_schema, stored_schema

from .support import RedisProcess, run_module


async def test_a_new_store_records_schema_3(store: RedisConsentStore) -> None:
    r: Any = store.client
    assert await stored_schema(r) is None
    assert await check_schema(r) == keys.SCHEMA
    meta = await r.hgetall(keys.META)
    assert meta[b"schema"] == b"3"  # a recorded layout: releases that know only 2 refuse it
    assert meta[b"buckets"] == str(keys.BUCKETS_PER_PARTITION).encode()
    assert await check_schema(r) == keys.SCHEMA  # again: accepted, nothing changes


async def test_round1_data_without_meta_asks_for_consentctl_migrate(
    store: RedisConsentStore,
) -> None:
    r: Any = store.client
    await r.hset("ca:{cp03}:acme:sms:+14155550100:s", mapping={"rev": "1"})
    assert await stored_schema(r) == 1
    with pytest.raises(SchemaMismatch, match="consentctl migrate"):
        await check_schema(r)
    assert not await r.exists(keys.META)  # nothing written


@pytest.mark.parametrize("schema", ["4", "99", "x"])
async def test_an_unknown_or_newer_schema_is_refused(store: RedisConsentStore, schema: str) -> None:
    r: Any = store.client
    await r.hset(keys.META, "schema", schema)
    with pytest.raises(SchemaMismatch, match="this release serves schemas 2 and 3"):
        await check_schema(r)


async def test_other_buckets_are_refused(store: RedisConsentStore) -> None:
    r: Any = store.client
    await r.hset(keys.META, mapping={"schema": "2", "buckets": "7"})
    with pytest.raises(SchemaMismatch, match="buckets"):
        await check_schema(r)


@pytest.mark.e2e
def test_the_server_process_refuses_a_round1_store_with_exit_2(tmp_path: Path) -> None:
    """The real server, on a redis-server holding round-1 data and no schema, does not
    serve: it exits 2 (configuration) and tells the operator to run consentctl migrate;
    nothing is written to the store (it stays migratable)."""
    redis_proc = RedisProcess(tmp_path / "redis").start()
    try:
        r = redis_proc.client()
        r.hset("ca:{cp03}:acme:sms:+14155550100:s", mapping={"rev": "1"})
        env = {
            **os.environ,
            "CONSENT_REDIS_URL": redis_proc.url,
            "CONSENT_LISTEN": "127.0.0.1:0",
            "CONSENT_HTTP_LISTEN": "127.0.0.1:0",
        }
        done = run_module("consent_server", env=env)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "consentctl migrate" in done.stderr
        assert not r.exists(keys.META)
    finally:
        redis_proc.stop()
