"""The Python fallback load generator: ``python -m bench.pyload`` (prints JSON on stdout).

Opens ``--connections`` channels (each its own HTTP/2 connection), runs ``--streams``
callers on each, all sending the same pre-serialized request with no per-call
(de)serialization, and reports successes, failures and latencies after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import grpc


async def _caller(
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
    request: bytes,
    measure_from: float,
    stop_at: float,
    latencies: list[float],
    counts: dict[str, int],
) -> None:
    while True:
        start = time.perf_counter()
        if start >= stop_at:
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


async def run(args: argparse.Namespace, request: bytes) -> dict[str, object]:
    """Run the load and return the result as a JSON-able dict."""
    channels = [
        # A local subchannel pool per channel: otherwise gRPC shares one connection.
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.connections)
    ]
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0}
    measure_from = time.perf_counter() + args.warmup
    stop_at = measure_from + args.duration
    callers = [
        _caller(
            ch.unary_unary(args.method, None, None),  # no serializers: bytes in, bytes out
            request,
            measure_from,
            stop_at,
            latencies,
            counts,
        )
        for ch in channels
        for _ in range(args.streams)
    ]
    await asyncio.gather(*callers)
    for ch in channels:
        await ch.close(None)
    return {**counts, "latencies_ms": latencies}


def main() -> None:
    """Parse arguments, run, print the JSON result."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--target", required=True)
    p.add_argument("--method", required=True, help="/package.Service/Method")
    p.add_argument("--request-file", required=True, help="serialized request message")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--streams", type=int, default=16)
    args = p.parse_args()
    request = Path(args.request_file).read_bytes()
    print(json.dumps(asyncio.run(run(args, request))))


if __name__ == "__main__":
    main()
