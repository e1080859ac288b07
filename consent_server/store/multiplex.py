"""One shared, pipelined Redis connection per process for the hot commands.

redis-py's asyncio client checks a connection out of its pool for every command (a
lock, a timer, a health check), sends it, waits for its reply and puts the connection
back: ~100 us of Python per call on this service's hot path (docs/benchmarks.md).
Redis answers the commands of one connection in the order they were sent, so one
connection can carry every concurrent caller: each command's bytes are queued with a
future, and the replies are read (by hiredis, in C) and handed to the futures in order.
One batch of commands is on the wire at a time: the commands issued while a batch is
unanswered wait, and are written together, in one write, once its last reply came
(those of one loop turn are written together when none is unanswered). Under load this
turns one write and one read wake-up per command into one per batch: at 64 calls in
flight the bench's CheckConsent sent ~1.03 commands per write before (docs/benchmarks.md,
"the hot path").

Behaviour on trouble, which the tests check against a real redis-server:

- A reply is only ever given to the future queued for it: the queue is first-in,
  first-out, and a future whose caller gave up (cancelled) keeps its place and its
  reply is dropped.
- Connection lost (the server died, closed us, or the network broke): every command
  in flight fails with ``redis.exceptions.ConnectionError`` (the store maps it to
  UNAVAILABLE); nothing is retried, since a write may have been applied. The next call
  reconnects; while reconnecting fails, attempts are spaced by a backoff that grows
  from 50 ms to 0.5 s (one attempt at a time), so an outage costs no connect storm; a
  call waits for the next attempt when it is due within the call's timeout, else fails
  at once, so the first call after Redis comes back is not refused for nothing.
- No reply within ``timeout_s`` for the oldest command in flight: the connection is
  closed and every command in flight fails with ``redis.exceptions.TimeoutError``.
  One timer serves the whole connection (not one per command).
- A command's error reply (``WRONGTYPE``, ``NOSCRIPT``...) is raised to that caller
  only, as the same redis-py exception class redis-py would raise.

The connection is opened by redis-py's own connection class of the pool (so AUTH,
TLS, ``db``, RESP version and client name are exactly as configured in the URL), then
its socket is taken over by this module's protocol.

Only commands that never block and leave no state on the connection go through it
(``MULTIPLEXED``); blocking reads (XREADGROUP BLOCK), WAIT (which must follow its
write on the same connection), transactions and pipelines stay on redis-py's pool.
Redis Cluster is left on redis-py's cluster client (not multiplexed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis._parsers.base import BaseParser

#: Commands sent on the shared connection: none blocks, none changes connection state.
MULTIPLEXED = frozenset(
    {
        "DEL",
        "EVAL",
        "EVALSHA",
        "EXISTS",
        "EXPIRE",
        "GET",
        "HDEL",
        "HEXISTS",
        "HGET",
        "HGETALL",
        "HINCRBY",
        "HLEN",
        "HMGET",
        "HSET",
        "INCR",
        "INCRBY",
        "MGET",
        "PEXPIRE",
        "PING",
        "PTTL",
        "SCRIPT LOAD",
        "SET",
        "TTL",
        "TYPE",
        "XADD",
        "XLEN",
        "XRANGE",
        "XREVRANGE",
        "ZADD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREM",
        "ZSCORE",
    }
)

BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 0.5


class _Wire(asyncio.Protocol):
    """The socket's protocol once taken over: replies in, futures resolved in order."""

    def __init__(self, mux: Multiplexer, reader: hiredis.Reader) -> None:
        self._mux = mux
        self._reader = reader
        # (future, time sent) per command in flight, in the order sent.
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        # Commands written and not yet answered (the batch on the wire); those queued
        # behind it are in ``pending`` too, after these.
        self.unanswered = 0
        self.lost = False
        self.owner: object = None

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self.pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:  # garbage on the wire: trust nothing more
                self._mux.fail(self, rex.ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                if not self.unanswered:  # the batch is answered: send the next one
                    self._mux.batch_answered()
                return
            if not self.unanswered:  # a reply nobody asked for: the stream is out of step
                self._mux.fail(self, rex.ConnectionError("Redis sent an unexpected reply"))
                return
            self.unanswered -= 1
            future, _ = pending.popleft()
            if future.done():  # its caller gave up (cancelled): drop the reply
                continue
            if isinstance(reply, rex.ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._mux.fail(self, rex.ConnectionError("Redis connection lost"))


class Multiplexer:
    """One pipelined connection of ``pool``'s kind; :meth:`execute` sends one command."""

    def __init__(self, pool: aioredis.ConnectionPool, *, timeout_s: float = 2.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        kwargs = pool.connection_kwargs
        self._encoding: str | None = (
            kwargs.get("encoding", "utf-8") if kwargs.get("decode_responses") else None
        )
        self._encoding_errors: str = kwargs.get("encoding_errors", "strict")
        self._wire: _Wire | None = None
        self._connecting: asyncio.Task[_Wire] | None = None
        self._failed_at = 0.0
        self._backoff = 0.0
        self._buffer: list[bytes] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.connects = 0  # connections opened (tests, metrics)

    # -- sending -----------------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply (raises its error reply, or ConnectionError /
        TimeoutError when the connection fails before the reply came)."""
        wire = self._wire
        if wire is None or wire.lost:
            wire = await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        wire.pending.append((future, loop.time()))
        self._buffer.append(_pack(args))
        if not self._flush_scheduled and not wire.unanswered:
            # Nothing on the wire: send at the end of this loop turn. Otherwise the
            # command joins the batch sent when the one on the wire is answered.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = loop.call_later(self._timeout_s, self._check_timeout)
        return await future

    def batch_answered(self) -> None:
        """The batch on the wire got its last reply: send the commands that waited.

        Scheduled rather than written at once, so that the callers just answered, who
        run first, can add their next commands to the same write."""
        if self._buffer and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def execute_many(
        self, commands: Sequence[tuple[Any, ...]], queued: Callable[[], None] | None = None
    ) -> list[Any]:
        """Send several commands in one write, in order; their replies in order, an error
        reply (``NOSCRIPT``...) in its command's place as the exception object, not
        raised. A lost connection or a timeout raises, as for :meth:`execute`.

        One future per command and no coroutine each: a bulk write of hundreds of
        script calls (an import batch over many partitions) costs little per call.
        ``queued`` is called once the commands are queued on the connection: any command
        sent after that, by anyone, runs after them."""
        if not commands:
            return []
        wire = self._wire
        if wire is None or wire.lost:
            wire = await self._connect()
        loop = asyncio.get_running_loop()
        now = loop.time()
        futures: list[asyncio.Future[Any]] = []
        for args in commands:
            future: asyncio.Future[Any] = loop.create_future()
            futures.append(future)
            wire.pending.append((future, now))
            self._buffer.append(_pack(args))
        if not self._flush_scheduled and not wire.unanswered:
            self._flush_scheduled = True  # else they go when the batch on the wire is answered
            loop.call_soon(self._flush)
        if self._timer is None:
            self._timer = loop.call_later(self._timeout_s, self._check_timeout)
        if queued is not None:
            queued()
        out: list[Any] = []
        try:
            for future in futures:
                try:
                    out.append(await future)
                except rex.ResponseError as exc:
                    out.append(exc)
        finally:
            # Given up (cancelled, or the connection failed): the rest are dropped when
            # their replies come, and their errors are not reported as unretrieved.
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()  # marks it retrieved
        return out

    def _flush(self) -> None:
        """Write every queued command at once, unless a batch is still unanswered (then
        they go when it is)."""
        self._flush_scheduled = False
        buffer = self._buffer
        wire = self._wire
        if not buffer or wire is None or wire.unanswered:
            return
        data = b"".join(buffer) if len(buffer) > 1 else buffer[0]
        wire.unanswered = len(buffer)
        buffer.clear()
        if wire.transport is not None and not wire.lost:
            wire.transport.write(data)

    def _check_timeout(self) -> None:
        """The oldest command in flight waited ``timeout_s``: give up the connection."""
        self._timer = None
        wire = self._wire
        if wire is None or not wire.pending:
            return
        loop = asyncio.get_running_loop()
        waited = loop.time() - wire.pending[0][1]
        if waited >= self._timeout_s:
            self.fail(wire, rex.TimeoutError(f"no reply from Redis in {self._timeout_s:g} s"))
            return
        self._timer = loop.call_later(self._timeout_s - waited, self._check_timeout)

    def fail(self, wire: _Wire, error: Exception) -> None:
        """The connection is unusable: fail every command in flight with ``error``."""
        if wire.lost:
            return
        wire.lost = True
        if self._wire is wire:
            self._wire = None
            self._buffer.clear()  # the commands waiting to be sent were queued on this wire
        if wire.transport is not None:
            wire.transport.abort()
        pending, wire.pending = wire.pending, collections.deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)

    # -- connecting ----------------------------------------------------------------------

    async def _connect(self) -> _Wire:
        """The live connection, opening one if needed: one attempt at a time, shared by
        every caller waiting (a caller that gives up does not cancel it for the rest)."""
        if self._closed:
            raise rex.ConnectionError("the Redis connection was closed")
        if self._connecting is None:
            loop = asyncio.get_running_loop()
            wait = self._backoff - (loop.time() - self._failed_at) if self._backoff else 0.0
            if wait > self._timeout_s:
                raise rex.ConnectionError("Redis unreachable (reconnecting after a backoff)")
            # The next attempt is due within this call's own timeout: wait for it rather
            # than fail a call that could succeed (Redis may be back). Still one attempt
            # at a time, so an outage costs no connect storm.
            self._connecting = loop.create_task(self._attempt(max(0.0, wait)))
        return await asyncio.shield(self._connecting)

    async def _attempt(self, delay: float = 0.0) -> _Wire:
        loop = asyncio.get_running_loop()
        try:
            if delay:
                await asyncio.sleep(delay)
            wire = await self._open()
        except Exception as exc:
            self._failed_at = loop.time()
            self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_MIN_S, self._backoff * 2))
            if isinstance(exc, rex.RedisError):
                raise
            raise rex.ConnectionError(f"cannot connect to Redis: {type(exc).__name__}") from exc
        finally:
            self._connecting = None
        self._backoff = 0.0
        self._wire = wire
        self.connects += 1
        return wire

    async def _open(self) -> _Wire:
        """A connection made (and authenticated) by redis-py, its socket taken over."""
        conn = self._pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()
        writer: asyncio.StreamWriter | None = getattr(conn, "_writer", None)
        stream: asyncio.StreamReader | None = getattr(conn, "_reader", None)
        if writer is None or (stream is not None and len(getattr(stream, "_buffer", b""))):
            with contextlib.suppress(Exception):
                await conn.disconnect()
            raise rex.ConnectionError("cannot take over the Redis connection")
        transport = writer.transport
        kwargs: dict[str, Any] = {
            "protocolError": rex.InvalidResponse,
            "replyError": BaseParser.parse_error,
        }
        if self._encoding:
            kwargs.update(encoding=self._encoding, errors=self._encoding_errors)
        wire = _Wire(self, hiredis.Reader(**kwargs))
        wire.transport = transport  # type: ignore[assignment]
        # Held for the wire's life: redis-py closes the socket when its connection
        # object is garbage collected.
        wire.owner = conn
        transport.set_protocol(wire)
        if transport.is_closing():
            raise rex.ConnectionError("Redis closed the connection")
        return wire

    async def aclose(self) -> None:
        """Close the connection; commands in flight fail with ConnectionError."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._wire is not None:
            self.fail(self._wire, rex.ConnectionError("the Redis connection was closed"))


def _pack(args: tuple[Any, ...]) -> bytes:
    """The command in the Redis protocol (hiredis, C): str as UTF-8, bytes, int, float."""
    first = args[0]
    if isinstance(first, str) and " " in first:  # "SCRIPT LOAD" is two words
        args = (*first.split(), *args[1:])
    packed: bytes = hiredis.pack_command(args)
    return packed


class MultiplexedRedis(aioredis.Redis):
    """A redis.asyncio client whose non-blocking commands share one pipelined
    connection (:class:`Multiplexer`); everything else uses the pool as before."""

    mux: Multiplexer | None = None

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send through the shared connection when the command allows it."""
        mux = self.mux
        name = args[0]
        if mux is None or self.single_connection_client or name not in MULTIPLEXED:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        options.pop("keys", None)
        if options:  # NEVER_DECODE, EMPTY_RESPONSE...: rare, left to redis-py
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        response = await mux.execute(*args)
        callback = self.response_callbacks.get(name)
        return callback(response, **options) if callback is not None else response

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the shared connection, then the pool."""
        if self.mux is not None:
            await self.mux.aclose()
        await super().aclose(close_connection_pool)


def multiplexed(pool: aioredis.ConnectionPool, *, timeout_s: float) -> MultiplexedRedis:
    """A client on ``pool`` (which it owns and closes) with a shared connection."""
    client = MultiplexedRedis(connection_pool=pool)
    client.auto_close_connection_pool = True  # as Redis.from_pool: the client owns the pool
    client.mux = Multiplexer(pool, timeout_s=timeout_s)
    return client


async def run_script(client: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
    """``script(keys=keys, args=args)``, straight onto the shared connection when
    ``client`` has one (EVALSHA, and on NOSCRIPT: SCRIPT LOAD and EVALSHA again), which
    skips redis-py's script and command layers on the hottest path."""
    mux = getattr(client, "mux", None)
    if mux is None or getattr(client, "single_connection_client", False):
        return await script(keys=keys, args=args)
    try:
        return await mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)
    except rex.NoScriptError:
        sha = await mux.execute("SCRIPT LOAD", script.script)
        script.sha = sha.decode() if isinstance(sha, bytes) else sha
        return await mux.execute("EVALSHA", script.sha, len(keys), *keys, *args)
