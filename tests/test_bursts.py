"""Bursts of concurrent calls on a fresh channel: the extra calls wait on the client,
none is refused. Against the real server process on a private redis-server, with one
process and with two under the supervisor."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pbg

from .support import RedisProcess, ServerProcess

CHECK = pb.CheckConsentRequest(
    tenant_id="acme",
    recipient=pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+14155550100"),
    topic="marketing",
)


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("burst-redis")).start()
    yield proc
    proc.stop()


def _server(redis_srv: RedisProcess, **env: str) -> ServerProcess:
    """A started server on the module's redis-server with delivery off (the bursts are
    about the API's calls, not about delivering what they accept), plus ``env``."""
    return ServerProcess(
        {"CONSENT_REDIS_URL": redis_srv.url, "CONSENT_DELIVERY": "off", **env}
    ).start()


SEND = pb.SendIfAllowedRequest(
    tenant_id="acme",
    recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550101"),
    topic="order_updates",
    message=pb.Message(text="Your order is on its way."),
)


async def _burst(target: str, calls: int, send: bool = False) -> Counter[str]:
    # A channel of its own (not a connection shared with earlier channels), so that the
    # calls start before the client has seen the server's SETTINGS or any answer.
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(target, options=options) as ch:
        stub = pbg.ConsentServiceStub(ch)
        results = await asyncio.gather(
            *(
                stub.SendIfAllowed(SEND, timeout=60)
                if send
                else stub.CheckConsent(CHECK, timeout=60)
                for _ in range(calls)
            ),
            return_exceptions=True,
        )
    return Counter(
        f"{r.code().name}: {r.details()}" if isinstance(r, grpc.aio.AioRpcError) else "ok"
        for r in results
    )


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_500_concurrent_calls_on_a_fresh_channel_all_succeed(
    redis_srv: RedisProcess, processes: str
) -> None:
    # 500 is five times the default CONSENT_MAX_CONCURRENT_STREAMS (100).
    srv = _server(redis_srv, CONSENT_PROCESSES=processes)
    try:
        for _ in range(3):
            assert await _burst(srv.target, 500) == Counter({"ok": 500})
    finally:
        srv.stop()


@pytest.mark.parametrize("uvloop", ["0", "1"])
async def test_500_concurrent_sends_and_checks_on_one_shared_redis_connection(
    redis_srv: RedisProcess, uvloop: str
) -> None:
    """500 calls at once all go through the one multiplexed Redis connection (on either
    event loop): every check answers, every send is accepted and lands in the outbox."""
    srv = _server(redis_srv, CONSENT_PROCESSES="1", CONSENT_UVLOOP=uvloop)
    client = redis_srv.client()
    try:

        def outbox() -> int:
            return sum(int(client.xlen(k)) for k in client.scan_iter(match="ca:*:outbox"))

        before = outbox()
        assert await _burst(srv.target, 500, send=True) == Counter({"ok": 500})
        assert outbox() - before == 500
        assert await _burst(srv.target, 500) == Counter({"ok": 500})
    finally:
        client.close()
        srv.stop()


async def test_calls_beyond_the_process_limit_are_refused_resource_exhausted(
    redis_srv: RedisProcess,
) -> None:
    """The backstop on handlers per process: with Redis paused, 8 calls hang in the
    server and every further one is answered RESOURCE_EXHAUSTED at once."""
    srv = _server(redis_srv, CONSENT_MAX_CONCURRENT_CALLS="8", CONSENT_REDIS_TIMEOUT="30")
    options = [("grpc.use_local_subchannel_pool", 1)]
    try:
        async with grpc.aio.insecure_channel(srv.target, options=options) as ch:
            stub = pbg.ConsentServiceStub(ch)
            redis_srv.pause()
            try:
                calls = [
                    asyncio.ensure_future(stub.CheckConsent(CHECK, timeout=60)) for _ in range(20)
                ]
                refused: list[grpc.aio.AioRpcError] = []
                for done in asyncio.as_completed(calls):
                    try:
                        await done
                    except grpc.aio.AioRpcError as exc:
                        refused.append(exc)
                    if len(refused) == 12:
                        break
                assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            finally:
                redis_srv.resume_if_paused()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert sum(1 for r in results if isinstance(r, pb.CheckConsentResponse)) == 8
            assert (await stub.CheckConsent(CHECK, timeout=10)).allowed  # and it serves on
    finally:
        srv.stop()
