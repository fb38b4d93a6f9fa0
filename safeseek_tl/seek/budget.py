"""A search that fits a time budget: how many steps the minutes given allow, from the steps' time so far
(after the first steps, then at each epoch: :class:`~safeseek_tl.seek.trainer.SafeSeek`)."""

from __future__ import annotations

from dataclasses import dataclass

from safeseek_tl.errors import InputError

PROBE_STEPS = 3
"""Steps timed before the schedule is set (the first one also pays for warm-up)."""

RESERVE = 0.1
"""Share of the budget kept for validation and the best circuit's read-off after the last step."""


def budget_steps(budget_s: float, elapsed_s: float, steps_done: int, reserve: float = RESERVE) -> int:
    """The total number of steps that fit ``budget_s`` seconds: ``steps_done`` took ``elapsed_s``, and
    the rest of the budget less its ``reserve`` share goes at that pace (never fewer than done)."""
    if steps_done < 1 or elapsed_s <= 0:
        raise InputError(f"the step time needs at least one timed step, got {steps_done} steps in {elapsed_s} s")
    left = budget_s * (1 - reserve) - elapsed_s
    return steps_done + max(0, int(left / (elapsed_s / steps_done)))


@dataclass
class Budget:
    """A time budget under way: its start on ``clock``'s scale and the deadline of the last step."""

    seconds: float
    started: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise InputError(f"the time budget must be a positive number of seconds, got {self.seconds}")

    def steps(self, now: float, steps_done: int) -> int:
        return budget_steps(self.seconds, now - self.started, steps_done)

    def spent(self, now: float) -> bool:
        """Whether the time for steps (the budget less its reserve) is over."""
        return now - self.started >= self.seconds * (1 - RESERVE)
