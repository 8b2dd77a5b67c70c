"""Pure classification of a dead training process into the failure kinds of docs/design.md
("Failure kinds and policy"). This module alone decides a failure's kind: `judge` turns an
attempt's record (the launch seam's `ChildEnd`), the child's report and its log tail into a
Failure; `classify` reads any crash log (also for `diagnose`).

Evidence is weighed in the contract's order: the child's report (exception type and message),
then the exit signal, then signatures in the log tail. In a log, the final lines of tracebacks
(including torchrun's `[rankN]:` prefixed ones) are read first, so a warning printed earlier in a
healthy part of the run cannot outvote the exception that ended it; free-text signatures (a
killed DataLoader worker, an NCCL watchdog line) are the fallback. Where several kinds match,
the most specific wins: fatal > cuda_oom > host_oom > nccl > interrupted > unknown.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, replace

from .contract import CUDA_OOM, FATAL, HANG, HOST_OOM, INTERRUPTED, NCCL, UNKNOWN

TAIL_BYTES = 256 * 1024  # how much of a log's end is read; progress bars make logs long


def _rx(*patterns: str) -> re.Pattern:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)


# (kind, signature), in priority order. Each signature is searched in single lines.
SIGNATURES: tuple[tuple[str, re.Pattern], ...] = (
    (FATAL, _rx(
        r"device-side assert triggered", r"Assertion .* failed",
        r"\b(SyntaxError|IndentationError|ImportError|ModuleNotFoundError|NameError|KeyError)\b(?!\w)",
        r"Dataset '.*' (images )?not found", r"images not found", r"No (labels|images) found in",
        r"Error loading data from", r"No space left on device",
        r"invalid device ordinal", r"Invalid CUDA 'device=",
        r"is not a valid YOLO argument",
        r"is of invalid type \w+\. Valid '\w+' types", r"is an invalid value\. Valid '\w+' values",  # check_cfg
        r"Label class \d+ exceeds nc=",  # YOLOv3/v5's label check: a label's class is not in the data YAML
        # a dataset scan that found every label corrupt (YOLOv5/v7 and Ultralytics summaries): nothing to train on
        # (named groups: the signatures share one pattern, so numbered ones would point elsewhere)
        r"\b(?P<found>[1-9]\d*) found, \d+ missing, \d+ empty, (?P=found) corrupt\w*: 100%",
        r"\b(?P<images>[1-9]\d*) images, \d+ backgrounds, (?P=images) corrupt: 100%",
        r"No valid images found",  # a train list of files that do not exist
        # a rung's model file that is not a checkpoint (random bytes, a cut download); a resumed
        # last.pt is checked before it loads, so this is the rung's own model: no rung below fixes it
        r"PytorchStreamReader failed", r"failed finding central directory", r"invalid load key",
        r"_pickle\.UnpicklingError",
        r"\bInjectedCrash\b",  # `run --inject crash:...`: a fire drill of a failure no rung can fix
    )),
    (CUDA_OOM, _rx(
        # the raised type, not a quoted name ("module 'torch' has no attribute 'OutOfMemoryError'")
        r"\btorch\.(cuda\.)?OutOfMemoryError\b", r"(?<![\w.'\"])OutOfMemoryError\b",
        # every CUDA wording: "CUDA out of memory", "CUDA error: out of memory", torch 0.x "cuda runtime
        # error (2) : out of memory" and "THCudaCheck FAIL ... error=2 : out of memory", Caffe2's
        # "error == cudaSuccess ... out of memory"
        r"cuda.*\bout of memory\b",
        r"\bHIP out of memory\b",  # ROCm
        r"\bMPS backend out of memory\b",  # Apple silicon: the accelerator's share of unified memory
        r"CUBLAS_STATUS_ALLOC_FAILED", r"CUDNN_STATUS_ALLOC_FAILED",
    )),
    (HOST_OOM, _rx(
        r"DataLoader worker \(pid[^)]*\) is killed by signal: Killed",
        r"out of shared memory", r"\bBus error\b", r"insufficient shared memory",
        r"DefaultCPUAllocator: (can't allocate|not enough) memory",  # Linux / Windows wordings
        r"(?<![\w.])MemoryError\b",
        r"Unable to allocate .* for an array", r"Cannot allocate memory",
        r"\bWinError 1455\b", r"paging file is too small",  # Windows: the commit limit (RAM + page file)
        r"Out of memory: Kill(ed)? process", r"\boom[-_]kill", r"Memory cgroup out of memory",
    )),
    (NCCL, _rx(
        r"DistBackendError", r"NCCL communicator was aborted", r"Watchdog caught collective operation timeout",
        r"\bNCCL (error|timeout|Error)\b", r"ncclInternalError|ncclSystemError|ncclUnhandledCudaError|"
        r"ncclRemoteError", r"ProcessGroupNCCL.*(time ?out|abort)",
    )),
    (INTERRUPTED, _rx(
        r"\bKeyboardInterrupt\b",
        # torchrun's agent was signalled from outside (Ctrl-C, a closed terminal, a scheduler's SIGTERM);
        # its own "Sending process N closing signal SIGTERM" to the other ranks is an echo, not this
        r"Received (\d+|Signals\.SIG\w+) death signal", r"\bSignalException\b.*got signal",
        r"slurmstepd: error: \*\*\* (JOB|STEP) .* CANCELLED AT",  # scancel, time limit, preemption
    )),
    (UNKNOWN, _rx(
        r"illegal memory access", r"misaligned address", r"unspecified launch failure",
        r"Segmentation fault", r"\bNaN\b.*(loss|detected)|(loss|detected).*\bNaN\b",
        r"ChildFailedError", r"CUDA error: .*",
        r"\bcuDNN error\b",  # CUDNN_STATUS_EXECUTION_FAILED / NOT_SUPPORTED: not an OOM (ALLOC_FAILED is, above)
    )),
)
PRIORITY = {kind: i for i, (kind, _) in enumerate(SIGNATURES)}

# The final line of a Python traceback: "pkg.mod.SomeError: message", maybe behind the prefixes
# torch.distributed adds ("[rank3]: "; torchrun --tee puts "[default3]:" before that).
EXCEPTION_LINE = re.compile(
    r"^\s*(?:\[(?:default|rank)\d+\]:\s*)*(?:[A-Za-z_][\w.]*\.)?"
    r"(?:[A-Z]\w*(?:Error|Exception|Interrupt|Exit)|KeyboardInterrupt)\b(?::|$)")

ACTIONS = {
    CUDA_OOM: ("if the attempt had completed an epoch: resume the same rung in a fresh process (that clears leaks "
               "and fragmentation); if not: step down to the next rung and resume from the last checkpoint"),
    HOST_OOM: "retry the same rung with RAM cache off, then with fewer workers, then step down to the next rung",
    NCCL: "retry the same rung with exponential backoff (bounded), then step down to the next rung",
    HANG: "kill the whole process tree, retry the same rung once, then step down to the next rung",
    UNKNOWN: "retry the same rung with exponential backoff (bounded), then step down to the next rung",
    FATAL: "stop at once with this evidence (exit 4): no rung can fix it; correct the cause, then run again",
    INTERRUPTED: "stop the process tree and keep the checkpoint resumable; run the same command again to continue",
}


@dataclass(frozen=True)
class Failure:
    kind: str
    evidence: str  # the line (or fact) that decided
    source: str  # "report", "log", "signal" or "exit"
    phase: str | None = None  # train / val / final, when the child's report says

    def to_json(self) -> dict:
        return {"kind": self.kind, "evidence": self.evidence, "source": self.source, "phase": self.phase,
                "action": action(self)}


@dataclass(frozen=True)
class ChildEnd:
    """How one attempt's child ended, as the launch seam reports it."""

    exit_code: int  # Popen's: -N for a signal
    seconds: float = 0.0
    watchdog: str | None = None  # the kind the watchdog ended the tree for (HANG), or None
    evidence: str | None = None  # the watchdog's evidence ("heartbeat silent for 612 s ...")
    memory_evidence: str | None = None  # host RAM exhausted or a cgroup oom_kill, seen at a SIGKILL
    peak_rss: int | None = None  # bytes, the child's process tree, as sampled
    peak_vram: int | None = None


