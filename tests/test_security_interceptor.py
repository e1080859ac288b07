"""The auth interceptor in process, on handler shapes no RPC of ours has: streams.

Every consent.v1 RPC is unary, and the streaming services (health, reflection) are open
and never wrapped. A streaming handler on a checked service would be an RPC the
interceptor cannot check the tenant of, so it is refused (UNIMPLEMENTED, its handler
never runs) rather than served unchecked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import grpc
import pytest

from consent_client.v1 import consent_pb2 as pb
from consent_server.api.auth import AuthInterceptor, current_principal
from consent_server.api.errors import abort
from consent_server.domain.auth import Role
from consent_server.domain.security import SecurityAuthority
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .support import create_tenants

SERVICE = "consent.v1.ConsentAdminService"
REQ = pb.CheckConsentRequest
CALLS: list[str] = []  # the handlers that ran
SECURITY: list[SecurityAuthority] = []  # the running fixture's


async def _import(requests: AsyncIterator[Any], context: Any) -> pb.CheckConsentResponse:
    CALLS.append("Import")
    n = 0
    try:
        async for _ in requests:
            n += 1
    except Exception as exc:  # as the real handlers do: one error mapper
        await abort(context, exc)
    return pb.CheckConsentResponse(topic=f"{n}:{current_principal()}")


async def _echo(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    CALLS.append("Echo")
    async for r in requests:
        yield pb.CheckConsentResponse(topic=r.tenant_id)


async def _list(request: Any, context: Any) -> AsyncIterator[Any]:
    CALLS.append("List")
    for _ in range(2):
        yield pb.CheckConsentResponse(topic=current_principal())


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, str]]]:
    store = RedisConsentStore(fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer()))
    await create_tenants(store)
    security = SecurityAuthority(RedisSecurityStore(store.client, store.tombstones), store)
    keys = {}
    for name, tenant, role in (("acme", "acme", Role.ADMIN), ("reader", "acme", Role.READER),
                               ("op", "*", Role.ADMIN)):  # fmt: skip
        made = await security.create_key(
            tenant_id=tenant, role=role, description="", rate_limit_per_s=0,
            created_by="t", caller=None,
        )  # fmt: skip
        keys[name] = made.api_key
    SECURITY[:] = [security]
    srv = grpc.aio.server(interceptors=[AuthInterceptor(security, required=True)])
    kw = {"request_deserializer": REQ.FromString, "response_serializer": REQ.SerializeToString}
    srv.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Import": grpc.stream_unary_rpc_method_handler(_import, **kw),  # type: ignore[arg-type]
                    "Echo": grpc.stream_stream_rpc_method_handler(_echo, **kw),  # type: ignore[arg-type]
                    "List": grpc.unary_stream_rpc_method_handler(_list, **kw),  # type: ignore[arg-type]
                },
            ),
        )
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    await srv.start()
    yield f"127.0.0.1:{port}", keys
    await srv.stop(0)
    await store.aclose()


def _md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def _stream(*tenants: str) -> AsyncIterator[pb.CheckConsentRequest]:
    for t in tenants:
        yield pb.CheckConsentRequest(tenant_id=t)


async def _complete(method: Any, shape: str, key: str) -> None:
    """Make the call with a valid operator key and read it to the end."""
    request = pb.CheckConsentRequest(tenant_id="acme")
    call = method(_stream("acme") if shape.startswith("stream") else request, metadata=_md(key))
    if shape.endswith("stream"):
        async for _ in call:
            pass
    else:
        await call


async def test_bidirectional_streams_are_refused_not_served_unchecked(
    server: tuple[str, dict[str, str]],
) -> None:
    target, keys = server
    CALLS.clear()
    async with grpc.aio.insecure_channel(target) as ch:
        method = ch.stream_stream(
            f"/{SERVICE}/Echo", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _complete(method, "stream_stream", keys["op"])
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert CALLS == [], "a streaming handler ran"


@pytest.mark.parametrize(("name", "shape"), [("Import", "stream_unary"), ("List", "unary_stream")])
async def test_client_and_server_streams_are_checked_like_unary_calls(
    server: tuple[str, dict[str, str]], name: str, shape: str
) -> None:
    target, keys = server
    async with grpc.aio.insecure_channel(target) as ch:
        method = getattr(ch, shape)(
            f"/{SERVICE}/{name}", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        CALLS.clear()
        await _complete(method, shape, keys["op"])
        await _complete(method, shape, keys["acme"])
        assert list(CALLS) == [name, name]
        CALLS.clear()
        for key, code in (
            (keys["reader"], grpc.StatusCode.PERMISSION_DENIED),  # admin service: admin only
            ("ck_0000000000000000_" + "A" * 43, grpc.StatusCode.UNAUTHENTICATED),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await _complete(method, shape, key)
            assert err.value.code() == code
        assert CALLS == [], "a refused stream's handler ran"


async def test_a_client_stream_is_admitted_on_its_first_message(
    server: tuple[str, dict[str, str]],
) -> None:
    target, keys = server
    async with grpc.aio.insecure_channel(target) as ch:
        method = ch.stream_unary(
            f"/{SERVICE}/Import", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        CALLS.clear()
        # The acme admin key may not open a stream for globex: the handler never runs.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(_stream("globex", "acme"), metadata=_md(keys["acme"]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert CALLS == []
        # Every message reaches the handler once, the first one included.
        reply = await method(_stream("acme", "", ""), metadata=_md(keys["acme"]))
        assert reply.topic.startswith("3:")
        # An empty stream is still authenticated.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(_stream(), metadata=_md("ck_0000000000000000_" + "A" * 43))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_key_revoked_during_a_client_stream_stops_it(
    server: tuple[str, dict[str, str]],
) -> None:
    """Every later message is authenticated again (and pays its rate cost)."""
    target, keys = server
    key_id = keys["acme"].split("_")[1]

    async def revoking() -> AsyncIterator[pb.CheckConsentRequest]:
        yield pb.CheckConsentRequest(tenant_id="acme")
        await asyncio.sleep(0.3)  # the server has admitted the stream by now
        await SECURITY[0].revoke_key("acme", key_id)
        yield pb.CheckConsentRequest()

    async with grpc.aio.insecure_channel(target) as ch:
        method = ch.stream_unary(
            f"/{SERVICE}/Import", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        CALLS.clear()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(revoking(), metadata=_md(keys["acme"]))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert CALLS == ["Import"]  # admitted first, stopped at the second message
