"""One Meta app, many businesses: the app-level callback URL routes each entry by its
phone number id, and what cannot be applied is kept as a dead letter that an operator
lists, replays or discards with consentctl. The real server process, over HTTP and
gRPC, with the installed consentctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc as apb_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc as pb_grpc
from consent_server.domain.whatsapp import sign

from .support import ServerProcess

CONSENTCTL = str(Path(sys.executable).parent / "consentctl")
SECRET = "the-one-meta-app-secret"
ACME, GLOBEX = "106540352242922", "207651463353033"
WA_ID = "16505551234"
WA = pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address="+" + WA_ID)

pytestmark = pytest.mark.xdist_group("edge_app_level")


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    srv = ServerProcess({}, http=True).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def stubs(server: ServerProcess) -> Iterator[tuple[pb_grpc.ConsentServiceStub, Any]]:
    with grpc.insecure_channel(server.target) as ch:
        admin = apb_grpc.ConsentAdminServiceStub(ch)
        for tenant, number in (("acme", ACME), ("globex", GLOBEX)):
            admin.SetWhatsAppWebhook(
                apb.SetWhatsAppWebhookRequest(
                    tenant_id=tenant,
                    verify_token=f"vt-{tenant}",
                    app_secret=SECRET,
                    phone_number_ids=[number],
                )
            )
        yield pb_grpc.ConsentServiceStub(ch), admin


def change(number: str, *messages: dict[str, Any]) -> dict[str, Any]:
    return {
        "field": "messages",
        "value": {"metadata": {"phone_number_id": number}, "messages": list(messages)},
    }


def text(body: str, wamid: str) -> dict[str, Any]:
    return {
        "from": WA_ID,
        "id": wamid,
        "timestamp": "1749416383",
        "type": "text",
        "text": {"body": body},
    }


def post(server: ServerProcess, path: str, doc: object, secret: str = SECRET) -> httpx.Response:
    body = json.dumps(doc).encode()
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        return http.post(path, content=body, headers={"X-Hub-Signature-256": sign(secret, body)})


def allowed(consent: pb_grpc.ConsentServiceStub, tenant: str, topic: str) -> bool:
    return consent.CheckConsent(
        pb.CheckConsentRequest(tenant_id=tenant, recipient=WA, topic=topic)
    ).allowed


def ctl(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONSENT_TARGET": server.target}
    return subprocess.run(
        [CONSENTCTL, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_app_level_url_routes_each_entry_to_its_tenant(
    server: ServerProcess, stubs: tuple[pb_grpc.ConsentServiceStub, Any]
) -> None:
    consent, _ = stubs
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        shake = http.get(
            "/whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": "vt-globex", "hub.challenge": "7"},
        )
        assert shake.status_code == 200 and shake.text == "7"
        wrong = http.get(
            "/whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "7"},
        )
        assert wrong.status_code == 403
    doc = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": "1", "changes": [change(ACME, text("STOP", "wamid.route-a"))]},
            {"id": "2", "changes": [change(GLOBEX, text("STOP PROMOTIONS", "wamid.route-g"))]},
            {"id": "3", "changes": [change("31337", text("START", "wamid.route-x"))]},
        ],
    }
    assert post(server, "/whatsapp", doc).status_code == 200
    assert not allowed(consent, "acme", "orders")
    assert allowed(consent, "globex", "orders") and not allowed(consent, "globex", "marketing")
    assert post(server, "/whatsapp", doc, secret="forged").status_code == 401
    nobody = {"entry": [{"changes": [change("31337", text("STOP", "wamid.route-y"))]}]}
    assert post(server, "/whatsapp", nobody).status_code == 404  # Meta redelivers later
    assert "16505551234" not in "".join(server.lines)


def test_dead_letters_from_the_command_line(
    server: ServerProcess, stubs: tuple[pb_grpc.ConsentServiceStub, Any]
) -> None:
    _, admin = stubs
    doc = {
        "entry": [
            {
                "changes": [
                    change(
                        ACME,
                        {"from": WA_ID, "id": "wamid.dl1", "type": "unsupported"},
                        {
                            "from": WA_ID,
                            "id": "wamid.dl2",
                            "timestamp": "99999999999",
                            "type": "text",
                            "text": {"body": "START"},
                        },
                    )
                ]
            }
        ]
    }
    assert post(server, "/whatsapp/acme", doc).status_code == 200
    listed = ctl(server, "inbound", "dead-letters", "list", "acme")
    assert listed.returncode == 0, listed.stderr
    assert "unsupported" in listed.stdout and "refused" in listed.stdout
    assert "2 shown of 2 kept" in listed.stdout
    items = admin.ListUnappliedNotifications(
        apb.ListUnappliedNotificationsRequest(tenant_id="acme")
    ).notifications
    refused = next(i for i in items if i.reason == "refused")
    unsupported = next(i for i in items if i.reason == "unsupported")
    assert "received_at" in refused.detail  # the opt-in dated far ahead
    again = ctl(server, "inbound", "dead-letters", "replay", "acme", refused.id)
    assert again.returncode == 1 and "still not applied (refused)" in again.stdout
    gone = ctl(server, "inbound", "dead-letters", "discard", "acme", unsupported.id)
    assert gone.returncode == 0 and unsupported.id in gone.stdout
    missing = ctl(server, "inbound", "dead-letters", "replay", "globex", refused.id)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    after = ctl(server, "inbound", "dead-letters", "list", "acme")
    assert "1 shown of 1 kept" in after.stdout
    # The short form of `inbound` still simulates a reply.
    simulated = ctl(server, "inbound", "acme", "+16505551299", "--text", "STOP")
    assert simulated.returncode == 0 and "OPTED_OUT" in simulated.stdout
