"""The ``whatsapp_cloud`` provider: the WhatsApp Cloud API ``/{phone-number-id}/messages``.

Text messages are sent as ``type: text``; templates as ``type: template`` with the
parameters as body text parameters. Other message kinds cannot be sent and fail.
``biz_opaque_callback_data`` carries our message id, so status webhooks can name it,
and ``Idempotency-Key`` carries it too for relays that honour it.

Error code 131050 (the user stopped marketing messages) records an opt-out of
``marketing``; 21610 one of all topics. Rate limits, 5xx and Meta's temporary codes
are retried; other errors fail the message.
"""

from __future__ import annotations

from typing import Any

import httpx

from consent_server.domain.delivery import ProviderConfig

from .base import (
    DeliveryMessage,
    HttpProvider,
    PermanentFailure,
    ProviderResult,
    answer,
    error_code,
    opt_out_scope,
    parse_json,
)

# Meta's codes for throttling and temporary trouble: retry later.
_TRANSIENT_CODES = {1, 2, 4, 17, 341, 80007, 130429, 131000, 131016, 131048, 131056, 133004}


def request_body(message: DeliveryMessage) -> dict[str, Any] | None:
    """The Cloud API request for a message, or None when the kind cannot be sent."""
    base: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.address.lstrip("+"),
        "biz_opaque_callback_data": message.message_id,
    }
    kind = message.body.get("kind")
    if kind == "text":
        return {**base, "type": "text", "text": {"body": message.body.get("text", "")}}
    if kind == "template":
        template: dict[str, Any] = {
            "name": message.body.get("name", ""),
            "language": {"code": message.body.get("language") or "en"},
        }
        params = message.body.get("parameters") or []
        if params:
            template["components"] = [
                {"type": "body", "parameters": [{"type": "text", "text": p} for p in params]}
            ]
        return {**base, "type": "template", "template": template}
    return None


class WhatsAppCloudProvider(HttpProvider):
    """Delivers through Meta's WhatsApp Cloud API with a bearer token."""

    name = "whatsapp_cloud"

    def __init__(self, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        super().__init__(
            f"{config.url.rstrip('/')}/{config.phone_number_id}/messages", config, http
        )
        self._token = config.secret

    async def send(self, message: DeliveryMessage) -> ProviderResult:
        """POST one message; classify the answer (see the module docstring)."""
        if message.channel != "whatsapp":
            return PermanentFailure(f"whatsapp_cloud cannot deliver {message.channel} messages")
        body = request_body(message)
        if body is None:
            return PermanentFailure(
                f"whatsapp_cloud cannot send {message.body.get('kind')} messages"
            )
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Idempotency-Key": message.message_id,
        }
        return await self._post(classify, json=body, headers=headers)


def classify(status: int, text: str) -> ProviderResult:
    """Turn a Cloud API answer into a provider result."""
    payload = parse_json(text)
    code = error_code(payload)
    delivered = None
    if 200 <= status < 300 and isinstance(payload, dict):
        messages = payload.get("messages")
        delivered = ""
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            delivered = str(messages[0].get("id", ""))
    return answer(
        "whatsapp_cloud",
        status,
        payload,
        scope=opt_out_scope(code),
        delivered=delivered,
        retry=status == 429 or status >= 500 or code in _TRANSIENT_CODES,
    )
