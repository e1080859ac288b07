"""Every shell block of README.md runs as written against a live server.

Convention (in README.md, on the line before a block's fence):

- no marker: every command of the block runs in one bash session shared by all
  blocks (variables and ``export`` carry over, as in a reader's terminal) and must
  exit 0, or with the code its comment states as ``(exit N)``;
- ``<!-- test: server -->``: the block's last command starts the server; the test
  starts it in the background, waits until it serves, and it answers every block
  after it (it replaces the previous server, which is stopped with SIGTERM);
- ``<!-- test: skip REASON -->``: not run here, for the stated reason (docker,
  kubectl, certificates of your own...).

The README's ports are the defaults (gRPC 50051, HTTP 8080, Redis 6380); the test
substitutes free ports for them, and runs in a scratch directory whose entries link
to the repository's, so files the commands write (exports, settings) stay out of it.
A ```json block right after a shell block shows the output of that block's last
command: every key it shows must be there, with the same value where the value is
an enum name, a boolean or a number."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .support import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# It starts servers and a redis-server through the README's own commands.
pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.slow]

_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")
_MARK = re.compile(r"<!--\s*test:\s*(?P<kind>skip|server)\b\s*(?P<reason>.*?)\s*-->")
_EXIT = re.compile(r"\(exit (\d+)")
_SHELL = {"sh", "bash", "console", "shell"}
DEFAULT_PORTS = {"grpc": 50051, "http": 8080, "redis": 6380}


@dataclass
class Command:
    line: int
    text: str
    comments: list[str] = field(default_factory=list)

    @property
    def expected_exit(self) -> int:
        """0, or the ``(exit N)`` its own comment or the comment above it states."""
        trailing = self.text.splitlines()[-1]
        for source in (trailing, *self.comments):
            found = _EXIT.search(source)
            if found:
                return int(found.group(1))
        return 0


@dataclass
class Block:
    line: int
    lang: str
    body: list[str]
    kind: str  # "run", "server" or "skip"
    reason: str = ""
    shown_json: str | None = None

    def commands(self) -> list[Command]:
        """The block's commands: continued lines and open quotes joined."""
        out: list[Command] = []
        pending: list[str] = []
        comments: list[str] = []
        start = 0
        for offset, raw in enumerate(self.body):
            if not pending:
                stripped = raw.strip()
                if not stripped:
                    comments = []
                    continue
                if stripped.startswith("#"):
                    comments.append(stripped)
                    continue
                start = self.line + 1 + offset
            pending.append(raw)
            text = "\n".join(pending)
            if text.rstrip().endswith("\\"):
                continue
            try:
                shlex.split(text, comments=True)
            except ValueError:  # an open quote: the command goes on
                continue
            out.append(Command(start, text, comments))
            pending, comments = [], []
        assert not pending, f"README.md:{start}: unterminated command"
        return out


def readme_blocks(text: str) -> list[Block]:
    """The shell blocks of ``text`` in order, each with its marker and shown JSON."""
    lines = text.splitlines()
    blocks: list[Block] = []
    last_end = -1  # index of the closing fence of the last shell block
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence or not fence["lang"]:
            i += 1
            continue
        indent, lang, start = len(fence["indent"]), fence["lang"], i
        body: list[str] = []
        i += 1
        while not _FENCE.match(lines[i]):
            body.append(lines[i][indent:])
            i += 1
        end, i = i, i + 1
        if lang == "json":
            # Output shown for the shell block just above it (only blank lines between).
            if (
                blocks
                and last_end >= 0
                and not any(ln.strip() for ln in lines[last_end + 1 : start])
            ):
                blocks[-1].shown_json = "\n".join(body)
            continue
        if lang not in _SHELL:
            continue
        before = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        mark = _MARK.search(before)
        kind = mark["kind"] if mark else "run"
        blocks.append(Block(start + 1, lang, body, kind, mark["reason"] if mark else ""))
        last_end = end
    return blocks


