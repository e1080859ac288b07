"""The one way this service makes outbound HTTP calls to destinations a tenant chose.

``guarded_client(policy)`` is an ``httpx.AsyncClient`` whose every new connection goes
through :class:`GuardedBackend`: the host is resolved once, *every* answer is checked
against the :class:`~consent_server.domain.egress.EgressPolicy`, and the socket is
opened to an address that passed (never re-resolved), so a DNS name that flips to an
internal address between a check and the connect (DNS rebinding) gains nothing. TLS
still verifies the certificate against the URL's host name. Redirects are never
followed and proxies from the environment are ignored, so the checked connection is
the only hop. A refused destination raises :class:`EgressRefused` before any byte is
sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable

import httpcore
import httpx

from consent_server.domain.egress import EgressPolicy, IPAddress, is_internal_name, literal_ip

#: ``resolve(host, port)``: the addresses to try, in order (tests inject their own).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class EgressRefused(httpx.ConnectError):
    """The destination is not allowed (an internal address, or a Unix socket).

    The message names the host and the refused address, never a secret."""


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    """The addresses the system resolver gives for ``host``, de-duplicated, in order."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = literal_ip(str(sockaddr[0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolve: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._policy = policy
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int, timeout_s: float | None) -> list[IPAddress]:
        """The checked addresses for ``host``; EgressRefused when any answer is refused
        (a name with one internal answer is refused whole: the resolver, not us, would
        otherwise choose which one a later connection gets)."""
        policy = self._policy
        # localhost-like names are internal whatever they resolve to (or fail to):
        # only the operator naming them, or allowing every answer, lets them through.
        internal = is_internal_name(host) and not policy.names_host(host, port)
        ip = literal_ip(host)
        if ip is not None:
            found = [ip]
        else:
            try:
                found = await asyncio.wait_for(self._resolve(host, port), timeout_s)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
            except OSError as exc:
                if internal:
                    raise EgressRefused(f"destination refused: {host} is internal") from None
                raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        if not found:
            raise httpcore.ConnectError(f"{host} has no address")
        for address in found:
            if internal and not policy.allows_address(address, port):
                raise EgressRefused(f"destination refused: {host} is internal")
            why = policy.address_refusal(host, address, port)
            if why is not None:
                raise EgressRefused(f"destination refused: {host} -> {why}")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve, check every answer, connect to the first checked address that answers."""
        last: Exception | None = None
        for address in await self.addresses(host, port, timeout):
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a Unix socket is this machine."""
        raise EgressRefused("destination refused: Unix sockets are never allowed")

    async def sleep(self, seconds: float) -> None:
        """Delegated to the real backend (httpcore's retry waits)."""
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a :class:`GuardedBackend`."""

    def __init__(
        self,
        policy: EgressPolicy,
        *,
        resolve: Resolver = system_resolve,
        limits: httpx.Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(trust_env=False, limits=limits)
        # httpx offers no public hook for the network backend; its pool is httpcore's,
        # which does. Same TLS context and limits as httpx would use.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolve=resolve),
        )


def guarded_client(
    policy: EgressPolicy,
    *,
    timeout_s: float = 10.0,
    resolve: Resolver = system_resolve,
) -> httpx.AsyncClient:
    """The HTTP client for tenant-chosen destinations: guarded connections, no
    redirects, no proxies or credentials from the environment."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, resolve=resolve),
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        trust_env=False,
    )
