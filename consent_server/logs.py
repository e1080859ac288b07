"""Logging: JSON lines (or text) on stderr, with addresses masked in every message.

gRPC's Python loggers (``grpc._cython.cygrpc``, ``grpc.aio``) propagate to the root
logger, so their lines are JSON like ours. gRPC's C core logs through absl straight to
file descriptor 2 (``E1203 11:56:55.145348 18112 add_port.cc:83] Failed to add port``);
in JSON mode :func:`capture_native_stderr` points fd 2 at a pipe whose lines a thread
re-emits as records of the ``grpc.core`` logger (level from absl's first letter), while
Python's own ``sys.stderr`` keeps writing to the real stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import sys
import threading
from datetime import UTC, datetime

from consent_server.domain.masking import mask_text

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class MaskingFilter(logging.Filter):
    """Masks phone numbers and e-mail addresses in the message and string extras."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_text(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, mask_text(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(out, default=str, ensure_ascii=False)


# absl's prefix: severity letter, MMDD, time, thread id, file:line, "] ".
_ABSL = re.compile(r"([IWEF])\d{4} [\d:.]+\s+\d+ ([^\]\s]+:\d+)\] ?(.*)")
_ABSL_LEVEL = {
    "I": logging.INFO,
    "W": logging.WARNING,
    "E": logging.ERROR,
    "F": logging.CRITICAL,
}
_capture: dict[str, object] = {}


def native_line(line: str) -> None:
    """Re-emit one line a native library wrote to fd 2 as a log record."""
    m = _ABSL.fullmatch(line)
    if m:
        logging.getLogger("grpc.core").log(_ABSL_LEVEL[m[1]], m[3], extra={"source": m[2]})
    elif line.strip():
        logging.getLogger("stderr").warning(line)


def capture_native_stderr() -> int:
    """Point fd 2 at a pipe read by a thread that logs each line (see the module
    docstring); ``sys.stderr`` keeps the real stderr. Returns the real stderr's fd
    (child processes are given it). Idempotent; :func:`release_native_stderr` undoes it.
    """
    if "real" in _capture:
        return int(str(_capture["real"]))
    sys.stderr.flush()
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stderr = open(real, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115

    def pump() -> None:
        with open(read_fd, encoding="utf-8", errors="replace") as pipe:
            for raw in pipe:
                line = raw.rstrip("\n")
                if line.startswith("{"):  # already one of our JSON lines (a child's)
                    sys.stderr.write(line + "\n")
                else:
                    with contextlib.suppress(Exception):  # never lose the pump
                        native_line(line)

    thread = threading.Thread(target=pump, name="native-stderr", daemon=True)
    thread.start()
    _capture.update(real=real, thread=thread)
    atexit.register(release_native_stderr)
    return real


def release_native_stderr() -> None:
    """Give fd 2 back to the real stderr and log what the pipe still held, so nothing
    written before exit is lost or comes after the last line."""
    real = _capture.pop("real", None)
    thread = _capture.pop("thread", None)
    if real is None or not isinstance(thread, threading.Thread):
        return
    os.dup2(int(str(real)), 2)  # closes the pipe's last writer: the pump reads to EOF
    thread.join(2)


def real_stderr_fd() -> int:
    """The fd of the real stderr (2 unless native stderr is captured)."""
    return int(str(_capture.get("real", 2)))


def configure(level: str, fmt: str) -> None:
    """Route the root logger to stderr in the chosen format, masking every record; in
    JSON format gRPC core's native lines are captured into it too."""
    if fmt == "json":
        capture_native_stderr()
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskingFilter())
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; provider URLs can carry tokens in their path
    # or query, and the delivery worker logs its own outcome (masked) anyway.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
