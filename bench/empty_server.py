"""The ceiling: ``consent.v1.ConsentService`` with handlers that do nothing.

``python -m bench.empty_server --listen 127.0.0.1:PORT`` serves the same method
names as the consent server, so the very same request bytes can be sent to both,
on a ``grpc.aio`` server built with the consent server's own options. Each handler
returns an empty response: what remains is gRPC's and asyncio's own cost per call.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from grpc_health.v1 import _async as health_aio  # = health.aio, which the stubs omit
from grpc_health.v1 import health_pb2, health_pb2_grpc

from consent_client.v1 import consent_pb2 as pb
from consent_server.__main__ import run_loop
from consent_server.app import SERVICE_NAME, server_options
from consent_server.config import Settings

Ctx = grpc.aio.ServicerContext[Any, Any]


async def check_consent(request: pb.CheckConsentRequest, context: Ctx) -> pb.CheckConsentResponse:
    """An empty CheckConsent answer."""
    return pb.CheckConsentResponse()


async def send_if_allowed(
    request: pb.SendIfAllowedRequest, context: Ctx
) -> pb.SendIfAllowedResponse:
    """An empty SendIfAllowed answer."""
    return pb.SendIfAllowedResponse()


async def batch_check_consent(
    request: pb.BatchCheckConsentRequest, context: Ctx
) -> pb.BatchCheckConsentResponse:
    """An empty BatchCheckConsent answer."""
    return pb.BatchCheckConsentResponse()


def _handler(fn: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
    # Exactly what the generated add_..._to_server builds: parse, call, serialize.
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )


def empty_service() -> grpc.GenericRpcHandler[Any, Any]:
    """consent.v1.ConsentService with the benchmarked methods answering empty responses."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "CheckConsent": _handler(
                check_consent, pb.CheckConsentRequest, pb.CheckConsentResponse
            ),
            "SendIfAllowed": _handler(
                send_if_allowed, pb.SendIfAllowedRequest, pb.SendIfAllowedResponse
            ),
            "BatchCheckConsent": _handler(
                batch_check_consent, pb.BatchCheckConsentRequest, pb.BatchCheckConsentResponse
            ),
        },
    )


async def serve(listen: str, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT; with ``reuse_port``, beside others on the same port."""
    options = [o for o in server_options(Settings()) if o[0] != "grpc.so_reuseport"]
    server = grpc.aio.server(options=[*options, ("grpc.so_reuseport", int(reuse_port))])
    server.add_generic_rpc_handlers((empty_service(),))
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.add_insecure_port(listen)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    """Parse ``--listen`` and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument(
        "--reuse-port", action="store_true", help="SO_REUSEPORT: several copies share the port"
    )
    parser.add_argument(
        "--uvloop", action="store_true", help="run on uvloop (the ceiling of a uvloop server)"
    )
    args = parser.parse_args()
    run_loop(serve(args.listen, args.reuse_port), args.uvloop)


if __name__ == "__main__":
    main()
