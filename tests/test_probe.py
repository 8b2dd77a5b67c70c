"""The probe against named hardware scenarios: fake pynvml and psutil modules, golden snapshots."""

import os
import sys
from types import SimpleNamespace

import pytest

from launcher import probe
from launcher.contract import GIB
from launcher.probe import Gpu


class NVMLError(Exception):
    pass


class NotSupported(NVMLError):
    pass


class FakeNVML:
    """Just the pynvml calls the probe makes, over a list of GPU dicts."""

    def __init__(self, gpus=(), init_error=None, driver=b"550.54.15"):
        self.gpus, self.init_error, self.driver = list(gpus), init_error, driver
        self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return self.gpus[i]

    def nvmlDeviceGetName(self, h):
        if "name" not in h:
            raise NotSupported("Not Supported")
        return h["name"]

    def nvmlDeviceGetMemoryInfo(self, h):
        if "total" not in h:
            raise NotSupported("Not Supported")
        return SimpleNamespace(total=h["total"], free=h["free"], used=h["total"] - h["free"])

    def nvmlDeviceGetUUID(self, h):
        if "uuid" not in h:
            raise NotSupported("Not Supported")
        return h["uuid"]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for g in self.gpus:
            for mig in g.get("migs", ()):
                if mig["uuid"] == uuid:
                    return mig
        raise NVMLError("Not Found")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h):
        return next(g for g in self.gpus if h in g.get("migs", ()))

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=1 << 30) for pid in h.get("pids", ())]


FAKE_PSUTIL = SimpleNamespace(virtual_memory=lambda: SimpleNamespace(total=64 * GIB, available=50 * GIB),
                              cpu_count=lambda: 16)

