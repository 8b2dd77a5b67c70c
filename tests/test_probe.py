"""The probe against named hardware scenarios: fake pynvml and psutil modules, golden snapshots."""

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


FAKE_PSUTIL = SimpleNamespace(virtual_memory=lambda: SimpleNamespace(total=64 * GIB, available=50 * GIB),
                              cpu_count=lambda: 16)

SCENARIOS = {
    "no-gpu": (FakeNVML(init_error=NVMLError("NVML Shared Library Not Found")),
               (), "NVML unavailable (NVMLError: NVML Shared Library Not Found): no NVIDIA GPU or driver here"),
    "driver-not-loaded": (FakeNVML(init_error=NVMLError("Driver Not Loaded")),
                          (), "NVML unavailable (NVMLError: Driver Not Loaded): no NVIDIA GPU or driver here"),
    "one-4090": (FakeNVML([{"name": b"NVIDIA GeForce RTX 4090", "total": 24 * GIB, "free": 23 * GIB}]),
                 (Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB),), "ok"),
    "gpu-lacking-memory-field": (FakeNVML([{"name": "NVIDIA A100-SXM4-40GB MIG 1g.5gb"}]),
                                 (Gpu(0, "NVIDIA A100-SXM4-40GB MIG 1g.5gb", None, None),), "ok"),
    "gpu-lacking-name": (FakeNVML([{"total": 12 * GIB, "free": 11 * GIB}]),
                         (Gpu(0, None, 12 * GIB, 11 * GIB),), "ok"),
    "two-gpus-uneven": (FakeNVML([{"name": "NVIDIA RTX A5000", "total": 24 * GIB, "free": 22 * GIB},
                                  {"name": "NVIDIA RTX A5000", "total": 24 * GIB, "free": 9 * GIB}]),
                        (Gpu(0, "NVIDIA RTX A5000", 24 * GIB, 22 * GIB),
                         Gpu(1, "NVIDIA RTX A5000", 24 * GIB, 9 * GIB)), "ok"),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_probe_scenarios(scenario):
    nvml, gpus, status = SCENARIOS[scenario]
    s = probe.take(nvml=nvml, ps=FAKE_PSUTIL)
    assert s.gpus == gpus
    assert s.nvml == status
    assert (s.ram_total, s.ram_available) == (64 * GIB, 50 * GIB)
    assert isinstance(s.cpus, int) and s.cpus >= 1
    if status == "ok":
        assert s.driver == "550.54.15" and nvml.shutdowns == 1


def test_nvml_failing_while_listing():
    class Broken(FakeNVML):
        def nvmlDeviceGetCount(self):
            raise NVMLError("GPU is lost")
    s = probe.take(nvml=Broken(), ps=FAKE_PSUTIL)
    assert s.gpus == () and "GPU is lost" in s.nvml


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
    s = probe.take()
    assert s.ram_total and s.ram_total >= s.ram_available > 0
    assert s.nvml == "ok" or s.gpus == ()


def test_snapshot_is_frozen():
    s = probe.take(nvml=FakeNVML(), ps=FAKE_PSUTIL)
    with pytest.raises(AttributeError):
        s.cpus = 3
