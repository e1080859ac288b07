"""ConsentAdminService.GetDeploymentHealth: how the deployment keeps consent
(read-only; operator keys only, as the request names no tenant)."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from consent_client.v1 import admin_pb2 as apb
from consent_server.domain.ports import DeploymentProbe

from .consent_service import Ctx, rpc


class DeploymentHandlers:
    """GetDeploymentHealth on the store's durability probe."""

    def __init__(self, probe: DeploymentProbe) -> None:
        self._probe = probe

    @rpc
    async def GetDeploymentHealth(
        self, request: apb.GetDeploymentHealthRequest, context: Ctx
    ) -> apb.GetDeploymentHealthResponse:
        problems = await self._probe.durability_problems()
        now = Timestamp()
        now.GetCurrentTime()  # last: the closest to the moment the answer leaves
        return apb.GetDeploymentHealthResponse(
            server_time=now,
            store=self._probe.store_kind,
            durability_checked=problems is not None,
            durability_problems=problems or [],
        )
