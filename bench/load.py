"""Load generators behind one interface, so that every row of a run uses the same one.

- ``H2Load`` drives h2load (Debian ``nghttp2-client``): C, many concurrent HTTP/2
  streams, gRPC framing by hand. It barely competes with the server for CPU, which
  matters on a small machine. This is how gRPC's own benchmarks compare servers.
- ``PythonLoad`` is the fallback when h2load is missing: a ``python -m bench.pyload``
  process sending pre-serialized requests on ``grpc.aio`` channels. It costs far more
  CPU per call than the server's own handler, so on a 2-core machine its absolute
  numbers are lower; ratios stay fair because baseline and measured rows share it.

h2load sees HTTP status codes but not gRPC trailers, so a gRPC error would look like
a success. Callers that know the exact response size pass ``response_size``: a
response without its DATA frame is then counted as failed (errors are trailers-only).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from bench.frames import GRPC_HEADERS, frame
from bench.model import BenchOptions, LoadResult
from bench.procs import REPO_ROOT


class LoadGenerator(Protocol):
    """Sends one request over and over at a fixed concurrency and measures the replies."""

    name: str
    # False when gRPC errors cannot be told from answers without ``response_size``.
    sees_grpc_status: bool

    def run(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        duration_s: float,
        options: BenchOptions,
        response_size: int | None = None,
        on_measure_start: Callable[[], None] | None = None,
    ) -> LoadResult:
        """Warm up, then measure for ``duration_s``; ``method`` is ``/pkg.Service/Method``.

        ``on_measure_start`` is called between warm-up and measurement, so that callers
        can count side effects (outbox entries, server CPU) of the measured calls only.
        """
        ...


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of already sorted values, nearest rank; None when empty."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _result(
    generator: str, ok: int, failed: int, duration_s: float, latencies_ms: list[float]
) -> LoadResult:
    """A generator's counts and its calls' median and p99 latency."""
    ordered = sorted(latencies_ms)
    return LoadResult(
        generator=generator,
        ok=ok,
        failed=failed,
        duration_s=duration_s,
        p50_ms=percentile(ordered, 0.50),
        p99_ms=percentile(ordered, 0.99),
    )


_DONE_RE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")
_STATUS_RE = re.compile(r"status codes: (\d+) 2xx")
_DATA_RE = re.compile(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data")


class H2Load:
    """h2load with gRPC headers and a length-prefixed request body."""

    name = "h2load"
    sees_grpc_status = False

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def version(self) -> str:
        """``h2load --version``."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return out.stdout.strip().removeprefix("h2load ")

    def _h2load(
        self, url: str, body: Path, duration_s: float, options: BenchOptions, log: Path | None
    ) -> str:
        args = [
            self.binary,
            "--clients",
            str(options.connections),
            "--max-concurrent-streams",
            str(options.streams),
            "--threads",
            "1",
            "--duration",
            f"{max(1, round(duration_s * 1000))}ms",
            "--data",
            str(body),
        ]
        for name, value in GRPC_HEADERS:
            args += ["--header", f"{name}: {value}"]
        if log is not None:
            args += ["--log-file", str(log)]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=duration_s + 60)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr or done.stdout}")
        return done.stdout

    def run(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        duration_s: float,
        options: BenchOptions,
        response_size: int | None = None,
        on_measure_start: Callable[[], None] | None = None,
    ) -> LoadResult:
        """Warm up (its own h2load run), then measure in a second run."""
        url = f"http://{target}{method}"
        with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
            body = Path(tmp) / "request.bin"
            body.write_bytes(frame(request))
            if options.warmup_s > 0:
                self._h2load(url, body, options.warmup_s, options, None)
            if on_measure_start is not None:
                on_measure_start()
            # Warm-up in a run of its own: h2load's byte counters would include it otherwise.
            log = Path(tmp) / "requests.log"
            out = self._h2load(url, body, duration_s, options, log)
            latencies = sorted(
                int(parts[2]) / 1000.0
                for parts in (line.split("\t") for line in log.read_text().splitlines())
                if len(parts) == 3 and parts[1] == "200"
            )
        done = _DONE_RE.search(out)
        ok_http = _STATUS_RE.search(out)
        if done is None or ok_http is None:
            raise RuntimeError(f"cannot read h2load's output:\n{out}")
        finished = int(done.group(3))
        ok = int(ok_http.group(1))
        if response_size is not None:
            data = _DATA_RE.search(out)
            if data is None:
                raise RuntimeError(f"cannot read h2load's traffic line:\n{out}")
            ok = min(ok, int(data.group(1)) // response_size)
        return _result(self.name, ok, finished - ok, duration_s, latencies)


class PythonLoad:
    """``python -m bench.pyload`` in one process (more would starve the server of CPU)."""

    name = "python grpc.aio"
    sees_grpc_status = True

    def version(self) -> str:
        """The grpcio version the fallback uses."""
        import grpc

        return f"grpcio {grpc.__version__}"

    @staticmethod
    def _pyload(
        target: str,
        method: str,
        bodies: list[Path],
        duration_s: float,
        options: BenchOptions,
        *,
        once: bool = False,
    ) -> dict[str, Any]:
        files = [arg for b in bodies for arg in ("--request-file", str(b))]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.pyload",
                "--target",
                target,
                "--method",
                method,
                *files,
                *(["--once"] if once else []),
                "--duration",
                f"{duration_s:g}",
                "--warmup",
                "0",
                "--connections",
                str(options.connections),
                "--streams",
                str(options.streams),
            ],
            capture_output=True,
            text=True,
            timeout=duration_s + 600 if once else duration_s + 60,
            cwd=REPO_ROOT,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.pyload failed ({done.returncode}): {done.stderr}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def run(
        self,
        target: str,
        method: str,
        request: bytes,
        *,
        duration_s: float,
        options: BenchOptions,
        response_size: int | None = None,
        on_measure_start: Callable[[], None] | None = None,
    ) -> LoadResult:
        """Warm up (a run of its own, as with h2load), then measure in a second run.

        The workers see every call's gRPC status, so ``response_size`` is not needed.
        """
        return run_distinct(
            target,
            method,
            [request],
            duration_s=duration_s,
            options=options,
            on_measure_start=on_measure_start,
        )


