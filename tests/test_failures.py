"""Classification of realistic crash logs into the failure kinds of docs/design.md."""

import csv

import pytest

from launcher import failures
from launcher.contract import CUDA_OOM, FATAL, HOST_OOM, INTERRUPTED, NCCL, UNKNOWN

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
    report = {"exc_type": "torch.OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2 GiB",
              "phase": "val", "epoch": 3, "start_epoch": 1}
    f = failures.classify(read("nccl_timeout.log"), exit_code=1, report=report)
    assert (f.kind, f.source, f.phase) == (CUDA_OOM, "report", "val")
    unknown = failures.classify("", exit_code=1, report={"exc_type": "ZeroDivisionError", "message": "x"})
    assert unknown.kind == UNKNOWN and unknown.evidence == "ZeroDivisionError: x"


def test_clean_exit_is_no_failure():
    assert failures.classify(read("killed_no_message.log"), exit_code=0) is None
    assert failures.classify("", exit_code=None) is None


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
    assert set(failures.ACTIONS) >= {CUDA_OOM, HOST_OOM, NCCL, UNKNOWN, FATAL, INTERRUPTED}


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
# Measured when the real logs were added (issue 13 item 7): 58/78 before the signatures for their
# wordings, 78/78 after. The margin lets a new, honestly labelled hard log land (its miss shows in the
# table) without letting a regression of more than two logs through.
MIN_ACCURACY = 0.97


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
    real = [r for r in rows if not r["source"].startswith("synthetic")]
    assert len(real) >= 30  # logs copied from public threads, each citing its thread


def test_corpus_accuracy_and_no_fixture_crosses_the_oom_fatal_line():
    """Every indexed log through `classify`. An OOM read as fatal stops a night a smaller rung would have
    finished; a fatal read as an OOM walks the whole ladder on bad input: neither may happen, ever."""
    rows, table, crossings, right = corpus(), [], [], 0
    for r in rows:
        exit_code = int(r["exit_code"]) if r["exit_code"] else None
        f = failures.classify(read(r["file"]), exit_code=exit_code)
        got = f.kind if f else "none"
        right += got == r["kind"]
        if (r["kind"] in OOM and got == FATAL) or (r["kind"] == FATAL and got in OOM):
            crossings.append(r["file"])
        mark = "ok  " if got == r["kind"] else "MISS"
        table.append(f"{mark} {r['file']:<50} want {r['kind']:<12} got {got:<12} "
                     f"{(f.evidence if f else '')[:80]!r}")
    report = "\n".join(table)
    accuracy = right / len(rows)
    assert not crossings, f"OOM<->fatal crossings: {crossings}\n{report}"
    assert accuracy >= MIN_ACCURACY, f"accuracy {right}/{len(rows)} = {accuracy:.1%} < {MIN_ACCURACY:.0%}\n{report}"


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
