"""What a provider is given and what it answers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from consent_server.domain.delivery import ProviderConfig
from consent_server.domain.feedback import OPT_OUT_CODES, opt_out_scope
from consent_server.egress import EgressRefused

__all__ = ["OPT_OUT_CODES", "opt_out_scope"]  # the codes' meaning lives in the domain


@dataclass(frozen=True, slots=True)
class DeliveryMessage:
    """A claimed message, ready for a provider. ``message_id`` is the idempotency key."""

    message_id: str
    tenant_id: str
    channel: str
    address: str
    topic: str
    purpose: str
    body: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)
    accepted_at_ms: int = 0
    attempt: int = 1

    def as_json(self) -> dict[str, Any]:
        """The message as the webhook provider posts it."""
        return {
            "message_id": self.message_id,
            "tenant_id": self.tenant_id,
            "channel": self.channel,
            "address": self.address,
            "topic": self.topic,
            "purpose": self.purpose,
            "message": self.body,
            "metadata": self.metadata,
            "accepted_at_ms": self.accepted_at_ms,
            "attempt": self.attempt,
        }


@dataclass(frozen=True, slots=True)
class Delivered:
    """The provider accepted the message (``logged_only``: it only wrote it to the log,
    so the status says LOGGED, not DELIVERED)."""

    provider_message_id: str = ""
    logged_only: bool = False


@dataclass(frozen=True, slots=True)
class TransientFailure:
    """Worth retrying (timeouts, 5xx, rate limits)."""

    error: str


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """Retrying cannot help (bad request, unsupported message)."""

    error: str


@dataclass(frozen=True, slots=True)
class OptedOut:
    """The provider says the recipient opted out or blocked the sender.

    ``topic`` is the scope of the opt-out to record ("" = all topics).
    """

    topic: str
    error: str


ProviderResult = Delivered | TransientFailure | PermanentFailure | OptedOut


class Provider(Protocol):
    """Hands messages to a channel. Never raises for a provider answer: it returns one."""

    name: str

    async def send(self, message: DeliveryMessage) -> ProviderResult:
        """Deliver one message, passing ``message.message_id`` as the idempotency key."""
        ...


def error_code(payload: Any) -> int | None:
    """The numeric error code of a provider answer, in the shapes providers use:
    ``{"error": {"code": 131050}}`` (Meta), ``{"code": 21610}`` (Twilio)."""
    if not isinstance(payload, dict):
        return None
    inner = payload.get("error")
    candidates = [inner.get("code")] if isinstance(inner, dict) else []
    candidates.append(payload.get("code"))
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def parse_json(text: str) -> Any:
    """The JSON of an answer body, or None when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return None


_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")


def error_class(payload: Any) -> str:
    """A provider's error class when it is a short token (``recipient_opted_out``,
    Meta's ``OAuthException``); "" otherwise. Free text is never kept."""
    if not isinstance(payload, dict):
        return ""
    inner = payload.get("error")
    candidates = [inner.get("type"), inner.get("status")] if isinstance(inner, dict) else [inner]
    candidates.append(payload.get("type"))
    for value in candidates:
        if isinstance(value, str) and _TOKEN_RE.match(value):
            return value
    return ""


def summary(name: str, status: int, payload: Any) -> str:
    """What last_error keeps of an answer: the status, the provider's error code and
    class. Never the body: whatever a destination answers must not be readable back
    through GetMessageStatus."""
    out = f"{name} {status}"
    code, kind = error_code(payload), error_class(payload)
    if code is not None:
        out += f": error {code}"
    if kind:
        out += f" ({kind})" if code is not None else f": {kind}"
    return out


async def post_and_classify(
    http: httpx.AsyncClient,
    name: str,
    url: str,
    classify: Callable[[int, str], ProviderResult],
    *,
    request_timeout_s: float,
    **request: Any,
) -> ProviderResult:
    """POST to a provider: a refused destination fails the message, a timeout or
    network error is transient (retried), a redirect is never followed (it could lead
    anywhere) and fails, any other answer goes to the provider's own ``classify``."""
    try:
        resp = await http.post(url, timeout=request_timeout_s, follow_redirects=False, **request)
    except EgressRefused as exc:
        return PermanentFailure(f"{name}: {exc}")
    except httpx.InvalidURL:  # e.g. 0177.0.0.1: not a URL httpx will ever connect to
        return PermanentFailure(f"{name}: destination refused: not a valid URL")
    except httpx.TimeoutException:
        return TransientFailure(f"{name} timed out")
    except httpx.HTTPError as exc:
        return TransientFailure(f"{name} unreachable: {type(exc).__name__}")
    if 300 <= resp.status_code < 400:
        return PermanentFailure(
            f"{name} {resp.status_code}: destination refused: redirects are not followed"
        )
    return classify(resp.status_code, resp.text)


def answer(
    name: str, status: int, payload: Any, *, scope: str | None, delivered: str | None, retry: bool
) -> ProviderResult:
    """A provider's answer as a result, in this order: an opt-out (``scope`` not None),
    a delivery (``delivered``: the provider's message id, None when it is not one),
    then retried (``retry``) or failed; never more than the ``summary`` of the body."""
    if scope is not None:
        return OptedOut(scope, summary(name, status, payload))
    if delivered is not None:
        return Delivered(delivered[:256])
    if retry:
        return TransientFailure(summary(name, status, payload))
    return PermanentFailure(summary(name, status, payload))


class HttpProvider:
    """What the HTTP providers (webhook, whatsapp_cloud) share: one URL, the shared
    client, the per-request timeout, and ``post_and_classify``."""

    name = ""

    def __init__(self, url: str, config: ProviderConfig, http: httpx.AsyncClient) -> None:
        self._url = url
        self._timeout = config.timeout_ms / 1000
        self._http = http

    async def _post(
        self, classify: Callable[[int, str], ProviderResult], **request: Any
    ) -> ProviderResult:
        return await post_and_classify(
            self._http, self.name, self._url, classify, request_timeout_s=self._timeout, **request
        )