def run_distinct(
    target: str,
    method: str,
    requests: list[bytes],
    *,
    duration_s: float,
    options: BenchOptions,
    once: bool = False,
    on_measure_start: Callable[[], None] | None = None,
) -> LoadResult:
    """Distinct requests in turn (h2load sends one body only), by ``python -m bench.pyload``.

    ``once``: each request exactly once, no warm-up; the rate is over the elapsed time.
    Otherwise warm up with the same requests, then measure for ``duration_s``."""
    with tempfile.TemporaryDirectory(prefix="bench-pyload-") as tmp:
        bodies = []
        for n, request in enumerate(requests):
            body = Path(tmp) / f"request-{n}.bin"
            body.write_bytes(request)
            bodies.append(body)
        if not once and options.warmup_s > 0:
            PythonLoad._pyload(target, method, bodies, options.warmup_s, options)
        if on_measure_start is not None:
            on_measure_start()
        result = PythonLoad._pyload(target, method, bodies, duration_s, options, once=once)
    elapsed = result["elapsed_s"] if once else duration_s
    return _result(PythonLoad.name, result["ok"], result["failed"], elapsed, result["latencies_ms"])


def choose(generator: str) -> H2Load | PythonLoad:
    """The generator asked for; ``auto`` = h2load when installed, else the Python fallback."""
    binary = shutil.which("h2load")
    if generator == "h2load" or (generator == "auto" and binary):
        if binary is None:
            raise RuntimeError("h2load is not installed (apt-get install nghttp2-client)")
        return H2Load(binary)
    if generator in ("auto", "python"):
        if generator == "auto":
            print(
                "note: h2load not found (Debian package nghttp2-client); falling back to the "
                "Python grpc.aio load generator, which competes with the server for CPU",
                file=sys.stderr,
            )
        return PythonLoad()
    raise ValueError(f"unknown generator {generator!r}: expected auto, h2load or python")
