"""Cron schedules as :class:`dtc.Client` shows them: a schedule submits its task at each
tick of its calendar, exactly once per tick even across failovers (the task's id is
derived from the schedule and the tick)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

#: A schedule as the native core answers it.
Row = Tuple[
    str, str, Optional[str], str, str, str, bool, Optional[int], int, Optional[str], int, int
]


@dataclass(frozen=True)
class Schedule:
    """One schedule: its calendar (``cron`` in ``tz``, UTC when ``None``), what it does at
    a tick whose last task is unfinished (``overlap``: ``"skip"`` or ``"allow"``) and with
    ticks missed while its shard had no leader (``catch_up``: ``"none"``, ``"one"`` or
    ``"all"``), the task ``type`` it submits, whether it is ``paused``, its next tick and
    last tick handled (seconds since the epoch), the id of its last task, and how many
    ticks ``fired`` a task or were ``skipped``."""

    name: str
    cron: str
    tz: Optional[str]
    overlap: str
    catch_up: str
    type: str
    paused: bool
    next: Optional[float]
    last_tick: float
    last_task: Optional[str]
    fired: int
    skipped: int

    @classmethod
    def of(cls, row: Row) -> "Schedule":
        """A schedule from the native core's row."""
        name, cron, tz, overlap, catch_up, kind, paused, next_ms, last_ms, task, fired, skipped = row
        return cls(
            name,
            cron,
            tz,
            overlap,
            catch_up,
            kind,
            paused,
            None if next_ms is None else next_ms / 1000,
            last_ms / 1000,
            task,
            fired,
            skipped,
        )
