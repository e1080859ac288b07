"""Import, export and point-in-time checks end to end: consentctl (the installed console
script) and raw gRPC against the real server process, on the embedded store and a
private redis-server. The README's vendor examples run here exactly as documented."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from consent_client import ConsentClient
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc
from consent_client.v1 import consent_pb2 as pb
from consent_server.cli import transfer

from .security_support import bad_fields
from .support import RedisProcess, ServerProcess

CONSENTCTL = str(Path(sys.executable).parent / "consentctl")
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def run(
    server: ServerProcess, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    env["CONSENT_TARGET"] = server.target
    return subprocess.run(
        [CONSENTCTL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def summary_counts(stdout: str) -> dict[str, int]:
    """The summary table's rows as {name: count}."""
    out: dict[str, int] = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            out[cells[0]] = int(cells[1])
    return out


def example(tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name  # the checkpoint is written beside the input: not into the repo
    shutil.copy(EXAMPLES / name, copy)
    return copy


def check(server: ServerProcess, tenant: str, channel: str, address: str, topic: str) -> int:
    return run(server, "check", tenant, address, "--channel", channel, "--topic", topic).returncode


def test_the_readme_vendor_examples_import_as_documented(
    server: ServerProcess, tenant: str, tmp_path: Path
) -> None:
    twilio = example(tmp_path, "twilio-optouts.csv")
    args = ["--address-column", "phone_number", "--time-column", "opted_out_at"]
    dry = run(server, "import", tenant, str(twilio), *args, "--action", "opt_out", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "dry run: nothing written" in dry.stdout
    assert summary_counts(dry.stdout)["applied (would be)"] == 3
    assert check(server, tenant, "sms", "+14155550100", "marketing") == 0  # nothing written

    done = run(server, "import", tenant, str(twilio), *args, "--action", "opt_out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert summary_counts(done.stdout)["applied"] == 3
    for number in ("+14155550100", "+14155550101", "+14155550102"):
        assert check(server, tenant, "sms", number, "marketing") == 3, number
    assert not (tmp_path / "twilio-optouts.csv.checkpoint.json").exists()
    # What was allowed before the opt-out (2026-11-02T10:15Z), and after it.
    ask = ["check", tenant, "+14155550100", "--channel", "sms", "--topic", "marketing", "--at"]
    before = run(server, *ask, "2026-11-01T09:00Z")
    assert before.returncode == 0 and "NO_RECORD" in before.stdout, before.stdout + before.stderr
    after = run(server, *ask, "2026-11-03T09:00Z")
    assert after.returncode == 3 and "decided by event imp_" in after.stdout
    assert run(server, *ask, "last tuesday").returncode == 2

    again = run(server, "import", tenant, str(twilio), *args, "--action", "opt_out")
    counts = summary_counts(again.stdout)
    assert counts["duplicates (imported before)"] == 3 and counts["applied"] == 0

    braze = example(tmp_path, "braze-subscriptions.csv")
    b = run(
        server,
        "import",
        tenant,
        str(braze),
        "--address-column",
        "phone",
        "--action-column",
        "subscription_state",
        "--time-column",
        "updated_at",
        "--topic",
        "marketing",
    )
    assert b.returncode == 0, b.stdout + b.stderr
    counts = summary_counts(b.stdout)
    assert counts["applied"] == 2 and counts["skipped opt-ins: no proof declared"] == 1
    assert "line 3: skipped_no_proof" in b.stdout
    assert check(server, tenant, "sms", "+14155550103", "marketing") == 3

    klaviyo = example(tmp_path, "klaviyo-suppressions.csv")
    k = run(
        server,
        "import",
        tenant,
        str(klaviyo),
        "--address-column",
        "Email",
        "--time-column",
        "Suppression Date",
        "--channel",
        "email",
        "--action",
        "opt_out",
        "--topic",
        "marketing",
    )
    assert k.returncode == 0, k.stdout + k.stderr
    assert summary_counts(k.stdout)["applied"] == 2
    assert check(server, tenant, "email", "jane.doe@example.com", "marketing") == 3

    jsonl = example(tmp_path, "consent.jsonl")
    j = run(server, "import", tenant, str(jsonl), "--opt-ins-have-proof")
    assert j.returncode == 0, j.stdout + j.stderr
    assert summary_counts(j.stdout)["applied"] == 2
    assert check(server, tenant, "whatsapp", "+919876543210", "marketing") == 3
    assert check(server, tenant, "email", "raj@example.in", "marketing") == 0


def test_malformed_lines_are_reported_with_their_numbers(
    server: ServerProcess, tenant: str, tmp_path: Path
) -> None:
    csv_file = tmp_path / "mixed.csv"
    csv_file.write_text(
        "address,action,occurred_at,topic\n"
        "+14155550110,opt_out,2026-11-01T00:00:00Z,\n"  # 2 ok
        "not a number,opt_out,2026-11-01T00:00:00Z,\n"  # 3 bad address
        "+14155550111,maybe,2026-11-01T00:00:00Z,\n"  # 4 bad action
        "+14155550112,opt_out,yesterday,\n"  # 5 bad time
        "+14155550113,opt_out,2026-11-01T00:00:00Z,Bad Topic\n"  # 6 bad topic
        "+14155550114,opt_out,2026-11-01T00:00:00Z,,extra\n"  # 7 extra cell
        '"+1415555\u0661\u0662\u0663\u0664",opt_out,2026-11-01T00:00:00Z,\n'  # 8 Arabic digits
        "+14155550115,opt_out,2026-11-01T00:00:00Z,marketing\n"  # 9 ok
    )
    proc = run(server, "import", tenant, str(csv_file))
    assert proc.returncode == 4, proc.stdout + proc.stderr
    counts = summary_counts(proc.stdout)
    assert counts["records read"] == 8 and counts["invalid"] == 5 and counts["applied"] == 3
    for line, what in (
        (3, "recipient.address"),
        (4, "action"),
        (5, "occurred_at"),
        (6, "topic"),
        (7, "more cells"),
    ):
        assert any(
            row.startswith(f"line {line}: invalid") and what in row
            for row in proc.stdout.splitlines()
        ), (line, proc.stdout)
    assert check(server, tenant, "sms", "+14155551234", "x") == 3  # line 8, normalised

    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(
        '{"address": "+14155550116", "action": "opt_out", "occurred_at": 1793615400}\n'
        "{not json\n"
        "[1, 2]\n"
        '{"address": "+14155550117", "action": "opt_out", "occurred_at": "2026-11-01"}\n'
    )
    proc = run(server, "import", tenant, str(jsonl))
    assert proc.returncode == 4
    assert "line 2: invalid: line is not valid JSON" in proc.stdout
    assert "line 3: invalid: line is not a JSON object" in proc.stdout
    assert summary_counts(proc.stdout)["applied"] == 2


def test_lines_that_cannot_be_sent_are_reported_and_the_file_goes_on(
    server: ServerProcess, tenant: str, tmp_path: Path
) -> None:
    """Bytes that are not UTF-8, a time past 64-bit seconds, "inf": each its line's
    problem, never the end of the import (it used to stop at the first, and resuming
    met the same line again)."""
    csv_file = tmp_path / "unsendable.csv"
    csv_file.write_bytes(
        b"address,occurred_at,evidence\n"
        b"+14155550120,2026-11-01T00:00:00Z,ok\n"  # 2 ok
        b"+14155550121,2026-11-01T00:00:00Z,caf\xe9\n"  # 3 Latin-1, not UTF-8
        b"+14155550122,1e30,\n"  # 4 beyond int64 seconds
        b"+14155550123,inf,\n"  # 5 no time at all
        b"+14155550124,2026-11-01T00:00:00Z,ok\n"  # 6 ok
    )
    proc = run(server, "import", tenant, str(csv_file), "--action", "opt_out")
    assert proc.returncode == 4, proc.stdout + proc.stderr
    counts = summary_counts(proc.stdout)
    assert counts["records read"] == 5 and counts["invalid"] == 3 and counts["applied"] == 2
    rows = proc.stdout.splitlines()
    assert any(r.startswith("line 3: invalid") and "UTF-8" in r for r in rows), proc.stdout
    assert any(r.startswith("line 4: invalid") and "out of range" in r for r in rows)
    assert any(r.startswith("line 5: invalid") and "occurred_at" in r for r in rows)
    assert check(server, tenant, "sms", "+14155550124", "x") == 3  # the line after them


def write_numbers(path: Path, n: int, start: int = 0) -> None:
    with path.open("w") as f:
        f.write("address,occurred_at\n")
        for i in range(start, start + n):
            f.write(f"+1415{i:07d},2026-10-01T00:00:00Z\n")


def test_an_interrupted_import_resumes_where_it_stopped(
    server: ServerProcess, tenant: str, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    write_numbers(path, 5000)
    cols = transfer.Columns(default_action="opt_out")
    with ConsentClient(server.target) as client:
        totals, resumed = transfer.run_import(
            client, tenant, path, cols, chunk=1000, stop_after_chunks=2
        )
    assert resumed == 0 and totals.applied == 2000
    cp = json.loads((tmp_path / "big.csv.checkpoint.json").read_text())
    assert cp["line"] == 2001 and cp["tenant"] == tenant
    # A crash after the server applied more than the checkpoint says: move it back.
    cp["line"] = 1501
    cp["totals"]["applied"] = cp["totals"]["changed"] = cp["totals"]["records"] = 1500
    (tmp_path / "big.csv.checkpoint.json").write_text(json.dumps(cp))

    # Another tenant may not reuse the checkpoint.
    other = run(server, "import", "globex", str(path), "--action", "opt_out")
    assert other.returncode == 2 and "--restart" in other.stderr

    proc = run(server, "import", tenant, str(path), "--action", "opt_out", "--chunk", "1000")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resumed after line 1501" in proc.stdout
    counts = summary_counts(proc.stdout)
    assert counts["records read"] == 5000
    assert counts["applied"] == 1500 + 3000  # the overlap of 500 is not applied twice
    assert counts["duplicates (imported before)"] == 500
    assert not (tmp_path / "big.csv.checkpoint.json").exists()
    assert check(server, tenant, "sms", "+14150004999", "x") == 3


def test_export_imports_back_into_a_fresh_tenant_as_the_same_state(
    server: ServerProcess, tenant: str, create_tenant: object, tmp_path: Path
) -> None:
    fresh = create_tenant(f"{tenant[:50]}-copy")  # type: ignore[operator]
    source = tmp_path / "source.jsonl"
    rows = []
    for i in range(30):
        rows.append(
            {
                "address": f"+1415666{i:04d}",
                "action": "opt_out",
                "occurred_at": 1_790_000_000 + i,
                "topic": "" if i % 2 else "marketing",
            }
        )
        if i % 3 == 0:
            rows.append(
                {
                    "address": f"+1415666{i:04d}",
                    "action": "opt_in",
                    "occurred_at": 1_790_100_000 + i,
                    "topic": "news",
                }
            )
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run(server, "import", tenant, str(source), "--opt-ins-have-proof").returncode == 0

    first = tmp_path / "export.csv"
    proc = run(server, "export", tenant, "-o", str(first))
    assert proc.returncode == 0, proc.stderr
    assert f"exported {len(rows)} records" in proc.stderr
    back = run(server, "import", fresh, str(first), "--opt-ins-have-proof")
    assert back.returncode == 0, back.stdout + back.stderr
    assert summary_counts(back.stdout)["applied"] == len(rows)
    second = tmp_path / "again.jsonl"
    assert run(server, "export", fresh, "-o", str(second)).returncode == 0

    def state(path: Path) -> list[tuple[str, ...]]:
        if path.suffix == ".csv":
            import csv

            items = list(csv.DictReader(path.open()))
        else:
            items = [json.loads(line) for line in path.read_text().splitlines()]
        keep = ("channel", "address", "topic", "action", "occurred_at")
        return sorted(tuple(str(r[k]) for k in keep) for r in items)

    assert state(first) == state(second)
    only = tmp_path / "outs.csv"
    args = ["--status", "opted_out", "--topic", "marketing", "--channel", "sms"]
    assert run(server, "export", tenant, "-o", str(only), *args).returncode == 0
    assert state(only) and all(r[2] == "marketing" and r[3] == "opt_out" for r in state(only))


def ts(ms: int) -> Timestamp:
    t = Timestamp()
    t.FromMilliseconds(ms)
    return t


def test_import_export_and_point_in_time_over_grpc(server: ServerProcess, tenant: str) -> None:
    now = time.time_ns() // 1_000_000
    who = pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550199")
    with grpc.insecure_channel(server.target) as channel:
        admin = admin_pb2_grpc.ConsentAdminServiceStub(channel)
        consent_stub = __import__(
            "consent_client.v1.consent_pb2_grpc", fromlist=["x"]
        ).ConsentServiceStub(channel)
        records = [
            apb.ImportRecord(
                recipient=who, action=pb.CONSENT_ACTION_OPT_OUT, occurred_at=ts(now - 60_000)
            ),
            apb.ImportRecord(
                recipient=who,
                topic="m",
                action=pb.CONSENT_ACTION_OPT_IN,
                occurred_at=ts(now - 30_000),
                evidence="form 7",
            ),
            apb.ImportRecord(
                recipient=who,
                action=pb.CONSENT_ACTION_OPT_OUT,
                source=pb.SOURCE_KEYWORD,
                occurred_at=ts(now),
                line=42,
            ),
        ]
        reply = admin.ImportConsent(
            iter(
                [
                    apb.ImportConsentRequest(
                        tenant_id=tenant, opt_ins_have_proof=True, records=records
                    )
                ]
            )
        )
        assert (reply.applied, reply.invalid) == (2, 1)
        assert [(p.line, p.field) for p in reply.problems] == [(42, "source")]

        # Point in time: before the opt-out (policy), during it, after the opt-in.
        def at(ms: int) -> pb.CheckConsentResponse:
            return consent_stub.CheckConsent(
                pb.CheckConsentRequest(tenant_id=tenant, recipient=who, topic="m", at=ts(ms))
            )

        assert at(now - 90_000).status == pb.CONSENT_STATUS_NO_RECORD
        during = at(now - 45_000)
        assert not during.allowed and during.deciding_event.action == pb.CONSENT_ACTION_OPT_OUT
        later = at(now - 1_000)
        assert later.allowed and later.deciding_event.evidence == "form 7"
        batch = consent_stub.BatchCheckConsent(
            pb.BatchCheckConsentRequest(
                tenant_id=tenant, topic="m", recipients=[who], at=ts(now - 45_000)
            )
        )
        assert not batch.results[0].decision.allowed
        with pytest.raises(grpc.RpcError) as info:
            at(now + 3_600_000)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert bad_fields(info.value) == ["at"]

        pages = list(admin.ExportConsent(apb.ExportConsentRequest(tenant_id=tenant)))
        exported = [r for p in pages for r in p.records]
        assert sorted((r.topic, r.status) for r in exported) == [
            ("", pb.CONSENT_STATUS_OPTED_OUT),
            ("m", pb.CONSENT_STATUS_OPTED_IN),
        ]
        assert len(pages) == 1  # a small export is one message
        assert pages[-1].keys_total > 0 and pages[-1].keys_scanned > 0

        # Bad requests: a clear INVALID_ARGUMENT / NOT_FOUND through the one mapper.
        for request, code, fields in (
            (
                apb.ImportConsentRequest(tenant_id="Bad Tenant!"),
                grpc.StatusCode.INVALID_ARGUMENT,
                ["tenant_id"],
            ),
            (apb.ImportConsentRequest(tenant_id="no-such-tenant"), grpc.StatusCode.NOT_FOUND, []),
        ):
            with pytest.raises(grpc.RpcError) as info:
                admin.ImportConsent(iter([request]))
            assert info.value.code() is code  # type: ignore[attr-defined]
            assert bad_fields(info.value) == fields
        with pytest.raises(grpc.RpcError) as info:
            admin.ImportConsent(
                iter(
                    [
                        apb.ImportConsentRequest(tenant_id=tenant),
                        apb.ImportConsentRequest(tenant_id="globex", records=records[:1]),
                    ]
                )
            )
        assert bad_fields(info.value) == ["tenant_id"]
        with pytest.raises(grpc.RpcError) as info:
            admin.ImportConsent(iter([]))
        assert bad_fields(info.value) == ["tenant_id"]
        with pytest.raises(grpc.RpcError) as info:
            list(
                admin.ExportConsent(
                    apb.ExportConsentRequest(
                        tenant_id=tenant, channel=99, status=pb.CONSENT_STATUS_NO_RECORD
                    )  # type: ignore[arg-type]
                )
            )
        assert sorted(bad_fields(info.value)) == ["channel", "status"]
        with pytest.raises(grpc.RpcError) as info:
            list(admin.ExportConsent(apb.ExportConsentRequest(tenant_id="globex-nope")))
        assert info.value.code() is grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


RSS_SCRIPT = (
    "import resource, sys\n"
    "from consent_server.cli.main import app\n"
    "try:\n"
    "    app(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
)


def client_rss_kb(server: ServerProcess, tenant: str, path: Path) -> tuple[int, str]:
    env = {**os.environ, "CONSENT_TARGET": server.target, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, "import", tenant, str(path), "--action", "opt_out"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    line = [x for x in proc.stderr.splitlines() if x.startswith("MAXRSS_KB")]
    assert line, proc.stdout + proc.stderr
    return int(line[0].split()[1]), proc.stdout


@pytest.mark.slow
def test_a_million_lines_import_with_bounded_client_memory(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """On a private redis-server (the embedded store is not made for a million records)."""
    redis_proc = RedisProcess(tmp_path_factory.mktemp("million-redis")).start()
    server = ServerProcess({"CONSENT_DELIVERY": "off", "CONSENT_REDIS_URL": redis_proc.url})
    try:
        server.start()
        small = tmp_path / "small.csv"
        write_numbers(small, 20_000, start=5_000_000)
        big = tmp_path / "million.csv"
        write_numbers(big, 1_000_000)
        small_rss, _ = client_rss_kb(server, "acme", small)
        big_rss, out = client_rss_kb(server, "acme", big)
        counts = summary_counts(out)
        assert counts["records read"] == 1_000_000 and counts["applied"] == 1_000_000, out
        # 50 times the records, about the same memory: one batch and one chunk's state.
        assert big_rss - small_rss < 64 * 1024, (small_rss, big_rss)
    finally:
        server.stop()
        redis_proc.stop()