SCENARIOS = {
    "no-gpu": (FakeNVML(init_error=NVMLError("NVML Shared Library Not Found")),
               (), "NVML unavailable (NVMLError: NVML Shared Library Not Found): no NVIDIA GPU or driver here"),
    "driver-not-loaded": (FakeNVML(init_error=NVMLError("Driver Not Loaded")),
                          (), "NVML unavailable (NVMLError: Driver Not Loaded): no NVIDIA GPU or driver here"),
    "one-4090": (FakeNVML([{"name": b"NVIDIA GeForce RTX 4090", "total": 24 * GIB, "free": 23 * GIB}]),
                 (Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB, physical=0),), "ok"),
    "gpu-lacking-memory-field": (FakeNVML([{"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb"}]),
                                 (Gpu(0, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", None, None, physical=0),), "ok"),
    "gpu-lacking-name": (FakeNVML([{"total": 12 * GIB, "free": 11 * GIB}]),
                         (Gpu(0, None, 12 * GIB, 11 * GIB, physical=0),), "ok"),
    "two-gpus-uneven": (FakeNVML([{"name": "NVIDIA RTX A5000", "total": 24 * GIB, "free": 22 * GIB},
                                  {"name": "NVIDIA RTX A5000", "total": 24 * GIB, "free": 9 * GIB}]),
                        (Gpu(0, "NVIDIA RTX A5000", 24 * GIB, 22 * GIB, physical=0),
                         Gpu(1, "NVIDIA RTX A5000", 24 * GIB, 9 * GIB, physical=1)), "ok"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_probe_scenarios(scenario):
    nvml, gpus, status = SCENARIOS[scenario]
    s = probe.take(nvml=nvml, ps=FAKE_PSUTIL)
    assert s.gpus == gpus
    assert s.nvml == status
    assert (s.ram_total, s.ram_available) == (64 * GIB, 50 * GIB)
    assert s.cpus == len(os.sched_getaffinity(0))  # the CPUs this process may use, not the fake's 16
    assert s.driver == ("550.54.15" if status == "ok" else None)
    assert nvml.shutdowns == (1 if status == "ok" else 0)  # NVML shut down once it was started, never otherwise


def test_nvml_failing_while_listing():
    class Broken(FakeNVML):
        def nvmlDeviceGetCount(self):
            raise NVMLError("GPU is lost")
    nvml = Broken()
    s = probe.take(nvml=nvml, ps=FAKE_PSUTIL)
    assert s.gpus == () and s.nvml == "NVML failed while listing GPUs (NVMLError: GPU is lost)"
    assert nvml.shutdowns == 1


def test_pynvml_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    s = probe.take(ps=FAKE_PSUTIL)
    assert s.gpus == () and "nvidia-ml-py is not installed" in s.nvml


def test_psutil_failing_leaves_ram_unknown():
    def boom():
        raise OSError("no /proc")
    s = probe.take(nvml=FakeNVML(), ps=SimpleNamespace(virtual_memory=boom, cpu_count=lambda: 2))
    assert s.ram_total is None and s.ram_available is None


def test_real_probe_on_this_machine_never_raises():
    import psutil
    s = probe.take()
    assert s.ram_total == psutil.virtual_memory().total and s.ram_total >= s.ram_available > 0
    assert s.cpus == len(os.sched_getaffinity(0))
    assert s.nvml == "ok" or s.gpus == ()


def test_cpus_are_the_affinity_mask_else_psutils_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})  # a container pinned to 3 of 16 CPUs
    assert probe.take(nvml=FakeNVML(), ps=FAKE_PSUTIL).cpus == 3
    monkeypatch.delattr(os, "sched_getaffinity")  # macOS has none
    assert probe.take(nvml=FakeNVML(), ps=FAKE_PSUTIL).cpus == 16

    def unknown():
        raise OSError("no /proc/cpuinfo")
    assert probe.take(nvml=FakeNVML(), ps=SimpleNamespace(virtual_memory=FAKE_PSUTIL.virtual_memory,
                                                          cpu_count=unknown)).cpus is None


class ReleasingNVML(FakeNVML):
    """One GPU whose process list and free memory change with each poll."""

    def __init__(self, polls):
        super().__init__([{"name": "GPU", "total": 24 * GIB, "free": 0}])
        self.polls = list(polls)  # (free GiB, pids) per poll; the last one repeats

    def nvmlInit(self):
        free, pids = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        self.gpus[0]["free"], self.pids = int(free * GIB), pids

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p, usedGpuMemory=GIB) for p in self.pids]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_waits_until_the_dead_attempts_processes_let_go():
    clock = Clock()
    nvml = ReleasingNVML([(2, {41, 42}), (2, {42}), (20, set())])
    msg = probe.wait_gpu_released((0,), {41, 42}, {0: 20 * GIB}, nvml=nvml, pid_visible=lambda p: True,
                                  sleep=clock.sleep, clock=clock)
    assert msg == "no process of the attempt holds GPU memory (after 2.0 s)"


def test_other_processes_on_the_gpu_do_not_hold_the_wait():
    clock = Clock()
    nvml = ReleasingNVML([(5, {999})])  # someone else's job
    msg = probe.wait_gpu_released((0,), {41}, {0: 5 * GIB}, nvml=nvml, pid_visible=lambda p: True,
                                  sleep=clock.sleep, clock=clock)
    assert msg.startswith("no process of the attempt") and clock.t == 0


def test_in_a_container_free_memory_decides():
    clock = Clock()
    nvml = ReleasingNVML([(3, {123456}), (10, {123456}), (19.8, set())])  # host PIDs, invisible here
    msg = probe.wait_gpu_released((0,), {41}, {0: 20 * GIB}, nvml=nvml, pid_visible=lambda p: False,
                                  sleep=clock.sleep, clock=clock)
    assert msg == "free VRAM back to its level before the attempt after 2.0 s"


def test_the_wait_is_bounded():
    clock = Clock()
    nvml = ReleasingNVML([(2, {41})])
    msg = probe.wait_gpu_released((0,), {41}, {0: 20 * GIB}, timeout=5, nvml=nvml, pid_visible=lambda p: True,
                                  sleep=clock.sleep, clock=clock)
    assert msg == "gave up waiting after 5 s: pids [41] still hold GPU memory" and clock.t == 5


