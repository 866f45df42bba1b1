"""A task's options as Python callers give them (seconds, ``timedelta``, ``datetime``),
turned into the whole milliseconds the native core takes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional, Tuple, Union

from .errors import BadRequest

#: A span of time: seconds (``float`` or ``int``) or a ``timedelta``.
Seconds = Union[float, int, timedelta]

#: What the native core takes: ``(delay_ms, at_ms, timeout_ms, expires_ms, backoff, queue,
#: priority, (key, key_limit))``.
NativeOptions = Tuple[
    Optional[int],
    Optional[int],
    Optional[int],
    Optional[int],
    Optional[Tuple[int, int, int, int]],
    Optional[str],
    int,
    Optional[Tuple[str, int]],
]


def millis(value: Seconds, what: str) -> int:
    """``value`` in whole milliseconds (rounded up, so that a wait is never shortened)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest(f"{what} must be a finite, non-negative time, not {value!r}")
    return math.ceil(seconds * 1000)


@dataclass(frozen=True)
class Backoff:
    """How long to wait before the next attempt after a failed one: ``initial`` after the
    first failure, multiplied by ``multiplier`` after each further one, at most ``max``,
    plus up to ``jitter`` (a fraction, 0 to 1) more at random so that tasks that failed
    together do not retry together."""

    initial: Seconds = 1.0
    multiplier: float = 2.0
    max: Seconds = 600.0
    jitter: float = 0.2

    def native(self) -> Tuple[int, int, int, int]:
        """The backoff as ``(initial_ms, multiplier_pct, max_ms, jitter_pct)``."""
        if not 1.0 <= self.multiplier <= 100.0:
            raise BadRequest(f"the backoff multiplier must be 1 to 100, not {self.multiplier}")
        if not 0.0 <= self.jitter <= 1.0:
            raise BadRequest(f"the backoff jitter must be 0 to 1, not {self.jitter}")
        return (
            millis(self.initial, "the backoff's initial wait"),
            round(self.multiplier * 100),
            millis(self.max, "the backoff's longest wait"),
            round(self.jitter * 100),
        )


def native(
    delay: Optional[Seconds],
    at: Optional[Union[datetime, float]],
    attempt_timeout: Optional[Seconds],
    expires: Optional[Seconds],
    backoff: Optional[Backoff],
    queue: Optional[str] = None,
    priority: int = 0,
    key: Optional[str] = None,
    key_limit: int = 1,
) -> Optional[NativeOptions]:
    """The options for the native core, or ``None`` when all are the shard's defaults."""
    if not isinstance(priority, int) or not 0 <= priority <= 9:
        raise BadRequest(f"the priority must be an integer from 0 to 9, not {priority!r}")
    if not isinstance(key_limit, int) or key_limit < 1:
        raise BadRequest(f"the key limit must be a positive integer, not {key_limit!r}")
    if (
        delay is None
        and at is None
        and attempt_timeout is None
        and expires is None
        and backoff is None
        and queue is None
        and priority == 0
        and key is None
    ):
        return None
    at_ms = None
    if at is not None:
        # A naive datetime is local time, as datetime.timestamp() reads it.
        seconds = at.timestamp() if isinstance(at, datetime) else float(at)
        at_ms = millis(seconds, "at")
    return (
        None if delay is None else millis(delay, "delay"),
        at_ms,
        None if attempt_timeout is None else max(1, millis(attempt_timeout, "attempt_timeout")),
        None if expires is None else millis(expires, "expires"),
        None if backoff is None else backoff.native(),
        queue,
        priority,
        None if key is None else (key, key_limit),
    )
