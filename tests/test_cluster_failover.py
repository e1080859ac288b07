"""Failover of a real Redis Cluster under the real server process.

- Health checks every primary: one primary down is NOT_SERVING, not just the node a
  PING reaches.
- 3 primaries + 3 replicas, CONSENT_REDIS_MIN_REPLICAS_ACK=1: a primary is SIGKILLed
  while OptOut calls run; its replica is promoted; every OptOut that answered OK is
  still in force afterwards (zero lost acknowledgements), every other one answered
  UNAVAILABLE.
- The control: with replication to one primary's replica cut off, OptOuts to that
  primary are acknowledged without the setting and are lost when it crashes; with the
  setting the same calls answer UNAVAILABLE (REPLICATION_NOT_ACKNOWLEDGED) instead.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from redis.crc import key_slot

from consent_client.v1 import consent_pb2 as pb
from consent_client.v1 import consent_pb2_grpc
from consent_server.domain.model import Channel, Recipient
from consent_server.store import keys
from consent_server.store.schema import adopt_recorded_layout

from .cluster_support import RedisClusterProcesses
from .security_support import details
from .support import ServerProcess

pytestmark = [pytest.mark.xdist_group("cluster"), pytest.mark.cluster, pytest.mark.slow]

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
NODE_TIMEOUT_MS = 1000


def _phone(i: int) -> str:
    return f"+1415{i:07d}"


def _adopt_server_layout(cluster: RedisClusterProcesses) -> None:
    """Name keys (and so slots) as the server does: the layout it recorded on start."""
    meta_node = cluster.primary_of_slot(key_slot(keys.META.encode()))
    adopt_recorded_layout(cluster.client(meta_node).hgetall(keys.META))


def _slot(address: str) -> int:
    """The cluster slot of an SMS recipient of tenant acme."""
    part = keys.partition("acme", Recipient(Channel.SMS, address))
    return key_slot(keys.tag(part).encode())


def _reason(err: grpc.RpcError) -> str:
    info = details(err).get("ErrorInfo")
    return info.reason if info is not None else ""


def _blocked(stub: consent_pb2_grpc.ConsentServiceStub, addresses: list[str]) -> dict[str, bool]:
    """Whether each address is blocked for marketing now (retrying while unavailable)."""
    out: dict[str, bool] = {}
    deadline = time.monotonic() + 30
    for start in range(0, len(addresses), 500):
        chunk = addresses[start : start + 500]
        while True:
            try:
                batch = stub.BatchCheckConsent(
                    pb.BatchCheckConsentRequest(
                        tenant_id="acme",
                        topic="marketing",
                        recipients=[pb.Recipient(channel=pb.CHANNEL_SMS, address=a) for a in chunk],
                    ),
                    timeout=5,
                )
                break
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                assert time.monotonic() < deadline, "reads never came back after the failover"
                time.sleep(0.1)
        for a, r in zip(chunk, batch.results, strict=True):
            out[a] = not r.decision.allowed
    return out


def _opt_out(stub: consent_pb2_grpc.ConsentServiceStub, address: str) -> grpc.RpcError | None:
    try:
        stub.OptOut(
            pb.OptOutRequest(
                tenant_id="acme",
                recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address=address),
                event_id=f"ev-{address}",
            ),
            # Long enough for a loaded machine: a deadline is an unknown outcome, and the
            # test wants to see what the server answers during the failover.
            timeout=30,
        )
        return None
    except grpc.RpcError as err:
        return err


def _wait_promoted(cluster: RedisClusterProcesses, replica: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cluster.role(replica) == "master":
                cluster.wait_ok(timeout=max(1.0, deadline - time.monotonic()))
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise AssertionError("the replica was never promoted")


class HealthWatch:
    """Polls the server's health in the background and remembers what it saw."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.seen: list[int | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen.append(self.server.health(timeout=1))
            time.sleep(0.05)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def small_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    procs = RedisClusterProcesses(
        tmp_path_factory.mktemp("health-e2e"), node_timeout_ms=NODE_TIMEOUT_MS
    ).start()
    yield procs
    procs.stop()


@pytest.fixture
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    procs = RedisClusterProcesses(
        tmp_path_factory.mktemp("failover"),
        replicas=1,
        node_timeout_ms=NODE_TIMEOUT_MS,
        # A replica cut off from its primary for a while still takes over: the control
        # run depends on it, and it is the worst case for acknowledged writes.
        extra_args=("--cluster-replica-validity-factor", "0"),
    ).start()
    yield procs
    procs.stop()


def _server(cluster: RedisClusterProcesses, ack: int) -> ServerProcess:
    return ServerProcess(
        {
            "CONSENT_REDIS_URL": cluster.url,
            "CONSENT_REDIS_CLUSTER": "1",
            "CONSENT_REDIS_TIMEOUT": "2",
            "CONSENT_REDIS_MIN_REPLICAS_ACK": str(ack),
            "CONSENT_REDIS_ACK_TIMEOUT_MS": "1000",
            "CONSENT_DELIVERY": "off",
        }
    ).start()


