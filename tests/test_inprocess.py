"""gRPC handlers in process: the composition root built on fakeredis, served on a free
port, called with async stubs. The same wiring as the server process, in milliseconds."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.api.admin import ConsentAdminService
from consent_server.app import Services, build
from consent_server.config import load
from consent_server.domain.auth import new_key

from .inprocess import InProcess, serving

WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+91 98765 43210")


@pytest.fixture
async def srv() -> InProcess:  # type: ignore[misc]
    async with serving() as s:
        yield s


async def test_check_opt_out_and_send_are_served_in_process(srv: InProcess) -> None:
    c = srv.consent
    before = await c.CheckConsent(
        pb.CheckConsentRequest(tenant_id="acme", recipient=WA, topic="marketing")
    )
    assert before.allowed and before.status == pb.CONSENT_STATUS_NO_RECORD
    out = await c.OptOut(pb.OptOutRequest(tenant_id="acme", recipient=WA, topic=""))
    assert out.revision >= 1
    after = await c.CheckConsent(
        pb.CheckConsentRequest(tenant_id="acme", recipient=WA, topic="marketing")
    )
    assert not after.allowed and after.decided_by == pb.SCOPE_ALL
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await c.SendIfAllowed(
            pb.SendIfAllowedRequest(
                tenant_id="acme", recipient=WA, topic="marketing", message=pb.Message(text="hi")
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The other tenant never sees acme's opt-out.
    other = await c.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id="globex", recipient=WA, topic="marketing", message=pb.Message(text="hi")
        )
    )
    assert other.message_id


async def test_bad_input_is_mapped_to_invalid_argument_in_process(srv: InProcess) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await srv.consent.CheckConsent(
            pb.CheckConsentRequest(tenant_id="acme", recipient=pb.Recipient(), topic="marketing")
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_admin_calls_reach_each_area_in_process(srv: InProcess) -> None:
    a = srv.admin
    got = await a.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id="acme"))
    assert got.tenant_id == "acme"
    hook = await a.SetWhatsAppWebhook(
        apb.SetWhatsAppWebhookRequest(
            tenant_id="acme",
            verify_token="tok",
            app_secret="secret",
            phone_number_ids=["106540352242922"],
        )
    )
    assert hook.webhook_path == "/whatsapp/acme"
    providers = await a.GetDeliveryProviders(apb.GetDeliveryProvidersRequest(tenant_id="acme"))
    assert isinstance(len(providers.providers), int)
    keys = await a.ListApiKeys(apb.ListApiKeysRequest(tenant_id="acme"))
    assert list(keys.keys) == []


async def test_build_wires_without_starting_anything() -> None:
    services = build(load(["--listen", "127.0.0.1:0"], {"CONSENT_DELIVERY": "off"}))
    assert isinstance(services, Services)
    assert services.port > 0 and services.worker is None and services.http_edge is None
    # Nothing serves until run(): the store was opened, not connected to, and nobody
    # answers on the bound port.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{services.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError):
            await ch.unary_unary("/grpc.health.v1.Health/Check")(
                health_pb2.HealthCheckRequest().SerializeToString(), timeout=0.5
            )
    await services.server.stop(None)
    await services.store.aclose()


async def test_leaving_drains_and_reports_not_serving() -> None:
    async with serving() as s:
        servicer = s.services.health
        resp = await servicer.Check(health_pb2.HealthCheckRequest(), None)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    resp = await servicer.Check(health_pb2.HealthCheckRequest(), None)
    assert resp.status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_admin_servicer_is_composed_not_inherited() -> None:
    # One servicer delegating to per-area handlers: no mixins between it and the
    # generated base (whose methods answer UNIMPLEMENTED).
    assert ConsentAdminService.__mro__ == (
        ConsentAdminService,
        admin_pb2_grpc.ConsentAdminServiceServicer,
        object,
    )


def test_admin_servicer_serves_every_rpc_of_the_service() -> None:
    service = apb.DESCRIPTOR.services_by_name["ConsentAdminService"]
    missing = [m.name for m in service.methods if m.name not in vars(ConsentAdminService)]
    assert missing == []


async def test_authentication_and_the_bootstrap_key_in_process() -> None:
    _, token, _ = new_key()
    env = {"CONSENT_REQUIRE_AUTH": "1", "CONSENT_BOOTSTRAP_ADMIN_KEY": token}
    async with serving(env) as srv:
        request = apb.ListApiKeysRequest(tenant_id="acme")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await srv.admin.ListApiKeys(request)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # run() installed the bootstrap key before serving: the first call can use it.
        made = await srv.admin.CreateApiKey(
            apb.CreateApiKeyRequest(tenant_id="acme", role=apb.API_KEY_ROLE_READER),
            metadata=(("authorization", f"Bearer {token}"),),
        )
        assert made.key.tenant_id == "acme" and made.api_key.startswith("ck_")


async def test_shutdown_cancels_a_task_that_swallows_one_cancel() -> None:
    """A background task that survives its first cancel (as asyncio.wait_for on 3.11
    can, when the cancel lands as its inner call completes) must not hang the drain."""
    import asyncio

    from consent_server.app import _cancel_quietly

    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    drain = asyncio.create_task(_cancel_quietly(task))
    done, _ = await asyncio.wait({drain}, timeout=5)
    assert drain in done, "the drain waited on a task that swallowed its cancel"
    assert task.cancelled() and swallowed == 1
