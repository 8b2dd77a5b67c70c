"""Host-RAM evidence: cgroup oom_kill counters (v1 and v2 fixtures), RamWatch with a fake psutil,
and, where the machine allows a memory cgroup, a child really OOM-killed by the kernel inside a
256 MiB limit (never more than 1 GiB is asked for, so nothing outside the limit is at risk)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from launcher.contract import HOST_OOM, UNKNOWN
from launcher.failures import classify
from launcher.memory import (RamWatch, counter_candidates, counter_file_of_dir, oom_kill_count,
                             parse_oom_kill, parse_proc_cgroup)
from memlimit import cgroup_support, confined_launch, leftover_cgroups, memory_limited, rlimit_wrap

MIB = 1024 ** 2
GIB = 1024 ** 3

V1_PROC_CGROUP = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/78f6
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""
V1_OOM_CONTROL = "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n"
V2_PROC_CGROUP = "0::/user.slice/user-1000.slice/session-3.scope\n"
V2_EVENTS = "low 0\nhigh 0\nmax 17\noom 3\noom_kill 2\noom_group_kill 0\n"


def put(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- pure parsing --------------------------------------------------------------------------------

def test_parse_oom_kill_v1_and_v2():
    assert parse_oom_kill(V1_OOM_CONTROL) == 4
    assert parse_oom_kill(V2_EVENTS) == 2  # not oom_group_kill, not oom
    assert parse_oom_kill("oom_kill_disable 1\nunder_oom 0\n") is None  # kernels before 4.13
    assert parse_oom_kill("") is None


def test_parse_proc_cgroup():
    lines = parse_proc_cgroup(V1_PROC_CGROUP)
    mem = [ln for ln in lines if "memory" in ln.controllers]
    assert mem[0].path == "/process_api/78f6" and mem[0].hierarchy == "4"
    assert parse_proc_cgroup(V2_PROC_CGROUP)[0].controllers == ()


def test_candidates_prefer_the_v1_memory_controller_in_hybrid_mode():
    root = Path("/sys/fs/cgroup")
    found = counter_candidates(V1_PROC_CGROUP, root)
    assert found[0] == root / "memory/process_api/78f6/memory.oom_control"
    assert root / "memory.events" in found  # the empty v2 line comes after
    assert counter_candidates(V2_PROC_CGROUP, root)[0] == root / "user.slice/user-1000.slice/session-3.scope/memory.events"


def test_oom_kill_count_from_fixture_trees(tmp_path):
    v1 = tmp_path / "v1"
    put(v1 / "memory/process_api/78f6/memory.oom_control", V1_OOM_CONTROL)
    assert oom_kill_count(v1, put(tmp_path / "p1", V1_PROC_CGROUP)) == 4

    v2 = tmp_path / "v2"
    put(v2 / "user.slice/user-1000.slice/session-3.scope/memory.events", V2_EVENTS)
    assert oom_kill_count(v2, put(tmp_path / "p2", V2_PROC_CGROUP)) == 2

    ns = tmp_path / "ns"  # inside a cgroup namespace: "0::/" and the mount is the own cgroup
    put(ns / "memory.events", V2_EVENTS)
    assert oom_kill_count(ns, put(tmp_path / "p3", "0::/\n")) == 2


def test_missing_or_unreadable_is_none(tmp_path):
    assert oom_kill_count(tmp_path, tmp_path / "no-such-proc-cgroup") is None
    assert oom_kill_count(tmp_path / "empty", put(tmp_path / "p", V1_PROC_CGROUP)) is None
    put(tmp_path / "bad/memory/process_api/78f6/memory.oom_control", "oom_kill lots\n")
    assert oom_kill_count(tmp_path / "bad", tmp_path / "p") is None
    assert counter_file_of_dir(tmp_path / "nowhere") is None


def counter_for(proc_cgroup: str, root: Path) -> Path | None:
    """Where the kernel documents the counter of the cgroup a /proc/<pid>/cgroup text names: the v1
    memory controller's memory.oom_control, else the v2 (0::) line's memory.events."""
    lines = [ln.split(":", 2) for ln in proc_cgroup.splitlines() if ln.count(":") >= 2]
    for _, controllers, path in lines:
        if "memory" in controllers.split(","):
            return root / "memory" / path.lstrip("/") / "memory.oom_control"
    for hierarchy, _, path in lines:
        if hierarchy == "0":
            return root / path.lstrip("/") / "memory.events"
    return None


def this_machines_cgroup() -> str:
    try:
        return Path("/proc/self/cgroup").read_text()
    except OSError:
        pytest.skip("no /proc/self/cgroup here")


def test_this_machines_cgroup_layout_finds_the_counter(tmp_path):
    """This machine's own /proc/self/cgroup (v1, v2 or hybrid), over a planted counter tree."""
    text = this_machines_cgroup()
    counter = counter_for(text, tmp_path / "cg")
    assert counter is not None, text
    put(counter, V1_OOM_CONTROL.replace("oom_kill 4", "oom_kill 7") if counter.name == "memory.oom_control"
        else V2_EVENTS.replace("oom_kill 2", "oom_kill 7"))
    assert oom_kill_count(tmp_path / "cg", put(tmp_path / "proc-cgroup", text)) == 7


