"""consentctl keys: bootstrap straight into Redis, then manage keys over gRPC."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from typer.testing import CliRunner

from consent_client.v1 import consent_pb2 as pb
from consent_server.cli.keys import app
from consent_server.domain.auth import is_key_token

from .security_support import code_of
from .support import RedisProcess, ServerProcess

pytestmark = pytest.mark.xdist_group("security-cli")

runner = CliRunner()
CHECK = pb.CheckConsentRequest(
    tenant_id="acme",
    recipient=pb.Recipient(channel=pb.CHANNEL_SMS, address="+14155550100"),
    topic="marketing",
)


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RedisProcess, ServerProcess]]:
    redis = RedisProcess(tmp_path_factory.mktemp("cli-redis")).start()
    srv = ServerProcess({"CONSENT_REDIS_URL": redis.url, "CONSENT_REQUIRE_AUTH": "1"}).start()
    yield redis, srv
    srv.stop()
    redis.stop()


def invoke(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), env=env or {})


def test_generate_prints_a_fresh_key() -> None:
    a, b = invoke("generate"), invoke("generate")
    assert a.exit_code == 0 and is_key_token(a.stdout.strip()) and a.stdout != b.stdout


def test_bootstrap_then_manage_over_grpc(deployment: tuple[RedisProcess, ServerProcess]) -> None:
    redis, srv = deployment
    # 1. The first admin key goes straight into the store.
    made = invoke("create", "--tenant", "acme", "--role", "admin", "--redis-url", redis.url)
    assert made.exit_code == 0, made.output
    admin = made.stdout.strip().splitlines()[0]
    assert is_key_token(admin) and "shown only now" in made.stderr
    with grpc.insecure_channel(srv.target) as ch:
        from consent_client.v1 import consent_pb2_grpc

        stub = consent_pb2_grpc.ConsentServiceStub(ch)
        assert code_of(stub.CheckConsent, CHECK, admin) == grpc.StatusCode.OK

        # 2. Everything else over gRPC with that key (env var, as an operator would).
        env = {"CONSENT_API_KEY": admin}
        reader = invoke(
            "create", "--tenant", "acme", "--role", "reader", "--description", "dashboards",
            "--server", srv.target, env=env,
        )  # fmt: skip
        assert reader.exit_code == 0, reader.output
        reader_key = reader.stdout.strip()
        assert code_of(stub.CheckConsent, CHECK, reader_key) == grpc.StatusCode.OK

        listed = invoke("list", "--tenant", "acme", "--server", srv.target, env=env)
        assert listed.exit_code == 0, listed.output
        assert reader_key[3:19] in listed.stdout and "dashboards" in listed.stdout
        assert admin[3:19] in listed.stdout and reader_key[20:] not in listed.stdout

        revoked = invoke(
            "revoke", reader_key[3:19], "--tenant", "acme", "--server", srv.target, env=env
        )
        assert revoked.exit_code == 0 and "is now revoked" in revoked.stderr
        assert code_of(stub.CheckConsent, CHECK, reader_key) == grpc.StatusCode.UNAUTHENTICATED
        again = invoke(
            "revoke", reader_key[3:19], "--tenant", "acme", "--server", srv.target, env=env
        )
        assert "was already revoked" in again.stderr

        everything = invoke("list", "--tenant", "acme", "--all", "--redis-url", redis.url)
        assert reader_key[3:19] in everything.stdout
        active = invoke("list", "--tenant", "acme", "--redis-url", redis.url)
        assert reader_key[3:19] not in active.stdout

        # A reader key cannot manage keys; a revoked key is refused; both exit 1.
        other = invoke("create", "--tenant", "acme", "--role", "reader", "--redis-url", redis.url)
        other_key = other.stdout.strip()
        denied = invoke("list", "--tenant", "acme", "--server", srv.target,
                        env={"CONSENT_API_KEY": other_key})  # fmt: skip
        assert denied.exit_code == 1 and "PERMISSION_DENIED" in denied.stderr
        assert "admin" in denied.stderr and other_key[20:] not in denied.output
        gone = invoke("list", "--tenant", "acme", "--server", srv.target,
                      env={"CONSENT_API_KEY": reader_key})  # fmt: skip
        assert gone.exit_code == 1 and "UNAUTHENTICATED" in gone.stderr


def test_bad_input_exits_non_zero_without_writing(
    deployment: tuple[RedisProcess, ServerProcess],
) -> None:
    redis, _ = deployment
    before = redis.client().dbsize()
    bad = invoke("create", "--tenant", "Not Valid", "--role", "admin", "--redis-url", redis.url)
    assert bad.exit_code == 1 and "tenant_id" in bad.stderr
    role = invoke("create", "--tenant", "acme", "--role", "owner", "--redis-url", redis.url)
    assert role.exit_code == 2
    nowhere = invoke("create", "--tenant", "acme", "--role", "admin")
    assert nowhere.exit_code == 2 and "--target" in nowhere.stderr
    assert redis.client().dbsize() == before


def test_module_entry_point(deployment: tuple[RedisProcess, ServerProcess]) -> None:
    redis, _ = deployment
    out = subprocess.run(
        [sys.executable, "-m", "consent_server.cli.keys", "create", "--tenant", "*", "--role",
         "admin", "--redis-url", redis.url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert is_key_token(out.stdout.strip())
