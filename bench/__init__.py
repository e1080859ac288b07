"""``make bench``: load tests that print every figure beside a baseline measured in the same run.

The run starts everything it measures itself, on free loopback ports: a private
``redis-server`` in a temporary directory (never the machine's 6379), the real
consent server process on it, and a trivial ``grpc.aio`` server with the same
options (the ceiling a Python gRPC handler can reach on this machine).

Modules, one job each:

- ``procs``       start and stop the redis-server and the server processes
- ``empty_server`` the trivial servicer (``python -m bench.empty_server``)
- ``frames``      gRPC request framing (5-byte prefix + serialized message)
- ``load``        the load generators behind one interface: h2load, or a Python
                  multi-process ``grpc.aio`` fallback; the same one for every row
- ``redis_raw``   the raw pipelined HMGET baseline (redis-py, no server)
- ``scenarios``   one function per scenario, each returning table rows
- ``aims``        the ratios we aim for, evaluated over the rows
- ``report``      the table
- ``run``         wiring: options -> processes -> scenarios -> table

To add a scenario, write ``def my_scenario(ctx: BenchContext) -> list[Row]`` in
``scenarios`` (or any module) and append it to ``scenarios.SCENARIOS``.
"""

from __future__ import annotations

from bench.model import Aim, BenchOptions, Row

__all__ = ["Aim", "BenchOptions", "Row"]
