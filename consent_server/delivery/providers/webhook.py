"""The ``webhook`` provider: POSTs each message as JSON to the tenant's URL, signed.

Headers: ``X-Consent-Timestamp`` (Unix seconds) and ``X-Consent-Signature:
v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>``; receivers recompute it
and reject stale timestamps to stop replays. ``Idempotency-Key`` carries the message
id, so a message re-sent after a worker crash can be recognised by the receiver.

Answers: 2xx = delivered (``id`` or ``message_id`` of a JSON answer is kept as the
provider message id); ``{"error": "recipient_opted_out"}`` or a 21610 code = the
recipient opted out of everything; 408, 425, 429, 5xx and network errors are retried;
other answers fail the message. Redirects are never followed (they fail the message),
and the destination must pass the egress guard (``consent_server.egress``). Only the
status, the error code and a short error class reach ``last_error``, never the body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from consent_server.domain.delivery import ProviderConfig

from .base import (
    DeliveryMessage,
    HttpProvider,
    ProviderResult,
    answer,
    error_code,
    opt_out_scope,
    parse_json,
)

SIGNATURE_HEADER = "X-Consent-Signature"
TIMESTAMP_HEADER = "X-Consent-Timestamp"
#: HTTP answers that mean "try again later" (besides 5xx): the webhook provider and the
#: change webhook dispatcher retry them, every other 4xx is permanent.
RETRY_STATUS = frozenset({408, 425, 429})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """True when ``signature`` is ours for this body and timestamp (constant time)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookProvider(HttpProvider):
    """Delivers by HTTP POST to one URL with an HMAC-SHA256 signature."""

    name = "webhook"

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(config.url, config, http)
        self._secret = config.secret

    async def send(self, message: DeliveryMessage) -> ProviderResult:
        """POST the message; classify the answer (see the module docstring)."""
        body = json.dumps(message.as_json(), ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.message_id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        return await self._post(classify, content=body, headers=headers)


def classify(status: int, text: str) -> ProviderResult:
    """Turn a webhook answer into a provider result."""
    payload = parse_json(text)
    top = payload.get("error") if isinstance(payload, dict) else None
    delivered = None
    if 200 <= status < 300:
        delivered = ""
        if isinstance(payload, dict):
            delivered = str(payload.get("id") or payload.get("message_id") or "")
    return answer(
        "webhook",
        status,
        payload,
        scope=opt_out_scope(error_code(payload), top if isinstance(top, str) else ""),
        delivered=delivered,
        retry=status in RETRY_STATUS or status >= 500,
    )
