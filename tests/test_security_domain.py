"""The pure security rules: key format, verification, the role table, tenant checks, masking."""

from __future__ import annotations

import pytest

from consent_client.v1 import admin_pb2, consent_pb2
from consent_server.domain import auth
from consent_server.domain.auth import (
    OPERATOR_METHODS,
    ApiKeyRecord,
    Caller,
    PermissionDenied,
    Role,
    Unauthenticated,
    authorize,
    bearer_token,
    hash_secret,
    new_key,
    parse_key,
    verify,
)
from consent_server.domain.masking import mask_text

CONSENT = [
    f"/consent.v1.ConsentService/{m.name}"
    for m in consent_pb2.DESCRIPTOR.services_by_name["ConsentService"].methods
]
ADMIN = [
    f"/consent.v1.ConsentAdminService/{m.name}"
    for m in admin_pb2.DESCRIPTOR.services_by_name["ConsentAdminService"].methods
]
# Admin RPCs added later: the rule must cover them without naming them.
FUTURE_ADMIN = [
    "/consent.v1.ConsentAdminService/GetTenantSettings",
    "/consent.v1.ConsentAdminService/UpdateTenantSettings",
    "/consent.v1.ConsentAdminService/PutDeliveryProvider",
    "/consent.v1.ConsentAdminService/SomethingNobodyHasWrittenYet",
]

# The README's roles table, written out independently of the implementation.
EXPECTED: dict[str, set[str]] = {
    "CheckConsent": {"admin", "writer", "sender", "reader"},
    "BatchCheckConsent": {"admin", "writer", "sender", "reader"},
    "OptOut": {"admin", "writer"},
    "OptIn": {"admin", "writer"},
    "SendIfAllowed": {"admin", "writer", "sender"},
    "HandleInboundMessage": {"admin", "writer"},
    "ListConsentEvents": {"admin", "writer", "reader"},
    "WatchConsentEvents": {"admin", "writer", "reader"},
    "GetMessageStatus": {"admin", "sender", "reader"},
    "CreateConsentLink": {"admin", "writer"},
}


def test_every_consent_rpc_is_in_the_expected_table() -> None:
    assert {m.rsplit("/", 1)[1] for m in CONSENT} == set(EXPECTED)
    assert {"CreateApiKey", "ListApiKeys", "RevokeApiKey", "ForgetRecipient"} <= {
        m.rsplit("/", 1)[1] for m in ADMIN
    }


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("method", CONSENT + ADMIN + FUTURE_ADMIN)
def test_role_table_exhaustively(role: Role, method: str) -> None:
    name = method.rsplit("/", 1)[1]
    allowed = (
        role is Role.ADMIN if "ConsentAdminService" in method else role.value in EXPECTED[name]
    )
    caller = Caller("0123abcd0123abcd", "acme", role)
    if allowed and method in OPERATOR_METHODS:
        # Managing tenants needs an operator key, even the tenant's own admin key is refused.
        with pytest.raises(PermissionDenied) as denied:
            authorize(caller, method, "acme")
        assert denied.value.reason == "TENANT_NOT_ALLOWED" and denied.value.missing == "tenant:*"
    elif allowed:
        authorize(caller, method, "acme")
    else:
        with pytest.raises(PermissionDenied) as err:
            authorize(caller, method, "acme")
        assert err.value.reason == "ROLE_NOT_ALLOWED"
        assert role.value in str(err.value) and name in str(err.value)
        assert "admin" in err.value.missing  # names the role that would do


@pytest.mark.parametrize("method", ["/consent.v1.Nope/X", "/other.Service/CheckConsent", "/x"])
def test_unknown_methods_are_denied_to_every_role(method: str) -> None:
    for role in Role:
        with pytest.raises(PermissionDenied):
            authorize(Caller("0123abcd0123abcd", "*", role), method, "acme")


@pytest.mark.parametrize("method", sorted(OPERATOR_METHODS))
def test_only_operator_keys_manage_tenants(method: str) -> None:
    for tenant in ("acme", "globex", None):
        with pytest.raises(PermissionDenied) as err:
            authorize(Caller("0123abcd0123abcd", "acme", Role.ADMIN), method, tenant)
        assert err.value.reason == "TENANT_NOT_ALLOWED"
        authorize(Caller("0123abcd0123abcd", "*", Role.ADMIN), method, tenant)


@pytest.mark.parametrize("method", [m for m in CONSENT + ADMIN if m not in OPERATOR_METHODS])
def test_tenant_keys_act_only_for_their_tenant(method: str) -> None:
    admin = Caller("0123abcd0123abcd", "acme", Role.ADMIN)
    authorize(admin, method, "acme")
    for other in ("globex", "", "ACME", "acme ", "*"):
        with pytest.raises(PermissionDenied) as err:
            authorize(admin, method, other)
        assert err.value.reason == "TENANT_NOT_ALLOWED"
        assert "acme" not in str(err.value).replace("'acme ", "")  # never names its own tenant
    with pytest.raises(PermissionDenied):
        authorize(admin, method, None)  # a request without tenant_id needs an operator


