"""Shared fixtures: stores on fakeredis and on a real redis-server, and server processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import fakeredis
import grpc
import pytest
import redis.asyncio as aioredis
from hypothesis import settings

from consent_client.v1 import consent_pb2_grpc
from consent_server.store.repository import RedisConsentStore

from .support import (
    TEST_TENANTS,
    RedisProcess,
    ServerProcess,
    create_tenant_everywhere,
    create_tenants,
    tenant_id_for,
)

# Property tests check properties, not speed: hypothesis's per-example deadline turns a
# busy 2-core CI machine into flaky failures, so it is off (performance lives in bench/).
settings.register_profile("consent", deadline=None)
settings.load_profile("consent")


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One private redis-server per test worker process."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture(params=["fakeredis", "redis-server"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisConsentStore]:
    """The repository on the embedded fakeredis and on a real redis-server (flushed)."""
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        proc: RedisProcess = request.getfixturevalue("redis_proc")
        client = aioredis.Redis.from_url(proc.url)
        await client.flushdb()
    s = RedisConsentStore(client, settings_cache_s=0)
    # Tenants exist only once created: the shared ones and this test's own (``tenant``).
    await create_tenants(s, (*TEST_TENANTS, tenant_id_for(request.node)))
    yield s
    await s.aclose()


@pytest.fixture(scope="module", params=["embedded", "redis-server"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The real server process, on the embedded store and on a private redis-server."""
    # These tests observe the accept path (status ACCEPTED right after a send); delivery
    # has its own end-to-end tests (test_delivery_e2e.py) with the inline worker on.
    env: dict[str, str] = {"CONSENT_DELIVERY": "off"}
    redis_proc = None
    if request.param == "redis-server":
        redis_proc = RedisProcess(tmp_path_factory.mktemp("srv-redis")).start()
        env["CONSENT_REDIS_URL"] = redis_proc.url
    srv = ServerProcess(env).start()
    yield srv
    srv.stop()
    if redis_proc:
        redis_proc.stop()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[consent_pb2_grpc.ConsentServiceStub]:
    """A raw generated stub talking to the server process."""
    with grpc.insecure_channel(server.target) as channel:
        yield consent_pb2_grpc.ConsentServiceStub(channel)


@pytest.fixture
def tenant(request: pytest.FixtureRequest) -> Iterator[str]:
    """A tenant id unique to the test, so module-scoped servers need no flushing.

    It exists wherever the test looks: the ``store`` fixture creates it, and this
    fixture creates it in every server process running (the test's module- and
    session-scoped servers are up before a function-scoped fixture) and in every one
    the test starts itself."""
    tenant_id = tenant_id_for(request.node)
    create_tenant_everywhere(tenant_id)
    yield tenant_id
    ServerProcess.wanted.clear()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def create_tenant() -> Iterator[Callable[[str], str]]:
    """Creates a further tenant in the running server processes; returns its id."""

    def make(tenant_id: str) -> str:
        create_tenant_everywhere(tenant_id)
        return tenant_id

    yield make
    ServerProcess.wanted.clear()
