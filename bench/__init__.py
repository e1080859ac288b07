"""``make bench``: load tests that print every figure beside a baseline measured in the same run.

The run starts everything it measures itself, on free loopback ports: a private
``redis-server`` in a temporary directory (never the machine's 6379), the real
consent server process on it, and a trivial ``grpc.aio`` server with the same
options (the ceiling a Python gRPC handler can reach on this machine).

Modules, one job each:

- ``run``          wiring: options -> processes -> scenarios in rounds -> one table
- ``scenarios``    one function per scenario, each returning table rows
- ``aims``         the ratios we aim for, evaluated over the rows
- ``report``       the table and the aims as text
- ``procs``        start and stop the redis-server and the gRPC server processes
- ``empty_server`` the trivial servicer (``python -m bench.empty_server``)
- ``workload``     the tenant, recipients, requests and seed data the scenarios use
- ``load``         the load generators behind one interface: h2load, or the Python
                   ``grpc.aio`` fallback (``pyload``); the same one for every row
- ``redis_raw``    the raw pipelined HMGET baseline (redis-py, no server)
- ``frames``       gRPC request framing (5-byte prefix + serialized message)
- ``cpu``          a process's CPU time (the table's CPU per call)
- ``environment``  machine and versions for the report header
- ``model``, ``context``  the values passed around

To add a scenario, write ``def my_scenario(ctx: BenchContext) -> list[Row]`` in
``scenarios`` (or any module) and append it to ``scenarios.SCENARIOS``.
"""

from __future__ import annotations

from bench.model import Aim, BenchOptions, Row

__all__ = ["Aim", "BenchOptions", "Row"]
