"""The launch seam: start one attempt's child, watch it, and report how it ended.

`ChildProcess` is the real seam (docs/design.md, "The attempt loop and the launch seam"):
`launch(cmd, env, log_path, watchdog) -> ChildEnd`. It shows the child's output live, writes it
to train.log, and every `tick` seconds asks the attempt's `Watchdog` whether the child must go;
when it must, it ends the whole process tree and the watchdog's verdict comes back in the
`ChildEnd`. Scripted tests implement the same call and return a `ChildEnd` with no process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

from . import console, memory, probe, proctree
from .contract import GRACE_S, HANG, Heartbeat
from .failures import ChildEnd, signal_of
from .ladder import Job
from .runlog import JsonLines

TREE_EVERY_S = 10.0  # how often the running attempt's process tree is handed to the record
RAM_EVERY_S = 2.0  # how often host RAM is sampled (evidence for a SIGKILL)
TELEMETRY_EVERY_S = 10.0  # a line of telemetry.jsonl: ~7 MB for a 100-hour run


class Launch(Protocol):
    def __call__(self, cmd: list[str], env: dict[str, str], log_path: Path, watchdog: "Watchdog") -> ChildEnd: ...


@runtime_checkable
class Stoppable(Protocol):
    """The seam's other half, for a launch that runs a process: the launcher's signal passed on, and
    the whole tree ended after `grace` seconds. `Signals` reaches the child only through these, so a
    fake launch that carries them records the grace kill (docs/design.md, "The attempt loop and the
    launch seam")."""

    def signal(self, sig: int) -> None: ...

    def stop(self, grace: float) -> None: ...


def become_subreaper() -> None:
    """Orphaned descendants (a dead child's dataloader workers or DDP ranks) are reparented to the
    launcher instead of init, so it can find and end them (Linux PR_SET_CHILD_SUBREAPER)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)
    except (OSError, AttributeError):
        pass


class Watchdog:
    """One attempt's watch: its heartbeat, host RAM, telemetry and process tree. Made fresh for
    every attempt; `tick(pid)` is called every second while the child runs and answers why the
    child must be ended (a silent heartbeat) or None; `end(code, seconds)` is the attempt's record."""

    def __init__(self, job: Job, attempt: int, rung: str, heartbeat: Path, gpus: tuple[int, ...],
                 ram: memory.RamWatch, telemetry: JsonLines | None = None,
                 on_tree: Callable[[list[dict]], None] = lambda tree: None, clock=time.monotonic,
                 on_thrash: Callable[[Heartbeat], None] = lambda beat: None):
        self.job, self.attempt, self.rung, self.heartbeat, self.gpus = job, attempt, rung, heartbeat, gpus
        self.ram, self.telemetry, self.on_tree, self.clock = ram, telemetry, on_tree, clock
        self.on_thrash = on_thrash  # a heartbeat with a new thrash_epoch (see `thrash`)
        self._thrash_seen: int | None = None  # the thrash_epoch last handed on
        self.tree: list[dict] = []  # the child's processes at the last look
        self.verdict: tuple[str, str] | None = None  # (kind, evidence) once the watchdog decided to kill
        self.peak_rss = self.peak_vram = None
        self._tree_saved = self._ram_sampled = 0.0
        self._telemetry_written = 0.0
        self._beat_seen: tuple | None = None  # the heartbeat as last seen (mtime, size, inode, content)
        self._beat_changed = 0.0  # on `clock`, when it was last seen to change (or the child started)
        self._ram_now: dict = {}

    def start(self) -> None:
        self.ram.start()
        now = self.clock()
        self._telemetry_written = now  # the first sample once the child is past its start
        self._beat_seen, self._beat_changed = None, now  # silent since the start, until a heartbeat
        self._tree_saved = self._ram_sampled = -TREE_EVERY_S

    def tick(self, pid: int) -> str | None:
        now = self.clock()
        if now - self._tree_saved >= TREE_EVERY_S:  # a SIGKILLed launcher leaves the next run able to end it
            self._tree_saved = now
            self.tree = proctree.snapshot(pid)
            self.on_tree(self.tree)
        pids = [r["pid"] for r in self.tree] or [pid]
        if now - self._ram_sampled >= RAM_EVERY_S:  # host RAM just before a SIGKILL is OOM evidence
            self._ram_sampled = now
            self._ram_now = self.ram.sample(pids)
            self.peak_rss = max(self.peak_rss or 0, self._ram_now.get("tree_rss") or 0) or None
        beat = Heartbeat.read(self.heartbeat)
        if self.telemetry is not None and now - self._telemetry_written >= TELEMETRY_EVERY_S:
            self._telemetry_written = now
            self._record_telemetry(set(pids), beat or Heartbeat())
        self.thrash(beat)
        reason = self.silence(beat, now)
        if reason and self.verdict is None:
            self.verdict = (HANG, reason)
        return reason

    def thrash(self, beat: Heartbeat | None) -> None:
        """Hand on a heartbeat whose `thrash_epoch` is new (the child's thrash rule fired in that
        epoch): once per epoch, at the tick that first sees it, or from the last heartbeat after the
        child ended (the supervisor asks again then)."""
        if beat is not None and beat.thrash_epoch is not None and beat.thrash_epoch != self._thrash_seen:
            self._thrash_seen = beat.thrash_epoch
            self.on_thrash(beat)

    def silence(self, beat: Heartbeat | None, now: float) -> str | None:
        """Why the heartbeat counts as silent, or None: the start-up limit before the first batch,
        the heartbeat limit after it. Silence is measured on `clock` (monotonic) from when the
        heartbeat was last seen to change, never from the file's mtime: an NTP step or a VM resume
        must not make a fresh heartbeat look hours old (docs/design.md, "The attempt loop and the
        launch seam")."""
        try:
            st = self.heartbeat.stat()
            seen = (st.st_mtime_ns, st.st_size, st.st_ino, repr(beat))  # any change is a beat
        except OSError:
            seen = None  # no heartbeat yet: silent since the child started
        if seen != self._beat_seen:
            self._beat_seen, self._beat_changed = seen, now
        silent = now - self._beat_changed
        started = bool(beat and beat.first_batch_ts)
        limit = self.job.heartbeat_timeout_s if started else self.job.startup_timeout_s
        if silent <= limit:
            return None
        where = (f"phase {beat.phase}, epoch {beat.epoch}, batch {beat.batch}" if beat
                 else "before its first heartbeat")
        return (f"heartbeat silent for {silent:.0f} s (limit {limit} s {'after' if started else 'before'} the first "
                f"batch; {where})")

    def _record_telemetry(self, pids: set[int], beat: Heartbeat) -> None:
        ram = self._ram_now
        vram = probe.process_vram(self.gpus, pids) if self.gpus else None
        if vram:
            self.peak_vram = max(self.peak_vram or 0, vram)
        self.telemetry.add({
            "t": round(time.time(), 2), "attempt": self.attempt, "rung": self.rung, "vram": vram,
            "ram_used": (ram["ram_total"] - ram["ram_available"]) if ram.get("ram_total") else None,
            "ram_available": ram.get("ram_available"), "rss": ram.get("tree_rss"),
            "phase": beat.phase, "epoch": beat.epoch, "batch": beat.batch,
            "it_s": round(beat.it_s, 3) if beat.it_s else None})

    def end(self, exit_code: int, seconds: float) -> ChildEnd:
        """The attempt's record: how it ended, the watchdog's verdict, host-RAM evidence for a SIGKILL."""
        kind, evidence = self.verdict or (None, None)
        memory_evidence = self.ram.evidence() if signal_of(exit_code) == signal.SIGKILL else None
        return ChildEnd(exit_code, round(seconds, 3), watchdog=kind, evidence=evidence,
                        memory_evidence=memory_evidence, peak_rss=self.peak_rss, peak_vram=self.peak_vram)


class ChildProcess:
    """The real launch: `python -m launcher.child` in its own session, output teed to the
    terminal and train.log (train.log only once the launcher was signalled), the watchdog asked
    every `tick` seconds."""

    def __init__(self, out: Callable[[bytes], None] = console.write_bytes, tick: float = 1.0):
        become_subreaper()
        self.out = out
        self.tick = tick
        self.proc: subprocess.Popen | None = None
        self.stopped: int | None = None  # the launcher's signal, once passed on: no child starts after it
        self._told: int | None = None  # the pid the signal was passed to (once per child)

    def __call__(self, cmd: list[str], env: dict[str, str], log_path: Path, watchdog: Watchdog) -> ChildEnd:
        if self.stopped is not None:  # a signal after the loop's last look: start nothing
            return ChildEnd(-self.stopped)
        killed = False
        watchdog.start()
        t0 = time.monotonic()
        with open(log_path, "ab") as log:
            # its own session: a terminal's Ctrl-C reaches the launcher, which decides
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True, cwd=Path.cwd())
            if self.stopped is not None:  # it came while the child was being started: pass it on now
                self.signal(self.stopped)
            tee = threading.Thread(target=self._tee, args=(self.proc.stdout, log), daemon=True)
            tee.start()
            try:
                while True:
                    try:
                        code = self.proc.wait(timeout=self.tick)
                        break
                    except subprocess.TimeoutExpired:
                        if watchdog.tick(self.proc.pid) and not killed:
                            killed = True
                            proctree.kill_tree(self.proc.pid, grace=GRACE_S)
            except BaseException:  # the launcher itself failed (a full disk, a bug): no orphan
                proctree.kill_tree(self.proc.pid, grace=GRACE_S)
                raise
            # leftovers (dataloader workers, DDP ranks) were reparented to us, the subreaper
            proctree.reap([r for r in proctree.snapshot(os.getpid()) if r["pid"] != os.getpid()], grace=2)
            tee.join(timeout=10)  # an orphan still holding the pipe must not hang the launcher
        self.proc = None
        return watchdog.end(code, time.monotonic() - t0)

    def _tee(self, pipe, log) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):  # keep draining, or the child blocks
            try:
                log.write(chunk)
                log.flush()
            except OSError:  # a full disk: the live copy still goes on
                pass
            if self.stopped is None:  # once the launcher stops, the child's last words go to train.log only
                self.out(chunk)  # never raises: a closed pipe or a dead terminal loses the live copy only

    def signal(self, sig: int) -> None:
        """The launcher's signal, passed on to the running child once; from now on no child starts
        (docs/design.md, "The attempt loop and the launch seam")."""
        self.stopped = sig
        proc = self.proc
        if proc and proc.poll() is None and self._told != proc.pid:
            self._told = proc.pid
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float) -> None:
        """The launcher was told to stop: the whole tree, after `grace` seconds to end cleanly."""
        proc = self.proc
        if proc and proc.poll() is None:
            proctree.kill_tree(proc.pid, grace=grace, sig=signal.SIGTERM)