def test_no_wait_on_the_cpu_or_without_nvml():
    assert probe.wait_gpu_released((), {1}, None) == "CPU: nothing to wait for"
    broken = FakeNVML(init_error=NVMLError("gone"))
    assert probe.wait_gpu_released((0,), {1}, None, nvml=broken).startswith("NVML unavailable")



# ---- the GPUs CUDA will see: CUDA_VISIBLE_DEVICES (issue 14) -------------------------------------

def two_cards():
    """Card 0 busy (2 GiB free), card 1 idle (23 GiB free, one MIG instance), as NVML lists them."""
    mig = {"name": "NVIDIA A100 MIG 3g.20gb", "total": 20 * GIB, "free": 19 * GIB,
           "uuid": "MIG-5c2f0e8a-1111-2222-3333-444455556666", "pids": [77]}
    return FakeNVML([
        {"name": "NVIDIA RTX A5000", "total": 24 * GIB, "free": 2 * GIB, "uuid": "GPU-11aa22bb-0000", "pids": [5]},
        {"name": "NVIDIA A100", "total": 24 * GIB, "free": 23 * GIB, "uuid": "GPU-8a3f9c01-0000", "pids": [9],
         "migs": [mig]},
    ])


@pytest.mark.parametrize("visible, seen", [
    (None, [(0, 0, 2), (1, 1, 23)]),  # unset: every card, NVML's order
    ("1", [(0, 1, 23)]),  # the free card of two: CUDA's device 0 is card 1
    ("1,0", [(0, 1, 23), (1, 0, 2)]),
    ("GPU-8a3f9c01-0000", [(0, 1, 23)]),  # a whole UUID
    ("GPU-8a3f", [(0, 1, 23)]),  # a unique prefix is enough
    ("8a3f", [(0, 1, 23)]),  # ... with or without GPU-
    ("MIG-5c2f0e8a-1111-2222-3333-444455556666", [(0, 1, 19)]),  # a MIG instance of card 1
    ("", []),  # empty: no GPU at all
    ("0,7,1", [(0, 0, 2)]),  # CUDA stops at the first entry naming no GPU
    ("GPU-ffff", []),
])
def test_the_probe_sees_what_cuda_will_see(visible, seen):
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    s = probe.take(nvml=two_cards(), ps=FAKE_PSUTIL, environ=env)
    assert [(g.index, g.physical, g.free // GIB) for g in s.gpus] == seen
    assert s.nvml == ("ok" if visible is None else f"ok (CUDA_VISIBLE_DEVICES={visible!r})")


def test_memory_release_and_telemetry_read_the_card_cuda_uses():
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    assert probe.gpu_usage((0,), nvml=two_cards(), environ=env) == {0: (23 * GIB, {9})}
    assert probe.process_vram((0,), {9}, nvml=two_cards(), environ=env) == 1 << 30
    assert probe.process_vram((0,), {5}, nvml=two_cards(), environ=env) is None  # card 0's process: not ours
    said = probe.wait_gpu_released((0,), {9}, {0: 23 * GIB}, nvml=two_cards(), environ=env, timeout=0,
                                   pid_visible=lambda pid: True, sleep=lambda s: None)
    assert said.startswith("gave up waiting") and "pids [9]" in said


def test_dry_run_names_the_card_behind_a_cuda_index(capsys, monkeypatch):
    from launcher import cli, views
    from launcher.probe import Snapshot
    snap = Snapshot((Gpu(0, "NVIDIA A100", 24 * GIB, 23 * GIB, physical=1, uuid="GPU-8a3f9c01-0000"),),
                    64 * GIB, 50 * GIB, 16, nvml="ok (CUDA_VISIBLE_DEVICES='1')")
    monkeypatch.setattr(probe, "take", lambda: snap)
    cli.main(["dry-run", "--device", "0", "--ladder", "ladders/demo.toml", "--data", "nope.yaml"])
    out = capsys.readouterr().out
    assert "GPU 0  NVIDIA A100  total 24.00 GiB  free 23.00 GiB  (card 1, GPU-8a3f9c01-0000)" in out
    assert "NVML   ok (CUDA_VISIBLE_DEVICES='1')" in out
