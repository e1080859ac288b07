"""The error contract: every ErrorInfo reason the server sends is an ErrorReason value,
documented in the proto, and every error (batch items included) goes through one mapper."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.rpc import code_pb2, error_details_pb2

from consent_client.v1 import consent_pb2 as pb
from consent_server.api import convert as cv
from consent_server.api import errors
from consent_server.domain.errors import FieldViolation, InvalidArgument, NotConfigured
from consent_server.domain.model import BlockReason, Channel, Decision, Recipient, Scope, Status

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "consent_server"
PROTO = ROOT / "proto" / "consent" / "v1" / "consent.proto"
MAPPER = PACKAGE / "api" / "errors.py"


def _enum_comments() -> dict[str, str]:
    """ErrorReason value name -> the comment lines right above it in consent.proto."""
    body = PROTO.read_text().split("enum ErrorReason {", 1)[1].split("\n}", 1)[0]
    comments: dict[str, str] = {}
    pending: list[str] = []
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("//"):
            pending.append(line[2:].strip())
            continue
        m = re.match(r"([A-Z0-9_]+)\s*=\s*\d+", line)
        if m:
            comments[m.group(1)] = " ".join(pending)
        pending = []
    return comments


def _deprecated() -> set[str]:
    names = set()
    for value in pb.ErrorReason.DESCRIPTOR.values:
        opts = descriptor_pb2.EnumValueOptions()
        opts.ParseFromString(value.GetOptions().SerializeToString())
        if opts.deprecated:
            names.add(value.name)
    return names


def _reason_literals() -> dict[str, list[str]]:
    """Reason strings written in the package outside the mapper: ``reason="X"`` keywords
    and the reason argument of IdConflict(field, reason, description)."""
    found: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            values = [k.value for k in node.keywords if k.arg == "reason"]
            name = getattr(node.func, "id", getattr(node.func, "attr", ""))
            if name == "IdConflict" and len(node.args) >= 2:
                values.append(node.args[1])
            for v in values:
                if isinstance(v, ast.Constant) and isinstance(v.value, str):
                    found.setdefault(v.value, []).append(f"{path.relative_to(ROOT)}:{v.lineno}")
    return found


def test_every_reason_the_mapper_sends_is_in_the_enum_and_documented() -> None:
    comments = _enum_comments()
    sent = errors.sent_reasons()
    assert sent, "the mapper declares no reasons"
    for value in sent:
        name = pb.ErrorReason.Name(value)
        assert name in comments, f"{name} is not declared in consent.proto"
        assert comments[name], f"{name} has no comment in consent.proto"
        assert name not in _deprecated(), f"{name} is sent but marked deprecated"
        assert value != pb.ERROR_REASON_UNSPECIFIED


def test_every_reason_the_mapper_sends_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text().split("## Errors", 1)[1].split("\n## ", 1)[0]
    for value in errors.sent_reasons():
        assert f"`{pb.ErrorReason.Name(value)}`" in readme, pb.ErrorReason.Name(value)


def test_every_reason_literal_in_the_package_is_one_the_mapper_sends() -> None:
    sent = {pb.ErrorReason.Name(v) for v in errors.sent_reasons()}
    literals = _reason_literals()
    assert literals, "the scan found no reason literals: it no longer looks at the code"
    for literal, where in literals.items():
        assert literal in sent, f"reason {literal!r} at {where} is not sent by the mapper"
    for block in BlockReason:
        assert block.value in sent, block


def test_every_enum_value_is_sent_or_deprecated() -> None:
    sent = {pb.ErrorReason.Name(v) for v in errors.sent_reasons()}
    deprecated = _deprecated()
    comments = _enum_comments()
    for name in (v.name for v in pb.ErrorReason.DESCRIPTOR.values):
        if name == "ERROR_REASON_UNSPECIFIED":
            continue
        assert name in sent or name in deprecated, f"{name} is never sent and not deprecated"
        if name in deprecated:
            assert "deprecated" in comments[name].lower(), f"{name}: say why it is deprecated"


def test_only_the_mapper_builds_error_info_or_status() -> None:
    """One mapper: no other module builds a google.rpc.Status or ErrorInfo by hand."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == MAPPER:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in {"ErrorInfo", "Status", "BadRequest", "RetryInfo", "QuotaFailure"}:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not offenders


def test_not_configured_is_an_enum_reason() -> None:
    st = errors.to_status(NotConfigured("consent links are not configured"))
    info = error_details_pb2.ErrorInfo()
    assert st.details[0].Unpack(info)
    assert st.code == code_pb2.FAILED_PRECONDITION
    assert info.reason == pb.ErrorReason.Name(pb.NOT_CONFIGURED)


def test_batch_item_error_is_the_mapper_status() -> None:
    violations = [FieldViolation("recipients[1].address", "not a phone number")]
    st = errors.item_status(violations)
    assert st == errors.to_status(InvalidArgument(violations))
    bad = error_details_pb2.BadRequest()
    assert st.code == code_pb2.INVALID_ARGUMENT and st.details[1].Unpack(bad)
    assert [v.field for v in bad.field_violations] == ["recipients[1].address"]


@pytest.mark.parametrize(
    ("block", "code"),
    [
        (BlockReason.RECIPIENT_OPTED_OUT, pb.RECIPIENT_OPTED_OUT),
        (BlockReason.OPT_IN_REQUIRED, pb.OPT_IN_REQUIRED),
    ],
)
def test_check_response_carries_the_typed_reason(block: BlockReason, code: int) -> None:
    resp = _check_response(Decision(False, Status.OPTED_OUT, Scope.ALL, None, block))
    assert resp.reason == block.value
    assert resp.reason_code == code


def test_allowed_check_response_has_no_reason() -> None:
    resp = _check_response(Decision(True, Status.NO_RECORD, Scope.DEFAULT_POLICY, None, None))
    assert resp.reason == "" and resp.reason_code == pb.ERROR_REASON_UNSPECIFIED


def _check_response(decision: Decision) -> pb.CheckConsentResponse:
    """A CheckConsentResponse for ``decision`` about an SMS number and ``marketing``."""
    resp = pb.CheckConsentResponse()
    cv.fill_check_response(resp, _recipient(), "marketing", decision)
    return resp


def _recipient() -> Recipient:
    return Recipient(Channel.SMS, "+12025550100")
