"""The launcher's side of the thrash rule (docs/design.md, "Tuning: a measured trial per rung"):
how many times a run restarted a rung for thrashing, the `thrash` event, and the watchdog's hook
for a child that goes on. The child's side (the rule itself, ending after the save) is
callbacks.Watch's; what follows a thrash is plan.POLICY's."""

from __future__ import annotations

from typing import Callable

from .contract import Heartbeat
from .runlog import Ev, Events, RunPaths, read_events

RESTART, STEP_DOWN, WARN = "restart", "step_down", "warn"  # a thrash event's action


def restarts(paths: RunPaths, rung: str) -> int:
    """Attempts on `rung` that ended for thrashing and were restarted, in the whole run (every
    session's events): the second thrash on a rung steps down (plan.POLICY)."""
    return sum(1 for e in read_events(paths.events)
               if e.kind == Ev.THRASH and e.get("rung") == rung and e.get("action") == RESTART)


def record(events: Events, say: Callable[[str], None], attempt: int, rung: str, beat: Heartbeat | None,
           action: str) -> None:
    """The thrash event: the epoch the child's rule fired in, its alloc retries, and what was done."""
    epoch, retries = (beat.thrash_epoch, beat.alloc_retries) if beat else (None, None)
    events.append(Ev.THRASH, attempt=attempt, rung=rung, epoch=epoch, retries=retries, action=action)
    if action == WARN:
        say(f"attempt {attempt}: the allocator is thrashing on rung {rung} in epoch {epoch} (alloc retries "
            f"{retries} rose in two consecutive windows); training goes on")


def seen(events: Events, say: Callable[[str], None], on_thrash: str, attempt: int,
         rung: str) -> Callable[[Heartbeat], None]:
    """The watchdog's hand-on of a heartbeat whose rule fired: recorded here where the child goes
    on (on_thrash = "warn", or the last epoch, after which nothing is left to restart for); where it
    ends itself, the supervisor records the thrash as it classifies the attempt."""
    def hand_on(beat: Heartbeat) -> None:
        last = beat.epochs is not None and beat.thrash_epoch is not None and beat.thrash_epoch >= beat.epochs
        if on_thrash == WARN or last:
            record(events, say, attempt, rung, beat, WARN)
    return hand_on
