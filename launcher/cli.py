"""Command line: `python -m launcher {run,dry-run,status,report,diagnose}`. It parses and
dispatches (run set-up is setup.py's), and is the one place errors become exit codes.

dry-run and diagnose import neither torch nor Ultralytics: they answer instantly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import textwrap
from pathlib import Path

from . import console, dataset as dataset_mod, failures, ladder as ladder_mod, notify, plan, runlog, setup, slurm
from .contract import CUDA_OOM, EXIT_BAD_INPUT, EXIT_OK, REPORT_NAME, THRASH, TRAIN_LOG_NAME, Report
from .errors import BadInput, LauncherError
from .views import diagnose_json, diagnose_text, dry_run_json, dry_run_text

PROG = "python -m launcher"


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line (exit 2), pointing at --help. No abbreviated
    options: `sbatch` copies the run's options into a batch script as they were written."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102
        line = f"{self.prog}: {message} — see {self.prog} --help"
        self._print_message(line + "\n", sys.stderr)
        raise UsageError(line)


class UsageError(SystemExit):
    """argparse's exit 2, with its line: a refused `run` is written down (refusals.py)."""

    def __init__(self, line: str):
        super().__init__(EXIT_BAD_INPUT)
        self.line = line


def _gib(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of GiB (e.g. 11.7)") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a number of GiB (e.g. 11.7)")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} GiB: give a positive amount (e.g. 11.7)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number (e.g. 3)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a whole number ≥ 1 (e.g. 3)")
    return value


def _device(text: str) -> str:
    try:
        return ladder_mod.device_string(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"'{text}': {e}") from None


def _run_name(text: str) -> str:
    try:
        return ladder_mod.run_name(text)
    except (TypeError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"'{text}': {e}") from None


# a real CUDA OOM, an InjectedCrash (fatal), or alloc retries rising from that epoch on (a stand-in
# for the allocator's count, read by the real thrash rule: callbacks.ThrashDrill)
INJECT_KINDS = (CUDA_OOM, "crash", THRASH)
INJECT_PHASES = ("train", "val", "final")


def _notify_url(text: str) -> str:
    try:
        return notify.check_url(text)
    except (TypeError, ValueError) as e:  # named redacted: a URL may carry a secret (notify.redact)
        raise argparse.ArgumentTypeError(f"'{notify.redact(text)}': {e}, e.g. --notify https://ntfy.sh/TOPIC") from None


def _injection(text: str) -> dict:
    parts = text.split(":")
    usage = "give KIND:RUNG:EPOCH[:PHASE], e.g. cuda_oom:optimal:2, crash:safe:1:val or thrash:optimal:1"
    if len(parts) not in (3, 4) or parts[0] not in INJECT_KINDS or not parts[2].isdigit() or int(parts[2]) < 1 \
            or (len(parts) == 4 and parts[3] not in INJECT_PHASES) or not parts[1]:
        raise argparse.ArgumentTypeError(
            f"'{text}': KIND is {', '.join(INJECT_KINDS[:-1])} or {INJECT_KINDS[-1]}, EPOCH a whole number ≥ 1, PHASE "
            f"{', '.join(INJECT_PHASES)}; {usage}")
    if parts[0] == THRASH and len(parts) == 4 and parts[3] != "train":
        raise argparse.ArgumentTypeError(f"'{text}': thrash happens in training batches, PHASE train only; {usage}")
    return {"kind": parts[0], "rung": parts[1], "epoch": int(parts[2]), "phase": parts[3] if len(parts) == 4 else
            "train"}


def run_options(p: argparse.ArgumentParser) -> None:
    """Options of run (and of sbatch, which writes a run into a batch script)."""
    p.add_argument("--fresh", action="store_true",
                     help="if a run of this name exists, start a new one beside it (the name gets a timestamp); "
                          "nothing of the old run is touched")
    p.add_argument("--inject", action="append", type=_injection, default=[], metavar="KIND:RUNG:EPOCH[:PHASE]",
                     help="fault injection, repeatable: KIND cuda_oom (a real torch.OutOfMemoryError in the model's "
                          "forward pass) or crash (a non-OOM error), at that rung and 1-based epoch, in PHASE train "
                          "(default), val or final; or thrash (alloc retries rising at every batch from that epoch "
                          "on, windows of 1 batch: the rule fires by an epoch's third batch); e.g. "
                          "--inject cuda_oom:optimal:2:val, --inject thrash:optimal:1")
    p.add_argument("--notify", action="append", type=_notify_url, default=[], metavar="URL",
                   help="POST a JSON message to this URL when the night ends, whatever the ending (repeatable; "
                        "beside the ladder's [job] notify): its `text` and `content` fields are one line that "
                        "Slack and Discord webhooks show, ntfy with ?tpl=1&m={{.text}}; e.g. "
                        "--notify 'https://ntfy.sh/TOPIC?tpl=1&m={{.text}}'")
    tuning = p.add_mutually_exclusive_group()
    tuning.add_argument("--tune", dest="tune", action="store_true", default=None,
                        help="measure the rungs first, a short trial each from the top until one fits, even on the "
                             "CPU or with a stored measurement (on a GPU a new run does so when nothing stored "
                             "matches this machine and job)")
    tuning.add_argument("--no-tune", dest="tune", action="store_false",
                        help="start from the stored measurements and the ladder's thresholds, without trials")