class Signals:
    """The launcher's own SIGINT and SIGTERM (and, in a SLURM job, its time-limit signal): the first
    one is noted, passed on to the child (which takes SIGINT or SIGTERM as Ctrl-C: no final
    validation, the checkpoint stays resumable), the whole tree is killed after GRACE_S, and a
    retry's wait ends at once (`stopping`). Installed only in the main thread. `grace` is GRACE_S
    except in tests, which wait a second, not thirty."""

    def __init__(self, child: Stoppable | None, say: Callable[[str], None], extra: tuple[int, ...] = (),
                 grace: float = GRACE_S):
        self.child, self.say, self.extra, self.grace = child, say, extra, grace
        self.received: int | None = None
        self.received_at: float | None = None
        self.stopping = threading.Event()
        self._timer: threading.Timer | None = None
        self._old: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in {signal.SIGINT, signal.SIGTERM, *self.extra}:
                self._old[sig] = signal.signal(sig, self)

    def restore(self) -> None:
        self.child_gone()
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def ignore(self, sig: int) -> None:
        """From now on, and after this run: ignored (SLURM's SIGTERM to a job that requeued itself)."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(sig, signal.SIG_IGN)
            self._old.pop(sig, None)

    def child_gone(self) -> None:
        """The child ended: the kill planned after a signal has nothing left to do."""
        if self._timer:
            self._timer.cancel()

    def __call__(self, sig, frame) -> None:
        if self.received is not None:
            return
        self.received, self.received_at = sig, time.time()
        self.say(f"received {signal.Signals(sig).name}: stopping the child (grace {self.grace:.0f} s)")
        if self.child:
            self.child.signal(sig if sig in (signal.SIGINT, signal.SIGTERM) else signal.SIGTERM)
            self._timer = threading.Timer(self.grace, self.child.stop, args=(0,))  # then the whole tree
            self._timer.daemon = True
            self._timer.start()
        self.stopping.set()