@pytest.mark.parametrize("method", CONSENT + ADMIN + FUTURE_ADMIN)
def test_operator_keys_act_for_every_tenant(method: str) -> None:
    op = Caller("0123abcd0123abcd", "*", Role.ADMIN)
    for tenant in ("acme", "globex", "*", None):
        authorize(op, method, tenant)
    reader_op = Caller("0123abcd0123abcd", "*", Role.READER)
    if method.endswith("/CheckConsent"):
        authorize(reader_op, method, "acme")
    if "ConsentAdminService" in method:
        with pytest.raises(PermissionDenied):
            authorize(reader_op, method, "acme")


def test_open_services() -> None:
    assert auth.is_open("/grpc.health.v1.Health/Check")
    assert auth.is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert auth.is_open("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    for m in CONSENT + ADMIN:
        assert not auth.is_open(m)


def test_new_keys_parse_and_verify() -> None:
    seen = set()
    for _ in range(200):
        key_id, token, digest = new_key()
        assert token.startswith(f"ck_{key_id}_") and len(token) == 3 + 16 + 1 + 43
        assert parse_key(token) == (key_id, token[20:])
        assert hash_secret(token[20:]) == digest and token[20:] not in digest
        assert not any(key_id[i : i + 8].isdigit() for i in range(9))
        seen.add(token)
        record = ApiKeyRecord(key_id, "acme", Role.READER, digest)
        assert verify(record, token[20:]) == Caller(key_id, "acme", Role.READER)
    assert len(seen) == 200


@pytest.mark.parametrize(
    "token",
    [
        "",
        "ck_",
        "ck_0123abcd0123abcd",
        "ck_0123abcd0123abcd_short",
        "ck_0123ABCD0123abcd_" + "a" * 43,
        "xk_0123abcd0123abcd_" + "a" * 43,
        "ck_0123abcd0123abcd_" + "a" * 44,
        "ck_0123abcd0123abcd_" + "a" * 42 + "!",
        "ck_0123abcd0123abcd_" + "a" * 43 + "\n",
    ],
)
def test_malformed_keys_are_unauthenticated(token: str) -> None:
    with pytest.raises(Unauthenticated):
        parse_key(token)


def test_wrong_unknown_and_revoked_keys_get_one_message() -> None:
    key_id, token, digest = new_key()
    secret = token[20:]
    live = ApiKeyRecord(key_id, "acme", Role.ADMIN, digest)
    revoked = ApiKeyRecord(key_id, "acme", Role.ADMIN, digest, revoked_at_ms=5)
    messages = set()
    for record, presented in ((None, secret), (live, "b" * 43), (revoked, secret)):
        with pytest.raises(Unauthenticated) as err:
            verify(record, presented)
        messages.add(str(err.value))
        assert secret not in str(err.value)
    assert len(messages) == 1


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer   ", False),
        ("Basic abc", False),
        ("Bearer ck_x", True),
        ("bearer ck_x", True),
    ],
)
def test_bearer_header(header: str | None, ok: bool) -> None:
    if ok:
        assert bearer_token(header) == "ck_x"
    else:
        with pytest.raises(Unauthenticated):
            bearer_token(header)


def test_permission_messages_never_echo_addresses() -> None:
    caller = Caller("0123abcd0123abcd", "acme", Role.ADMIN)
    with pytest.raises(PermissionDenied) as err:
        authorize(caller, CONSENT[0], "919876543210")
    assert "919876543210" not in str(err.value)


def test_masking_hides_key_secrets_but_keeps_ids() -> None:
    key_id, token, _ = new_key()
    text = mask_text(f"failed with key {token} for +919876543210 and jane@example.com")
    assert token not in text and token[20:] not in text
    assert f"ck_{key_id}_****" in text
    assert "+91987*****10" in text and "j***@example.com" in text


def test_every_security_reason_is_in_the_proto_enum() -> None:
    names = set(consent_pb2.ErrorReason.keys())
    assert {
        "UNAUTHENTICATED",
        "ROLE_NOT_ALLOWED",
        "TENANT_NOT_ALLOWED",
        "RATE_LIMITED",
        "API_KEY_NOT_FOUND",
    } <= names
    with pytest.raises(PermissionDenied) as err:
        authorize(Caller("0123abcd0123abcd", "acme", Role.READER), CONSENT[0], "globex")
    assert err.value.reason in names