def job_options() -> argparse.ArgumentParser:
    """Options shared by dry-run and run."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("job options (shared with run)")
    g.add_argument("--demo", action="store_true",
                   help="generate a small synthetic dataset and train ladders/demo.toml on it (GPU 0 if there is "
                        "one, else the CPU), offline")
    g.add_argument("--ladder", metavar="PATH", default=None,
                   help=f"ladder TOML to use (default {ladder_mod.DEFAULT_LADDER}); e.g. --ladder ladders/demo.toml")
    g.add_argument("--data", metavar="PATH",
                   help="Ultralytics dataset YAML, replacing the ladder's; e.g. --data /data/coco_indoor/data.yaml")
    g.add_argument("--device", type=_device, metavar="DEV",
                   help="as Ultralytics takes it: a GPU index, indices for DDP, or cpu; e.g. --device 0,1")
    g.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="override every rung's epochs, for rehearsals; e.g. --epochs 2")
    g.add_argument("--name", type=_run_name, metavar="NAME",
                   help="run name, the folder under logs/ (default: the dataset's name with --data, else the ladder's "
                        "[job] name); e.g. --name night-3")
    g.add_argument("--start-rung", metavar="NAME",
                   help="start on this rung instead of the one the probe picks; e.g. --start-rung safe")
    g.add_argument("--vram", type=_gib, metavar="GIB",
                   help="pretend each selected GPU has this much free VRAM (on a machine without a GPU: plan for one"
                        " such GPU); e.g. --vram 11.7 to see what a 12 GB card would do")
    g.add_argument("--ram", type=_gib, metavar="GIB",
                   help="pretend the machine has this much available RAM; e.g. --ram 16")
    g.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="Ultralytics training arguments in its own form, for every rung: imgsz=512 epochs=80 "
                        "optimizer=AdamW lr0=0.002 patience=20 (checked against Ultralytics' keys before anything "
                        "starts; lr0 needs a named optimizer: optimizer=auto picks its own; batch, "
                        "workers, cache, model and device are the ladder's)")
    g.add_argument("--no-memory", action="store_true",
                   help="ignore what earlier runs on this machine and job learned (logs/experience.json: rungs "
                        "that ran out of memory in their first epoch)")
    return p


def versions() -> str:
    """The launcher's, Ultralytics' and torch's versions, from the installed packages' metadata
    (no import: answers at once)."""
    from importlib import metadata

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    return (f"rtdetr-launcher {version('rtdetr-launcher')}, ultralytics {version('ultralytics')}, "
            f"torch {version('torch')}")


class Version(argparse._VersionAction):
    """--version, as argparse's, with the versions read only when it is given: the metadata scan
    (importlib.metadata, three packages) would cost every command 10 ms (docs/benchmarks.md)."""

    def __call__(self, parser, namespace, values, option_string=None):
        self.version = versions()
        super().__call__(parser, namespace, values, option_string)


def policy_help() -> str:
    """What follows each failure kind, rendered from plan.POLICY (docs/design.md, "Failure kinds and policy")."""
    rows = [*((kind, does) for kind, does, _, _ in plan.policy_rows()), ("final phase", plan.FINAL)]
    return "\n".join(["what the launcher does after each kind of failure:",
                      *(textwrap.fill(does, 100, initial_indent=f"  {kind:<12}", subsequent_indent=" " * 14)
                        for kind, does in rows)])


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Unattended Ultralytics RT-DETR training that survives out-of-memory crashes.",
        epilog=f"examples:\n  {PROG} dry-run --vram 11.7\n  {PROG} diagnose logs/night/attempt-2/train.log\n\n"
               "exit codes: 0 ok, 2 bad input, 3 ladder or attempts exhausted, 4 fatal failure, "
               "75 stopped for SLURM to run it again, 130/143 interrupted, 1 a launcher bug")
    parser.add_argument("--version", action=Version,
                        help="print the launcher's, Ultralytics' and torch's versions, then exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    dry = sub.add_parser(
        "dry-run", parents=[job_options()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="show the probe, the starting rung and why, and what run would start",
        description="Probe the machine, pick the starting rung, and show what `run` would start. Trains nothing.\n"
                    "Exit status 0 when run could start, 2 when something would make it refuse (listed under "
                    "Problems).",
        epilog=f"examples:\n  {PROG} dry-run\n  {PROG} dry-run --vram 11.7 --ram 32   # a 12 GB card, 32 GB RAM\n"
               f"  {PROG} dry-run --demo --json   # what run --demo would start")
    dry.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    dry.set_defaults(func=cmd_dry_run)

    run = sub.add_parser(
        "run", parents=[job_options()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train, stepping down the ladder and resuming on CUDA OOM, unattended",
        description="Probe the machine, start on the best rung that fits, and train in a child process. When the "
                    f"child dies of CUDA OOM: {plan.POLICY[CUDA_OOM].does} (`diagnose --help` lists what follows "
                    "every kind of failure). Running the same command again continues a stopped run; a finished run "
                    "trains nothing.\n\n"
                    "Rehearse a night before trusting it: --inject makes the child fail for real at a rung and "
                    "epoch, every time it gets there, so one injection exercises both the retry and the step-down.",
        epilog=f"examples:\n  {PROG} run --demo\n  {PROG} run --data /data/coco_indoor/data.yaml\n"
               f"  {PROG} run --demo --inject cuda_oom:optimal:2          # a late OOM, then an early one\n"
               f"  {PROG} run --demo --inject cuda_oom:optimal:2:final    # OOM in the final validation\n"
               f"  {PROG} run --demo --epochs 3 --inject thrash:optimal:1  # thrashing: restart, then step down\n\n"
               "exit codes: 0 trained (or already finished), 2 bad input, 3 ladder or attempts exhausted, "
               "4 fatal failure, 75 stopped for SLURM to run it again, 130/143 interrupted")
    run_options(run)
    run.set_defaults(func=cmd_run)

    sb = sub.add_parser(
        "sbatch", parents=[job_options()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="submit the run as a SLURM job that requeues itself at its time limit",
        usage=f"{PROG} sbatch [run options] [KEY=VALUE ...] [--signal-lead S] [--dry-run] -- [sbatch options]",
        description="Write a batch script into the run's folder and submit it with sbatch: --requeue, the "
                    "time-limit signal (--signal=B:USR1@S), the GPUs the device string names, and `exec` of the "
                    "same run. At the signal the launcher stops the child (the checkpoint stays resumable), "
                    "records the time limit and requeues its own job; a preempted job is requeued by SLURM. Each "
                    "run of the job continues the night where it stopped. Options after -- go to sbatch unchanged.",
        epilog=f"examples:\n  {PROG} sbatch --data /data/coco_indoor/data.yaml -- --time=12:00:00 -p gpu\n"
               f"  {PROG} sbatch --data d.yaml epochs=80 --dry-run -- --time=2-00:00:00\n\n"
               "exit codes: 0 submitted (or printed), 2 bad input or sbatch refused the job")
    run_options(sb)
    sb.add_argument("--signal-lead", type=_positive_int, default=None, metavar="S",
                    help="seconds before the time limit that SLURM signals the launcher (default "
                         f"{slurm.SIGNAL_LEAD_S}; SLURM may send it up to 30 s earlier); a --signal=B:USR1@S after "
                         "-- says the same")
    sb.add_argument("--dry-run", action="store_true", help="print the batch script; submit nothing")
    sb.set_defaults(func=cmd_sbatch)

    tune = sub.add_parser(
        "tune", parents=[job_options()], formatter_class=argparse.RawDescriptionHelpFormatter,
        help="measure every rung with a short real trial, store the numbers, and say where a night would start",
        description="A trial of each available rung: the real child with the rung's model, data and arguments, a "
                    "warm-up, measured training iterations (optimizer step, EMA, AMP), then a few validation batches "
                    "at the batch Ultralytics validates with. It records peak memory (torch and NVML on a GPU, the "
                    "child tree's RSS on the CPU), alloc retries, images/s and time, in logs/<run>/trials/, never a "
                    "checkpoint. The numbers go into logs/experience.json (not with --no-memory), where dry-run and "
                    "run find them for this machine and job. About 90 s a rung on a GPU.",
        epilog=f"examples:\n  {PROG} tune --data /data/coco_indoor/data.yaml\n  {PROG} tune --demo --json")
    tune.add_argument("--json", action="store_true", help="print one JSON object (with a trials list) instead of text")
    tune.set_defaults(func=cmd_tune)

    stat = sub.add_parser(
        "status", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="where a run stands: state, rung, epoch, it/s, ETA, last failure, memory",
        description="Read a run's record (logs/<run>/) and say where it stands: training, stepped down, "
                    "finished, or stopped and why; the rung and attempt, epoch x/y, it/s and an ETA, the last "
                    "failure with its evidence, VRAM and RAM now and at peak, and the rungs so far. Works from "
                    "another terminal during a run, or after it; imports no torch.",
        epilog=f"examples:\n  {PROG} status\n  {PROG} status coco-indoor --json")
    stat.add_argument("run", nargs="?", metavar="RUN",
                      help="the run's name, a folder under logs/ (default: the newest run); e.g. coco-indoor")
    stat.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    stat.set_defaults(func=cmd_status)

    rep = sub.add_parser(
        "report", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="write timeline.png and report.md into a run's record",
        description="Write logs/<run>/timeline.png (VRAM and RAM over time, bands for the rung in use, a mark for "
                    "each failure, epoch ticks) and logs/<run>/report.md (the attempts, time lost to failures, "
                    "goodput, final mAP). Offline and headless; imports no torch.",
        epilog=f"examples:\n  {PROG} report\n  {PROG} report coco-indoor")
    rep.add_argument("run", nargs="?", metavar="RUN",
                     help="the run's name, a folder under logs/ (default: the newest run); e.g. coco-indoor")
    rep.set_defaults(func=cmd_report)

    diag = sub.add_parser(
        "diagnose", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="say what killed a training run, from its log",
        description="Classify a crash log (the launcher's attempt-N/train.log or any Ultralytics/PyTorch output) "
                    "into a failure kind, with the evidence line and what the launcher does about it. A report.json "
                    "beside the log (written by the launcher's child) is read too.",
        epilog=f"examples:\n  {PROG} diagnose logs/night/attempt-2/train.log\n"
               f"  {PROG} diagnose nohup.out --exit-code 137\n  {PROG} diagnose torchrun.log --json\n\n"
               + policy_help())
    diag.add_argument("logfile", metavar="LOGFILE",
                      help="the log to read, or an attempt folder; e.g. logs/night/attempt-2/train.log")
    diag.add_argument("--exit-code", type=int, metavar="N",
                      help="the process's exit status: 137 (shell) and -9 (Popen) both mean SIGKILL; e.g. "
                           "--exit-code 137")
    diag.add_argument("--json", action="store_true",
                      help='print {"kind": ..., "evidence": ..., "action": ...}')
    diag.set_defaults(func=cmd_diagnose)
    return parser


def main(argv: list[str] | None = None) -> int:
    console.harden()
    argv = list(sys.argv[1:] if argv is None else argv)
    passed: list[str] = []  # sbatch's own options, after --
    if argv[:1] == ["sbatch"] and "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1:]
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        if argv[:1] == ["run"]:
            note_refusal(None, argv, [e.line])
        raise
    args.sbatch_args, args.argv = passed, argv
    try:
        return args.func(args)
    except LauncherError as e:
        errors = [f"error: {e}"]
        try:  # the error line first; why the rungs are out follows it
            print(errors[0], file=sys.stderr, flush=True)
        except (OSError, ValueError, AttributeError):
            pass
        for reason in getattr(e, "reasons", ()):
            console.say(reason)
        if args.command == "run" and e.exit_code == EXIT_BAD_INPUT:
            note_refusal(args, argv, errors)
        return e.exit_code


def note_refusal(args, argv: list[str], errors: list[str]) -> None:
    """Write a refused `run` down (docs/design.md, "Dry-run, status, report"): in its run's
    events.jsonl when the command names a run that has a record (not a --fresh one), else in
    the logs folder's launcher-errors.log."""
    from . import refusals

    logs, events = runlog.logs_dir(), None
    if args is not None and not args.fresh:
        try:
            req = setup.settle(setup.demo_ladder(request(args)))
            name = setup.given_name(req) or ladder_mod.load(req.ladder, data=req.data).job.name
            path = runlog.RunPaths.for_run(name, logs).events
            events = path if path.is_file() else None
        except Exception:  # the refusal may be about this very ladder or name: then it has no run
            events = None
    refusals.note(shlex.join([*PROG.split(), *notify.redact_argv(argv)]), errors, logs, events)


