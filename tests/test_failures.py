"""Classification of realistic crash logs into the failure kinds of docs/design.md."""

import csv

import pytest

from launcher import failures, plan
from launcher.contract import CUDA_OOM, FATAL, HOST_OOM, INTERRUPTED, NCCL, UNKNOWN, Report

from conftest import FIXTURES

LOGS = FIXTURES / "logs"


def read(name: str) -> str:
    return (LOGS / name).read_text()


@pytest.mark.parametrize("log, exit_code, kind, evidence", [
    ("cuda_oom_ultralytics.log", 1, CUDA_OOM, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.17 GiB"),
    ("cublas_alloc.log", 1, CUDA_OOM, "RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED"),
    ("ddp_torchrun_oom.log", 1, CUDA_OOM, "[rank1]: torch.OutOfMemoryError: CUDA out of memory"),
    ("illegal_memory_access.log", 1, UNKNOWN, "RuntimeError: CUDA error: an illegal memory access was encountered"),
    ("device_side_assert.log", 1, FATAL, "RuntimeError: CUDA error: device-side assert triggered"),
    ("dataset_missing.log", 1, FATAL, "FileNotFoundError: Dataset '/data/coco_indoor/data.yaml' images not found"),
    ("user_code_keyerror.log", 1, FATAL, "KeyError: 'learning_rate'"),
    ("dataloader_killed.log", 1, HOST_OOM, "RuntimeError: DataLoader worker (pid 41233) is killed by signal: Killed."),
    ("cpu_alloc.log", 1, HOST_OOM, "RuntimeError: [enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator"),
    ("nccl_timeout.log", 1, NCCL, "[rank0]: torch.distributed.DistBackendError: NCCL communicator was aborted"),
    ("keyboard_interrupt.log", 130, INTERRUPTED, "KeyboardInterrupt"),
    ("nan_loss.log", 1, UNKNOWN, "RuntimeError: Training failed: NaN loss detected"),
    ("cuda_oom_ultralytics.log", None, CUDA_OOM, "torch.OutOfMemoryError"),  # no exit code given
])
def test_realistic_logs(log, exit_code, kind, evidence):
    f = failures.classify(read(log), exit_code=exit_code)
    assert f.kind == kind, f
    assert f.evidence.startswith(evidence), f.evidence
    assert f.source == "log"


def test_oom_buried_in_torchrun_summary_is_only_in_a_rank_line():
    text = read("ddp_torchrun_oom.log")
    # the top-level exception torchrun raises says nothing of memory; the NCCL watchdog is an echo
    assert "ChildFailedError" in text and "Watchdog caught collective operation timeout" in text
    assert [ln for ln in text.splitlines() if "OutOfMemoryError" in ln][0].startswith("[rank1]:")
    assert failures.classify(text, exit_code=1).kind == CUDA_OOM


@pytest.mark.parametrize("log", ["illegal_memory_access.log", "device_side_assert.log"])
def test_illegal_access_and_device_assert_are_never_oom(log):
    assert failures.classify(read(log), exit_code=1).kind != CUDA_OOM


@pytest.mark.parametrize("exit_code", [-9, 137])
def test_sigkill_without_memory_evidence_is_unknown(exit_code):
    f = failures.classify(read("killed_no_message.log"), exit_code=exit_code)
    assert f.kind == UNKNOWN and "SIGKILL" in f.evidence and f.source == "signal"


@pytest.mark.parametrize("exit_code", [-9, 137])
def test_sigkill_with_memory_evidence_is_host_oom(exit_code):
    f = failures.classify(read("killed_no_message.log"), exit_code=exit_code,
                          memory_evidence="RAM 99% used 2 s before the death")
    assert f.kind == HOST_OOM and "RAM 99%" in f.evidence


def test_sigkill_with_kernel_oom_line_in_the_log_is_host_oom():
    log = read("killed_no_message.log") + "[12345.678] Out of memory: Killed process 4242 (python) total-vm:...\n"
    assert failures.classify(log, exit_code=137).kind == HOST_OOM


def test_earlier_warnings_do_not_outvote_the_exception_that_ended_the_run():
    log = ("WARNING ⚠️ No labels found in /data/x/labels/val.cache, training may not work correctly.\n"
           + read("cuda_oom_ultralytics.log"))
    assert failures.classify(log, exit_code=1).kind == CUDA_OOM


def test_progress_bar_frames_split_on_carriage_returns():
    log = "  1/2  0.5G  1.0: 10%|█| 1/10\r  1/2  0.5G  1.0: 20%|█| 2/10\rtorch.OutOfMemoryError: CUDA out of memory.\n"
    f = failures.classify(log, exit_code=1)
    assert f.kind == CUDA_OOM and f.evidence == "torch.OutOfMemoryError: CUDA out of memory."


def test_child_report_is_preferred_over_the_log():
    report = Report(exc_type="torch.OutOfMemoryError", message="CUDA out of memory. Tried to allocate 2 GiB",
                    phase="val", epoch=3, start_epoch=1)
    f = failures.classify(read("nccl_timeout.log"), exit_code=1, report=report)
    assert (f.kind, f.source, f.phase) == (CUDA_OOM, "report", "val")
    unknown = failures.classify("", exit_code=1, report=Report(exc_type="ZeroDivisionError", message="x"))
    assert unknown.kind == UNKNOWN and unknown.evidence == "ZeroDivisionError: x"


DURING = "\nDuring handling of the above exception, another exception occurred:\n\n"
CLEANUP = "AttributeError: 'NoneType' object has no attribute 'close'"


def test_a_report_of_a_cleanups_code_error_is_not_fatal_when_the_log_names_the_cause():
    """The child's report names the chain's last exception only: an OOM whose clean-up raised an
    AttributeError reports the AttributeError. The log's OOM decides (issue 17, review of item 19);
    a report of a code error with nothing else in its log stays fatal."""
    report = Report(ok=False, exc_type="AttributeError", message=CLEANUP.partition(": ")[2], phase="train")
    tb = "Traceback (most recent call last):\n  File \"child.py\", line 80, in main\n"
    f = failures.judge(failures.ChildEnd(1), report, read("cuda_oom_ultralytics.log") + DURING + tb + CLEANUP + "\n")
    assert (f.kind, f.source, f.phase) == (CUDA_OOM, "log", "train"), f
    f = failures.judge(failures.ChildEnd(1), report, read("illegal_memory_access.log") + DURING + tb + CLEANUP + "\n")
    assert f.kind == UNKNOWN, f
    f = failures.judge(failures.ChildEnd(1), report, tb + CLEANUP + "\n")
    assert (f.kind, f.source, f.evidence) == (FATAL, "report", CLEANUP), f


def test_clean_exit_is_no_failure():
    assert failures.classify(read("killed_no_message.log"), exit_code=0) is None
    assert failures.classify("", exit_code=None, report=Report(ok=True, phase="done")) is None  # a success report


@pytest.mark.parametrize("log", ["", "all fine\n", read("killed_no_message.log")])
def test_a_log_without_an_exit_code_is_a_failed_run(log):
    """A log is handed to `diagnose` because something went wrong: "no failure" needs exit code 0 (issue 17
    item 19), otherwise an unrecognised end is unknown, which the launcher retries, never a success."""
    f = failures.classify(log, exit_code=None)
    assert f is not None and f.kind == UNKNOWN and "no exit code given" in f.evidence, f


def test_diagnose_reads_a_bare_log_as_a_failed_run(capsys, tmp_path):
    from launcher import cli

    log = tmp_path / "nohup.out"
    log.write_text("      9/100      12.4G     0.6001: 61%|██████    | 398/652 [01:40<01:03]\nKilled\n")
    assert cli.main(["diagnose", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kind      unknown\n") and "SIGKILL" in out and "'Killed'" in out, out
    assert cli.main(["diagnose", str(log), "--exit-code", "0"]) == 0
    assert "no failure found" in capsys.readouterr().out


@pytest.mark.parametrize("tail, kind, says", [
    ("[INFO] [launch.py:321:sigkill_handler] ['python', 'train.py'] exits with return code = -9", UNKNOWN, "SIGKILL"),
    ("  9/100  12.4G  0.61: 61%|██   | 398/652 [01:40<01:03]\nKilled", UNKNOWN, "SIGKILL"),
    ("./train.sh: line 3: 41233 Killed                  python train.py", UNKNOWN, "SIGKILL"),
    ("Epoch 1/5:  11%|█ | 10/90 [00:01<00:08]\nsegmentation fault (core dumped)", UNKNOWN, "segmentation fault"),
    ("[>>>>>>>>>>     ] 1022/5000, 1.5 task/s, elapsed: 673s, ETA:  2621s已杀死", UNKNOWN, "SIGKILL"),
    ("Command '['python', 'train.py']' returned non-zero exit status 137.", UNKNOWN, "SIGKILL"),
    ("subprocess.CalledProcessError: Command 'train' died with <Signals.SIGINT: 2>.", INTERRUPTED, "SIGINT"),
    ("ERROR:torch.distributed.elastic.multiprocessing.api:failed (exitcode: -15) local_rank: 0", INTERRUPTED,
     "SIGTERM"),
    ("torch.multiprocessing.spawn.ProcessExitedException: process 0 terminated with signal SIGKILL", UNKNOWN,
     "SIGKILL"),
])
def test_an_exit_status_printed_in_the_log_counts_as_the_exit_code(tail, kind, says):
    f = failures.classify(tail + "\n", exit_code=None)
    assert f.kind == kind and says in f.evidence, f
    assert "no exit code given" not in f.evidence


def test_a_given_exit_code_outranks_a_printed_one_and_no_printed_kill_hides_an_oom():
    assert failures.classify("Killed\n", exit_code=1).evidence.startswith("exit code 1")
    # an OOM whose hung process was then killed is still the OOM: signatures come before the printed status
    f = failures.classify(read("cuda_oom_ultralytics.log") + "Killed\n", exit_code=None)
    assert f.kind == CUDA_OOM
    f = failures.classify(read("dataloader_killed.log") + "Killed\n", exit_code=None)
    assert f.kind == HOST_OOM


@pytest.mark.parametrize("last", [
    "TypeError: unsupported operand type(s) for %: 'int' and 'NoneType'",
    "AttributeError: 'DetectionTrainer' object has no attribute 'on_plot'",
    "FileNotFoundError: [Errno 2] No such file or directory: 'hyp.yaml'",
    "yaml.scanner.ScannerError: while scanning a simple key",
    "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
    "NotImplementedError",
    "AssertionError: weights/x.pth acceptable suffix is ['.pt']",
    "[rank0]: TypeError: forward() got an unexpected keyword argument 'mask'",
])
def test_when_no_signature_matches_the_last_exceptions_type_decides(last):
    log = f"Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n{last}\n"
    assert failures.match_line(last) is None  # no signature: the fallback decides
    f = failures.classify(log, exit_code=1)
    assert (f.kind, f.evidence) == (FATAL, last)
    # torchrun's summary after the rank's exception only wraps it
    f = failures.classify(log + "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n", exit_code=1)
    assert (f.kind, f.evidence) == (FATAL, last)


@pytest.mark.parametrize("last", ["ZeroDivisionError: division by zero", "ValueError: Expected more than 1 value",
                                  "RuntimeError: DataLoader worker (pid(s) 41) exited unexpectedly"])
def test_other_exception_types_stay_unknown(last):
    assert failures.classify(f"{last}\n", exit_code=1).kind == UNKNOWN


@pytest.mark.parametrize("secondary", ["TypeError: 'NoneType' object is not subscriptable",
                                       "AttributeError: 'NoneType' object has no attribute 'close'"])
def test_a_secondary_code_error_after_an_oom_or_a_killed_worker_does_not_make_it_fatal(secondary):
    """The type fallback comes after every signature: an OOM or host-OOM whose cleanup then raises stays
    what it was (fatal > cuda_oom holds for fatal *signatures*, e.g. a KeyError, as before)."""
    during = "\nDuring handling of the above exception, another exception occurred:\n\n"
    for log, kind in (("cuda_oom_ultralytics.log", CUDA_OOM), ("dataloader_killed.log", HOST_OOM),
                      ("dl_bus_error_pil_dcpdn58.log", HOST_OOM)):
        assert failures.classify(read(log) + during + secondary + "\n", exit_code=1).kind == kind, log


TB = "Traceback (most recent call last):\n  File \"train.py\", line 9, in <module>\n"
DEL_ASIDE = ("Exception ignored in: <function _MultiProcessingDataLoaderIter.__del__ at 0x7f3a2c1e0ee0>\n" + TB)
THREAD_ASIDE = "Exception in thread Thread-3 (_pin_memory_loop):\n" + TB


def test_an_unknown_signature_outranks_the_type_fallback():
    """A named GPU fault (or a NaN) is what ended the run; a code error printed after it is its echo,
    not a configuration error no rung can fix (issue 17 item 19, review)."""
    log = ("terminate called after throwing an instance of 'c10::Error'\n"
           "  what():  CUDA error: unspecified launch failure\n" + TB + CLEANUP + "\n")
    f = failures.classify(log, exit_code=1)
    assert (f.kind, f.evidence) == (UNKNOWN, "what():  CUDA error: unspecified launch failure"), f


def test_of_a_during_handling_chain_the_first_exception_decides():
    """The handler's own error (a clean-up's TypeError) is a consequence: the chain's first exception
    ended the run (issue 17 item 19, review)."""
    illegal = "RuntimeError: CUDA error: an illegal memory access was encountered"
    f = failures.classify(TB + illegal + "\n" + DURING + TB + "TypeError: 'NoneType' object is not iterable\n",
                          exit_code=1)
    assert (f.kind, f.evidence) == (UNKNOWN, illegal), f
    exited = "RuntimeError: DataLoader worker (pid(s) 4123) exited unexpectedly"
    f = failures.classify(TB + exited + "\n" + DURING + TB +
                          "AttributeError: '_MultiProcessingDataLoaderIter' object has no attribute '_shutdown'\n",
                          exit_code=1)
    assert (f.kind, f.evidence) == (UNKNOWN, exited), f
    # a chain whose first exception is itself a code error is still one
    f = failures.classify(TB + "KeyError: 'lr'\n" + DURING + TB + "ValueError: x\n", exit_code=1)
    assert f.kind == FATAL, f


def test_an_exception_python_printed_and_went_on_from_ends_nothing():
    """'Exception ignored in' (a __del__) and 'Exception in thread' blocks are asides: the exception
    that ended the run is another (issue 17 item 19, review)."""
    exited = "RuntimeError: DataLoader worker (pid(s) 4123) exited unexpectedly"
    f = failures.classify(TB + exited + "\n" + DEL_ASIDE +
                          "AttributeError: '_MultiProcessingDataLoaderIter' object has no attribute '_shutdown'\n",
                          exit_code=1)
    assert (f.kind, f.evidence) == (UNKNOWN, exited), f
    f = failures.classify(TB + "ValueError: bad value\n" + DEL_ASIDE + "AssertionError: can only test a child process\n",
                          exit_code=1)
    assert (f.kind, f.evidence) == (UNKNOWN, "ValueError: bad value"), f
    # the review's cases: a GPU fault, then a __del__'s assertion; a thread's TypeError, then a segfault
    f = failures.classify(TB + "RuntimeError: CUDA error: unspecified launch failure\n" + DEL_ASIDE +
                          "AssertionError: can only test a child process\n", exit_code=1)
    assert f.kind == UNKNOWN and "unspecified launch failure" in f.evidence, f
    f = failures.classify(THREAD_ASIDE + "TypeError: an integer is required\n", exit_code=-11)
    assert f.kind == UNKNOWN, f
    # a thread's TypeError, then the process went on and was aborted: nothing says the code is wrong
    f = failures.classify(THREAD_ASIDE + "TypeError: an integer is required\n" +
                          "  3/100  2.1G  0.61: 40%|████  | 40/100\nAborted (core dumped)\n", exit_code=None)
    assert f.kind == UNKNOWN and "SIGABRT" in f.evidence, f
    # an aside is not the run's end, but a code error raised after it still is
    f = failures.classify(DEL_ASIDE + "AssertionError: can only test a child process\n" + TB + CLEANUP + "\n",
                          exit_code=1)
    assert (f.kind, f.evidence) == (FATAL, CLEANUP), f


@pytest.mark.parametrize("exit_code", [-11, -6, 139, 134])
def test_a_code_error_is_not_fatal_when_a_signal_ended_the_process(exit_code):
    """A code error ends a Python process with exit 1; one that died by a signal (a segfault, an
    abort) was ended by something else (issue 17 item 19, review)."""
    log = TB + "TypeError: an integer is required\n"
    assert failures.classify(log, exit_code=1).kind == FATAL
    f = failures.classify(log, exit_code=exit_code)
    assert f.kind == UNKNOWN, f


@pytest.mark.parametrize("tail", [
    "      0/99     14.7G   0.07821: 100% 420/420 [08:24<00:00,  1.20s/it]\n^C\n",
    "     98/300      15.2G    0.09414:  82%|████████▏ | 58/71 [23:09<05:11]^C\nTraceback (most recent call last):\n"
    "  File \"/usr/local/bin/yolo\", line 8, in <module>\n",
    "W1130 12:13:49.388000 124326 torch/distributed/elastic/agent/server/api.py:723] Received SIGTERM death signal, "
    "shutting down workers\n",
])
def test_a_tail_ending_in_ctrl_c_or_a_death_signal_is_interrupted(tail):
    assert failures.classify(tail, exit_code=None).kind == INTERRUPTED


def test_an_error_after_a_ctrl_c_echo_is_the_error():
    log = "yolo train patience=0^C\nTraceback (most recent call last):\nTypeError: unsupported operand\n"
    assert failures.classify(log, exit_code=1).kind == FATAL
    # a ^C echoed with the command at the start of a long log did not end it
    log = "yolo train patience=0^C\n" + "".join(f"  1/9  0.5G  1.0: {i}%|█| {i}/100\n" for i in range(100))
    assert failures.classify(log, exit_code=1).kind == UNKNOWN


def _raised(call) -> BaseException:
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the exception Ultralytics raises is the subject
        return e
    raise AssertionError("Ultralytics accepted it")


def _ultralytics_refusals():
    """What Ultralytics itself raises for the values of issue 17 items 5-7, raised for real."""
    import types

    import torch
    from ultralytics.cfg import check_cfg
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.nn.tasks import torch_safe_load

    return {
        "optimizer=NoSuchOpt": lambda: BaseTrainer.build_optimizer(types.SimpleNamespace(), torch.nn.Linear(1, 1),
                                                                   name="NoSuchOpt"),
        "epochs=0": lambda: check_cfg({"epochs": 0}),
        "momentum=2.0": lambda: check_cfg({"momentum": 2.0}),
        "lr0=x": lambda: check_cfg({"lr0": "x"}),
        "fraction=-1.0": lambda: check_cfg({"fraction": -1.0}),
        "batch=None": lambda: check_cfg({"batch": None}),
        "model.pth": lambda: torch_safe_load("/rungs/optimal.pth"),
    }


def test_an_error_ultralytics_raises_from_the_arguments_is_fatal():
    """Issue 17 items 5-9: such an error recurs in every rung. Read from the child's report (the
    supervisor's path) and from its train.log traceback (diagnose's), it is fatal, never unknown."""
    import traceback

    for name, call in _ultralytics_refusals().items():
        e = _raised(call)
        exc_type = f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins.")  # as child.py writes it
        end = failures.judge(failures.ChildEnd(1), Report(ok=False, exc_type=exc_type, message=str(e)), "")
        assert end.kind == FATAL and end.source == "report", (name, end)
        log = "".join(traceback.format_exception(e))
        assert failures.classify(log, exit_code=1).kind == FATAL, (name, log)
        assert "exit 4" in failures.action(end)


def test_other_signals_and_codes():
    assert failures.classify("", exit_code=-11).evidence == "killed by SIGSEGV"
    assert failures.classify("", exit_code=139).evidence == "killed by SIGSEGV"
    f = failures.classify("all fine\n", exit_code=3)
    assert f.kind == UNKNOWN and f.source == "exit" and "exit code 3" in f.evidence
    f = failures.classify("ZeroDivisionError: division by zero\n", exit_code=1)
    assert f.kind == UNKNOWN and f.evidence == "ZeroDivisionError: division by zero"


def test_actions_follow_the_policy():
    oom = failures.Failure(CUDA_OOM, "x", "log")
    assert "resume the same rung" in failures.action(oom, epochs_completed=2)
    assert "step down" in failures.action(oom, epochs_completed=0)
    assert "exit 4" in failures.action(failures.Failure(FATAL, "x", "log"))
    assert failures.action(failures.Failure(NCCL, "x", "log")) == plan.POLICY[NCCL].does  # diagnose says the table's row
    assert "never retrain" in failures.action(failures.Failure(UNKNOWN, "x", "log", phase="final"))
    assert "resumable" in failures.action(failures.Failure(INTERRUPTED, "x", "signal", phase="final"))


def test_disk_full_is_fatal_not_memory():
    """ENOSPC is no memory shortage: no rung frees disk space, so it stops the night (not a step down)."""
    f = failures.classify("OSError: [Errno 28] No space left on device: 'runs/x/weights/last.pt'\n", exit_code=1)
    assert (f.kind, f.evidence) == (FATAL, "OSError: [Errno 28] No space left on device: 'runs/x/weights/last.pt'")


def test_only_the_tail_of_a_huge_log_is_read():
    noise = "KeyError: 'early and irrelevant'\n" + "x" * (failures.TAIL_BYTES + 10) + "\n"
    assert failures.classify(noise + read("cuda_oom_ultralytics.log"), exit_code=1).kind == CUDA_OOM


def test_torchrun_tee_prefixes_before_the_rank_prefix():
    log = ("[default1]:[rank1]: Traceback (most recent call last):\n"
           "[default1]:[rank1]:   File \"train.py\", line 9, in <module>\n"
           "[default1]:[rank1]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
           "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n")
    f = failures.classify(log, exit_code=1)
    assert f.kind == CUDA_OOM and f.evidence.startswith("[default1]:[rank1]: torch.OutOfMemoryError")


# --- the corpus: every log under fixtures/logs, listed in INDEX.tsv with its expected kind and source ---

INDEX = LOGS / "INDEX.tsv"
KINDS = {CUDA_OOM, HOST_OOM, NCCL, FATAL, INTERRUPTED, UNKNOWN}
OOM = {CUDA_OOM, HOST_OOM}
# INDEX.tsv's `split`: `tuned` logs are the ones signatures were written for, and every one must be read
# right; `heldout` logs (issue 17 item 19: labelled before the classifier read them, split by a hash of
# the file name, never tuned on) estimate how diagnose does on logs nobody has seen. Measured: 5/16 held-out
# before issue 17's fallback, 16/16 after (tests/bench/bench_diagnose.py prints the table). The floor lets
# an honestly labelled hard log join the held-out part without tuning, and catches a regression.
SPLITS = {"tuned", "heldout"}
MIN_HELDOUT_ACCURACY = 0.8


def corpus() -> list[dict]:
    with INDEX.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_index_lists_every_fixture_once_with_kind_and_source():
    rows = corpus()
    files = [r["file"] for r in rows]
    assert len(files) == len(set(files)), "a fixture is listed twice"
    assert set(files) == {p.name for p in LOGS.glob("*.log")}, "INDEX.tsv and the .log files disagree"
    for r in rows:
        assert r["kind"] in KINDS, r
        assert r["source"].strip() and r["note"].strip(), r
        assert r["exit_code"] == "" or r["exit_code"].lstrip("-").isdigit(), r
        assert r["split"] in SPLITS, r
    real = [r for r in rows if not r["source"].startswith("synthetic")]
    assert len(real) >= 30  # logs copied from public threads, each citing its thread


def test_corpus_accuracy_and_no_fixture_crosses_the_oom_fatal_line():
    """Every indexed log through `classify`. An OOM read as fatal stops a night a smaller rung would have
    finished; a fatal read as an OOM walks the whole ladder on bad input: neither may happen, ever."""
    rows, table, crossings, missed = corpus(), [], [], {split: [] for split in SPLITS}
    for r in rows:
        exit_code = int(r["exit_code"]) if r["exit_code"] else None  # none given: as `diagnose LOG` reads it
        f = failures.classify(read(r["file"]), exit_code=exit_code)
        got = f.kind if f else "none"
        if got != r["kind"]:
            missed[r["split"]].append(r["file"])
        if (r["kind"] in OOM and got == FATAL) or (r["kind"] == FATAL and got in OOM):
            crossings.append(r["file"])
        mark = "ok  " if got == r["kind"] else "MISS"
        table.append(f"{mark} {r['split']:<8} {r['file']:<50} want {r['kind']:<12} got {got:<12} "
                     f"{(f.evidence if f else '')[:80]!r}")
    report = "\n".join(table)
    heldout = sum(r["split"] == "heldout" for r in rows)
    assert heldout >= 15, "the held-out part is too small to say anything"
    assert not crossings, f"OOM<->fatal crossings: {crossings}\n{report}"
    assert not missed["tuned"], f"tuned logs read wrong: {missed['tuned']}\n{report}"
    accuracy = 1 - len(missed["heldout"]) / heldout
    assert accuracy >= MIN_HELDOUT_ACCURACY, f"held-out accuracy {accuracy:.0%}\n{report}"


@pytest.mark.parametrize("line, kind", [
    # a quoted type name is a mention, not the raised error (old torch under new Ultralytics)
    ("[rank1]: AttributeError: module 'torch' has no attribute 'OutOfMemoryError'", None),
    ("AutoBatch: WARNING error detected: 'OutOfMemoryError' object has no attribute 'encode'", None),
    ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.70 GiB.", CUDA_OOM),
    ("RuntimeError: cuda runtime error (2) : out of memory at /pytorch/torch/lib/THC/generic/THCStorage.cu:58",
     CUDA_OOM),
    ("torch.OutOfMemoryError: HIP out of memory. Tried to allocate 124.00 MiB.", CUDA_OOM),
    ("RuntimeError: MPS backend out of memory (MPS allocated: 5.50 GB, other allocations: 14.76 GB)", CUDA_OOM),
    ("RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED", CUDA_OOM),
    ("RuntimeError: cuDNN error: CUDNN_STATUS_EXECUTION_FAILED", UNKNOWN),
    ("RuntimeError: [enforce fail at alloc_cpu.cpp:81] data. DefaultCPUAllocator: not enough memory: "
     "you tried to allocate 1073741824 bytes.", HOST_OOM),
    ("OSError: [WinError 1455] The paging file is too small for this operation to complete.", HOST_OOM),
    ("[Thu Mar 14 01:57:54 2019] Out of memory: Kill process 89746 (python) score 1031 or sacrifice child",
     HOST_OOM),
    # torchrun stopping the other ranks after one died is an echo; the agent itself being signalled is not
    ("WARNING:torch.distributed.elastic.multiprocessing.api:Sending process 202100 closing signal SIGTERM", None),
    ("WARNING:torch.distributed.elastic.agent.server.api:Received 15 death signal, shutting down workers",
     INTERRUPTED),
    ("slurmstepd: error: *** JOB 494583 ON node1 CANCELLED AT 2024-04-20T09:09:37 DUE TO TIME LIMIT ***",
     INTERRUPTED),
    # a dataset scan is fatal only when every label is corrupt, and only once the scan has finished
    ("train: Scanning labels.cache... 10 images, 0 backgrounds, 10 corrupt: 100% 10/10", FATAL),
    ("train: Scanning labels.cache... 10 images, 0 backgrounds, 9 corrupt: 100% 10/10", None),
    ("train: Scanning labels.cache... 10 images, 0 backgrounds, 10 corrupt:  40% 10/25", None),
    ("train: Scanning 'x' images and labels... 936 found, 0 missing, 0 empty, 93 corrupted: 100%", None),
    ("AssertionError: Label class 2 exceeds nc=2 in data/zhongmei.yaml. Possible class labels are 0-1", FATAL),
])
def test_signature_wordings(line, kind):
    assert failures.match_line(line) == kind


def test_diagnose_help_lists_the_policy_table():
    """`diagnose --help` renders plan.POLICY: every kind with its row's words, and the final phase's rule."""
    from launcher import cli

    epilog = " ".join(cli.build_parser()._subparsers._group_actions[0].choices["diagnose"].epilog.split())
    for kind, does, _, _ in plan.policy_rows():
        assert f"{kind} {does}" in epilog, kind
    assert f"final phase {plan.FINAL}" in epilog
