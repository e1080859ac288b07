"""The auth interceptor in process, on handler shapes no RPC uses yet (client streams).

Other workstreams may add streaming admin RPCs (imports, exports); the interceptor
must authenticate them and check the tenant of every streamed request message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import grpc
import pytest

from consent_client.v1 import consent_pb2 as pb
from consent_server.api.auth import AuthInterceptor, current_principal
from consent_server.domain.auth import Role
from consent_server.domain.security import SecurityAuthority
from consent_server.store.repository import RedisConsentStore
from consent_server.store.security import RedisSecurityStore

from .support import create_tenants

SERVICE = "consent.v1.ConsentAdminService"
REQ = pb.CheckConsentRequest


async def _import(requests: AsyncIterator[Any], context: Any) -> pb.CheckConsentResponse:
    n = 0
    async for _ in requests:
        n += 1
    return pb.CheckConsentResponse(topic=f"{n}:{current_principal()}")


async def _echo(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
    async for r in requests:
        yield pb.CheckConsentResponse(topic=r.tenant_id)


async def _list(request: Any, context: Any) -> AsyncIterator[Any]:
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


async def test_client_stream_checks_every_message(server: tuple[str, dict[str, str]]) -> None:
    target, keys = server
    async with grpc.aio.insecure_channel(target) as ch:
        imp = ch.stream_unary(
            f"/{SERVICE}/Import", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        ok = await imp(_stream("acme", "acme"), metadata=_md(keys["acme"]))
        assert ok.topic == "2:" + keys["acme"][3:19]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await imp(_stream("acme", "globex"), metadata=_md(keys["acme"]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await imp(_stream("acme"), metadata=_md(keys["reader"]))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await imp(_stream("acme"))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await imp(_stream("acme", "globex"), metadata=_md(keys["op"]))).topic.startswith(
            "2:"
        )


async def test_bidi_stream_checks_every_message(server: tuple[str, dict[str, str]]) -> None:
    target, keys = server
    async with grpc.aio.insecure_channel(target) as ch:
        echo = ch.stream_stream(
            f"/{SERVICE}/Echo", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        got = [r.topic async for r in echo(_stream("acme", "acme"), metadata=_md(keys["acme"]))]
        assert got == ["acme", "acme"]
        call = echo(_stream("acme", "globex"), metadata=_md(keys["acme"]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_server_stream_is_authenticated(server: tuple[str, dict[str, str]]) -> None:
    target, keys = server
    async with grpc.aio.insecure_channel(target) as ch:
        lst = ch.unary_stream(
            f"/{SERVICE}/List", REQ.SerializeToString, pb.CheckConsentResponse.FromString
        )
        got = [
            r.topic
            async for r in lst(pb.CheckConsentRequest(tenant_id="acme"), metadata=_md(keys["acme"]))
        ]
        assert got == [keys["acme"][3:19]] * 2
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in lst(
                pb.CheckConsentRequest(tenant_id="globex"), metadata=_md(keys["acme"])
            ):
                pass
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        raw = ch.unary_stream(f"/{SERVICE}/List")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in raw(b"\x00", metadata=_md(keys["acme"])):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