# ---- dry-run and run ---------------------------------------------------------------------------

def request(args) -> setup.Request:
    """The job options of dry-run or run, as setup takes them."""
    return setup.Request(ladder=args.ladder, data=args.data, device=args.device, epochs=args.epochs, name=args.name,
                         start_rung=args.start_rung, vram=args.vram, ram=args.ram, no_memory=args.no_memory,
                         demo=args.demo, fresh=getattr(args, "fresh", False),
                         inject=tuple(getattr(args, "inject", ())), overrides=tuple(args.overrides),
                         tune=getattr(args, "tune", None), notify=tuple(getattr(args, "notify", ())))


def cmd_dry_run(args) -> int:
    result = setup.make_plan(request(args))
    if args.json:
        console.write(json.dumps(dry_run_json(result), indent=2) + "\n")
    else:
        console.write(dry_run_text(result))
    return EXIT_BAD_INPUT if result.plan.problems else EXIT_OK


def cmd_run(args) -> int:
    console.unattended()
    prepared = setup.prepare(request(args))
    return EXIT_OK if prepared.finished else setup.supervise(prepared)


def cmd_tune(args) -> int:
    """The trials, each said as it ends (on stderr with --json, so stdout is the one object)."""
    from . import tune

    quiet = args.json
    said = (lambda line: print(f"launcher: {line}", file=sys.stderr, flush=True)) if quiet else console.say
    tuned = setup.tune_request(request(args), say=said)
    plan = tuned.plan
    if args.json:
        console.write(json.dumps({"run": tuned.run, "device": tuned.device,
                                  "trials": [tune.trial_json(t) for t in tuned.trials], "stored": tuned.stored,
                                  "start": plan.start.name if plan.start else None,
                                  "val_batch": plan.start.val_batch if plan.start else None,
                                  "reasons": list(plan.reasons)}, indent=2) + "\n")
        return EXIT_OK
    where = "not stored (--no-memory)" if args.no_memory else f"stored in {experience_path()}"
    console.say(f"{len(tuned.trials)} trial{'s' if len(tuned.trials) != 1 else ''}, {where}; dry-run shows them")
    for reason in plan.reasons[:1] or ["no rung fits"]:
        console.say(reason)
    return EXIT_OK


