"""Masking, validation primitives and page tokens."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent_server.domain import validation as val
from consent_server.domain.masking import mask_address, mask_email, mask_phone, mask_text
from consent_server.domain.service import decode_page_token, encode_page_token
from consent_server.domain.validation import RawMessage, RawTimestamp, Violations


def test_masks() -> None:
    assert mask_phone("+919876543210") == "+91987*****10"
    assert mask_email("jane@example.com") == "j***@example.com"
    assert mask_address("+14155550123") == "+14155****23"
    text = mask_text("to +91 98765 43210 / 919876543210 / Jane.Doe@Example.com at 127.0.0.1:50051")
    assert "9876543210" not in text.replace(" ", "")
    assert "Jane.Doe" not in text and "127.0.0.1:50051" in text


@given(st.from_regex(r"\A\+[1-9]\d{7,14}\Z"))
def test_masked_numbers_hide_the_subscriber_part(number: str) -> None:
    masked = mask_text(f"number {number} here")
    assert number not in masked
    assert number[-4:-2] not in masked.split()[1][-4:-2] or "*" in masked


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("acme", True),
        ("a", True),
        ("a-b_c9", True),
        ("", False),
        ("Acme", False),
        ("-acme", False),
        ("a" * 64, True),
        ("a" * 65, False),
        ("acme corp", False),
        ("acme\n", False),
        ("ácme", False),
        ("{cp01}", False),
        ("*", False),
    ],
)
def test_tenant_ids(value: str, ok: bool) -> None:
    v = Violations()
    assert val.tenant_id(v, value) == (value if ok else "")
    assert (not v.items) is ok


@pytest.mark.parametrize(
    ("value", "expected", "ok"),
    [
        ("marketing", "marketing", True),
        ("Order_Updates", "order_updates", True),
        ("", "", True),
        ("a.b-c_d", "a.b-c_d", True),
        ("a" * 65, "", False),
        ("bad topic", "", False),
        ("*", "", False),
        ("🎉", "", False),
        ("-x", "", False),
    ],
)
def test_topics(value: str, expected: str, ok: bool) -> None:
    v = Violations()
    assert val.topic(v, value) == expected
    assert (not v.items) is ok


def test_required_topic() -> None:
    v = Violations()
    val.topic(v, "", required=True)
    assert v.items[0].field == "topic"


def test_identifier_limits() -> None:
    v = Violations()
    assert val.identifier(v, "wamid.HBgM==", "event_id") == "wamid.HBgM=="
    assert val.identifier(v, "x" * 128, "event_id")
    assert val.identifier(v, "x" * 129, "event_id") == ""
    assert val.identifier(v, "has space", "event_id") == ""
    assert val.identifier(v, "ünï", "event_id") == ""
    assert [i.field for i in v.items] == ["event_id"] * 3


def test_occurred_at_bounds() -> None:
    now = 1_800_000_000_000
    v = Violations()
    assert val.occurred_at(v, None, now, "occurred_at") == now
    assert val.occurred_at(v, RawTimestamp(now // 1000 + 299, 0), now, "occurred_at")
    assert not v.items
    val.occurred_at(v, RawTimestamp(now // 1000 + 301, 0), now, "occurred_at")
    val.occurred_at(v, RawTimestamp(0, -1), now, "occurred_at")
    val.occurred_at(v, RawTimestamp(-5, 0), now, "occurred_at")
    assert len(v.items) == 3


def test_evidence_and_metadata_limits() -> None:
    v = Violations()
    assert val.evidence(v, "é" * 512) == "é" * 512  # 1024 bytes exactly
    val.evidence(v, "é" * 513)
    val.metadata(v, {str(i): "x" for i in range(33)})
    val.metadata(v, {"k": "x" * 513})
    val.metadata(v, {"": "x"})
    assert len(v.items) == 4


def test_messages() -> None:
    v = Violations()
    assert val.message(v, RawMessage("text", text="hi")).text == "hi"
    val.message(v, None)
    val.message(v, RawMessage(None))
    val.message(v, RawMessage("text", text="   "))
    val.message(v, RawMessage("text", text="x" * 4097))
    val.message(v, RawMessage("template", template_name=""))
    val.message(v, RawMessage("payload", content_type="", data=b""))
    val.message(v, RawMessage("text", text="x", serialized_size=64 * 1024 + 1))
    fields = [i.field for i in v.items]
    assert fields == [
        "message",
        "message",
        "message.text",
        "message.text",
        "message.template.name",
        "message.payload.content_type",
        "message.payload.data",
        "message",
    ]


@given(st.integers(0, 2**62))
def test_page_tokens_round_trip(revision: int) -> None:
    assert decode_page_token(encode_page_token(revision)) == revision


@pytest.mark.parametrize("token", ["", "garbage", "djE6", "djE6LTE", "djI6MTA", "!!!", "djE6MTA=x"])
def test_bad_page_tokens(token: str) -> None:
    with pytest.raises(ValueError, match="not a page token"):
        decode_page_token(token)
