"""The info log lines an operator matches to records: every change of consent and every
blocked send, with the recipient masked and the event id / message id whole.

Every path that records consent (the API, inbound keywords and buttons, links, WhatsApp
webhooks, provider feedback) goes through these two functions, so each change is one
``consent changed`` line and each refusal of SendIfAllowed one ``send blocked`` line
(a send cancelled later at delivery is the worker's ``delivery cancelled`` line, which
names the message id).
"""

from __future__ import annotations

import logging

from .masking import mask_address
from .model import ChangeOutcome, ConsentEventInput, Decision, Recipient

log = logging.getLogger("consent_server.consent")


def consent_changed(event: ConsentEventInput, outcome: ChangeOutcome) -> None:
    """One info line when recording ``event`` changed a scope (nothing for a repeat or a
    change that left the status as it was)."""
    if not outcome.changed or outcome.duplicate:
        return
    log.info(
        "consent changed",
        extra={
            "tenant": event.tenant_id,
            "channel": event.recipient.channel.name,
            "recipient": mask_address(event.recipient.address),
            "topic": event.topic,
            "scope": "topic" if event.topic else "all",
            "action": event.action.name,
            "source": event.source.value,
            "event_id": outcome.event_id,
            "revision": outcome.revision,
            "principal": event.principal,
        },
    )


def send_blocked(tenant_id: str, recipient: Recipient, topic: str, decision: Decision) -> None:
    """One info line for a SendIfAllowed that consent refused: why, and which record."""
    log.info(
        "send blocked",
        extra={
            "tenant": tenant_id,
            "channel": recipient.channel.name,
            "recipient": mask_address(recipient.address),
            "topic": topic,
            "reason": decision.block_reason.value if decision.block_reason else "",
            "decided_by": decision.decided_by.value,
            # The event that set the deciding record ("" = the default policy decided).
            "event_id": decision.record.event_id if decision.record else "",
        },
    )