def experience_path() -> Path:
    from .experience import store_path
    return store_path()


def cmd_sbatch(args) -> int:
    """The run, as a SLURM batch script: checked like dry-run, written into the run's folder, submitted."""
    req = setup.settle(setup.demo_ladder(request(args)))
    ladder = setup.load_job(req)
    setup.check_injections(req.inject, ladder)
    # a mistyped --data now, not after the queue wait
    data = None if req.demo else dataset_mod.inspect(ladder.job.dataset)
    device = req.device or ladder.job.device or "0"
    indices = ladder_mod.gpu_indices(device)
    if indices and list(indices) != list(range(len(indices))):
        raise BadInput(f"--device {device}", "inside a job CUDA numbers the GPUs SLURM gives it from 0",
                       f"use --device {','.join(str(i) for i in range(len(indices)))} (SLURM picks the cards)")
    sig, lead, sbatch_args = sbatch_signal(args)
    limit = slurm.time_option(sbatch_args)
    minutes = None
    if limit is not None:
        try:
            minutes = slurm.minutes(limit) or None  # --time=0: "no time limit be imposed" (sbatch)
        except ValueError as e:
            raise BadInput(f"--time {limit}", str(e), "give a SLURM time, e.g. --time=12:00:00") from None
        if minutes is not None and minutes * 60 <= lead:
            raise BadInput(f"--time {limit}", f"the time limit ({minutes:g} min) is not longer than the signal's lead "
                           f"({lead} s)", "give a longer --time, or a shorter --signal-lead")
    name = setup.submitted_name(req, ladder, data)  # checked as run checks it, --fresh applied
    logs = runlog.logs_dir()
    need = slurm.needed_s(runlog.RunPaths.for_run(name, logs), lead)
    if minutes is not None and need is not None and minutes * 60 < need:  # docs/design.md, "On a SLURM cluster"
        startup, epoch = slurm.measured(runlog.RunPaths.for_run(name, logs))
        raise BadInput(f"--time {limit}", f"run {name!r} measured a start-up of {startup:.0f} s and an epoch of "
                       f"{epoch:.0f} s: with the signal's lead ({lead} s) no run of the job would save an epoch",
                       f"give --time={math.ceil(need / 60)} or longer")
    run_argv = sbatch_run_argv(args.argv, name)
    gpus = 0 if device == "cpu" or slurm.gpu_option_given(sbatch_args) else len(indices)
    text = slurm.script(name=name, run_argv=run_argv, logs=logs, cwd=Path.cwd(), lead_s=lead, sig=sig, gpus=gpus)
    sbatch_args = [*sbatch_args, f"--signal=B:{sig}@{lead}"]  # the script's own, outranking $SBATCH_SIGNAL
    if args.dry_run:  # printed with each --notify URL redacted (the file holds them: each run of the job posts)
        console.write(slurm.script(name=name, run_argv=notify.redact_argv(run_argv), logs=logs, cwd=Path.cwd(),
                                   lead_s=lead, sig=sig, gpus=gpus))
        console.say(f"sbatch {' '.join(shlex.quote(a) for a in sbatch_args)} would submit it (--dry-run: not "
                    "submitted)")
        return EXIT_OK
    folder = logs / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sbatch.sh"
    mask = os.umask(0o077) if args.notify else None  # its --notify URLs are secrets: the owner's alone
    try:
        runlog.write_text_atomic(path, text)
    finally:
        if mask is not None:
            os.umask(mask)
    job = slurm.submit(path, sbatch_args)
    console.say(f"submitted SLURM job {job}: {path}")
    console.say(f"watch it: {PROG} status {name}   (output: {folder}/slurm-{job}.out)")
    return EXIT_OK