def late_oom(epochs_saved: int) -> bool:
    """The one early/late rule: an OOM after the attempt saved an epoch is a leak or fragmentation
    (a fresh process clears it); before any, the rung does not fit."""
    return epochs_saved >= 1


def judge(end: ChildEnd, report: dict | None, log: str, heartbeat: dict | None = None,
          launcher_signal: int | None = None) -> Failure | None:
    """What ended an attempt, or None when it succeeded (exit 0 *and* the child's success report).

    `launcher_signal` is the signal the launcher itself received while the attempt ran: the
    attempt was interrupted, whatever the child died of. A child interrupted by anyone else (a
    KeyboardInterrupt in its report or log) is not the night's end: unknown, retried."""
    if end.exit_code == 0 and report and report.get("ok"):
        return None
    phase = (report or {}).get("phase") or (heartbeat or {}).get("phase")
    if launcher_signal is not None:
        name = signal.Signals(launcher_signal).name
        return Failure(INTERRUPTED, f"the launcher received {name}", "signal", phase)
    if end.watchdog:
        return Failure(end.watchdog, end.evidence or "ended by the watchdog", "watchdog", (heartbeat or {}).get("phase"))
    failure = classify(log, exit_code=end.exit_code, report=report, memory_evidence=end.memory_evidence)
    if failure is None:  # exit 0 without a success report
        return Failure(UNKNOWN, f"exit code {end.exit_code} without a success report", "exit")
    if failure.kind == INTERRUPTED:
        return replace(failure, kind=UNKNOWN, evidence=f"{failure.evidence} (not from the launcher)")
    return failure