def test_health_is_not_serving_while_any_primary_is_down(
    small_cluster: RedisClusterProcesses,
) -> None:
    # Not the primary of slot 0: that one is the client's default node, the one a
    # plain PING reaches; health must notice the others too.
    victim = small_cluster.primary_of_slot(16383)
    assert victim != small_cluster.primary_of_slot(0)
    srv = _server(small_cluster, ack=0)
    try:
        small_cluster.kill(victim)
        srv.wait_health(NOT_SERVING, timeout=10)
        small_cluster.restart(victim)
        small_cluster.wait_ok()
        srv.wait_health(SERVING, timeout=15)
    finally:
        assert srv.stop() == 0


def test_failover_under_load_loses_no_acknowledged_opt_out(
    replicated: RedisClusterProcesses,
) -> None:
    victim = replicated.primary_of_slot(16383)
    heir = replicated.replica_of(victim)
    srv = _server(replicated, ack=1)
    _adopt_server_layout(replicated)
    ok: list[str] = []
    failed: dict[str, tuple[grpc.StatusCode, str]] = {}
    counter = iter(range(10_000_000))
    lock = threading.Lock()
    stop = threading.Event()

    def load() -> None:
        with grpc.insecure_channel(srv.target) as ch:
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            while not stop.is_set():
                with lock:
                    address = _phone(next(counter))
                err = _opt_out(stub, address)
                with lock:
                    if err is None:
                        ok.append(address)
                    else:
                        failed[address] = (err.code(), _reason(err))

    def acked_on_every_primary(n: int) -> bool:
        with lock:
            owners = [replicated.primary_of_slot(_slot(a)) for a in ok[-200:]]
        return all(owners.count(p) >= n for p in replicated.primaries())

    try:
        with HealthWatch(srv) as health:
            threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 20
            while not acked_on_every_primary(5):
                assert time.monotonic() < deadline, f"no load got through: {failed}"
                time.sleep(0.05)
            with lock:
                before_kill = len(ok)
            replicated.kill(victim)  # mid-load
            _wait_promoted(replicated, heir)
            # The old primary comes back as the heir's replica: writes to its slots can
            # be acknowledged again.
            replicated.restart(victim)
            replicated.wait_replicas_synced()
            with lock:
                after_recovery = len(ok)
            deadline = time.monotonic() + 20
            while True:  # new acknowledgements on the promoted primary too
                with lock:
                    recent = ok[after_recovery:]
                if any(replicated.primary_of_slot(_slot(a)) == heir for a in recent):
                    break
                assert time.monotonic() < deadline, "writes to the promoted primary never came back"
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join(15)
            srv.wait_health(SERVING, timeout=10)

        print(
            f"acked {len(ok)} ({before_kill} before the kill), failed: {Counter(failed.values())}"
        )
        assert before_kill > 0 and len(ok) > before_kill
        # Every failure was UNAVAILABLE: the store was down or the write not replicated.
        assert failed, "the failover went unnoticed: the test did not test anything"
        answers = Counter(failed.values())
        errors = [line for line in srv.lines if '"ERROR"' in line or '"error"' in line]
        assert {code for code, _ in answers} == {grpc.StatusCode.UNAVAILABLE}, (answers, errors)
        assert {reason for _, reason in answers} <= {
            "STORE_UNAVAILABLE",
            "REPLICATION_NOT_ACKNOWLEDGED",
        }, answers
        with grpc.insecure_channel(srv.target) as ch:
            blocked = _blocked(consent_pb2_grpc.ConsentServiceStub(ch), ok)
        lost = [a for a in ok if not blocked[a]]
        assert lost == [], f"{len(lost)} of {len(ok)} acknowledged opt-outs were lost"
        # NOT_SERVING while the primary was down, SERVING again after the failover.
        assert NOT_SERVING in health.seen, health.seen
        assert srv.health(timeout=5) == SERVING
    finally:
        stop.set()
        assert srv.stop() == 0


@pytest.mark.parametrize("ack", [0, 1], ids=["without-ack", "with-ack"])
def test_acknowledged_opt_outs_a_crash_would_lose(
    replicated: RedisClusterProcesses, ack: int
) -> None:
    """Replication to one primary's replica is cut (replica paused, its link killed), so
    that primary holds writes no replica has. Then it crashes and the replica takes
    over. Without the setting those OptOuts were acknowledged and are gone; with it
    they were never acknowledged."""
    victim = replicated.primary_of_slot(16383)
    heir = replicated.replica_of(victim)
    srv = _server(replicated, ack=ack)
    try:
        _adopt_server_layout(replicated)
        on_victim = [
            a
            for a in (_phone(i) for i in range(2000))
            if replicated.primary_of_slot(_slot(a)) == victim
        ]
        people = on_victim[:20]
        replicated.pause(heir)
        replicated.client(victim).client_kill_filter(_type="replica")
        with grpc.insecure_channel(srv.target) as ch:
            stub = consent_pb2_grpc.ConsentServiceStub(ch)
            results = {a: _opt_out(stub, a) for a in people}
            acked = [a for a, err in results.items() if err is None]
            replicated.kill(victim)
            replicated.resume(heir)
            _wait_promoted(replicated, heir)
            blocked = _blocked(stub, people)
        lost = [a for a in acked if not blocked[a]]
        if ack == 0:
            assert acked == people  # acknowledged at once, replicated never
            assert lost == people  # every one of them is gone after the failover
        else:
            assert acked == [] and lost == []
            assert {(e.code(), _reason(e)) for e in results.values() if e is not None} == {
                (grpc.StatusCode.UNAVAILABLE, "REPLICATION_NOT_ACKNOWLEDGED")
            }
    finally:
        assert srv.stop() == 0
