"""The HTTP edge end to end: real HTTP requests (httpx over a socket) to the real server
process, consent checked over gRPC, on the embedded store and on a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2

from consent_client import AsyncConsentClient, ConsentClient
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc as apb_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc
from consent_server.domain.whatsapp import sign

from .fake_provider import FakeProvider, fake_provider
from .security_support import bad_fields
from .support import RedisProcess, ServerProcess, run_module

FIXTURES = Path(__file__).parent / "fixtures" / "whatsapp"
APP_SECRET = "meta-app-secret-0123456789"
VERIFY_TOKEN = "verify-me-42"
WA_ID = "16505551234"
LINK_SECRET = "a-test-link-secret-that-is-long-enough-0123456789"
FIXTURE_NUMBER = b"106540352242922"  # the fixtures' metadata.phone_number_id


def number_for(tenant: str) -> str:
    """A business phone number id of the tenant's own (a number has one tenant)."""
    return str(int(hashlib.sha1(tenant.encode()).hexdigest()[:12], 16))


pytestmark = pytest.mark.xdist_group("edge_http")


@pytest.fixture(scope="module", params=["embedded", "redis-server"])
def edge_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """The server with its HTTP edge; on redis-server with a configured link secret,
    on the embedded store with the secret it generates."""
    # The receipts test delivers to a fake provider on loopback: the operator allows it.
    env: dict[str, str] = {"CONSENT_EGRESS_ALLOW": "127.0.0.1"}
    redis_proc = None
    if request.param == "redis-server":
        redis_proc = RedisProcess(tmp_path_factory.mktemp("edge-redis")).start()
        env["CONSENT_REDIS_URL"] = redis_proc.url
        env["CONSENT_LINK_SECRET"] = LINK_SECRET
    srv = ServerProcess(env, http=True).start()
    yield srv
    srv.stop()
    if redis_proc:
        redis_proc.stop()


@pytest.fixture(scope="module")
def channel(edge_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(edge_server.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def consent(channel: grpc.Channel) -> pb_grpc.ConsentServiceStub:
    return pb_grpc.ConsentServiceStub(channel)


@pytest.fixture(scope="module")
def admin(channel: grpc.Channel) -> apb_grpc.ConsentAdminServiceStub:
    return apb_grpc.ConsentAdminServiceStub(channel)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with fake_provider() as f:
        yield f


@pytest.fixture
def http(edge_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=edge_server.http_url, timeout=10) as client:
        yield client


@pytest.fixture
def webhook(tenant: str, admin: apb_grpc.ConsentAdminServiceStub) -> str:
    """The tenant's webhook path, configured through the admin RPC."""
    resp = admin.SetWhatsAppWebhook(
        apb.SetWhatsAppWebhookRequest(
            tenant_id=tenant,
            verify_token=VERIFY_TOKEN,
            app_secret=APP_SECRET,
            phone_number_ids=[number_for(tenant)],
        )
    )
    assert resp.webhook_path == f"/whatsapp/{tenant}" and resp.app_webhook_path == "/whatsapp"
    return resp.webhook_path


def wa(address: str = WA_ID) -> pb.Recipient:
    return pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address=address)


def email(address: str = "jane.doe@example.com") -> pb.Recipient:
    return pb.Recipient(channel=pb.CHANNEL_EMAIL, address=address)


def events(
    consent: pb_grpc.ConsentServiceStub, tenant: str, rcpt: pb.Recipient
) -> list[pb.ConsentEvent]:
    resp = consent.ListConsentEvents(pb.ListConsentEventsRequest(tenant_id=tenant, recipient=rcpt))
    return list(resp.events)


def check(
    consent: pb_grpc.ConsentServiceStub, tenant: str, rcpt: pb.Recipient, topic: str
) -> pb.CheckConsentResponse:
    return consent.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=rcpt, topic=topic)
    )


def post_signed(
    http: httpx.Client, path: str, body: bytes, secret: str = APP_SECRET
) -> httpx.Response:
    """POST signed; a fixture's phone number id becomes the path tenant's own."""
    if path.count("/") == 2:
        body = body.replace(FIXTURE_NUMBER, number_for(path.rsplit("/", 1)[1]).encode())
    return http.post(
        path,
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)},
    )


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# -- WhatsApp -------------------------------------------------------------------------------