def action(failure: Failure, epochs_completed: int | None = None) -> str:
    if failure.phase == "final" and failure.kind not in (FATAL, INTERRUPTED):
        return ("training is done, only its final validation failed: validate best.pt again at the next rung's "
                "batch, never retrain")
    if failure.kind == CUDA_OOM and epochs_completed is not None:
        if late_oom(epochs_completed):
            return (f"late OOM ({epochs_completed} epoch(s) completed in the attempt): resume the same rung in a "
                    "fresh process, which clears leaks and fragmentation")
        return "early OOM (no epoch completed in the attempt): step down to the next rung and resume from the checkpoint"
    return ACTIONS[failure.kind]


def read_tail(path, limit: int = TAIL_BYTES) -> str:
    """The end of a log file, as text (OSError if it cannot be read)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - limit))
        return f.read().decode("utf-8", errors="replace")


def signal_of(exit_code: int | None) -> int | None:
    """The signal that ended a process: Popen reports -N, a shell 128+N."""
    if exit_code is None:
        return None
    if exit_code < 0:
        return -exit_code
    if 128 < exit_code < 160:
        return exit_code - 128
    return None


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # Ultralytics colours its messages


def lines_of(text: str) -> list[str]:
    """Lines of a log, with progress bars' carriage-return frames as lines of their own and
    terminal colour codes removed."""
    return [s.strip() for s in re.split(r"[\r\n]+", ANSI.sub("", text)) if s.strip()]


def match_line(line: str) -> str | None:
    for kind, pattern in SIGNATURES:
        if pattern.search(line):
            return kind
    return None


def best_match(lines: list[str]) -> tuple[str, str] | None:
    """(kind, line) of the highest-priority signature, the earliest line among equals (the root
    cause comes first; later lines are its echoes)."""
    best: tuple[int, str, str] | None = None
    for line in lines:
        kind = match_line(line)
        if kind is not None and (best is None or PRIORITY[kind] < best[0]):
            best = (PRIORITY[kind], kind, line)
    return (best[1], best[2]) if best else None


def classify(log: str = "", exit_code: int | None = None, report: dict | None = None,
             memory_evidence: str | None = None) -> Failure | None:
    """The failure that ended a process, or None if it exited 0 with nothing against it.

    `report` is the child's report.json; `memory_evidence` is what the supervisor saw of host RAM
    (exhausted in its samples, a cgroup oom_kill increment) just before the death.
    """
    if report and report.get("exc_type"):
        text = f"{report['exc_type']}: {report.get('message', '')}".strip()
        found = best_match(lines_of(text))
        if found:
            return Failure(found[0], found[1], "report", report.get("phase"))
        return Failure(UNKNOWN, lines_of(text)[0], "report", report.get("phase"))
    if exit_code == 0:
        return None

    lines = lines_of(log[-TAIL_BYTES:])
    exception_lines = [ln for ln in lines if EXCEPTION_LINE.match(ln)]
    found = best_match(exception_lines) or best_match(lines)
    sig = signal_of(exit_code)

    if sig == signal.SIGKILL:
        if memory_evidence:
            return Failure(HOST_OOM, f"killed by SIGKILL; {memory_evidence}", "signal")
        if found and found[0] == HOST_OOM:
            return Failure(HOST_OOM, found[1], "log")
        return Failure(UNKNOWN, "killed by SIGKILL with no memory evidence (not the launcher's doing)", "signal")
    if found:
        return Failure(found[0], found[1], "log")
    if exception_lines:
        return Failure(UNKNOWN, exception_lines[-1], "log")
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        return Failure(UNKNOWN, f"killed by {name}", "signal")
    if exit_code is not None:
        return Failure(UNKNOWN, f"exit code {exit_code} with no recognised error in the log", "exit")
    return None
