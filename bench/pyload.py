"""The Python fallback load generator: ``python -m bench.pyload`` (prints JSON on stdout).

Opens ``--connections`` channels (each its own HTTP/2 connection), runs ``--streams``
callers on each, all sending pre-serialized requests with no per-call
(de)serialization, and reports successes, failures and latencies after warm-up.
``--request-file`` may be given many times: the callers then take the requests in turn
(distinct batches, so that no cache sees the same recipients twice in a row). With
``--once`` each request is sent exactly once (no warm-up, no duration) and the elapsed
time is reported: the cold rows, whose every address the server sees for the first time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc


class _Requests:
    """The requests in turn, shared by every caller; ``once``: each one time, then None."""

    def __init__(self, requests: list[bytes], *, once: bool) -> None:
        self._requests = requests
        self._next = 0
        self._once = once

    def take(self) -> bytes | None:
        n = self._next
        self._next += 1
        if self._once:
            return self._requests[n] if n < len(self._requests) else None
        return self._requests[n % len(self._requests)]


async def _caller(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    requests: _Requests,
    measure_from: float,
    stop_at: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    while True:
        start = time.perf_counter()
        request = requests.take()
        if start >= stop_at or request is None:
            return
        try:
            await call(request, timeout=30)
            ok = True
        except grpc.aio.AioRpcError:
            ok = False
        end = time.perf_counter()
        # Like h2load: what completes inside the measured window counts.
        if measure_from <= end <= stop_at:
            counts["ok" if ok else "failed"] += 1
            if ok:
                latencies.append((end - start) * 1000.0)


async def run(args: argparse.Namespace, requests: list[bytes]) -> dict[str, object]:
    """Run the load and return the result as a JSON-able dict."""
    channels = [
        # A local subchannel pool per channel: otherwise gRPC shares one connection.
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.connections)
    ]
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0}
    began = time.perf_counter()
    measure_from = began + (0.0 if args.once else args.warmup)
    stop_at = float("inf") if args.once else measure_from + args.duration
    shared = _Requests(requests, once=args.once)
    callers = [
        _caller(
            ch.unary_unary(args.method, None, None),  # no serializers: bytes in, bytes out
            shared,
            measure_from,
            stop_at,
            latencies,
            counts,
        )
        for ch in channels
        for _ in range(args.streams)
    ]
    await asyncio.gather(*callers)
    elapsed = time.perf_counter() - began
    for ch in channels:
        await ch.close(None)
    return {**counts, "latencies_ms": latencies, "elapsed_s": elapsed}


def main() -> None:
    """Parse arguments, run, print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", required=True)
    p.add_argument("--method", required=True, help="/package.Service/Method")
    p.add_argument(
        "--request-file",
        required=True,
        action="append",
        help="serialized request message (repeat: sent in turn)",
    )
    p.add_argument("--once", action="store_true", help="send each request once, then stop")
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--streams", type=int, default=16)
    args = p.parse_args()
    requests = [Path(name).read_bytes() for name in args.request_file]
    print(json.dumps(asyncio.run(run(args, requests))))


if __name__ == "__main__":
    main()