def test_this_machine_reads_its_own_counter():
    counter = counter_for(this_machines_cgroup(), Path("/sys/fs/cgroup"))
    try:
        expected = int(re.search(r"^oom_kill (\d+)$", counter.read_text(), re.MULTILINE)[1])
    except (AttributeError, OSError, TypeError):
        pytest.skip(f"no readable oom_kill counter at {counter}")
    assert oom_kill_count() == expected


# --- RamWatch with a fake psutil -----------------------------------------------------------------

class FakePs:
    NoSuchProcess = psutil.NoSuchProcess
    AccessDenied = psutil.AccessDenied
    ZombieProcess = psutil.ZombieProcess

    def __init__(self, total=24 * GIB, available=20 * GIB, rss=None):
        self.total, self.available = total, available
        self.rss = rss if rss is not None else {}

    def virtual_memory(self):
        return SimpleNamespace(total=self.total, available=self.available)

    def Process(self, pid):
        if pid not in self.rss:
            raise psutil.NoSuchProcess(pid)
        return SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=self.rss[pid]))


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def fake_tree(tmp_path, own_kills=0):
    """A /proc and a v1 cgroup mount: the supervisor in /sup, child pid 42 in /sup/child."""
    root, proc = tmp_path / "cg", tmp_path / "proc"
    put(proc / "self/cgroup", "4:memory:/sup\n0::/\n")
    put(proc / "42/cgroup", "4:memory:/sup/child\n0::/\n")
    put(root / "memory/sup/memory.oom_control", f"oom_kill_disable 0\nunder_oom 0\noom_kill {own_kills}\n")
    put(root / "memory/sup/child/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    return root, proc


def test_low_ram_before_the_death_is_evidence(tmp_path):
    root, proc = fake_tree(tmp_path)
    ps, clock = FakePs(rss={42: 5 * GIB, 43: GIB // 2}), Clock()
    w = RamWatch(ps=ps, clock=clock, root=root, proc=proc)
    w.start()
    for available in (12 * GIB, 4 * GIB, int(0.61 * GIB)):
        clock.t += 3
        s = w.sample([42, 43, 99])  # 99 has vanished: ignored
        ps.available = available
    assert s["tree_rss"] == 5 * GIB + GIB // 2
    clock.t += 3  # last sample (0.61 GiB available... taken 3 s before) then the death
    w.sample([42, 43])
    clock.t += 2
    ev = w.evidence()
    assert ev == "RAM 97.5 % used (0.61 GiB available) 2 s before the death; the child's tree held 5.50 GiB"
    assert classify("", -9, memory_evidence=ev).kind == HOST_OOM
    assert classify("", 137, memory_evidence=ev).kind == HOST_OOM  # a shell's view of SIGKILL


def test_fine_ram_or_old_samples_are_no_evidence(tmp_path):
    root, proc = fake_tree(tmp_path)
    ps, clock = FakePs(available=6 * GIB), Clock()
    w = RamWatch(ps=ps, clock=clock, root=root, proc=proc)
    w.start()
    for _ in range(100):  # the deque stays bounded
        clock.t += 1
        w.sample([42])
    assert len(w.samples) == 60
    assert w.evidence() is None
    assert classify("", -9, memory_evidence=w.evidence()).kind == UNKNOWN

    ps.available = 100 * MIB  # low, but 30 s before the death: too old to blame
    w.sample([42])
    clock.t += 30
    assert w.evidence() is None
    assert w.evidence(now=clock.t - 29) is not None  # ...and within the window it counts


def test_small_machine_threshold_is_512_mib(tmp_path):
    root, proc = fake_tree(tmp_path)
    ps = FakePs(total=4 * GIB, available=600 * MIB)  # 5 % of 4 GiB is 205 MiB: 512 MiB is the bar here
    w = RamWatch(ps=ps, clock=Clock(), root=root, proc=proc)
    w.start()
    w.sample([])
    assert w.evidence() is None
    ps.available = 400 * MIB  # 9.8 % available, yet under 512 MiB
    w.sample([])
    assert "0.39 GiB available" in w.evidence()


def test_oom_kill_increment_in_own_cgroup_is_evidence(tmp_path):
    root, proc = fake_tree(tmp_path, own_kills=3)
    w = RamWatch(ps=FakePs(), clock=Clock(), root=root, proc=proc)
    w.start()
    assert w.evidence() is None
    put(root / "memory/sup/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n")
    assert w.evidence() == "cgroup oom_kill 3 → 4 (the kernel's OOM killer, cgroup /sup)"


def test_oom_kill_in_the_childs_own_cgroup_is_found_through_its_pid(tmp_path):
    root, proc = fake_tree(tmp_path)
    w = RamWatch(ps=FakePs(rss={42: GIB}), clock=Clock(), root=root, proc=proc)
    w.start()
    w.sample([42])  # learns that pid 42 lives in /sup/child
    (proc / "42").joinpath("cgroup").unlink()  # dead: /proc no longer says where it was
    put(root / "memory/sup/child/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert w.evidence() == "cgroup oom_kill 0 → 1 (the kernel's OOM killer, cgroup /sup/child)"


def test_v2_events_in_a_given_cgroup_dir(tmp_path):
    d = put(tmp_path / "cg/job/memory.events", V2_EVENTS).parent
    w = RamWatch(ps=FakePs(), clock=Clock(), root=tmp_path / "cg", proc=tmp_path / "noproc", cgroups=[d])
    w.start()
    assert w.baseline == {d / "memory.events": 2}
    put(d / "memory.events", V2_EVENTS.replace("oom_kill 2", "oom_kill 5"))
    assert w.evidence() == "cgroup oom_kill 2 → 5 (the kernel's OOM killer, cgroup /job)"


# --- the real thing: the kernel kills a child that exceeds its cgroup's limit ---------------------

LIMIT = 256 * MIB
# Waits for a line on stdin, then writes 32 MiB blocks up to 1 GiB (every page touched).
HOG = """
import sys
print("ready", flush=True)
sys.stdin.readline()
blocks = []
for i in range(32):
    blocks.append(b"x" * (32 << 20))
    print("allocated", (i + 1) * 32, "MiB", flush=True)
"""
NO_CGROUP = cgroup_support()
needs_cgroup = pytest.mark.skipif(NO_CGROUP is not None, reason=f"no memory cgroup here: {NO_CGROUP}")


@pytest.fixture(autouse=True)
def no_cgroup_left_behind():
    yield
    assert leftover_cgroups() == []


def start_hog(cg):
    p = subprocess.Popen(cg.wrap([sys.executable, "-c", HOG]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    assert p.stdout.readline() == b"ready\n"
    return p


@needs_cgroup
def test_kernel_oom_kill_in_a_memory_cgroup_is_evidence():
    with memory_limited(LIMIT) as cg:
        p = start_hog(cg)
        assert cg.pids() == [p.pid]  # the wrapper exec'd: same pid, inside the cgroup
        told = RamWatch(cgroups=[cg.path])  # pointed at the child's cgroup
        found = RamWatch()  # finds the child's cgroup through its pid
        for w in (told, found):
            w.start()
            w.sample([p.pid])
        p.stdin.write(b"go\n")
        p.stdin.flush()
        out = p.stdout.read().decode()
        code = p.wait(timeout=15)
        assert code == -signal.SIGKILL
        assert cg.oom_kill() == 1
        assert "allocated 512 MiB" not in out  # killed near the limit, not after
        for w in (told, found):
            ev = w.evidence()
            assert ev.startswith("cgroup oom_kill 0 → 1 (the kernel's OOM killer, cgroup /"), ev
            assert cg.path.name in ev
        failure = classify(out, code, memory_evidence=told.evidence())
        assert failure.kind == HOST_OOM and failure.source == "signal"


@needs_cgroup
def test_sigkill_from_someone_else_is_no_memory_evidence():
    with memory_limited(LIMIT) as cg:
        p = start_hog(cg)
        w = RamWatch()
        w.start()
        w.sample([p.pid])
        os.kill(p.pid, signal.SIGKILL)
        out = p.stdout.read().decode()
        assert p.wait(timeout=5) == -signal.SIGKILL
        assert cg.oom_kill() == 0 and w.evidence() is None
        assert classify(out, -9, memory_evidence=w.evidence()).kind == UNKNOWN


@needs_cgroup
def test_confined_launch_runs_each_command_in_a_fresh_limited_cgroup(tmp_path):
    env = dict(os.environ)
    hog = [sys.executable, "-c", HOG.replace("sys.stdin.readline()", "")]
    with confined_launch(LIMIT) as launch:
        assert launch(hog, env, tmp_path / "a1.log") == -signal.SIGKILL
        assert launch([sys.executable, "-c", "print('fine')"], env, tmp_path / "a2.log") == 0
        a1, a2 = launch.attempts
        assert (a1.returncode, a1.oom_kill, a2.returncode, a2.oom_kill) == (-9, 1, 0, 0)
        assert a1.cgroup.path != a2.cgroup.path and a1.cgroup.path.exists()  # readable after the death
        assert "allocated 32 MiB" in (tmp_path / "a1.log").read_text()
        assert (tmp_path / "a2.log").read_text() == "fine\n"
    assert not a1.cgroup.path.exists() and not a2.cgroup.path.exists()


@needs_cgroup
def test_confined_launch_keeps_the_callers_launch_function(tmp_path):
    seen = []

    def inner(cmd, env, log_path):
        seen.append(cmd)
        return subprocess.call(cmd, env=env)

    with confined_launch(LIMIT, inner=inner) as launch:
        assert launch(["/bin/sh", "-c", "exit 3"], dict(os.environ), tmp_path / "x.log") == 3
    assert seen[0][:2] == ["/bin/sh", "-c"] and seen[0][-3:] == ["/bin/sh", "-c", "exit 3"]


@needs_cgroup
def test_leaving_the_block_kills_what_is_left_and_removes_the_cgroup():
    with pytest.raises(RuntimeError, match="test body failed"):
        with memory_limited(LIMIT) as cg:
            by_preexec = subprocess.Popen(["sleep", "60"], preexec_fn=cg.preexec())
            by_add = subprocess.Popen(["sleep", "60"])
            cg.add(by_add.pid)
            assert sorted(cg.pids()) == sorted([by_preexec.pid, by_add.pid])
            raise RuntimeError("test body failed")
    assert by_preexec.wait(timeout=5) == by_add.wait(timeout=5) == -signal.SIGKILL
    assert not cg.path.exists()


def test_rlimit_makes_allocation_fail_with_memory_error(tmp_path):
    """The fallback where no cgroup can be made: nothing is killed, the allocation fails."""
    with confined_launch(LIMIT, method="rlimit") as launch:
        code = launch([sys.executable, "-c", "b = bytearray(1 << 30)"], dict(os.environ), tmp_path / "r.log")
    log = (tmp_path / "r.log").read_text()
    assert code == 1 and "MemoryError" in log
    assert classify(log, code).kind == HOST_OOM
    assert rlimit_wrap(LIMIT, ["x"])[2].startswith("ulimit -v 262144 ")


def test_limits_that_could_hurt_the_machine_are_refused():
    with pytest.raises(ValueError, match="refused"):
        with memory_limited(psutil.virtual_memory().total):
            pass
    with pytest.raises(ValueError):
        confined_launch(0)
