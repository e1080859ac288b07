"""The store health probe: can this process serve every key right now?

A single Redis answers a PING or it does not. A Redis Cluster can answer a PING on one
node while another primary is down or the cluster has lost slot coverage, and then every
call for that primary's slots fails: health must say NOT_SERVING. So on a cluster every
primary that serves slots is asked for CLUSTER INFO, all at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from consent_server.domain.errors import StoreUnavailable

from . import keys
from .client import RedisClient
from .records import text
from .repository import guarded

SLOTS = 16384


async def probe(client: RedisClient) -> None:
    """Raise StoreUnavailable unless the store can serve every key.

    Single node: PING. Cluster: every primary in the slot map answers CLUSTER INFO with
    ``cluster_state:ok`` and all slots assigned and not failing. When that fails the slot
    map is refreshed once and checked again, so that a failover (a replica promoted in
    place of a dead primary) counts as recovered as soon as the cluster says so.
    """
    if not isinstance(client, RedisCluster):
        await guarded(client.ping)
        keys.require_layout()  # reachable, but not serving before the layout is read
        return
    problem = await _cluster_problem(client)
    if problem is not None:
        with contextlib.suppress(Exception):  # a failed refresh is just another problem
            await client.nodes_manager.initialize()
        problem = await _cluster_problem(client)
    if problem is not None:
        raise StoreUnavailable(f"consent store unavailable: {problem}")
    keys.require_layout()


async def _cluster_problem(client: RedisCluster) -> str | None:
    """What keeps the cluster from serving every slot, or None."""
    try:
        await client.initialize()
    except Exception as exc:  # no startup node answered
        return f"no cluster node answers ({type(exc).__name__})"
    primaries = client.get_primaries()
    if not primaries:
        return "no primary known"
    if len(client.nodes_manager.slots_cache) < SLOTS:
        return f"slot map covers {len(client.nodes_manager.slots_cache)} of {SLOTS} slots"
    replies = await asyncio.gather(
        *(node.execute_command("CLUSTER INFO") for node in primaries), return_exceptions=True
    )
    for node, reply in zip(primaries, replies, strict=True):
        if isinstance(reply, BaseException):
            return f"primary {node.name} unreachable ({type(reply).__name__})"
        info = _parse_info(reply)
        state = info.get("cluster_state", "?")
        if state != "ok":
            return f"primary {node.name} reports cluster_state:{state}"
        assigned, failed = info.get("cluster_slots_assigned"), info.get("cluster_slots_fail")
        if assigned != str(SLOTS) or failed != "0":
            return f"primary {node.name} reports {assigned} slots assigned, {failed} failing"
    return None


def _parse_info(reply: Any) -> dict[str, str]:
    """CLUSTER INFO as a dict of strings, whether or not a reply callback parsed it."""
    if isinstance(reply, dict):
        return {
            text(k): text(v) if isinstance(v, bytes | str) else str(v) for k, v in reply.items()
        }
    out: dict[str, str] = {}
    for line in text(reply).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def failure_cause(exc: BaseException) -> str:
    """Why a probe failed, in words an operator can act on (never a password)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    words = " ".join(str(e) for e in chain)
    for e in chain:
        if isinstance(e, rex.AuthenticationError) or any(
            w in words for w in ("WRONGPASS", "NOAUTH", "invalid password", "invalid username")
        ):
            return (
                "authentication refused: wrong or missing password (or user) in CONSENT_REDIS_URL"
            )
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in words:
            return "connection refused (is Redis running there, on that port?)"
        if isinstance(e, socket.gaierror) or "not known" in words or "resolve" in words:
            return "host name does not resolve"
        if isinstance(e, rex.BusyLoadingError):
            return "Redis is loading its data set"
        if isinstance(e, rex.ReadOnlyError):
            return "Redis is a read-only replica"
        if isinstance(e, TimeoutError | rex.TimeoutError):
            return "no answer in time (CONSENT_REDIS_TIMEOUT)"
    if isinstance(exc, StoreUnavailable):
        return str(exc).removeprefix("consent store unavailable: ")
    return type(exc).__name__