def matches_shown(shown: Any, actual: Any, path: str = "") -> list[str]:
    """Where ``actual`` differs from the README's shown output (see the module doc)."""
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{path}: not an object"]
        problems: list[str] = []
        for key, value in shown.items():
            if key not in actual:
                problems.append(f"{path}.{key}: missing")
            else:
                problems += matches_shown(value, actual[key], f"{path}.{key}")
        return problems
    if isinstance(shown, list):
        if not isinstance(actual, list) or len(actual) < len(shown):
            return [f"{path}: fewer items than shown"]
        return [p for n, item in enumerate(shown) for p in matches_shown(item, actual[n], path)]
    enum_like = isinstance(shown, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", shown)
    if isinstance(shown, bool | int) or enum_like:
        return [] if shown == actual else [f"{path}: {actual!r}, README shows {shown!r}"]
    return []


def test_blocks_parse_markers_commands_and_exit_codes() -> None:
    text = (
        "<!-- test: skip needs docker -->\n```sh\ndocker compose up\n```\n\n"
        "```sh\n# refused (exit 73)\ngrpcurl -d '{\n  \"a\": 1}' \\\n  x\nR=1  # (exit 2)\n```\n"
        '```json\n{"a": "ENUM_X", "b": "whatever"}\n```\n'
    )
    skip, run = readme_blocks(text)
    assert (skip.kind, skip.reason) == ("skip", "needs docker")
    first, second = run.commands()
    assert first.text.startswith("grpcurl") and first.text.endswith("  x")
    assert (first.line, first.expected_exit, second.expected_exit) == (8, 73, 2)
    assert run.shown_json is not None
    shown = json.loads(run.shown_json)
    assert matches_shown(shown, {"a": "ENUM_X", "b": "other"}) == []
    assert matches_shown(shown, {"a": "ENUM_Y", "b": "other"}) != []


def test_every_skipped_block_says_why() -> None:
    blocks = readme_blocks(README.read_text())
    assert [b.line for b in blocks if b.kind == "skip" and not b.reason] == []
    # Skips are the exception: most blocks run.
    assert sum(b.kind == "skip" for b in blocks) * 3 < len(blocks)


class Session:
    """One bash session in a scratch directory, with the README's ports substituted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        for entry in ROOT.iterdir():
            if entry.name != ".git":
                (workdir / entry.name).symlink_to(entry)
        self.ports = {name: free_port() for name in DEFAULT_PORTS}
        self.server: subprocess.Popen[str] | None = None
        self.server_log = workdir / "server.log"
        self.n = 0
        self.env_file = workdir / ".session-env"
        self.env = {
            **os.environ,
            "CONSENT_LISTEN": f"127.0.0.1:{self.ports['grpc']}",
            "CONSENT_PROCESSES": "1",
            "HOME": str(workdir),
        }
        for name in ("CONSENT_REDIS_URL", "CONSENT_API_KEY", "CONSENT_TARGET"):
            self.env.pop(name, None)
        self.bash = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=workdir,
            env=self.env,
            stdin=subprocess.PIPE,
            text=True,
        )

    def substitute(self, text: str) -> str:
        for name, default in DEFAULT_PORTS.items():
            text = re.sub(
                rf"(?<=:){default}\b|(?<=--port ){default}\b", str(self.ports[name]), text
            )
        return text

    def run(self, command: Command, timeout: float = 300) -> tuple[int, str, str]:
        self.n += 1
        script = self.workdir / f".cmd{self.n}.sh"
        script.write_text(self.substitute(command.text) + "\n")
        out, err, rc = (self.workdir / f".cmd{self.n}.{s}" for s in ("out", "err", "rc"))
        assert self.bash.stdin is not None
        self.bash.stdin.write(
            f"{{ . {shlex.quote(str(script))}; }} >{out} 2>{err} </dev/null; "
            f"echo $? >{rc}.tmp; export -p >{self.env_file}; mv {rc}.tmp {rc}\n"
        )
        self.bash.stdin.flush()
        deadline = time.monotonic() + timeout
        while not rc.exists():
            assert self.bash.poll() is None, "the bash session ended"
            assert time.monotonic() < deadline, f"README.md:{command.line} did not finish"
            time.sleep(0.05)
        return int(rc.read_text()), out.read_text(), err.read_text()

    def start_server(self, command: Command) -> None:
        self.stop_server()
        # The session's exports (PATH...) apply, as they would in the reader's terminal.
        text = self.substitute(command.text)
        prelude = f". {self.env_file}\n" if self.env_file.exists() else ""
        self.server = subprocess.Popen(
            ["bash", "-c", prelude + text.strip()],
            cwd=self.workdir,
            env=self.env,
            stdout=self.server_log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.wait_serving(command)

    def wait_serving(self, command: Command, timeout: float = 90) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.ports['grpc']}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.server is not None
                if self.server.poll() is not None:
                    break
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        pytest.fail(
            f"README.md:{command.line}: the server never served:\n"
            + self.server_log.read_text()[-3000:]
        )

    def stop_server(self) -> None:
        if self.server is None or self.server.poll() is not None:
            return
        # The whole process group (bash, make, the server and its children) drains;
        # bash itself exits at once, so wait until no process of the group is left.
        group = self.server.pid
        os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.server.poll()  # reap bash: a zombie still counts as in the group
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(group, signal.SIGKILL)
        self.server.wait(10)

    def close(self) -> None:
        self.stop_server()
        if self.bash.poll() is None:
            assert self.bash.stdin is not None
            self.bash.stdin.close()
            self.bash.wait(10)
        # A Redis the README started with --daemonize: shut it down.
        import redis

        with contextlib.suppress(redis.RedisError):
            redis.Redis(port=self.ports["redis"], socket_connect_timeout=0.5).shutdown(nosave=True)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = Session(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_every_readme_shell_block_works_as_written(session: Session) -> None:
    blocks = readme_blocks(README.read_text())
    failures: list[str] = []
    ran = 0
    for block in blocks:
        if block.kind == "skip":
            continue
        commands = block.commands()
        if block.kind == "server":
            *commands, server = commands
        output = ""
        for command in commands:
            code, out, err = session.run(command)
            ran += 1
            output = out or err
            if code != command.expected_exit:
                failures.append(
                    f"README.md:{command.line}: exit {code}, expected {command.expected_exit}:\n"
                    f"  {command.text.splitlines()[0]}\n  {(err or out).strip()[-600:]}"
                )
        if block.kind == "server":
            session.start_server(server)
            ran += 1
        elif block.shown_json is not None:
            try:
                actual = json.loads(output)
            except ValueError:
                failures.append(f"README.md:{block.line}: output is not the JSON shown: {output}")
            else:
                for problem in matches_shown(json.loads(block.shown_json), actual):
                    failures.append(f"README.md:{block.line}: {problem}")
    assert not failures, "\n".join(failures)
    assert session.server is not None and session.server.poll() is None
    assert ran > 60
