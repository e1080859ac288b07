"""CONSENT_REDIS_MIN_REPLICAS_ACK / CONSENT_REDIS_ACK_TIMEOUT_MS: validated, one clear line."""

from __future__ import annotations

import pytest

from consent_server.config import ConfigError, load

URL = {"CONSENT_REDIS_URL": "redis://127.0.0.1:1/0"}


def test_defaults_are_off() -> None:
    s = load([], environ=URL)
    assert (s.redis.min_replicas_ack, s.redis.ack_timeout_ms) == (0, 1000)


def test_env_and_flags() -> None:
    s = load(
        [],
        environ={
            **URL,
            "CONSENT_REDIS_MIN_REPLICAS_ACK": "2",
            "CONSENT_REDIS_ACK_TIMEOUT_MS": "250",
        },
    )
    assert (s.redis.min_replicas_ack, s.redis.ack_timeout_ms) == (2, 250)
    s = load(["--redis-min-replicas-ack", "1", "--redis-ack-timeout-ms", "100"], environ=URL)
    assert (s.redis.min_replicas_ack, s.redis.ack_timeout_ms) == (1, 100)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CONSENT_REDIS_MIN_REPLICAS_ACK": "-1"}, "CONSENT_REDIS_MIN_REPLICAS_ACK='-1'"),
        ({"CONSENT_REDIS_MIN_REPLICAS_ACK": "one"}, "expected a whole number"),
        ({"CONSENT_REDIS_MIN_REPLICAS_ACK": "99"}, "between 0 and 16"),
        ({"CONSENT_REDIS_ACK_TIMEOUT_MS": "0"}, "CONSENT_REDIS_ACK_TIMEOUT_MS='0'"),
        ({"CONSENT_REDIS_ACK_TIMEOUT_MS": "1.5"}, "expected a whole number"),
        (
            {"CONSENT_REDIS_MIN_REPLICAS_ACK": "1", "CONSENT_REDIS_ACK_TIMEOUT_MS": "2000"},
            "must be below CONSENT_REDIS_TIMEOUT",
        ),
    ],
)
def test_bad_values_are_one_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load([], environ={**URL, **env})
    assert "\n" not in str(err.value)


def test_needs_a_real_redis() -> None:
    with pytest.raises(ConfigError, match="needs CONSENT_REDIS_URL"):
        load([], environ={"CONSENT_REDIS_MIN_REPLICAS_ACK": "1"})
    load([], environ={"CONSENT_REDIS_MIN_REPLICAS_ACK": "0"})  # off: fine anywhere


def test_unacknowledged_write_is_unavailable_with_its_own_reason() -> None:
    """UNAVAILABLE (clients retry it like any outage), reason REPLICATION_NOT_ACKNOWLEDGED,
    a RetryInfo, and a message that says the change is on the primary and how to retry."""
    from google.rpc import code_pb2, error_details_pb2

    from consent_server.api.errors import to_status
    from consent_server.domain.errors import ReplicationNotAcknowledged

    status = to_status(ReplicationNotAcknowledged("only 0 of 1 replicas confirmed"))
    assert status.code == code_pb2.UNAVAILABLE
    assert "primary" in status.message and "same event_id" in status.message
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info) and info.reason == "REPLICATION_NOT_ACKNOWLEDGED"
    assert status.details[1].Unpack(retry) and retry.retry_delay.seconds == 1


async def test_a_connection_closed_under_a_call_is_unavailable() -> None:
    """redis-py's cluster client closes every connection when a node answers CLUSTERDOWN
    (during a failover), also connections other calls are using; those calls then fail
    inside redis-py with AttributeError. That is an outage (UNAVAILABLE, retried by
    clients), not INTERNAL. An AttributeError of our own code stays a bug."""
    import redis.asyncio as aioredis

    from consent_server.domain.errors import StoreUnavailable
    from consent_server.store.repository import guarded

    closed = aioredis.Connection()  # never connected: no writer, as after a disconnect
    with pytest.raises(StoreUnavailable):
        await guarded(lambda: closed._send_packed_command([b"PING\r\n"]))

    async def ours() -> None:
        None.missing  # type: ignore[attr-defined]  # noqa: B018

    with pytest.raises(AttributeError):
        await guarded(ours)
