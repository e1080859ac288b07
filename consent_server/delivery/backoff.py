"""Retry spacing for transient provider failures: exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


def backoff_ms(
    attempt: int, base_ms: float, cap_ms: float, draw: Callable[[], float] = random.random
) -> int:
    """The wait before retrying after failed attempt number ``attempt`` (1-based).

    The exponential step ``base * 2**(attempt-1)`` (at most ``cap``) is jittered over
    its upper half, so messages that failed together do not retry in lock-step, while
    each wait stays at least half the step.
    """
    step = min(cap_ms, base_ms * 2.0 ** max(attempt - 1, 0))
    return int(step / 2 + step / 2 * min(max(draw(), 0.0), 1.0))


@dataclass(frozen=True, slots=True)
class RetryTuning:
    """How often and how far apart a transiently failing delivery is retried: the outbox
    worker's options, which the change webhook dispatcher follows."""

    max_attempts: int = 8
    backoff_base_ms: float = 1000.0
    backoff_max_ms: float = 300_000.0

    def retry_wait_ms(self, attempt: int) -> int:
        """The jittered wait before retrying after failed attempt ``attempt``."""
        return backoff_ms(attempt, self.backoff_base_ms, self.backoff_max_ms)
