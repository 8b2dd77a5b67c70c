"""Pure classification of a dead training process into the failure kinds of docs/design.md
("Failure kinds and policy"). This module alone decides a failure's kind: `judge` turns an
attempt's record (the launch seam's `ChildEnd`), the child's report and its log tail into a
Failure; `classify` reads any crash log (also for `diagnose`).

Evidence is weighed in the contract's order: the child's report (exception type and message),
then the exit signal, then signatures in the log tail. In a log, the final lines of tracebacks
(including torchrun's `[rankN]:` prefixed ones) are read first, so a warning printed earlier in a
healthy part of the run cannot outvote the exception that ended it; free-text signatures (a
killed DataLoader worker, an NCCL watchdog line) come next. Where several kinds match,
the most specific wins: fatal > cuda_oom > host_oom > nccl > thrash > interrupted > unknown. When no
signature matches, the tail is read as a person would (`classify`): the type of the exception that
ended the run (`ending_exception`; configuration and code errors are fatal, unless the process died
by a signal), a Ctrl-C that ends it, then the exit status, also one the log prints itself
("Killed", "return code = -9"). A child's report names the last exception of a chain only, so a
signature in its log outranks the report's type.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, replace

from .contract import CUDA_OOM, FATAL, HOST_OOM, INTERRUPTED, NCCL, THRASH, UNKNOWN, Heartbeat, Report
from .plan import EARLY_OOM, FINAL, LATE_OOM, POLICY, late_oom

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
        # Ultralytics' check_cfg, every wording ("'lr0=x' is of invalid type str", "'epochs=0' is an invalid
        # value", "'workers=None' is invalid", "'fraction=5' invalid"): the arguments fail in every rung
        r"'\w+=.*' (?:is (?:of |an )?)?invalid\b",
        # a model and a checkpoint that disagree (another architecture, another nc): no rung loads it
        r"size mismatch for \S+: copying a param with shape",
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
    # the child ended itself after a save, the allocator thrashing (callbacks.ThrashRestart, on_thrash =
    # "restart"); its own name only: the line it prints when the rule fires does not end anything
    (THRASH, _rx(r"\bThrashRestart\b")),
    (INTERRUPTED, _rx(
        r"\bKeyboardInterrupt\b",
        # torchrun's agent was signalled from outside (Ctrl-C, a closed terminal, a scheduler's SIGTERM);
        # its own "Sending process N closing signal SIGTERM" to the other ranks is an echo, not this
        r"Received (\d+|(Signals\.)?SIG\w+) death signal", r"\bSignalException\b.*got signal",
        r"slurmstepd: error: \*\*\* (JOB|STEP) .* CANCELLED AT",  # scancel, time limit, preemption
    )),
    (UNKNOWN, _rx(
        r"illegal memory access", r"misaligned address", r"unspecified launch failure",
        r"Segmentation fault", r"\bNaN\b.*(loss|detected)|(loss|detected).*\bNaN\b",
        r"CUDA error: .*",
        r"\bcuDNN error\b",  # CUDNN_STATUS_EXECUTION_FAILED / NOT_SUPPORTED: not an OOM (ALLOC_FAILED is, above)
    )),
)
PRIORITY = {kind: i for i, (kind, _) in enumerate(SIGNATURES)}

# The final line of a Python traceback: "pkg.mod.SomeError: message", maybe behind the prefixes
# torch.distributed adds ("[rank3]: "; torchrun --tee puts "[default3]:" before that).
EXCEPTION_LINE = re.compile(
    r"^\s*(?:\[(?:default|rank)\d+\]:\s*)*(?:[A-Za-z_][\w.]*\.)?"
    r"(?P<type>[A-Z]\w*(?:Error|Exception|Interrupt|Exit)|KeyboardInterrupt|Exception)\b(?::|$)")

# When no signature matches, the last exception's type decides, as a person reading the tail would:
# these are configuration and code errors, raised again by every retry and every rung (bad arguments,
# a missing module or file, a config that does not parse, a failed precondition). docs/design.md,
# "Failure kinds and policy". ValueError and RuntimeError are not here: too many of them are transient
# or depend on the batch; their argument-made wordings are signatures above.
FATAL_TYPES = frozenset({
    "TypeError", "KeyError", "AttributeError", "NameError", "ImportError", "ModuleNotFoundError",
    "FileNotFoundError", "NotImplementedError", "AssertionError", "SyntaxError", "IndentationError",
    "JSONDecodeError", "YAMLError", "ScannerError", "ParserError", "ComposerError", "ConstructorError",
})
# Exceptions that only report that a child process failed; its own exception (or exit status) says why.
WRAPPER_TYPES = frozenset({"ChildFailedError", "CalledProcessError"})
# A traceback Python prints and goes on from (a __del__ or a thread failed): its exception ended nothing.
ASIDE = re.compile(r"^(?:\[(?:default|rank)\d+\]:\s*)*Exception (?:ignored\b|in thread\b)")
# Between two exceptions of one chain: the second was raised by the first's handler (its clean-up),
# so the first is the cause.
DURING_HANDLING = re.compile(r"During handling of the above exception, another exception occurred")

# How a process ended, as a shell or a launcher prints it. Read only when no exit code is given: a log
# handed to `diagnose` on its own still says it was killed. Each yields the exit code (-N for signal N).
PRINTED_EXIT = (
    (re.compile(r"return code\s*=\s*(-?\d+)|\bexit(?:ed with)? (?:status|code)[:= ]*(-?\d+)|"
                r"\bexitcode\s*:\s*(-?\d+)", re.IGNORECASE), None),
    (re.compile(r"terminated with signal (SIG[A-Z]+)|died with <Signals\.(SIG[A-Z]+)|"
                r"Signal \d+ \((SIG[A-Z]+)\) received by PID"), "signal"),
    (re.compile(r"(?:^|\])\W*Killed\W*$|: line \d+: +\d+ Killed\b|已杀死\s*$"), -signal.SIGKILL),
    (re.compile(r"segmentation fault", re.IGNORECASE), -signal.SIGSEGV),
    (re.compile(r"\bAborted \(core dumped\)"), -signal.SIGABRT),
)
CTRL_C = re.compile(r"\^C$")  # the terminal's echo of Ctrl-C ending a line
CTRL_C_LINES = 50  # how near the end it must be: a traceback cut after it, not a command echoed at the start
STOPPED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # someone stopped the process

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


def judge(end: ChildEnd, report: Report | None, log: str, heartbeat: Heartbeat | None = None,
          launcher_signal: int | None = None) -> Failure | None:
    """What ended an attempt, or None when it succeeded (exit 0 *and* the child's success report).

    `launcher_signal` is the signal the launcher itself received while the attempt ran: the
    attempt was interrupted, whatever the child died of. A child interrupted by anyone else (a
    KeyboardInterrupt in its report or log) is not the night's end: unknown, retried."""
    if end.exit_code == 0 and report and report.ok:
        return None
    phase = (report.phase if report else None) or (heartbeat.phase if heartbeat else None)
    if launcher_signal is not None:
        name = signal.Signals(launcher_signal).name
        return Failure(INTERRUPTED, f"the launcher received {name}", "signal", phase)
    if end.watchdog:
        return Failure(end.watchdog, end.evidence or "ended by the watchdog", "watchdog",
                       heartbeat.phase if heartbeat else None)
    failure = classify(log, exit_code=end.exit_code, report=report, memory_evidence=end.memory_evidence)
    if failure is None:  # exit 0 without a success report
        return Failure(UNKNOWN, f"exit code {end.exit_code} without a success report", "exit")
    if failure.kind == INTERRUPTED:
        return replace(failure, kind=UNKNOWN, evidence=f"{failure.evidence} (not from the launcher)")
    return failure


def action(failure: Failure, epochs_completed: int | None = None) -> str:
    """What the launcher does after `failure`, in words: plan.POLICY's row for its kind, the final
    phase's rule, and for a CUDA OOM whose attempt's epochs are known, the half of its row that applies."""
    rule = POLICY[failure.kind]
    if failure.phase == "final" and rule.ends is None:
        return FINAL
    if failure.kind == CUDA_OOM and epochs_completed is not None:
        if late_oom(epochs_completed):
            return f"late OOM ({epochs_completed} epoch(s) completed in the attempt): {LATE_OOM}"
        return f"early OOM (no epoch completed in the attempt): {EARLY_OOM}"
    return rule.does


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


def exception_type(line: str) -> str | None:
    """The class name an exception line raises, without its module ("json.decoder.JSONDecodeError: x" ->
    "JSONDecodeError"), or None for a line that is not one."""
    m = EXCEPTION_LINE.match(line)
    return m.group("type") if m else None


def ending_exception(lines: list[str]) -> int | None:
    """The index of the exception line that ended the run, as a person finds it in the tail: the last
    one raised, not a wrapper's (WRAPPER_TYPES), not one Python printed and went on from (ASIDE);
    of a "During handling of the above exception" chain, the first (the handler's own error, e.g. a
    clean-up's AttributeError, is a consequence). None when the tail shows no exception."""
    raised: list[int] = []
    aside = False
    for i, line in enumerate(lines):
        if ASIDE.match(line):
            aside = True
        elif (kind := exception_type(line)) is not None:
            if not aside and kind not in WRAPPER_TYPES:
                raised.append(i)
            aside = False  # an aside block ends at its exception
    k = len(raised) - 1
    while k > 0 and any(DURING_HANDLING.search(ln) for ln in lines[raised[k - 1] + 1:raised[k]]):
        k -= 1
    return raised[k] if raised else None


def printed_exit(lines: list[str]) -> tuple[int, str] | None:
    """The last exit status the log prints itself ("return code = -9", "Killed", "Segmentation fault"),
    as (exit code, the line); a printed 0 says nothing against the run and is passed over."""
    for line in reversed(lines):
        for pattern, code in PRINTED_EXIT:
            m = pattern.search(line)
            if not m:
                continue
            value = next((g for g in m.groups() if g), None)
            if code == "signal":
                code = -signal.Signals[value] if value in signal.Signals.__members__ else None
            elif code is None:
                code = int(value)
            if code:
                return code, line
    return None


def _signal_name(sig: int) -> str:
    return signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"


def classify(log: str = "", exit_code: int | None = None, report: Report | None = None,
             memory_evidence: str | None = None) -> Failure | None:
    """The failure that ended a process, or None if it exited 0 with nothing against it.

    `report` is the child's report.json; `memory_evidence` is what the supervisor saw of host RAM
    (exhausted in its samples, a cgroup oom_kill increment) just before the death. Without an exit
    code the log is read as a failed run's (it is handed to `diagnose` because something went wrong):
    None only for exit code 0, or a success report, and an exit status the log prints counts as the
    exit code. When no signature matches, the fallback reads the tail as a person would: the type of
    the exception that ended the run (FATAL_TYPES, not for a process that died by a signal), then a
    Ctrl-C that ends it, then how the process ended.
    """
    lines = lines_of(log[-TAIL_BYTES:])
    exception_lines = [ln for ln in lines if EXCEPTION_LINE.match(ln)]
    found = best_match(exception_lines) or best_match(lines)
    if report and report.exc_type:
        text = f"{report.exc_type}: {report.message or ''}".strip()
        said = best_match(lines_of(text))
        if said:
            return Failure(said[0], said[1], "report", report.phase)
        # the report holds the chain's last exception only, maybe a clean-up's error after the cause
        # (an OOM, an illegal memory access): a signature in the log outranks the report's type
        if found:
            return Failure(found[0], found[1], "log", report.phase)
        kind = FATAL if report.exc_type.rpartition(".")[2] in FATAL_TYPES else UNKNOWN
        return Failure(kind, lines_of(text)[0], "report", report.phase)
    if exit_code == 0 or (exit_code is None and report and report.ok):
        return None
    printed = printed_exit(lines) if exit_code is None else None
    if printed:
        exit_code = printed[0]
    sig = signal_of(exit_code)
    said = f" (the log says {printed[1][-120:]!r})" if printed else ""

    if sig == signal.SIGKILL and not printed:
        if memory_evidence:
            return Failure(HOST_OOM, f"killed by SIGKILL; {memory_evidence}", "signal")
        if found and found[0] == HOST_OOM:
            return Failure(HOST_OOM, found[1], "log")
        return Failure(UNKNOWN, "killed by SIGKILL with no memory evidence (not the launcher's doing)", "signal")
    if found:  # `unknown` ones too (a named GPU fault, a NaN): a later exception (a clean-up's) is their echo
        return Failure(found[0], found[1], "log")
    last = ending_exception(lines)
    # a code error ends a process with exit 1; one that died by a signal was ended by something else
    if last is not None and exception_type(lines[last]) in FATAL_TYPES and sig is None:
        return Failure(FATAL, lines[last], "log")
    ctrl_c = next((ln for ln in lines[max(last or 0, len(lines) - CTRL_C_LINES):] if CTRL_C.search(ln)), None)
    if ctrl_c:
        return Failure(INTERRUPTED, ctrl_c, "log")
    source = "log" if printed else "signal"
    if sig in STOPPED:
        return Failure(INTERRUPTED, f"stopped by {_signal_name(sig)}{said}", source)
    if last is not None:
        return Failure(UNKNOWN, lines[last], "log")
    if sig is not None:
        no_evidence = " with no memory evidence" if sig == signal.SIGKILL else ""
        return Failure(UNKNOWN, f"killed by {_signal_name(sig)}{no_evidence}{said}", source)
    if exception_lines:
        return Failure(UNKNOWN, exception_lines[-1], "log")
    if exit_code is not None:
        return Failure(UNKNOWN, f"exit code {exit_code} with no recognised error in the log{said}",
                       "log" if printed else "exit")
    return Failure(UNKNOWN, "no recognised error in the log and no exit code given: read as a failed run "
                            "(--exit-code 0 says it succeeded)", "log")
