"""Shared fixtures: stores on fakeredis and on a real redis-server, and server processes."""

from __future__ import annotations

import inspect
import types
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import fakeredis
import grpc
import pytest
import redis.asyncio as aioredis
from hypothesis import settings

from consent_client.v1 import consent_pb2_grpc
from consent_server.store import keys
from consent_server.store.repository import RedisConsentStore
from consent_server.store.schema import DEFAULT_PARTITIONS

from . import cluster_support
from .client_fake import FakeConsentService
from .cluster_support import RedisClusterProcesses
from .support import (
    TEST_TENANTS,
    RedisProcess,
    ServerProcess,
    create_tenant_everywhere,
    create_tenants,
    tenant_id_for,
)

# The cluster suites' fixtures (tests/cluster_support.py): one three-primary cluster per
# module that asks for it, a fresh store on it for each test.
cluster = cluster_support.cluster
cluster_store = cluster_support.cluster_store

# Property tests check properties, not speed: hypothesis's per-example deadline turns a
# busy 2-core CI machine into flaky failures, so it is off (performance lives in bench/).
settings.register_profile("consent", deadline=None)
settings.load_profile("consent")


@pytest.fixture(autouse=True)
def legacy_layout_between_tests() -> Iterator[None]:
    """Every test starts on the legacy 16-partition layout and leaves it so: a test (or
    an in-process server) that reads a store's recorded layout changes the process's."""
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)
    yield
    keys.configure(keys.LEGACY_PARTITIONS, spread=False)


@pytest.fixture(scope="session")
def redis_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """One private redis-server per test worker process."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield proc
    proc.stop()


@pytest.fixture(params=["fakeredis", "redis-server"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisConsentStore]:
    """The repository on the embedded fakeredis and on a real redis-server (flushed).

    Each runs one layout, so every store test covers both: fakeredis the legacy 16
    partitions ({cp00}..{cp15}, what stores created before recorded counts use), the
    real Redis a new store's default (128 partitions, slot-spread tags)."""
    if request.param == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    else:
        proc: RedisProcess = request.getfixturevalue("redis_proc")
        client = aioredis.Redis.from_url(proc.url)
        await client.flushdb()
        keys.configure(DEFAULT_PARTITIONS, spread=True)
    s = RedisConsentStore(client, settings_cache_s=0)
    # Tenants exist only once created: the shared ones and this test's own (``tenant``).
    await create_tenants(s, (*TEST_TENANTS, tenant_id_for(request.node)))
    yield s
    if request.param != "fakeredis":
        # This worker's redis-server is shared with later tests, some of which start a
        # server process on it: leave no partition keys without the ca:meta that would
        # name their layout (a server refuses such a store rather than hide them).
        await client.flushdb()
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


@pytest.fixture
def fake() -> Iterator[FakeConsentService]:
    """The client suites' fake (tests/client_fake.py) with no upstream: every call plays
    its script, or is UNIMPLEMENTED."""
    f = FakeConsentService().start()
    yield f
    f.stop()


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[FakeConsentService]:
    """The fake in front of the real server: scripted failures, otherwise forwarded."""
    f = FakeConsentService(upstream=server.target).start()
    yield f
    f.stop()


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


# --- Partitioning: what each test needs -------------------------------------------
# Like redis-py's suites, every test is marked by what it needs, so `make test-fast`
# can run the pure and in-process tests alone (`-m fast`'s complement below). The
# marks are derived from the code a test runs: its own function, the module-level
# helpers it calls, and every fixture in its closure. A parametrized fixture's
# embedded variant (fakeredis, embedded) does not count as needing a redis-server.
_NEEDS: dict[str, tuple[str, ...]] = {
    "redis": ("RedisProcess(", "redis_proc"),
    "cluster": ("RedisClusterProcesses(",),
    "browser": ("CHROMIUM", "chromium"),
    "e2e": ("ServerProcess(", "subprocess.", "sys.executable"),
}
_EMBEDDED_PARAMS = frozenset({"fakeredis", "embedded"})


def _source(obj: object) -> str:
    try:
        return inspect.getsource(obj)  # type: ignore[arg-type]
    except (OSError, TypeError):
        return ""


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


_SOURCES: dict[object, list[str]] = {}


def _function_sources(fn: Callable[..., object]) -> list[str]:
    """The source of ``fn`` and of the module-level functions it calls, transitively."""
    if fn not in _SOURCES:
        _SOURCES[fn] = _uncached_sources(fn)
    return _SOURCES[fn]


def _uncached_sources(fn: Callable[..., object]) -> list[str]:
    module = inspect.getmodule(fn)
    out: list[str] = []
    seen: set[object] = set()
    todo: list[object] = [fn]
    while todo:
        f = inspect.unwrap(todo.pop())  # type: ignore[arg-type]
        if f in seen or not isinstance(f, types.FunctionType):
            continue
        seen.add(f)
        out.append(_source(f))
        for name in _code_names(f.__code__):
            target = getattr(module, name, None)
            if isinstance(target, types.FunctionType) and inspect.getmodule(target) is module:
                todo.append(target)
            elif isinstance(target, type) and inspect.getmodule(target) is module:
                out.append(_source(target))
    return out


def _needs(item: pytest.Item) -> set[str]:
    sources: list[str] = []
    function = getattr(item, "function", None)
    if function is not None:
        sources += _function_sources(function)
    params = getattr(getattr(item, "callspec", None), "params", {})
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in info.name2fixturedefs.get(name, ()) if info else ():
            text = "\n".join(_function_sources(fixturedef.func))
            if isinstance(params.get(name), str) and params[name] in _EMBEDDED_PARAMS:
                text = text.replace("redis_proc", "").replace("RedisProcess(", "")
            sources.append(text)
    code = "\n".join(sources)
    return {mark for mark, tokens in _NEEDS.items() if any(t in code for t in tokens)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in sorted(_needs(item) - {m.name for m in item.iter_markers()}):
            item.add_marker(getattr(pytest.mark, mark))


# The marks are derived, so check them where it matters: a test that starts a
# redis-server, a cluster or a server process without the mark fails, and the
# derivation above gets fixed instead of `make test-fast` quietly needing Redis.
_RUNNING: list[pytest.Item] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    _RUNNING.append(item)
    try:
        return (yield)
    finally:
        _RUNNING.pop()


def _guard_start(cls: type, mark: str) -> None:
    original = cls.start  # type: ignore[attr-defined]

    def start(self: object, *args: object, **kwargs: object) -> object:
        if _RUNNING and _RUNNING[-1].get_closest_marker(mark) is None:
            raise AssertionError(
                f"{_RUNNING[-1].nodeid} starts {cls.__name__} but is not marked {mark!r}: "
                "teach tests/conftest.py's _NEEDS to see it, or mark the test"
            )
        return original(self, *args, **kwargs)

    cls.start = start  # type: ignore[attr-defined]


_guard_start(RedisProcess, "redis")
_guard_start(ServerProcess, "e2e")
_guard_start(RedisClusterProcesses, "cluster")


@pytest.fixture
def create_tenant() -> Iterator[Callable[[str], str]]:
    """Creates a further tenant in the running server processes; returns its id."""

    def make(tenant_id: str) -> str:
        create_tenant_everywhere(tenant_id)
        return tenant_id

    yield make
    ServerProcess.wanted.clear()
