"""The ``memory`` scenario: Redis bytes per current record and per history event.

N synthetic recipients (1,000,000 unless ``--memory-recipients``), one opt-out each,
are written through the real write path (record_event.lua, the script OptOut runs,
pipelined 1,000 calls at a time) into a private redis-server of their own. Measured:
``INFO memory`` used_memory before and after (the delta, less the change feed's streams,
which are bounded by their own retention), and ``MEMORY USAGE`` of sampled record and
history buckets (scaled by the bucket counts) for the split between records and
events; beside it, in the same run and on a second private redis-server, the baseline
of one string key per recipient (``SET <the recipient's old state-key name> 1``).

Also runnable alone: ``python -m bench.memory [N]``.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.context import BenchContext
from bench.model import Row
from bench.procs import RedisServer
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys
from consent_server.store.retention import feed_keys
from consent_server.store.scripts import load_script

TENANT = "bench"
DEFAULT_N = 1_000_000
FEED_MAXLEN = 1000  # per partition: the feed is bounded; its bytes are reported apart
_SAMPLE = 2000


def _address(i: int) -> str:
    return f"+1{4150000000 + i:010d}"


def _used(client: redis.Redis) -> int:
    info: Any = client.info("memory")
    return int(info["used_memory"])


def _sampled(client: redis.Redis, pattern: str) -> tuple[int, float]:
    """(number of keys matching, mean MEMORY USAGE of a random sample of them)."""
    names = [k for k in client.scan_iter(match=pattern, count=10_000)]
    if not names:
        return 0, 0.0
    sample = random.Random(1).sample(names, min(_SAMPLE, len(names)))
    sizes = [int(client.memory_usage(k, samples=0) or 0) for k in sample]
    return len(names), sum(sizes) / len(sizes)


def write_events(client: redis.Redis, n: int) -> float:
    """One opt-out per recipient through record_event.lua, pipelined; seconds taken."""
    script = client.register_script(load_script("record_event.lua"))
    sha = script.sha
    client.script_load(script.script)
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    occurred = 1_790_000_000_000
    for i in range(n):
        rcpt = Recipient(Channel.SMS, _address(i))
        part = keys.partition(TENANT, rcpt)
        bucket, prefix, descriptor = keys.layout(TENANT, rcpt, part)
        tag = keys.tag(part)
        pipe.evalsha(
            sha,
            6,
            bucket,
            prefix,
            f"ca:{tag}:{TENANT}:x:sms:none",  # no tombstone
            f"ca:{tag}:{TENANT}:q:sms:none",
            *feed_keys(TENANT, part),
            f"evt-{i:07d}",  # a 11-character event id
            "out",
            "s:*",
            "",
            "api",
            "",
            str(occurred + i),
            "key:k1",
            TENANT,
            "sms",
            rcpt.address,
            str(FEED_MAXLEN),
            descriptor,
        )
        if (i + 1) % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return time.perf_counter() - started


def write_baseline(client: redis.Redis, n: int) -> None:
    """One string key per recipient, named as round 1 named its state hash."""
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        rcpt = Recipient(Channel.SMS, _address(i))
        pipe.set(keys.state(keys.recipient_base(TENANT, rcpt)), "1")
        if (i + 1) % 1000 == 0:
            pipe.execute()
    pipe.execute()


def measure_memory(n: int, workdir: Path) -> dict[str, float]:
    """The figures, in bytes (see the module doc)."""
    out: dict[str, float] = {"n": n}
    for name in ("baseline", "compact"):
        d = workdir / name
        d.mkdir(parents=True, exist_ok=True)
        server = RedisServer(d).start()
        client = server.client()
        try:
            before = _used(client)
            if name == "baseline":
                write_baseline(client, n)
                out["baseline"] = (_used(client) - before) / n
                continue
            out["write_s"] = write_events(client, n)
            delta = _used(client) - before
            feed = 0
            for part in range(keys.PARTITIONS):
                for k in feed_keys(TENANT, part):
                    feed += int(client.memory_usage(k, samples=0) or 0)
            rb, r_mean = _sampled(client, f"ca:{{cp*}}:{TENANT}:r:*")
            hb, h_mean = _sampled(client, f"ca:{{cp*}}:{TENANT}:h:*")
            out["delta"] = (delta - feed) / n
            out["feed_total"] = feed
            out["record"] = rb * r_mean / n
            out["event"] = hb * h_mean / n
            out["record_buckets"] = rb
            out["history_buckets"] = hb
            enc: Any = client.object("encoding", next(client.scan_iter(match="*:r:*")))
            out["listpack"] = 1.0 if enc in (b"listpack", "listpack") else 0.0
        finally:
            client.close()
            server.stop()
    return out


def rows(figures: dict[str, float]) -> list[Row]:
    """The table rows: bytes per record and per event beside the string baseline."""
    n = int(figures["n"])
    note = f"{n:,} recipients, one opt-out each; MEMORY USAGE of sampled buckets"
    return [
        Row(
            "mem_baseline",
            "baseline: one string key per recipient",
            figures["baseline"],
            "B/key",
            note=f"{n:,} SETs; INFO used_memory delta",
        ),
        Row(
            "mem_record", "current record (record bucket)", figures["record"], "B/record", note=note
        ),
        Row("mem_event", "history event (history bucket)", figures["event"], "B/event", note=note),
        Row(
            "mem_total",
            "record + event, INFO used_memory delta",
            figures["delta"],
            "B/recipient",
            note="less the change feed streams (bounded by their retention)",
        ),
    ]


_MEASURED: dict[int, dict[str, float]] = {}


def memory(ctx: BenchContext) -> list[Row]:
    """The scenario: its own redis-servers in the run's work directory. Bytes do not
    vary between rounds: measured in the first, the same rows in the others."""
    n: int = ctx.options.memory_recipients
    if n not in _MEASURED:
        _MEASURED[n] = measure_memory(n, Path(ctx.workdir) / "memory")
    return rows(_MEASURED[n])


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_N
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure_memory(count, Path(tmp))
    for key, value in figures.items():
        print(f"{key:>16}: {value:,.1f}")
