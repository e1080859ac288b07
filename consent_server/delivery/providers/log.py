"""The ``log`` provider (the default): writes one masked line per message, sends nothing."""

from __future__ import annotations

import logging

from consent_server.domain.masking import mask_address

from .base import Delivered, DeliveryMessage, ProviderResult

log = logging.getLogger("consent_server.delivery.log")


class LogProvider:
    """Logs the message instead of sending it: development, tests, dry runs."""

    name = "log"

    async def send(self, message: DeliveryMessage) -> ProviderResult:
        """Log one line with the address masked; never the body (it may hold personal data)."""
        log.info(
            "logged, not sent (log provider)",
            extra={
                "message_id": message.message_id,
                "tenant": message.tenant_id,
                "channel": message.channel,
                "to": mask_address(message.address),
                "topic": message.topic,
                "purpose": message.purpose,
                "kind": message.body.get("kind", ""),
                "attempt": message.attempt,
            },
        )
        return Delivered(f"log-{message.message_id}", logged_only=True)
