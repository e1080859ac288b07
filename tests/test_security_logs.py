"""A full scenario's server log holds no full phone number, e-mail address or key secret."""

from __future__ import annotations

import re

import grpc

from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import consent_pb2 as pb
from consent_server.domain.auth import new_key

from .security_support import Stubs, code_of, failure, md
from .support import ServerProcess

PHONES = ["+919876543210", "+14155550188"]
EMAIL = "jane.doe@example.com"


def test_a_full_scenario_logs_nothing_secret() -> None:
    _, boot, _ = new_key()
    srv = ServerProcess(
        {
            "CONSENT_REQUIRE_AUTH": "1",
            "CONSENT_BOOTSTRAP_ADMIN_KEY": boot,
            "CONSENT_LOG_LEVEL": "debug",
        }
    ).start()
    secrets = [boot]
    try:
        with grpc.insecure_channel(srv.target) as ch:
            s = Stubs(ch)
            admin = s.create_key(boot, "acme", "admin").api_key
            writer = s.create_key(admin, "acme", "writer").api_key
            secrets += [admin, writer]
            people = [pb.Recipient(channel=pb.CHANNEL_WHATSAPP, address=p) for p in PHONES]
            people.append(pb.Recipient(channel=pb.CHANNEL_EMAIL, address=EMAIL.upper()))
            for who in people:
                s.consent.OptOut(
                    pb.OptOutRequest(
                        tenant_id="acme", recipient=who, evidence=f"STOP from {who.address}"
                    ),
                    metadata=md(writer),
                )
                send = pb.SendIfAllowedRequest(
                    tenant_id="acme",
                    recipient=who,
                    topic="marketing",
                    message=pb.Message(text=f"hi {who.address}"),
                    metadata={"to": who.address},
                )
                failure(s.consent.SendIfAllowed, send, writer)
                bad = pb.CheckConsentRequest(
                    tenant_id="acme",
                    recipient=pb.Recipient(channel=who.channel, address=who.address + "@@x"),
                )
                failure(s.consent.CheckConsent, bad, writer)
                s.admin.ForgetRecipient(
                    apb.ForgetRecipientRequest(tenant_id="acme", recipient=who), metadata=md(admin)
                )
            # Wrong, tampered and foreign-tenant keys; a key pasted into a field.
            assert (
                code_of(
                    s.consent.CheckConsent,
                    pb.CheckConsentRequest(tenant_id="acme", recipient=people[0]),
                    writer[:-2] + "zz",
                )
                == grpc.StatusCode.UNAUTHENTICATED
            )
            failure(
                s.consent.CheckConsent,
                pb.CheckConsentRequest(tenant_id=admin, recipient=people[0]),
                writer,
            )
            failure(
                s.admin.CreateApiKey,
                apb.CreateApiKeyRequest(tenant_id="acme", role=1, description=admin + "x" * 300),
                admin,
            )
            key_id = admin[3:19]
            s.admin.RevokeApiKey(
                apb.RevokeApiKeyRequest(tenant_id="acme", key_id=writer[3:19]), metadata=md(admin)
            )
    finally:
        srv.stop()
    log = srv.log()
    assert "API key created" in log and "recipient erased" in log and key_id in log
    for phone in PHONES:
        assert phone not in log and phone[1:] not in log and phone[-10:] not in log
    assert EMAIL not in log.lower() and "jane.doe" not in log.lower()
    for token in secrets:
        assert token not in log and token[20:] not in log
    assert not re.search(r"\+\d{10,}", log)
