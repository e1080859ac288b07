"""HandleInboundMessage and the tenant-settings admin RPCs end to end: the real server
process over gRPC, on the embedded store and on a private redis-server. On
redis-server the outbox streams are also read directly, to count confirmations.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_client.v1 import consent_pb2 as pb

from .security_support import rich
from .support import RedisProcess, ServerProcess, text_send_request

WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+91 98765 43210")
WA_ID = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="919876543210")  # webhook spelling
OUT, IN = pb.INBOUND_ACTION_OPTED_OUT, pb.INBOUND_ACTION_OPTED_IN


@dataclass
class Env:
    """A server process, stubs for both services, and its redis-server when it has one."""

    server: ServerProcess
    stub: consent_pb2_grpc.ConsentServiceStub
    admin: admin_pb2_grpc.ConsentAdminServiceStub
    redis: redis.Redis | None

    def confirmations(self, tenant: str) -> list[dict[str, str]]:
        """Every outbox entry of the tenant with purpose=confirmation (redis-server only)."""
        assert self.redis is not None
        found = []
        # Every partition's outbox, whatever layout the server's store recorded.
        for name in self.redis.scan_iter(match="ca:{cp*}:outbox"):
            for _, fields in self.redis.xrange(name):
                f = {k.decode(): v.decode() for k, v in fields.items()}
                if f["tenant"] == tenant and f.get("purpose") == "confirmation":
                    found.append(f)
        return found


@pytest.fixture(scope="module", params=["embedded", "redis-server"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    redis_proc = None
    # These tests count the confirmations waiting in the outbox: no worker takes them
    # (test_confirmation_is_delivered_to_the_opted_out_recipient runs one).
    environ: dict[str, str] = {"CONSENT_DELIVERY": "off"}
    if request.param == "redis-server":
        redis_proc = RedisProcess(tmp_path_factory.mktemp("inbound-redis")).start()
        environ["CONSENT_REDIS_URL"] = redis_proc.url
    srv = ServerProcess(environ).start()
    client = redis_proc.client() if redis_proc else None
    try:
        with grpc.insecure_channel(srv.target) as channel:
            yield Env(
                srv,
                consent_pb2_grpc.ConsentServiceStub(channel),
                admin_pb2_grpc.ConsentAdminServiceStub(channel),
                client,
            )
    finally:
        assert srv.stop() == 0
        if client is not None:
            client.close()
        if redis_proc:
            redis_proc.stop()


def inbound(
    env: Env,
    tenant: str,
    msg_id: str,
    text: str = "",
    button: str = "",
    recipient: pb.Recipient = WA,
) -> pb.HandleInboundMessageResponse:
    return env.stub.HandleInboundMessage(
        pb.HandleInboundMessageRequest(
            tenant_id=tenant,
            recipient=recipient,
            text=text,
            button_payload=button,
            provider_message_id=msg_id,
        )
    )


def send(env: Env, tenant: str, topic: str = "marketing") -> Any:
    return env.stub.SendIfAllowed(text_send_request(tenant, WA, "20% off", topic=topic))


def allowed(env: Env, tenant: str, topic: str) -> bool:
    return bool(
        env.stub.CheckConsent(
            pb.CheckConsentRequest(tenant_id=tenant, recipient=WA, topic=topic)
        ).allowed
    )


def events(env: Env, tenant: str) -> list[pb.ConsentEvent]:
    return list(
        env.stub.ListConsentEvents(
            pb.ListConsentEventsRequest(tenant_id=tenant, recipient=WA, page_size=1000)
        ).events
    )


def update(env: Env, tenant: str, paths: list[str], **fields: Any) -> apb.TenantSettings:
    return env.admin.UpdateTenantSettings(
        apb.UpdateTenantSettingsRequest(
            tenant_id=tenant,
            settings=apb.TenantSettings(**fields),
            update_mask=FieldMask(paths=paths),
        )
    )


def bad_fields(err: grpc.RpcError) -> list[str]:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    _, details = rich(err)
    return [v.field for v in details["BadRequest"].field_violations]  # type: ignore[attr-defined]


# -- the seed flow -----------------------------------------------------------------------


def test_seed_flow_button_then_start(env: Env, tenant: str) -> None:
    assert send(env, tenant).message_id

    tap = inbound(env, tenant, "wamid.tap.1", text="Unsubscribe", button="UNSUBSCRIBE")
    assert tap.action == OUT and tap.matched_keyword == "unsubscribe"
    assert tap.reply_text == (
        f"You have been unsubscribed from {tenant} messages. Reply START to subscribe again."
    )
    assert tap.reply_message_id and tap.revision == 1
    status = env.stub.GetMessageStatus(
        pb.GetMessageStatusRequest(tenant_id=tenant, message_id=tap.reply_message_id)
    )
    assert status.status == pb.MESSAGE_STATUS_ACCEPTED and status.topic == ""
    assert status.recipient.address == "+919876543210"
    [event] = events(env, tenant)
    assert event.source == pb.SOURCE_BUTTON and event.event_id == "wamid.tap.1"
    assert event.action == pb.CONSENT_ACTION_OPT_OUT and event.topic == ""

    with pytest.raises(grpc.RpcError) as blocked:
        send(env, tenant)
    assert blocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    _, details = rich(blocked.value)
    assert details["ErrorInfo"].reason == "RECIPIENT_OPTED_OUT"  # type: ignore[attr-defined]
    assert details["ErrorInfo"].metadata["source"] == "SOURCE_BUTTON"  # type: ignore[attr-defined]

    back = inbound(env, tenant, "wamid.start.1", text="START")
    assert back.action == IN and back.matched_keyword == "start"
    assert back.reply_text == (
        f"You are now subscribed to {tenant} messages. Reply STOP to unsubscribe."
    )
    assert back.reply_message_id and back.reply_message_id != tap.reply_message_id
    assert back.revision == 2
    assert events(env, tenant)[0].source == pb.SOURCE_KEYWORD
    assert send(env, tenant).message_id

    if env.redis is not None:
        first, second = env.confirmations(tenant)
        assert first["id"] == tap.reply_message_id and second["id"] == back.reply_message_id
        assert "START" in json.loads(first["body"])["text"]
        assert json.loads(first["body"]) == {"kind": "text", "text": tap.reply_text}
        assert first["topic"] == "" and first["addr"] == "+919876543210"
        assert first["ch"] == "whatsapp" and first["rev"] == "1" and first["not_after"] == "0"


def test_an_unknown_buttons_title_never_opts_out_of_everything(env: Env, tenant: str) -> None:
    # Meta's sample appointment template has a "Cancel" quick reply: not a STOP.
    for i, title in enumerate(("Cancel", "STOP", "Unsubscribe", "Stop promotions")):
        got = inbound(env, tenant, f"wamid.appt{i}", text=title, button="CANCEL_APPOINTMENT")
        assert got.action == pb.INBOUND_ACTION_NONE
    assert allowed(env, tenant, "marketing") and events(env, tenant) == []
    assert not env.admin.GetTenantSettings(
        apb.GetTenantSettingsRequest(tenant_id=tenant)
    ).match_button_titles
    assert update(env, tenant, ["match_button_titles"], match_button_titles=True)
    assert inbound(
        env, tenant, "wamid.appt9", text="Cancel", button="CANCEL_APPOINTMENT"
    ).action == (
        pb.INBOUND_ACTION_NONE  # a title never acts for all topics
    )
    got = inbound(env, tenant, "wamid.promo", text="Stop promotions", button="PROMO_OFF")
    assert got.action == pb.INBOUND_ACTION_OPTED_OUT and got.matched_keyword == "stop promotions"
    assert not allowed(env, tenant, "marketing") and allowed(env, tenant, "orders")
    # A configured payload acts whatever its title.
    got = inbound(env, tenant, "wamid.unsub", text="Not now", button="UNSUBSCRIBE")
    assert got.action == pb.INBOUND_ACTION_OPTED_OUT and not allowed(env, tenant, "orders")


def test_a_stop_from_a_fast_clock_is_recorded_not_refused(env: Env, tenant: str) -> None:
    ahead = Timestamp(seconds=int(time.time()) + 3600)
    got = env.stub.HandleInboundMessage(
        pb.HandleInboundMessageRequest(
            tenant_id=tenant,
            recipient=WA,
            text="STOP",
            provider_message_id="wamid.ahead",
            received_at=ahead,
        )
    )
    assert got.action == pb.INBOUND_ACTION_OPTED_OUT and not allowed(env, tenant, "marketing")
    out = env.stub.OptOut(
        pb.OptOutRequest(tenant_id=tenant, recipient=WA, topic="orders", occurred_at=ahead)
    )
    assert out.applied
    evs = events(env, tenant)
    assert all(e.occurred_at.seconds <= time.time() for e in evs)
    assert all("later than the receive time" in e.evidence for e in evs)
    with pytest.raises(grpc.RpcError) as err:
        env.stub.OptIn(pb.OptInRequest(tenant_id=tenant, recipient=WA, occurred_at=ahead))
    assert bad_fields(err.value) == ["occurred_at"]


def test_redelivered_webhook_is_applied_once(env: Env, tenant: str) -> None:
    first = inbound(env, tenant, "wamid.r.1", text="STOP")
    again = inbound(env, tenant, "wamid.r.1", text="STOP", recipient=WA_ID)
    assert again == first  # the first outcome, the same confirmation id
    assert len(events(env, tenant)) == 1
    if env.redis is not None:
        assert len(env.confirmations(tenant)) == 1


def test_stop_twice_queues_one_confirmation(env: Env, tenant: str) -> None:
    first = inbound(env, tenant, "wamid.s.1", text="STOP")
    second = inbound(env, tenant, "wamid.s.2", text="stop!")
    assert first.reply_message_id and first.reply_text
    assert second.action == OUT and second.reply_message_id == "" and second.reply_text == ""
    assert second.revision == first.revision + 1  # kept as evidence, changed nothing
    assert len(events(env, tenant)) == 2
    if env.redis is not None:
        assert len(env.confirmations(tenant)) == 1


def test_stop_promotions_blocks_marketing_only(env: Env, tenant: str) -> None:
    out = inbound(env, tenant, "wamid.p.1", text="Stop promotions")
    assert out.action == OUT and out.matched_keyword == "stop promotions"
    assert "marketing" in out.reply_text
    assert not allowed(env, tenant, "marketing")
    assert allowed(env, tenant, "order_updates")
    assert send(env, tenant, "order_updates").message_id
    tap = inbound(env, tenant, "wamid.p.2", button="STOP_PROMOTIONS")
    assert tap.action == OUT and tap.reply_message_id == ""  # marketing already out
    assert events(env, tenant)[0].topic == "marketing"


def test_concurrent_duplicate_deliveries_make_one_event_one_confirmation(
    env: Env, tenant: str
) -> None:
    results: list[pb.HandleInboundMessageResponse] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        try:
            results.append(inbound(env, tenant, "wamid.dup.1", text="STOP"))
        except BaseException as exc:  # collected and re-raised by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 8
    assert len({r.reply_message_id for r in results}) == 1 and results[0].reply_message_id
    assert len(events(env, tenant)) == 1
    if env.redis is not None:
        assert len(env.confirmations(tenant)) == 1


def test_sentences_help_and_near_misses(env: Env, tenant: str) -> None:
    none = inbound(env, tenant, "wamid.n.1", text="I want to start a subscription")
    assert none.action == pb.INBOUND_ACTION_NONE and none.matched_keyword == ""
    for i, text in enumerate(["stopwatch", "non-stop", "thanks!"]):
        assert inbound(env, tenant, f"wamid.n.{i + 2}", text=text).action == pb.INBOUND_ACTION_NONE
    help_ = inbound(env, tenant, "wamid.h.1", text="HELP")
    assert help_.action == pb.INBOUND_ACTION_HELP and help_.reply_text
    assert "STOP" in help_.reply_text and help_.reply_message_id == ""
    assert events(env, tenant) == []  # nothing recorded
    out = inbound(env, tenant, "wamid.n.9", text="please stop texting me")
    assert out.action == OUT and out.matched_keyword == "stop"
    assert not allowed(env, tenant, "marketing")


def test_redelivery_with_another_action_is_refused(env: Env, tenant: str) -> None:
    inbound(env, tenant, "wamid.x.1", text="STOP")
    with pytest.raises(grpc.RpcError) as err:
        inbound(env, tenant, "wamid.x.1", text="START")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert not allowed(env, tenant, "marketing")


# -- tenant settings ---------------------------------------------------------------------


def test_defaults_are_returned_for_a_new_tenant(env: Env, tenant: str) -> None:
    got = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    assert got.tenant_id == tenant and got.version == 0
    assert got.infer_opt_out_in_sentences and got.default_language == "en"
    kws = {k for s in got.keyword_sets for k in s.keywords}
    assert {"stop", "start", "help", "opt out", "stop promotions"} <= kws
    assert {b.payload for b in got.button_payloads} == {
        "UNSUBSCRIBE",
        "STOP_PROMOTIONS",
        "SUBSCRIBE",
    }


def test_spanish_keywords_and_templates(env: Env, tenant: str) -> None:
    got = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    sets = [
        *got.keyword_sets,
        apb.KeywordSet(language="es", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["BAJA"]),
        apb.KeywordSet(language="es", kind=apb.KEYWORD_KIND_OPT_IN, keywords=["Alta"]),
        apb.KeywordSet(language="hi", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["रोकें"]),
        apb.KeywordSet(language="zh", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["停止"]),
    ]
    templates = [
        apb.LanguageTemplates(
            language="ES",
            opt_out_confirmation="Te has dado de baja de {business_name}. Responde ALTA "
            "o visita {resubscribe_url} para volver.",
            opt_in_confirmation="Bienvenido de nuevo a {business_name}. Responde BAJA para salir.",
        )
    ]
    new = update(
        env,
        tenant,
        ["keyword_sets", "templates", "business_name", "resubscribe_url"],
        keyword_sets=sets,
        templates=templates,
        business_name="Comida Rápida",
        resubscribe_url="https://example.com/alta",
    )
    assert new.version == 1 and new.templates[0].language == "es"
    assert any(list(s.keywords) == ["alta"] for s in new.keyword_sets)  # stored normalised

    out = inbound(env, tenant, "wamid.es.1", text="baja.")
    assert out.action == OUT and out.matched_keyword == "baja"
    assert out.reply_text == (
        "Te has dado de baja de Comida Rápida. Responde ALTA o visita "
        "https://example.com/alta para volver."
    )
    back = inbound(env, tenant, "wamid.es.2", text="ALTA")
    assert back.action == IN and back.reply_text.startswith("Bienvenido de nuevo a Comida Rápida")
    # Hindi has no templates: the default language's (built-in English) text, with the URL.
    hi = inbound(env, tenant, "wamid.hi.1", text="रोकें")
    assert hi.action == OUT and hi.matched_keyword == "रोकें"
    assert hi.reply_text == (
        "You have been unsubscribed from Comida Rápida messages. "
        "Reply START or visit https://example.com/alta to subscribe again."
    )
    assert inbound(env, tenant, "wamid.zh.1", text="停止").matched_keyword == "停止"
    # English still works next to Spanish.
    assert inbound(env, tenant, "wamid.en.1", text="START").action == IN


def test_update_is_visible_at_once_and_merges_by_mask(env: Env, tenant: str) -> None:
    update(env, tenant, ["business_name"], business_name="Meal Box")
    update(env, tenant, ["infer_opt_out_in_sentences"], infer_opt_out_in_sentences=False)
    got = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    assert got.business_name == "Meal Box" and not got.infer_opt_out_in_sentences
    assert got.version == 2
    none = inbound(env, tenant, "wamid.m.1", text="please stop texting me")
    assert none.action == pb.INBOUND_ACTION_NONE
    out = inbound(env, tenant, "wamid.m.2", text="STOP")
    assert "Meal Box" in out.reply_text


def test_tenant_keywords_never_apply_to_another_tenant(
    env: Env, tenant: str, create_tenant: Any
) -> None:
    other = create_tenant(tenant + "-b")
    got = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    update(
        env,
        tenant,
        ["keyword_sets"],
        keyword_sets=[
            *got.keyword_sets,
            apb.KeywordSet(language="es", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["BAJA"]),
        ],
    )
    assert inbound(env, other, "wamid.b.1", text="BAJA").action == pb.INBOUND_ACTION_NONE
    assert allowed(env, other, "marketing")
    assert inbound(env, tenant, "wamid.b.1", text="BAJA").action == OUT
    other_settings = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=other))
    assert "baja" not in {k for s in other_settings.keyword_sets for k in s.keywords}


def test_require_opt_in_policy_via_settings(env: Env, tenant: str) -> None:
    update(
        env,
        tenant,
        ["topic_policies"],
        topic_policies={"marketing": pb.DEFAULT_POLICY_REQUIRE_OPT_IN},
    )
    assert not allowed(env, tenant, "marketing") and allowed(env, tenant, "order_updates")
    assert inbound(env, tenant, "wamid.o.1", text="START").action == IN
    assert allowed(env, tenant, "marketing")


TEMPLATE_FIELD = "settings.templates[0].opt_out_confirmation"
BAD_SETTINGS = [
    pytest.param(
        ["templates"],
        {"templates": [apb.LanguageTemplates(language="es", opt_out_confirmation="Responde ALTA")]},
        [TEMPLATE_FIELD],
        id="template-promises-unconfigured-keyword",
    ),
    pytest.param(
        ["templates"],
        {"templates": [apb.LanguageTemplates(language="en", opt_out_confirmation="Reply STOP")]},
        [TEMPLATE_FIELD],
        id="opt-out-template-promises-an-opt-out-keyword",
    ),
    pytest.param(
        ["templates"],
        {"templates": [apb.LanguageTemplates(language="en", opt_out_confirmation="Hi {name}")]},
        [TEMPLATE_FIELD],
        id="unknown-placeholder",
    ),
    pytest.param(
        ["templates"],
        {"templates": [apb.LanguageTemplates(language="en", help="Hi {business_name")]},
        ["settings.templates[0].help"],
        id="unbalanced-brace",
    ),
    pytest.param(
        ["templates"],
        {
            "templates": [
                apb.LanguageTemplates(language="en", opt_out_confirmation="Go {resubscribe_url}")
            ]
        },
        [TEMPLATE_FIELD],
        id="url-placeholder-without-url",
    ),
    pytest.param(
        ["templates"],
        {
            "templates": [
                apb.LanguageTemplates(language="en"),
                apb.LanguageTemplates(language="EN"),
            ]
        },
        ["settings.templates[1].language"],
        id="template-language-twice",
    ),
    pytest.param(
        ["keyword_sets"],
        {
            "keyword_sets": [
                apb.KeywordSet(language="en", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["STOP"]),
                apb.KeywordSet(language="en", kind=apb.KEYWORD_KIND_OPT_IN, keywords=["stop!"]),
            ]
        },
        ["settings.keyword_sets[1].keywords[0]"],
        id="keyword-in-two-sets",
    ),
    pytest.param(
        ["keyword_sets"],
        {
            "keyword_sets": [
                apb.KeywordSet(language="en", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["!!", ""])
            ]
        },
        ["settings.keyword_sets[0].keywords[0]", "settings.keyword_sets[0].keywords[1]"],
        id="keyword-empty-after-normalising",
    ),
    pytest.param(
        ["keyword_sets"],
        {"keyword_sets": [apb.KeywordSet(language="en", kind=0, keywords=["x"])]},
        ["settings.keyword_sets[0].kind"],
        id="keyword-kind-unspecified",
    ),
    pytest.param(
        ["keyword_sets"],
        {"keyword_sets": [apb.KeywordSet(language="en", kind=99, keywords=["x"])]},
        ["settings.keyword_sets[0].kind"],
        id="keyword-kind-unknown",
    ),
    pytest.param(
        ["keyword_sets"],
        {
            "keyword_sets": [
                apb.KeywordSet(
                    language="english!",
                    kind=apb.KEYWORD_KIND_OPT_OUT,
                    topic="Bad Topic",
                    keywords=["x"],
                )
            ]
        },
        ["settings.keyword_sets[0].language", "settings.keyword_sets[0].topic"],
        id="keyword-language-and-topic",
    ),
    pytest.param(
        ["keyword_sets"],
        {
            "keyword_sets": [
                apb.KeywordSet(language="en", kind=apb.KEYWORD_KIND_HELP, topic="m", keywords=["x"])
            ]
        },
        ["settings.keyword_sets[0].topic"],
        id="help-with-topic",
    ),
    pytest.param(
        ["button_payloads"],
        {
            "button_payloads": [
                apb.ButtonPayload(payload="A", kind=apb.KEYWORD_KIND_OPT_OUT),
                apb.ButtonPayload(payload="a", kind=apb.KEYWORD_KIND_OPT_IN),
                apb.ButtonPayload(payload="", kind=apb.KEYWORD_KIND_OPT_IN),
            ]
        },
        ["settings.button_payloads[1].payload", "settings.button_payloads[2].payload"],
        id="button-payload-duplicate-and-empty",
    ),
    pytest.param(
        ["resubscribe_url"],
        {"resubscribe_url": "javascript:alert(1)"},
        ["settings.resubscribe_url"],
        id="resubscribe-url-scheme",
    ),
    pytest.param(
        ["default_region", "default_language", "business_name"],
        {"default_region": "XX", "default_language": "", "business_name": "a\x00b"},
        ["settings.default_region", "settings.default_language", "settings.business_name"],
        id="region-language-name",
    ),
    pytest.param(
        ["page_languages", "business_name"],
        {"page_languages": ["en", "ja", "EN", "<b>"], "business_name": "B" * 129},
        [
            "settings.page_languages[1]",
            "settings.page_languages[2]",
            "settings.page_languages[3]",
            "settings.business_name",
        ],
        id="page-languages-and-long-name",
    ),
    pytest.param(
        ["page_languages"],
        {"page_languages": ["en"] * 21},
        ["settings.page_languages"],
        id="page-languages-21",
    ),
    pytest.param(
        ["topic_policies"],
        {"topic_policies": {"Bad Topic!": pb.DEFAULT_POLICY_REQUIRE_OPT_IN}},
        ["settings.topic_policies['Bad Topic!']"],
        id="topic-policy-bad-topic",
    ),
    pytest.param(
        ["keyword_sets"],
        {
            "keyword_sets": [
                apb.KeywordSet(language="en", kind=apb.KEYWORD_KIND_OPT_OUT, keywords=["x" * 65])
            ]
        },
        ["settings.keyword_sets[0].keywords[0]"],
        id="keyword-65-chars",
    ),
    pytest.param(
        ["keyword_sets"],
        {
            "keyword_sets": [
                apb.KeywordSet(
                    language="en",
                    kind=apb.KEYWORD_KIND_OPT_OUT,
                    keywords=[f"k{i}" for i in range(501)],
                )
            ]
        },
        ["settings.keyword_sets"],
        id="keywords-501",
    ),
    pytest.param(
        ["templates"],
        {"templates": [apb.LanguageTemplates(language="en", help="x" * 1025)]},
        ["settings.templates[0].help"],
        id="template-1025-chars",
    ),
    pytest.param(
        ["templates"],
        {"templates": [apb.LanguageTemplates(language="en", opt_in_confirmation="hi\x00there")]},
        ["settings.templates[0].opt_in_confirmation"],
        id="template-nul",
    ),
    pytest.param(
        ["button_payloads"],
        {"button_payloads": [apb.ButtonPayload(payload="P" * 257, kind=apb.KEYWORD_KIND_OPT_OUT)]},
        ["settings.button_payloads[0].payload"],
        id="button-payload-257",
    ),
    pytest.param(
        ["resubscribe_url"],
        {"resubscribe_url": "https://x.example/a b"},
        ["settings.resubscribe_url"],
        id="resubscribe-url-space",
    ),
    pytest.param([], {"business_name": "x"}, ["update_mask"], id="mask-empty"),
    pytest.param(
        ["business_name", "nope"],
        {"business_name": "x"},
        ["update_mask.paths[1]"],
        id="mask-unknown",
    ),
]


@pytest.mark.parametrize(("paths", "fields", "want"), BAD_SETTINGS)
def test_bad_settings_are_refused_and_change_nothing(
    env: Env, tenant: str, paths: list[str], fields: dict[str, Any], want: list[str]
) -> None:
    before = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    with pytest.raises(grpc.RpcError) as err:
        update(env, tenant, paths, **fields)
    assert sorted(bad_fields(err.value)) == sorted(want)
    after = env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant))
    assert after == before


def test_template_promise_names_the_keyword(env: Env, tenant: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        update(
            env,
            tenant,
            ["templates"],
            templates=[apb.LanguageTemplates(language="es", opt_out_confirmation="Responde ALTA")],
        )
    _, details = rich(err.value)
    [v] = details["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert v.field == TEMPLATE_FIELD and "ALTA" in v.description


def test_bad_tenant_id_on_admin_rpcs(env: Env) -> None:
    lua = "x');redis.call('FLUSHALL');--"
    for call in (
        lambda: env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id="BAD")),
        lambda: env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=lua)),
        lambda: env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id="{cp01}")),
        lambda: update(env, "", ["business_name"], business_name="x"),
        lambda: update(env, "a" * 65, ["business_name"], business_name="x"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert bad_fields(err.value) == ["tenant_id"]


def test_unmasked_fields_are_not_read(env: Env, tenant: str) -> None:
    """A bad value in a field the mask does not name is ignored, not refused."""
    new = update(
        env,
        tenant,
        ["business_name"],
        business_name="Only This",
        keyword_sets=[apb.KeywordSet(language="??", kind=99, keywords=[""])],
        default_policy=42,  # type: ignore[arg-type]
    )
    assert new.business_name == "Only This"
    assert "stop" in {k for s in new.keyword_sets for k in s.keywords}


def test_stop_promotions_after_stop_queues_nothing(env: Env, tenant: str) -> None:
    """Marketing was already blocked by the newer STOP: the tap changes nothing the
    recipient receives, so no second confirmation reaches an opted-out customer."""
    first = inbound(env, tenant, "wamid.sp.1", text="STOP")
    tap = inbound(env, tenant, "wamid.sp.2", button="STOP_PROMOTIONS")
    assert tap.action == OUT and tap.reply_message_id == "" and tap.reply_text == ""
    assert tap.revision == first.revision + 1 and events(env, tenant)[0].topic == "marketing"
    # START re-allows everything, with a confirmation; STOP PROMOTIONS now does change
    # what the recipient receives, so it confirms.
    assert inbound(env, tenant, "wamid.sp.3", text="START").reply_message_id
    again = inbound(env, tenant, "wamid.sp.4", text="stop promotions")
    assert again.reply_message_id and "marketing" in again.reply_text
    assert not allowed(env, tenant, "marketing") and allowed(env, tenant, "order_updates")
    if env.redis is not None:
        assert len(env.confirmations(tenant)) == 3


def test_stop_after_a_newer_topic_opt_in_confirms(env: Env, tenant: str) -> None:
    """All topics stay opted out, but marketing (opted in later) stops: that is a change
    the customer should hear about."""
    inbound(env, tenant, "wamid.t.1", text="STOP")
    env.stub.OptIn(pb.OptInRequest(tenant_id=tenant, recipient=WA, topic="marketing"))
    assert allowed(env, tenant, "marketing") and not allowed(env, tenant, "order_updates")
    again = inbound(env, tenant, "wamid.t.2", text="STOP")
    assert again.reply_message_id and not allowed(env, tenant, "marketing")
    # Now everything is out: one more STOP changes nothing.
    assert inbound(env, tenant, "wamid.t.3", text="STOP").reply_message_id == ""
    if env.redis is not None:
        assert len(env.confirmations(tenant)) == 2


def test_store_down_fails_closed(tmp_path_factory: pytest.TempPathFactory, tenant: str) -> None:
    """Redis unreachable: inbound replies and settings calls answer UNAVAILABLE and nothing
    is half-applied; once Redis is back the same webhook applies normally."""
    # Persistent, so that the tenant created at start is still there after the restart.
    redis_proc = RedisProcess(tmp_path_factory.mktemp("down-redis"), appendonly=True).start()
    srv = ServerProcess(
        {
            "CONSENT_REDIS_URL": redis_proc.url,
            "CONSENT_REDIS_TIMEOUT": "0.5",
            "CONSENT_TENANTS": tenant,
        }
    ).start()
    try:
        with grpc.insecure_channel(srv.target) as channel:
            env = Env(
                srv,
                consent_pb2_grpc.ConsentServiceStub(channel),
                admin_pb2_grpc.ConsentAdminServiceStub(channel),
                None,
            )
            redis_proc.stop()
            calls = [
                lambda: inbound(env, tenant, "wamid.down.1", text="STOP"),
                lambda: env.admin.GetTenantSettings(apb.GetTenantSettingsRequest(tenant_id=tenant)),
                lambda: update(env, tenant, ["business_name"], business_name="x"),
            ]
            for call in calls:
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                _, details = rich(err.value)
                assert details["ErrorInfo"].reason == "STORE_UNAVAILABLE"  # type: ignore[attr-defined]
            redis_proc.start()
            srv.wait_serving()
            out = inbound(env, tenant, "wamid.down.1", text="STOP")
            assert out.action == OUT and out.reply_message_id
    finally:
        assert srv.stop() == 0
        redis_proc.stop()


def test_confirmation_is_delivered_to_the_opted_out_recipient(tenant: str) -> None:
    """With the default inline worker (log provider), the STOP confirmation reaches the
    customer who just opted out, and the next promotion is refused."""
    srv = ServerProcess({"CONSENT_TENANTS": tenant}).start()  # delivery defaults to inline
    try:
        with grpc.insecure_channel(srv.target) as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            stop = stub.HandleInboundMessage(
                pb.HandleInboundMessageRequest(
                    tenant_id=tenant, recipient=WA, text="STOP", provider_message_id="wamid.d1"
                )
            )
            assert stop.action == OUT and stop.reply_message_id
            deadline = time.monotonic() + 10
            status = None
            while time.monotonic() < deadline:
                status = stub.GetMessageStatus(
                    pb.GetMessageStatusRequest(tenant_id=tenant, message_id=stop.reply_message_id)
                )
                if status.status != pb.MESSAGE_STATUS_ACCEPTED:
                    break
                time.sleep(0.05)
            assert status is not None and status.status == pb.MESSAGE_STATUS_LOGGED, status
            with pytest.raises(grpc.RpcError) as blocked:
                stub.SendIfAllowed(text_send_request(tenant, WA, "20% off"))
            assert blocked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        assert srv.stop() == 0
    delivered = [ln for ln in srv.log().splitlines() if "(log provider)" in ln]
    assert len(delivered) == 1 and "+91987*****10" in delivered[0]
    assert "919876543210" not in srv.log()  # the log provider masks the address
