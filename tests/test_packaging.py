"""The deployment files, checked without Docker or a cluster: the Kubernetes manifests
against the Kubernetes schemas, the compose file and the Dockerfile for what production
needs, the Grafana dashboard against the metrics the code exports, and the container
health check against a real server process."""

from __future__ import annotations

import copy
import http.server
import importlib
import json
import os
import pkgutil
import re
import shlex
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import kubernetes_validate
import pytest
import trustme
import yaml
from prometheus_client import REGISTRY

import consent_server
from consent_client.v1 import admin_pb2 as apb
from consent_client.v1 import admin_pb2_grpc
from consent_server.domain.auth import new_key

from .security_support import md
from .support import RedisProcess, ServerProcess, free_port, run_module

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DASHBOARD = ROOT / "deploy" / "grafana" / "consent-authority.json"
# The Kubernetes version the manifests are validated against (schemas ship in the package).
K8S_VERSION = "1.30"


# -- licence --


def test_license_is_apache_2_in_the_repository_and_both_packages() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    for pyproject in (ROOT / "pyproject.toml", ROOT / "clients/python/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        assert project["license"] == "Apache-2.0", pyproject
        for name in project["license-files"]:
            assert (pyproject.parent / name).read_text() == text, (pyproject, name)


# -- Kubernetes --


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def base_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(k8s_documents(K8S / name))
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def validate(doc: dict[str, Any]) -> None:
    """Raise when ``doc`` does not validate (strict: unknown fields are errors too)."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def test_every_manifest_validates_against_the_kubernetes_schemas() -> None:
    files = manifest_files()
    assert files
    seen = 0
    for path in files:
        if path.parent.name == "tls" and path.name.endswith("patch.yaml"):
            continue  # a partial Deployment; validated merged below
        for doc in k8s_documents(path):
            validate(doc)
            seen += 1
    assert seen >= 6


def test_the_schema_check_rejects_a_broken_manifest() -> None:
    """The validation above can fail: a typo'd field and a wrong type are errors."""
    server = by_kind(base_resources(), "Deployment", "consent-server")
    typo = copy.deepcopy(server)
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    wrong_type = copy.deepcopy(server)
    wrong_type["spec"]["replicas"] = "two"
    for broken in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            validate(broken)


def test_kustomizations_name_existing_files_only() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(path.read_text())
        for name in k.get("resources", []):
            assert (path.parent / name).exists(), (path, name)
        for patch in k.get("patches", []):
            assert (path.parent / patch["path"]).is_file(), (path, patch)


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def assert_hardened(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    c = container(deployment)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_server_deployment_probes_grpc_health_and_is_hardened() -> None:
    docs = base_resources()
    server = by_kind(docs, "Deployment", "consent-server")
    assert_hardened(server)
    c = container(server)
    assert c["command"] == ["consent-server"]
    grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == grpc_port, probe
    env = env_of(c)
    assert env["CONSENT_LISTEN"] == f"0.0.0.0:{grpc_port}"
    assert env["CONSENT_DELIVERY"] == "off"  # the worker Deployment delivers
    assert env["CONSENT_REQUIRE_AUTH"] == "1"
    # Redis is external: its URL (with its password) and the bootstrap key are Secret refs.
    assert env["CONSENT_REDIS_URL"]["secretKeyRef"]["name"] == "consent-secrets"
    assert env["CONSENT_BOOTSTRAP_ADMIN_KEY"]["secretKeyRef"]["optional"] is True
    assert {"configMapRef": {"name": "consent-config"}} in c["envFrom"]
    by_kind(docs, "ConfigMap", "consent-config")
    # SIGTERM drains within CONSENT_SHUTDOWN_GRACE; Kubernetes must wait longer than that.
    grace = float(by_kind(docs, "ConfigMap", "consent-config")["data"]["CONSENT_SHUTDOWN_GRACE"])
    assert server["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_service_and_disruption_budget_select_the_server_pods() -> None:
    docs = base_resources()
    server = by_kind(docs, "Deployment", "consent-server")
    labels = server["spec"]["template"]["metadata"]["labels"]
    assert server["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = by_kind(docs, "Service", "consent-server")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} >= {"grpc"}
    pdb = by_kind(docs, "PodDisruptionBudget", "consent-server")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] >= 1
    assert server["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    worker = by_kind(docs, "Deployment", "consent-worker")
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items()


def test_worker_is_its_own_hardened_deployment() -> None:
    worker = by_kind(base_resources(), "Deployment", "consent-worker")
    assert_hardened(worker)
    c = container(worker)
    assert c["command"] == ["python", "-m", "consent_server.worker"]
    env = env_of(c)
    assert env["CONSENT_REDIS_URL"]["secretKeyRef"]["name"] == "consent-secrets"
    assert "CONSENT_BOOTSTRAP_ADMIN_KEY" not in env
    metrics = next(p["containerPort"] for p in c["ports"] if p["name"] == "metrics")
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": metrics}


def strategic_merge(base: Any, patch: Any) -> Any:
    """The part of kubectl's strategic merge these patches use: maps merge, ``null``
    deletes, lists of named items (containers, env, volumes, mounts) merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = strategic_merge(base[key], value) if key in base else value
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        merged = {i["name"]: i for i in base}
        for item in patch:
            merged[item["name"]] = strategic_merge(merged.get(item["name"], {}), item)
        return list(merged.values())
    return patch


def test_tls_overlay_serves_tls_from_a_secret_and_probes_with_the_healthcheck() -> None:
    overlay = K8S / "overlays" / "tls"
    k = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    server = by_kind(base_resources(), "Deployment", "consent-server")
    for patch in k["patches"]:
        for doc in k8s_documents(overlay / patch["path"]):
            assert (doc["kind"], doc["metadata"]["name"]) == ("Deployment", "consent-server")
            server = strategic_merge(server, doc)
    validate(server)
    assert_hardened(server)
    c = container(server)
    env = env_of(c)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "tls")
    assert env["CONSENT_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["CONSENT_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
    volume = next(v for v in server["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "consent-tls"
    # Kubernetes' grpc probes cannot speak TLS: the probes run the healthcheck module.
    for probe in ("readinessProbe", "livenessProbe"):
        assert "grpc" not in c[probe]
        command = c[probe]["exec"]["command"]
        assert command[:3] == ["python", "-m", "consent_server.healthcheck"]
        assert f"{mount['mountPath']}/ca.crt" in command


# -- compose --


def compose() -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def command_list(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_redis_is_durable_and_never_evicts() -> None:
    redis = compose()["services"]["redis"]
    args = command_list(redis["command"])
    assert args[0] == "redis-server"

    def flag(name: str) -> str:
        return args[args.index(f"--{name}") + 1]

    assert flag("appendonly") == "yes"
    assert flag("appendfsync") == "always"  # an acknowledged opt-out is on disk
    assert flag("maxmemory-policy") == "noeviction"
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"])
    assert "redis-cli" in command_list(redis["healthcheck"]["test"])


def test_compose_runs_server_and_separate_worker_with_health_checks() -> None:
    services = compose()["services"]
    server, worker = services["server"], services["worker"]
    for svc in (server, worker):
        assert svc["build"]["context"] == "."
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert compose_env(svc)["CONSENT_REDIS_URL"] == "redis://redis:6379/0"
        assert svc["healthcheck"]["test"][0] == "CMD"
        assert svc["healthcheck"]["test"][1:4] == ["python", "-m", "consent_server.healthcheck"]
    assert server["image"] == worker["image"]  # one image
    env = compose_env(server)
    assert env["CONSENT_DELIVERY"] == "off"
    assert env["CONSENT_LISTEN"] == "0.0.0.0:50051"
    assert env["CONSENT_REQUIRE_AUTH"] == "1"
    # The bootstrap key comes from the operator's environment or .env, never the file.
    assert env["CONSENT_BOOTSTRAP_ADMIN_KEY"] == "${CONSENT_BOOTSTRAP_ADMIN_KEY:-}"
    assert "command" not in server  # the image's own command: consent-server
    assert command_list(worker["command"]) == ["python", "-m", "consent_server.worker"]
    metrics = compose_env(worker)["CONSENT_METRICS_LISTEN"].rsplit(":", 1)[1]
    assert worker["healthcheck"]["test"][4:] == ["--http", f"http://127.0.0.1:{metrics}/metrics"]
    assert "CONSENT_BOOTSTRAP_ADMIN_KEY" not in compose_env(worker)


def test_compose_publishes_ports_on_loopback_only() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR:-default}`` / ``${VAR}`` substitution."""

    def sub(m: re.Match[str]) -> str:
        return env.get(m.group(1)) or (m.group(3) or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", sub, value)


def test_compose_environments_run_a_keyed_server_and_a_worker(tmp_path: Path) -> None:
    """The server and worker environments of compose.yaml, as written (addresses moved
    to free loopback ports, Redis to a private one): the bootstrap key from the
    operator's environment is the only way in, and the worker's health check passes."""
    services = compose()["services"]
    redis = RedisProcess(tmp_path / "redis", appendonly=True).start()
    key_id, token, _ = new_key()
    operator = {"CONSENT_BOOTSTRAP_ADMIN_KEY": token}
    local = {"CONSENT_REDIS_URL": redis.url, "CONSENT_METRICS_LISTEN": f"127.0.0.1:{free_port()}"}
    env = {k: interpolate(v, operator) for k, v in compose_env(services["server"]).items()}
    srv = ServerProcess({**env, **local}, http=True).start()
    worker_env = {k: interpolate(v, {}) for k, v in compose_env(services["worker"]).items()}
    worker_metrics = f"127.0.0.1:{free_port()}"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    # "python" is the image's virtualenv python (first on its PATH): here, this one.
    worker_command = command_list(services["worker"]["command"])
    assert worker_command[0] == "python"
    worker = subprocess.Popen(
        [sys.executable, *worker_command[1:]],
        env={**clean, **worker_env, **local, "CONSENT_METRICS_LISTEN": worker_metrics},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with grpc.insecure_channel(srv.target) as channel:
            admin = admin_pb2_grpc.ConsentAdminServiceStub(channel)
            request = apb.ListApiKeysRequest(tenant_id="*")
            with pytest.raises(grpc.RpcError) as denied:
                admin.ListApiKeys(request, timeout=10)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            listed = admin.ListApiKeys(request, metadata=md(token), timeout=10)
            assert key_id in [k.key_id for k in listed.keys]
        check = [sys.executable, *services["worker"]["healthcheck"]["test"][2:]]
        check[-1] = check[-1].replace(
            "127.0.0.1:" + worker_env["CONSENT_METRICS_LISTEN"].rsplit(":", 1)[1], worker_metrics
        )
        deadline = time.monotonic() + 20
        while (done := subprocess.run(check, capture_output=True, text=True)).returncode != 0:
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, done.stderr
        worker.terminate()
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        srv.stop()
        redis.stop()


# -- Dockerfile and Makefile --


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions per stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        elif not stages:
            continue  # ARG before the first FROM
        stages[-1].append((word.upper(), rest.strip()))
    return stages


def pip_installs(command: str, python: str) -> list[list[str]]:
    """Every ``<python> -m pip install`` in a shell command: its targets, extras dropped,
    with installer noise (``--quiet``, ``-e``, cache flags) left out."""
    installs = []
    for part in re.split(r"&&|\|\||;", command):
        if not part.strip().startswith(f"{python} -m pip install"):
            continue
        words = shlex.split(part)
        targets = [re.sub(r"\[.*\]$", "", w) for w in words[4:] if not w.startswith("-")]
        flags = [w for w in words[4:] if w in ("--upgrade", "-U")]
        installs.append(flags + targets)
    return installs


def makefile_installs() -> list[list[str]]:
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    recipe = re.sub(r"\\\n", " ", recipe)
    installs = []
    for line in recipe.splitlines()[1:]:
        installs.extend(pip_installs(line.strip().replace("$(PYTHON)", "python"), "python"))
    return installs


def test_image_installs_the_package_the_way_make_install_does() -> None:
    stages = dockerfile_stages()
    runs = [rest for stage in stages for word, rest in stage if word == "RUN"]
    docker = [i for run in runs for i in pip_installs(run, "python")]
    assert makefile_installs() == [["--upgrade", "pip"], ["clients/python", "."]]
    assert docker == makefile_installs()
    # Minus the dev extras: nothing in the image installs them.
    assert "[dev]" not in (ROOT / "Dockerfile").read_text()


def test_image_is_slim_non_root_with_a_grpc_health_check() -> None:
    stages = dockerfile_stages()
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    final = stages[-1]
    users = [rest for word, rest in final if word == "USER"]
    assert users, "the final stage must switch user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    # Every instruction after USER runs as that user: no RUN may switch back.
    after = final[[w for w, _ in final].index("USER") :]
    assert not any(w == "USER" and r.split(":")[0] in ("0", "root") for w, r in after)
    health = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert len(health) == 1
    assert json.loads(health[0].split("CMD", 1)[1]) == [
        "python",
        "-m",
        "consent_server.healthcheck",
    ]
    cmd = [rest for word, rest in final if word == "CMD"]
    assert json.loads(cmd[-1]) == ["consent-server"]
    assert not [w for w, _ in final if w == "ENTRYPOINT"]  # so compose's worker command is whole
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "CONSENT_LISTEN=0.0.0.0:50051" in env


def test_dockerignore_keeps_the_build_inputs_and_drops_secrets_and_caches() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must in (".git", ".venv", ".env", "**/__pycache__", "tests"):
        assert must in patterns, must
    copied = [
        rest.split()[0]
        for stage in dockerfile_stages()
        for word, rest in stage
        if word == "COPY" and not rest.startswith("--from")
    ]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert not any(source == p or source.startswith(p.rstrip("/") + "/") for p in patterns)


# -- Grafana dashboard --

PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "le", "inf", "nan",
}  # fmt: skip


def queried_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\$\w+", "", expr)  # dashboard variables
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        rest = expr[m.end() :].lstrip()
        if rest.startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # 5m, 0.95e...
        names.add(m.group())
    return names


def exported_metrics() -> set[str]:
    """Every sample name consent_server's metrics export (imports all its modules)."""
    for mod in pkgutil.walk_packages(consent_server.__path__, "consent_server."):
        importlib.import_module(mod.name)
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for family in REGISTRY.collect():
        for suffix in suffixes.get(family.type, ["", "_sum", "_count"]):
            names.add(family.name + suffix)
    return names


def dashboard_panels() -> list[dict[str, Any]]:
    doc = json.loads(DASHBOARD.read_text())
    panels = []
    for panel in doc["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return [p for p in panels if p.get("type") != "row"]


def test_queried_metrics_parser_finds_names_and_skips_promql_words() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, grpc_method) (rate(grpc_server_handling_seconds_"
        'bucket{job=~"$job",grpc_code!="OK"}[5m]))) / on(x) group_left consent_outbox_backlog'
    )
    assert queried_metrics(expr) == {
        "grpc_server_handling_seconds_bucket",
        "consent_outbox_backlog",
    }


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    exported = exported_metrics()
    assert "consent_messages_accepted_total" in exported
    used: set[str] = set()
    for panel in dashboard_panels():
        targets = panel.get("targets", [])
        assert targets, panel["title"]
        names = set().union(*(queried_metrics(t["expr"]) for t in targets))
        assert names, panel["title"]
        unknown = names - exported
        assert not unknown, f"{panel['title']}: {unknown} not exported by consent_server"
        used |= names
    # The send path, the per-RPC metrics, the decisions and the store.
    assert {
        "consent_messages_accepted_total",
        "consent_outbox_backlog",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "consent_decisions_total",
        "consent_inbound_actions_total",
        "consent_rate_limited_total",
        "consent_store_up",
        "consent_store_call_seconds_bucket",
    } <= used


def test_dashboard_is_importable_grafana_json() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["gridPos"]["w"] > 0 and panel["gridPos"]["h"] > 0


# -- the container health check, against real processes --


def healthcheck(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    return run_module("consent_server.healthcheck", *args, env={**clean, **(env or {})})


@pytest.fixture(scope="module")
def embedded_server() -> Iterator[ServerProcess]:
    srv = ServerProcess({"CONSENT_DELIVERY": "off"}).start()
    yield srv
    srv.stop()


def test_healthcheck_exits_0_against_a_serving_server(embedded_server: ServerProcess) -> None:
    done = healthcheck("--address", embedded_server.target)
    assert done.returncode == 0, done.stderr
    assert "SERVING" in done.stdout


def test_healthcheck_finds_the_port_from_consent_listen(embedded_server: ServerProcess) -> None:
    """In the container CONSENT_LISTEN is 0.0.0.0:50051: the check asks loopback."""
    port = embedded_server.target.rsplit(":", 1)[1]
    done = healthcheck(env={"CONSENT_LISTEN": f"0.0.0.0:{port}"})
    assert done.returncode == 0, done.stderr


def test_healthcheck_exits_1_against_a_closed_port() -> None:
    started = time.monotonic()
    done = healthcheck("--address", f"127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert "127.0.0.1" in done.stderr
    assert time.monotonic() - started < 30


def test_healthcheck_exits_1_while_the_server_is_not_serving(tmp_path: Path) -> None:
    """Connected but NOT_SERVING (Redis gone) is unhealthy too, not only "no answer"."""
    redis = RedisProcess(tmp_path / "redis").start()
    srv = ServerProcess({"CONSENT_DELIVERY": "off", "CONSENT_REDIS_URL": redis.url}).start()
    try:
        assert healthcheck("--address", srv.target).returncode == 0
        redis.kill()
        srv.wait_health(2)  # NOT_SERVING
        done = healthcheck("--address", srv.target)
        assert done.returncode == 1
        assert "NOT_SERVING" in done.stderr
    finally:
        srv.stop()
        redis.stop()


def test_healthcheck_speaks_tls_with_the_server_name_from_the_certificate(
    tmp_path: Path,
) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("consent.internal")  # no SAN for 127.0.0.1: the name must be sent
    paths = {}
    for name, blob in {
        "ca": ca.cert_pem.bytes(),
        "cert": leaf.cert_chain_pems[0].bytes(),
        "key": leaf.private_key_pem.bytes(),
    }.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(blob)
    port = free_port()
    tls_env = {"CONSENT_TLS_CERT": str(paths["cert"]), "CONSENT_TLS_KEY": str(paths["key"])}
    srv = ServerProcess(
        {"CONSENT_DELIVERY": "off", **tls_env}, args=["--listen", f"127.0.0.1:{port}"]
    )
    srv.start(wait_serving=False)
    try:
        env = {**tls_env, "CONSENT_LISTEN": f"0.0.0.0:{port}"}
        deadline = time.monotonic() + 20
        while (done := healthcheck("--tls-ca", str(paths["ca"]), env=env)).returncode != 0:
            assert time.monotonic() < deadline, done.stderr
        # Without --tls-ca the server's own certificate (CONSENT_TLS_CERT) is the trust
        # anchor: what the image's HEALTHCHECK relies on.
        done = healthcheck(env=env)
        assert done.returncode == 0, done.stderr
        # Plaintext against a TLS port, or a CA that did not sign it: unhealthy.
        assert healthcheck("--address", f"127.0.0.1:{port}", "--timeout", "2").returncode == 1
        paths["other"] = tmp_path / "other.pem"
        paths["other"].write_bytes(trustme.CA().cert_pem.bytes())
        other = healthcheck("--tls-ca", str(paths["other"]), "--timeout", "2", env=env)
        assert other.returncode == 1
        # The name is what made it match: asking for another name fails.
        wrong = healthcheck("--tls-server-name", "other.internal", "--timeout", "2", env=env)
        assert wrong.returncode == 1
    finally:
        srv.stop()


class _Status(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"# metrics\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_healthcheck_http_mode_follows_the_status(status: int, code: int) -> None:
    """The worker has no gRPC port: its check asks its /metrics listener."""
    handler = type("Handler", (_Status,), {"status": status})
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
        assert healthcheck("--http", url).returncode == code
    finally:
        httpd.shutdown()
        httpd.server_close()
    closed = healthcheck("--http", f"http://127.0.0.1:{free_port()}/metrics", "--timeout", "2")
    assert closed.returncode == 1
