"""The server in this process: ``app.build`` on the embedded store, ``app.run`` as a task.

Handlers run exactly as in the server process (interceptor, error mapping, health),
over a real gRPC socket on a free loopback port, but start in milliseconds and can be
inspected through ``services``. Use it for handler tests; keep the server process for
what only a process shows (signals, exit codes, logs on stderr).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_client.v1 import admin_pb2_grpc, consent_pb2_grpc
from consent_server.app import Services, build, run
from consent_server.config import load
from tests.support import TEST_TENANTS


@dataclass
class InProcess:
    """A running in-process server and async stubs on one channel to it."""

    services: Services
    channel: grpc.aio.Channel
    consent: consent_pb2_grpc.ConsentServiceStub
    admin: admin_pb2_grpc.ConsentAdminServiceStub


@asynccontextmanager
async def serving(
    env: Mapping[str, str] | None = None, argv: Sequence[str] = ()
) -> AsyncIterator[InProcess]:
    """Build and run a server from ``env``/``argv`` (delivery off unless told), SERVING
    when entered; drained like on SIGTERM, and exited with 0, when left."""
    defaults = {"CONSENT_DELIVERY": "off", "CONSENT_TENANTS": ",".join(TEST_TENANTS)}
    settings = load(["--listen", "127.0.0.1:0", *argv], {**defaults, **(env or {})})
    services = build(settings)
    stop = asyncio.Event()
    running = asyncio.create_task(run(services, stop))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{services.port}")
    try:
        await _until_serving(channel, running)
        yield InProcess(
            services,
            channel,
            consent_pb2_grpc.ConsentServiceStub(channel),
            admin_pb2_grpc.ConsentAdminServiceStub(channel),
        )
    finally:
        await channel.close()
        stop.set()
        assert await asyncio.wait_for(running, timeout=30) == 0


async def _until_serving(channel: grpc.aio.Channel, running: asyncio.Task[int]) -> None:
    # Health.Watch pushes each change: no polling, and a run() that failed is reported.
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest())
    async for reply in watch:
        if reply.status == health_pb2.HealthCheckResponse.SERVING:
            watch.cancel()
            return
        if running.done():
            running.result()