def sbatch_signal(args) -> tuple[str, int, list[str]]:
    """The time-limit signal and its lead (--signal-lead, or the user's own --signal=B:SIG@S after
    --; both given, they must agree), and the other sbatch options: the script's #SBATCH --signal
    and RTDETR_SLURM_SIGNAL say the same."""
    rest, given = slurm.signal_option(args.sbatch_args)
    if given is None:
        return "USR1", args.signal_lead or slurm.SIGNAL_LEAD_S, rest
    sig, lead = given
    if args.signal_lead is not None and args.signal_lead != lead:
        raise BadInput(f"--signal-lead {args.signal_lead}", f"disagrees with --signal=B:{sig}@{lead} after --",
                       "give the lead once: --signal-lead, or --signal=B:USR1@SECONDS")
    return sig, lead, rest


def sbatch_run_argv(argv: list[str], name: str) -> list[str]:
    """The run's own arguments for the batch script: sbatch's options out, --fresh applied (the
    requeued job continues this run, never a new one), the run named."""
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a in ("--signal-lead", "--name"):
            skip = True
            continue
        if a in ("--dry-run", "--fresh") or a.startswith(("--signal-lead=", "--name=")):
            continue
        out.append(a)
    return ["--name", name, *out]


# ---- status -------------------------------------------------------------------------------------