def test_verification_handshake(http: httpx.Client, webhook: str, tenant: str) -> None:
    ok = http.get(
        webhook,
        params={
            "hub.mode": "subscribe",
            "hub.verify_token": VERIFY_TOKEN,
            "hub.challenge": "1158201444",
        },
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = http.get(
        webhook, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"}
    )
    assert wrong.status_code == 403 and wrong.text != "1"
    nobody = http.get(
        "/whatsapp/no-such-tenant-here",
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
    )
    assert nobody.status_code == 404


def test_signature_rejected_records_nothing(
    http: httpx.Client, webhook: str, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    body = fixture("user_preferences_stop.json")
    missing = http.post(webhook, content=body, headers={"Content-Type": "application/json"})
    wrong_secret = post_signed(http, webhook, body, secret="not-the-app-secret")
    tampered = http.post(
        webhook,
        content=body.replace(b'"stop"', b'"resume"'),
        headers={"X-Hub-Signature-256": sign(APP_SECRET, body)},
    )
    garbage = http.post(webhook, content=body, headers={"X-Hub-Signature-256": "sha256=zz"})
    assert [r.status_code for r in (missing, wrong_secret, tampered, garbage)] == [401] * 4
    assert events(consent, tenant, wa()) == []
    assert post_signed(http, webhook, body).status_code == 200
    assert len(events(consent, tenant, wa())) == 1


def deliver_whatsapp(
    consent: pb_grpc.ConsentServiceStub,
    admin: apb_grpc.ConsentAdminServiceStub,
    tenant: str,
    fake: FakeProvider,
) -> pb.GetMessageStatusResponse:
    """A message really sent to WA_ID through the tenant's whatsapp_cloud provider (a
    local fake of the Graph API), once delivered: its provider id is the wamid."""
    admin.SetDeliveryProvider(
        apb.SetDeliveryProviderRequest(
            tenant_id=tenant,
            provider=apb.DeliveryProvider(
                channel=pb.CHANNEL_WHATSAPP,
                whatsapp_cloud=apb.WhatsAppCloudProvider(
                    base_url=fake.url, phone_number_id=number_for(tenant), access_token="t"
                ),
            ),
        )
    )
    sent = consent.SendIfAllowed(
        pb.SendIfAllowedRequest(
            tenant_id=tenant, recipient=wa(), topic="orders", message=pb.Message(text="Shipped")
        )
    )
    deadline = time.monotonic() + 20
    while True:
        status = consent.GetMessageStatus(
            pb.GetMessageStatusRequest(tenant_id=tenant, message_id=sent.message_id)
        )
        if status.provider_message_id or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert status.provider_message_id, status
    return status


def status_failed(wamid: str) -> bytes:
    return fixture("status_failed_131050.json").replace(
        b"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI4NjA1NkQ3RTY0QzQ1NkNERjYA", wamid.encode()
    )


def test_status_131050_opts_out_of_marketing_once(
    http: httpx.Client,
    webhook: str,
    tenant: str,
    consent: pb_grpc.ConsentServiceStub,
    admin: apb_grpc.ConsentAdminServiceStub,
    fake: FakeProvider,
) -> None:
    wamid = deliver_whatsapp(consent, admin, tenant, fake).provider_message_id
    body = status_failed(wamid)
    for _ in range(3):  # WhatsApp redelivers
        assert post_signed(http, webhook, body).status_code == 200
    marketing = check(consent, tenant, wa(), "marketing")
    assert not marketing.allowed and marketing.source == pb.SOURCE_PROVIDER
    assert check(consent, tenant, wa(), "order_updates").allowed
    [event] = [e for e in events(consent, tenant, wa()) if e.source == pb.SOURCE_PROVIDER]
    assert (event.action, event.topic, event.source) == (
        pb.CONSENT_ACTION_OPT_OUT,
        "marketing",
        pb.SOURCE_PROVIDER,
    )
    assert event.event_id == f"wa.131050.{wamid}"
    assert "131050" in event.evidence


def test_a_131050_for_a_message_never_sent_changes_nothing_and_is_kept(
    http: httpx.Client,
    webhook: str,
    tenant: str,
    consent: pb_grpc.ConsentServiceStub,
    admin: apb_grpc.ConsentAdminServiceStub,
) -> None:
    """Whoever holds the app secret can claim any wamid failed with 131050: a claim
    about a message this tenant did not send opts nobody out. It is kept for an
    operator, who may replay it (vouching that the message was the tenant's)."""
    assert post_signed(http, webhook, status_failed("wamid.never-sent-by-us")).status_code == 200
    assert check(consent, tenant, wa(), "marketing").allowed
    assert events(consent, tenant, wa()) == []
    listed = admin.ListUnappliedNotifications(
        apb.ListUnappliedNotificationsRequest(tenant_id=tenant)
    )
    [item] = listed.notifications
    assert (item.reason, item.kind, listed.total) == ("unknown_message", "statuses", 1)
    assert "wamid.never-sent-by-us" in item.raw
    replayed = admin.ReplayUnappliedNotification(
        apb.ReplayUnappliedNotificationRequest(tenant_id=tenant, id=item.id)
    )
    assert replayed.applied and not check(consent, tenant, wa(), "marketing").allowed
    assert not admin.ListUnappliedNotifications(
        apb.ListUnappliedNotificationsRequest(tenant_id=tenant)
    ).notifications


def test_an_entry_for_another_number_changes_nothing(
    http: httpx.Client, webhook: str, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    """Tenants sharing one Meta app secret cannot write into each other: a notification
    for a number the path tenant did not register is refused (403, so Meta keeps
    redelivering it until the right tenant registers the number)."""
    body = fixture("text_stop.json").replace(FIXTURE_NUMBER, b"123456789")
    resp = http.post(
        webhook,
        content=body,
        headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(APP_SECRET, body)},
    )
    assert resp.status_code == 403
    assert check(consent, tenant, wa(), "marketing").allowed
    assert events(consent, tenant, wa()) == []


def test_user_preferences_stop_then_resume(
    http: httpx.Client, webhook: str, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    stop, resume = fixture("user_preferences_stop.json"), fixture("user_preferences_resume.json")
    assert post_signed(http, webhook, stop).status_code == 200
    assert not check(consent, tenant, wa(), "marketing").allowed
    assert post_signed(http, webhook, resume).status_code == 200
    after = check(consent, tenant, wa(), "marketing")
    assert after.allowed and after.status == pb.CONSENT_STATUS_OPTED_IN
    assert after.source == pb.SOURCE_PROVIDER
    # A late redelivery of the stop changes nothing (same event id: a duplicate).
    assert post_signed(http, webhook, stop).status_code == 200
    assert check(consent, tenant, wa(), "marketing").allowed
    evs = events(consent, tenant, wa())
    assert [(e.action, e.source) for e in evs] == [
        (pb.CONSENT_ACTION_OPT_IN, pb.SOURCE_PROVIDER),
        (pb.CONSENT_ACTION_OPT_OUT, pb.SOURCE_PROVIDER),
    ]
    assert evs[1].occurred_at.seconds == 1749417000  # integer timestamp from the payload


def test_replies_become_opt_outs_through_handle_inbound(
    http: httpx.Client,
    webhook: str,
    tenant: str,
    consent: pb_grpc.ConsentServiceStub,
    edge_server: ServerProcess,
) -> None:
    """Text STOP, a quick-reply button and an interactive button_reply run
    HandleInboundMessage's use case: keyword/button matching, the wamid as event id
    (a redelivery adds nothing), the webhook recorded as the principal."""
    assert post_signed(http, webhook, fixture("text_stop.json")).status_code == 200
    blocked = check(consent, tenant, wa(), "marketing")
    assert not blocked.allowed and blocked.decided_by == pb.SCOPE_ALL
    assert blocked.source == pb.SOURCE_KEYWORD
    # WhatsApp redelivers: nothing new is recorded.
    assert post_signed(http, webhook, fixture("text_stop.json")).status_code == 200
    assert len(events(consent, tenant, wa())) == 1

    assert post_signed(http, webhook, fixture("button_unsubscribe.json")).status_code == 200
    # An interactive reply whose id is no configured payload does nothing, even though
    # its title is "Unsubscribe": a button's title is the business's label, not the
    # customer's words. A tapped configured button is recorded as SOURCE_BUTTON.
    reply = fixture("interactive_button_reply.json")
    assert post_signed(http, webhook, reply).status_code == 200
    evs = events(consent, tenant, wa())
    assert [(e.action, e.source, e.topic) for e in evs] == [  # newest first
        (pb.CONSENT_ACTION_OPT_OUT, pb.SOURCE_BUTTON, ""),
        (pb.CONSENT_ACTION_OPT_OUT, pb.SOURCE_KEYWORD, ""),
    ]
    assert {e.principal for e in evs} == {"whatsapp-webhook"}
    assert [e.event_id for e in evs][-1].startswith("wamid.")
    assert not any(WA_ID in ln for ln in edge_server.lines)  # the sender is masked in logs


def test_unknown_fields_and_delivery_receipts_answer_200(
    http: httpx.Client, webhook: str, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    for name in ("mixed_unknown.json", "status_delivered.json"):
        assert post_signed(http, webhook, fixture(name)).status_code == 200
    assert post_signed(http, webhook, b'{"object": "whatsapp_business_account"}').status_code == 200
    assert events(consent, tenant, wa()) == []


def test_malformed_and_oversized_bodies(http: httpx.Client, webhook: str) -> None:
    assert post_signed(http, webhook, b"{not json").status_code == 400
    assert post_signed(http, webhook, b"[1, 2]").status_code == 400
    big = b'{"entry": [], "pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert post_signed(http, webhook, big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        yield b'{"entry": [], "pad": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    streamed = http.post(
        webhook, content=chunks(), headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}
    )
    assert streamed.status_code == 413


def test_store_down_answers_503_so_whatsapp_retries(tmp_path: Path) -> None:
    redis_proc = RedisProcess(tmp_path / "redis").start()
    srv = ServerProcess(
        {"CONSENT_REDIS_URL": redis_proc.url, "CONSENT_REDIS_TIMEOUT": "0.3"}, http=True
    ).start()
    try:
        with grpc.insecure_channel(srv.target) as ch:
            apb_grpc.ConsentAdminServiceStub(ch).SetWhatsAppWebhook(
                apb.SetWhatsAppWebhookRequest(
                    tenant_id="acme",
                    verify_token=VERIFY_TOKEN,
                    app_secret=APP_SECRET,
                    phone_number_ids=[number_for("acme")],
                )
            )
        body = fixture("user_preferences_stop.json")
        with httpx.Client(base_url=srv.http_url, timeout=10) as http:
            assert post_signed(http, "/whatsapp/acme", body).status_code == 200
            redis_proc.kill()
            assert post_signed(http, "/whatsapp/acme", body).status_code == 503
            # The link secret lives in the store (none configured): fail closed, 503.
            link = http.get("/u/" + "A" * 120)
            assert link.status_code == 503 and "try again" in link.text
    finally:
        srv.stop()
        redis_proc.stop()


def test_admin_webhook_rpcs(admin: apb_grpc.ConsentAdminServiceStub, tenant: str) -> None:
    assert not admin.GetWhatsAppWebhook(apb.GetWhatsAppWebhookRequest(tenant_id=tenant)).configured
    admin.SetWhatsAppWebhook(
        apb.SetWhatsAppWebhookRequest(
            tenant_id=tenant,
            verify_token="v",
            app_secret="s3cr3t",
            phone_number_ids=[number_for(tenant)],
            waba_id="102290129340398",
        )
    )
    got = admin.GetWhatsAppWebhook(apb.GetWhatsAppWebhookRequest(tenant_id=tenant))
    assert got.configured and got.webhook_path == f"/whatsapp/{tenant}"
    assert list(got.phone_number_ids) == [number_for(tenant)]
    assert got.waba_id == "102290129340398"
    # Another tenant cannot claim the number: a clear error naming the field.
    with pytest.raises(grpc.RpcError) as taken:
        admin.SetWhatsAppWebhook(
            apb.SetWhatsAppWebhookRequest(
                tenant_id="globex",
                verify_token="v",
                app_secret="s",
                phone_number_ids=["42", number_for(tenant)],
            )
        )
    assert taken.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "phone_number_ids[1]" in (taken.value.details() or "")
    assert tenant not in (taken.value.details() or "")  # who owns it is not told
    assert not admin.GetWhatsAppWebhook(
        apb.GetWhatsAppWebhookRequest(tenant_id="globex")
    ).configured
    assert got.webhook_url.endswith(f"/whatsapp/{tenant}")
    assert "s3cr3t" not in str(got)
    with pytest.raises(grpc.RpcError) as err:
        admin.SetWhatsAppWebhook(
            apb.SetWhatsAppWebhookRequest(tenant_id="Bad!", verify_token="", app_secret="a b")
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(err.value) == [
        "tenant_id",
        "verify_token",
        "app_secret",
        "phone_number_ids",
    ]
    assert admin.DeleteWhatsAppWebhook(apb.DeleteWhatsAppWebhookRequest(tenant_id=tenant)).deleted
    assert not admin.GetWhatsAppWebhook(apb.GetWhatsAppWebhookRequest(tenant_id=tenant)).configured


# -- consent links ---------------------------------------------------------------------------


def create_links(
    consent: pb_grpc.ConsentServiceStub, tenant: str, topic: str = "", ttl: int = 0
) -> pb.CreateConsentLinkResponse:
    return consent.CreateConsentLink(
        pb.CreateConsentLinkRequest(
            tenant_id=tenant,
            recipient=email(" Jane.Doe@Example.COM "),
            topic=topic,
            ttl_seconds=ttl,
        )
    )


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def nonce_of(page: str) -> str:
    m = re.search(r'name=nonce value="([0-9a-f]+)"', page)
    assert m, page
    return m.group(1)


def test_link_get_changes_nothing_post_opts_out_resubscribe_opts_in(
    http: httpx.Client, tenant: str, consent: pb_grpc.ConsentServiceStub, edge_server: ServerProcess
) -> None:
    links = create_links(consent, tenant, "marketing")
    assert links.opt_out_url.startswith(edge_server.http_url + "/u/")
    assert links.resubscribe_url.startswith(edge_server.http_url + "/s/")
    assert "jane" not in links.opt_out_url.lower() and "example" not in links.opt_out_url
    assert links.list_unsubscribe == f"<{links.opt_out_url}>"
    assert links.list_unsubscribe_post == "List-Unsubscribe=One-Click"
    assert links.recipient.address == "jane.doe@example.com" and links.topic == "marketing"

    for _ in range(3):  # link scanners prefetch: GET never changes anything
        page = http.get(path_of(links.opt_out_url))
        assert page.status_code == 200 and "<form method=post" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "j***@example.com" in page.text and "jane.doe" not in page.text
    assert events(consent, tenant, email()) == []
    assert check(consent, tenant, email(), "marketing").allowed

    nonce = nonce_of(page.text)
    done = http.post(path_of(links.opt_out_url), data={"nonce": nonce})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    again = http.post(path_of(links.opt_out_url), data={"nonce": nonce})  # double submit
    assert again.status_code == 200
    out = check(consent, tenant, email(), "marketing")
    assert not out.allowed and out.source == pb.SOURCE_LINK
    [event] = events(consent, tenant, email())
    assert event.evidence == links.opt_out_token_id and event.source == pb.SOURCE_LINK

    page = http.get(path_of(links.resubscribe_url))
    assert page.status_code == 200 and "Subscribe again" in page.text
    done = http.post(path_of(links.resubscribe_url), data={"nonce": nonce_of(page.text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    back = check(consent, tenant, email(), "marketing")
    assert back.allowed and back.status == pb.CONSENT_STATUS_OPTED_IN
    assert [e.evidence for e in events(consent, tenant, email())] == [
        links.resubscribe_token_id,
        links.opt_out_token_id,
    ]


def test_tampered_wrong_path_and_expired_links_are_refused(
    http: httpx.Client, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    links = create_links(consent, tenant, ttl=1)
    path = path_of(links.opt_out_url)
    token = path.rsplit("/", 1)[1]
    flipped = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    for bad in (f"/u/{flipped}", f"/u/{token[:-5]}", f"/s/{token}", "/u/x"):
        page = http.get(bad)
        assert page.status_code == 400 and "This link is not valid" in page.text, bad
        posted = http.post(bad, data={"nonce": "ab" * 8})
        assert posted.status_code == 400, bad
    one_click_on_s = http.post(
        path_of(links.resubscribe_url), data={"List-Unsubscribe": "One-Click"}
    )
    assert one_click_on_s.status_code == 400
    assert http.post(path, data={}).status_code == 400  # no form nonce: not from our page
    time.sleep(2.2)
    expired = http.get(path)
    assert expired.status_code == 400 and "expired" in expired.text
    assert http.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 400
    assert events(consent, tenant, email()) == []


def test_rfc8058_one_click(
    http: httpx.Client, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    links = create_links(consent, tenant)
    resp = http.post(
        path_of(links.opt_out_url),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200 and "<html" not in resp.text.lower()
    # Mail providers may send it twice, or as multipart/form-data: one event.
    multi = http.post(path_of(links.opt_out_url), files={"List-Unsubscribe": (None, "One-Click")})
    assert multi.status_code == 200
    allowed = check(consent, tenant, email(), "newsletter")
    assert not allowed.allowed and allowed.source == pb.SOURCE_LINK
    assert len(events(consent, tenant, email())) == 1


def test_create_consent_link_bad_input(consent: pb_grpc.ConsentServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        consent.CreateConsentLink(
            pb.CreateConsentLinkRequest(
                tenant_id="acme", recipient=email("not-an-email"), topic="Bad Topic", ttl_seconds=-5
            )
        )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_fields(err.value)) == {"recipient.address", "topic", "ttl"}


def test_thin_client_create_consent_link(edge_server: ServerProcess, tenant: str) -> None:
    with ConsentClient(edge_server.target) as client:
        links = client.create_consent_link(tenant, "email", "Jane.Doe@Example.com", "news")
    assert links.topic == "news" and links.recipient.address == "jane.doe@example.com"
    assert links.opt_out_url.startswith(edge_server.http_url + "/u/")
    assert links.short_opt_out_url == ""
    with ConsentClient(edge_server.target) as client:
        short = client.create_consent_link(tenant, "sms", "+1 650 555 1234", short_links=True)
    assert short.short_opt_out_url.startswith(edge_server.http_url + "/l/")
    assert short.short_resubscribe_url.startswith(edge_server.http_url + "/l/")

    async def run() -> str:
        async with AsyncConsentClient(edge_server.target) as aclient:
            made = await aclient.create_consent_link(
                tenant, "sms", "+1 650 555 1234", ttl_seconds=60, short_links=True
            )
            assert made.short_resubscribe_url.startswith(edge_server.http_url + "/l/")
            return made.resubscribe_url

    assert asyncio.run(run()).startswith(edge_server.http_url + "/s/")


def test_short_links_over_grpc_and_http(
    http: httpx.Client,
    tenant: str,
    consent: pb_grpc.ConsentServiceStub,
    admin: apb_grpc.ConsentAdminServiceStub,
    edge_server: ServerProcess,
) -> None:
    admin.UpdateTenantSettings(
        apb.UpdateTenantSettingsRequest(
            tenant_id=tenant,
            settings=apb.TenantSettings(
                business_name="Jane's <Bakery>", page_languages=["es", "en", "pt-br"]
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["business_name", "page_languages"]),
        )
    )
    got = admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    assert list(got.page_languages) == ["es", "en", "pt-br"]
    rcpt = pb.Recipient(channel=pb.CHANNEL_SMS, address="+1 650 555 1234")
    plain = consent.CreateConsentLink(
        pb.CreateConsentLinkRequest(tenant_id=tenant, recipient=rcpt, topic="promos")
    )
    assert plain.short_opt_out_url == ""  # only on request
    links = consent.CreateConsentLink(
        pb.CreateConsentLinkRequest(
            tenant_id=tenant, recipient=rcpt, topic="promos", short_links=True
        )
    )
    assert re.fullmatch(
        re.escape(edge_server.http_url) + r"/l/[A-Za-z0-9_-]{12}", links.short_opt_out_url
    )
    for _ in range(2):
        page = http.get(path_of(links.short_opt_out_url))  # no Accept-Language: tenant default
        assert page.status_code == 200 and '<html lang="es">' in page.text
        assert "Jane&#x27;s &lt;Bakery&gt;" in page.text and "Darme de baja" in page.text
    sms = pb.Recipient(channel=pb.CHANNEL_SMS, address="+16505551234")
    assert check(consent, tenant, sms, "promos").allowed and events(consent, tenant, sms) == []
    done = http.post(
        path_of(links.short_opt_out_url) + "?lang=en", data={"nonce": nonce_of(page.text)}
    )
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    out = check(consent, tenant, sms, "promos")
    assert not out.allowed and out.source == pb.SOURCE_LINK
    assert [e.evidence for e in events(consent, tenant, sms)] == [links.opt_out_token_id]
    missing = http.get("/l/NoSuchCode00", headers={"Accept-Language": "de"})
    assert missing.status_code == 404 and "Link nicht gefunden" in missing.text


# -- configuration and lifecycle --------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONSENT_HTTP_LISTEN": "nonsense"}, "CONSENT_HTTP_LISTEN"),
        ({"CONSENT_PUBLIC_URL": "ftp://x"}, "CONSENT_PUBLIC_URL"),
        ({"CONSENT_LINK_SECRET": "short"}, "CONSENT_LINK_SECRET"),
    ],
)
def test_bad_edge_configuration_exits_2(env: dict[str, str], needle: str) -> None:
    proc = run_module(
        "consent_server", "--listen", "127.0.0.1:0", env={**ServerProcess().env, **env}
    )
    assert proc.returncode == 2 and needle in proc.stderr
    if needle == "CONSENT_LINK_SECRET":
        assert "'short'" not in proc.stderr  # a secret is never echoed


def test_http_port_in_use_exits_2() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = run_module(
            "consent_server",
            "--listen",
            "127.0.0.1:0",
            env={**ServerProcess().env, "CONSENT_HTTP_LISTEN": f"127.0.0.1:{port}"},
        )
    assert proc.returncode == 2 and "CONSENT_HTTP_LISTEN" in proc.stderr


def test_sigterm_stops_http_and_grpc_cleanly() -> None:
    srv = ServerProcess(http=True).start()
    with httpx.Client(base_url=srv.http_url) as http:
        assert http.get("/healthz").text == "ok"
    assert srv.stop() == 0
    with pytest.raises(httpx.TransportError), httpx.Client(base_url=srv.http_url) as http:
        http.get("/healthz")


def test_http_edge_is_off_by_default() -> None:
    srv = ServerProcess().start()
    try:
        assert "http edge serving" not in srv.log()
        with grpc.insecure_channel(srv.target) as ch, pytest.raises(grpc.RpcError) as err:
            pb_grpc.ConsentServiceStub(ch).CreateConsentLink(
                pb.CreateConsentLinkRequest(tenant_id="acme", recipient=email())
            )
        assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "CONSENT_PUBLIC_URL" in (err.value.details() or "")
    finally:
        srv.stop()


def test_stop_confirmation_carries_a_working_signed_resubscribe_link(
    http: httpx.Client, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    """With the edge on and no tenant re-subscribe URL, the STOP confirmation's
    {resubscribe_url} is a fresh signed link, and that link opts the customer back in."""
    stop = consent.HandleInboundMessage(
        pb.HandleInboundMessageRequest(
            tenant_id=tenant, recipient=wa(), text="STOP", provider_message_id="wamid.link-1"
        )
    )
    assert stop.action == pb.INBOUND_ACTION_OPTED_OUT and stop.reply_message_id
    found = re.search(r"(https?://\S+/s/[A-Za-z0-9_=-]+)", stop.reply_text)
    assert found, stop.reply_text
    assert WA_ID not in found.group(1)  # the address never shows in the URL
    assert not check(consent, tenant, wa(), "marketing").allowed
    page = http.get(path_of(found.group(1)))
    assert page.status_code == 200
    done = http.post(path_of(found.group(1)), data={"nonce": nonce_of(page.text)})
    assert done.status_code == 200
    after = check(consent, tenant, wa(), "marketing")
    assert after.allowed and after.source == pb.SOURCE_LINK


# -- webhook-provider receipts ---------------------------------------------------------------


def test_webhook_provider_receipts_update_status_and_record_opt_outs(
    http: httpx.Client,
    tenant: str,
    consent: pb_grpc.ConsentServiceStub,
    admin: apb_grpc.ConsentAdminServiceStub,
) -> None:
    """The tenant's webhook provider POSTs receipts back, signed like our deliveries:
    a 21610 failure turns the delivered message FAILED and opts the recipient out."""
    import json as _json

    from consent_server.delivery.providers.webhook import sign

    from .fake_provider import fake_provider

    secret = "whsec_receipts_0123456789"
    with fake_provider() as fake:
        admin.SetDeliveryProvider(
            apb.SetDeliveryProviderRequest(
                tenant_id=tenant,
                provider=apb.DeliveryProvider(
                    webhook=apb.WebhookProvider(url=fake.url + "/hook", signing_secret=secret)
                ),
            )
        )
        sent = consent.SendIfAllowed(
            pb.SendIfAllowedRequest(
                tenant_id=tenant, recipient=wa(), topic="orders", message=pb.Message(text="hi")
            )
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = consent.GetMessageStatus(
                pb.GetMessageStatusRequest(tenant_id=tenant, message_id=sent.message_id)
            )
            if st.status == pb.MESSAGE_STATUS_DELIVERED:
                break
            time.sleep(0.05)
        assert st.status == pb.MESSAGE_STATUS_DELIVERED, st

    def post(body: dict[str, object], *, key: str = secret, age_s: int = 0) -> httpx.Response:
        raw = _json.dumps(body).encode()
        ts = str(int(time.time()) - age_s)
        return http.post(
            f"/receipts/{tenant}",
            content=raw,
            headers={"X-Consent-Timestamp": ts, "X-Consent-Signature": sign(key, ts, raw)},
        )

    failed = {"message_id": sent.message_id, "status": "failed", "error_code": 21610}
    assert post(failed, key="not-the-secret").status_code == 401  # forged
    assert post(failed, age_s=3600).status_code == 401  # a stale replay
    assert post({"message_id": sent.message_id, "status": "lost"}).status_code == 400
    assert consent.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=wa(), topic="orders")
    ).allowed  # nothing refused changed anything
    still = consent.GetMessageStatus(
        pb.GetMessageStatusRequest(tenant_id=tenant, message_id=sent.message_id)
    )
    assert still.status == pb.MESSAGE_STATUS_DELIVERED
    assert http.post(f"/receipts/{tenant}", content=b"{}").status_code == 401  # unsigned
    unknown = post({"message_id": "m" + "0" * 30, "status": "read"})
    assert unknown.status_code == 200 and unknown.text == "unknown"

    applied = post(failed)
    assert applied.status_code == 200 and applied.text == "applied"
    st = consent.GetMessageStatus(
        pb.GetMessageStatusRequest(tenant_id=tenant, message_id=sent.message_id)
    )
    assert st.status == pb.MESSAGE_STATUS_FAILED and "21610" in st.last_error
    check_now = consent.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=wa(), topic="orders")
    )
    assert not check_now.allowed and check_now.source == pb.SOURCE_PROVIDER
    # Another tenant's receipts route knows no webhook provider: nothing to verify with.
    assert (
        http.post(
            "/receipts/t-nobody",
            content=b"{}",
            headers={"X-Consent-Timestamp": str(int(time.time())), "X-Consent-Signature": "v1=00"},
        ).status_code
        == 404
    )


def test_one_click_works_again_after_a_resubscribe(
    http: httpx.Client, tenant: str, consent: pb_grpc.ConsentServiceStub
) -> None:
    """The same e-mail's one-click link opts out again after the customer re-subscribed
    (its retries before that were one event)."""
    links = create_links(consent, tenant)
    one_click = {"List-Unsubscribe": "One-Click"}
    assert http.post(path_of(links.opt_out_url), data=one_click).status_code == 200
    page = http.get(path_of(links.resubscribe_url))
    done = http.post(path_of(links.resubscribe_url), data={"nonce": nonce_of(page.text)})
    assert done.status_code == 200 and check(consent, tenant, email(), "newsletter").allowed
    assert http.post(path_of(links.opt_out_url), data=one_click).status_code == 200
    assert not check(consent, tenant, email(), "newsletter").allowed
    assert len(events(consent, tenant, email())) == 3
