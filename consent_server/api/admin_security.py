"""ConsentAdminService RPCs for API keys and erasure.

A mixin of :class:`consent_server.api.admin.ConsentAdminService`, which combines
the admin RPCs of every area into the one servicer of the service.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from consent_client.v1 import admin_pb2 as apb
from consent_server.domain.auth import ApiKeyRecord, Role
from consent_server.domain.security import SecurityAuthority

from . import convert as cv
from .auth import current_caller, current_principal
from .consent_service import rpc

log = logging.getLogger("consent_server.admin")

Ctx = grpc.aio.ServicerContext[Any, Any]

_ROLE_FROM_PB: dict[int, Role] = {
    apb.API_KEY_ROLE_ADMIN: Role.ADMIN,
    apb.API_KEY_ROLE_WRITER: Role.WRITER,
    apb.API_KEY_ROLE_SENDER: Role.SENDER,
    apb.API_KEY_ROLE_READER: Role.READER,
}
_ROLE_TO_PB = {role: number for number, role in _ROLE_FROM_PB.items()}


def api_key(record: ApiKeyRecord) -> apb.ApiKey:
    """A stored key on the wire (never the secret or its hash)."""
    out = apb.ApiKey(
        key_id=record.key_id,
        tenant_id=record.tenant_id,
        role=_ROLE_TO_PB[record.role],  # type: ignore[arg-type]
        description=record.description,
        created_at=cv.timestamp(record.created_at_ms),
        created_by=record.created_by,
        revoked=record.revoked,
        rate_limit_per_second=record.rate_limit_per_s,
    )
    if record.revoked:
        out.revoked_at.CopyFrom(cv.timestamp(record.revoked_at_ms))
    return out


class SecurityAdminServicer:
    """CreateApiKey, ListApiKeys, RevokeApiKey and ForgetRecipient."""

    def __init__(self, security: SecurityAuthority) -> None:
        self._s = security

    @rpc
    async def CreateApiKey(
        self, request: apb.CreateApiKeyRequest, context: Ctx
    ) -> apb.CreateApiKeyResponse:
        created = await self._s.create_key(
            tenant_id=request.tenant_id,
            role=_ROLE_FROM_PB.get(request.role),
            description=request.description,
            rate_limit_per_s=request.rate_limit_per_second,
            created_by=current_principal(),
            caller=current_caller(),
        )
        log.info(
            "API key created",
            extra={
                "key_id": created.record.key_id,
                "tenant": created.record.tenant_id,
                "role": created.record.role.value,
                "by": current_principal(),
            },
        )
        return apb.CreateApiKeyResponse(key=api_key(created.record), api_key=created.api_key)

    @rpc
    async def ListApiKeys(
        self, request: apb.ListApiKeysRequest, context: Ctx
    ) -> apb.ListApiKeysResponse:
        records = await self._s.list_keys(request.tenant_id, request.include_revoked)
        return apb.ListApiKeysResponse(keys=[api_key(r) for r in records])

    @rpc
    async def RevokeApiKey(
        self, request: apb.RevokeApiKeyRequest, context: Ctx
    ) -> apb.RevokeApiKeyResponse:
        record, already = await self._s.revoke_key(request.tenant_id, request.key_id)
        if not already:
            log.info(
                "API key revoked",
                extra={
                    "key_id": record.key_id,
                    "tenant": record.tenant_id,
                    "by": current_principal(),
                },
            )
        return apb.RevokeApiKeyResponse(key=api_key(record), already_revoked=already)

    @rpc
    async def ForgetRecipient(
        self, request: apb.ForgetRecipientRequest, context: Ctx
    ) -> apb.ForgetRecipientResponse:
        result = await self._s.forget(
            request.tenant_id,
            cv.optional_recipient(request.HasField("recipient"), request.recipient),
            current_principal(),
        )
        c = result.counts
        # The erasure is logged without the address (not even masked).
        log.info(
            "recipient erased",
            extra={
                "erasure_id": result.erasure_id,
                "tenant": request.tenant_id,
                "channel": result.recipient.channel.value,
                "suppressed": bool(c.suppressed_topics),
                "by": current_principal(),
            },
        )
        return apb.ForgetRecipientResponse(
            records_removed=c.records_removed,
            events_removed=c.events_removed,
            idempotency_entries_removed=c.idempotency_entries_removed,
            messages_cancelled=c.messages_cancelled,
            messages_erased=c.messages_erased,
            other_records_removed=c.other_records_removed,
            suppressed=bool(c.suppressed_topics),
            suppressed_topics=c.suppressed_topics,
            erasure_id=result.erasure_id,
            recipient=cv.recipient(result.recipient),
        )