def cmd_status(args) -> int:
    from . import status

    d = status.look(args.run)
    console.write(json.dumps(d, indent=2) + "\n" if args.json else status.text(d))
    return EXIT_OK


def cmd_report(args) -> int:
    from . import report, status

    png, md = report.write_report(status.find_run(args.run).root)
    console.say(f"wrote {png}")
    console.say(f"wrote {md}")
    return EXIT_OK


# ---- diagnose -----------------------------------------------------------------------------------

def cmd_diagnose(args) -> int:
    path = Path(args.logfile)
    if path.is_dir():
        path = path / TRAIN_LOG_NAME
    if not path.is_file():
        raise BadInput(args.logfile, "no such log file", "give the path of a training log or an attempt folder")
    try:
        text = failures.read_tail(path)
    except OSError as e:
        raise BadInput(args.logfile, f"cannot be read ({e.strerror})", "check its permissions") from None
    report = Report.read(path.parent / REPORT_NAME)  # none, or torn: the log alone
    failure = failures.classify(text, exit_code=args.exit_code, report=report)
    epochs = report.epochs_saved if report else None  # epochs the attempt completed, as the supervisor counts
    if args.json:
        console.write(json.dumps(diagnose_json(failure, epochs)) + "\n")
    else:
        console.write(diagnose_text(str(path), failure, epochs))
    return EXIT_OK
