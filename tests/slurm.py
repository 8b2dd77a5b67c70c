"""A real single-node SLURM cluster on localhost, for tests (issue 14).

    from slurm import local_slurm  # noqa: F401  (the pytest fixture: skips when SLURM can't run here)

    def test_something(local_slurm, tmp_path):
        jobid = local_slurm.sbatch("--wrap", "echo hi", "-o", str(tmp_path / "out"))
        assert local_slurm.wait_job(jobid, "COMPLETED", timeout=30) == "COMPLETED"

or, without the fixture, `with slurm_cluster(tmp_path) as c: ...` after checking `slurm_unavailable()`.

Everything is private to one cluster: its own munged (own key and socket), slurmctld and slurmd on free
ports, state and spool in a short folder under /tmp (unix socket paths must stay short), slurm.conf and the
daemons' logs under `tmp_path/slurm`. No systemd, no cgroups, no slurmdbd: the daemons run as root in the
foreground as children of the test process (and die with it: PR_SET_PDEATHSIG). Leaving the cluster cancels
every job, stops the daemons and kills whatever process still carries the cluster's mark (slurmstepd, job
scripts and anything they left behind, even a setsid'd grandchild), so no daemon or job process outlives it.
A test process killed outright takes its daemons with it (PR_SET_PDEATHSIG); its jobs and /tmp/slurm-*
folder are reaped by the next cluster's start (reap_orphans()).

The node has this machine's CPUs (`slurmd -C`) and SelectTypeParameters=CR_CPU: one 1-CPU job per CPU at a
time, the rest wait PENDING (Reason=Resources); `slurm_cluster(tmp_path, cpus=8)` declares more CPUs.
slurmctld forgets a finished job MinJobAge=60 s after its end (scontrol: "Invalid job id"); job_state() then
reads the jobcomp file (JobCompType=jobcomp/filetxt, `logdir/jobcomp.txt`; `sacct -c` reads it too).

Jobs run as root, with the environment of the `sbatch` call (`cluster.env`: os.environ without any SLURM_*/
SBATCH_* variables of an enclosing real cluster, plus SLURM_CONF and the cluster's mark).

Timing settings (see slurm_conf()): AuthInfo cred_expire=5 and sched_interval=1/bf_interval=1 let a requeued job
run again within seconds instead of ~2.5 minutes. slurmctld still checks time limits only every 30 s, so
`--signal=B:USR1@N` arrives between N and N+30 s before the limit (use --time=2 with @30 in tests).

Set RTDETR_SLURM_TESTS=0 to skip every SLURM test; RTDETR_SLURM_INSTALL=0 to keep the fixture from installing
the Debian packages (slurmctld slurmd slurm-client munge) when they are missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo", "scancel", "munged")
MARK = "RTDETR_SLURM_CLUSTER"           # set in the daemons' and the jobs' environment: the teardown's handle
INSTALL_TIMEOUT = 300                   # seconds for apt-get update + install, once per session
FINAL_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED",
})

_install_result: str | None | bool = False  # False: not tried; None: installed; str: why not


# ----------------------------------------------------------------------------------------- availability

def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def _install() -> str | None:
    """apt-get the packages once per session; None when they are there afterwards, else why not."""
    global _install_result
    if _install_result is not False:
        return _install_result
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    deadline = time.monotonic() + INSTALL_TIMEOUT
    why = None
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                 "-o", "DPkg::Lock::Timeout=60", *PACKAGES]):
        try:
            p = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            why = f"`{' '.join(cmd[:2])}` took over {INSTALL_TIMEOUT} s"
            break
        if p.returncode:
            tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["?"]
            why = f"`{' '.join(cmd[:2])}` failed ({p.returncode}): {tail[0]}"
            break
    if why is None and _missing():
        why = f"installed {' '.join(PACKAGES)} but still missing {', '.join(_missing())}"
    _install_result = why
    return why


def slurm_unavailable(install: bool | None = None) -> str | None:
    """None when a private SLURM cluster can run here, else the reason (a skip message).

    Missing packages are installed with apt-get when root, apt-get exists and `install` (default: unless
    RTDETR_SLURM_INSTALL=0) allows; that is tried at most once per session."""
    if os.environ.get("RTDETR_SLURM_TESTS", "").strip() == "0":
        return "SLURM tests switched off (RTDETR_SLURM_TESTS=0)"
    if not os.path.isdir("/proc") or os.name != "posix":
        return "SLURM tests need Linux"
    if os.geteuid() != 0:
        return "SLURM tests need root (slurmd runs the test jobs as root)"
    missing = _missing()
    if not missing:
        return None
    if install is None:
        install = os.environ.get("RTDETR_SLURM_INSTALL", "").strip() != "0"
    need = f"SLURM not installed (missing {', '.join(missing)}; apt-get install {' '.join(PACKAGES)})"
    if not install:
        return need
    if shutil.which("apt-get") is None:
        return need + ", no apt-get to install it"
    why = _install()
    return None if why is None else f"{need}: {why}"


# ----------------------------------------------------------------------------------------- helpers

def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """preexec_fn: the daemon gets SIGTERM when the test process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    os.setsid()  # and no Ctrl-C from the terminal: the context manager's exit stops it in order


def _node_line(node: str, cpus: int | None = None) -> str:
    """`slurmd -C`'s description of this machine (CPUs, sockets, RealMemory), named `node`; with `cpus`,
    that many CPUs whatever the machine has (slurm.conf then needs SlurmdParameters=config_overrides)."""
    if cpus:
        return f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} CPUs={cpus} RealMemory=1000 State=UNKNOWN"
    try:
        out = subprocess.run([_sbin("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
        line = next(ln for ln in out.splitlines() if ln.startswith("NodeName="))
        fields = [f for f in line.split() if not f.startswith(("NodeName=", "UpTime="))]
    except Exception:
        mem = 1024
        with contextlib.suppress(Exception):
            kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
            mem = kb // 1024
        fields = [f"CPUs={os.cpu_count() or 1}", f"RealMemory={mem}"]
    return f"NodeName={node} NodeAddr=127.0.0.1 NodeHostname={node} {' '.join(fields)} State=UNKNOWN"


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep:
            env[k.decode(errors="replace")] = v.decode(errors="replace")
    return env


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def cluster_processes(mark: str, conf: str = "", cluster_name: str = "") -> list[tuple[int, str]]:
    """(pid, command line) of every live process that belongs to the cluster `mark`: its environment carries
    the mark, or names the cluster's slurm.conf or cluster name (a job that rebuilt its environment
    from SLURM's variables). The calling process and its ancestors are never listed."""
    mine = _ancestors()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in mine:
            continue
        pid = int(d.name)
        env = _environ(pid)
        if (env.get(MARK) == mark or (conf and env.get("SLURM_CONF") == conf)
                or (cluster_name and env.get("SLURM_CLUSTER_NAME") == cluster_name)) and not _is_zombie(pid):
            found.append((pid, _cmdline(pid)))
    return found


def _proc_identity(pid: int) -> str:
    """`pid starttime`: names one process for good (a pid alone may be reused)."""
    try:
        return f"{pid} {Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return ""


def kill_until_gone(find, rounds: int) -> list[tuple[int, str]]:
    """SIGKILL the (pid, command) pairs `find()` lists until it lists none (0.1 s a round); returns
    those still alive after `rounds`."""
    left: list[tuple[int, str]] = []
    for _ in range(rounds):
        left = find()
        if not left:
            break
        for pid, _cmd in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    return left


def reap_orphans() -> list[str]:
    """Clean up after test processes that died without leaving their cluster (SIGKILL, a crash): their
    daemons died with them (PR_SET_PDEATHSIG), but jobs and /tmp/slurm-* stay. Kills those jobs, removes the
    folders; returns the folders. Every cluster start calls it."""
    done = []
    for base in Path("/tmp").glob("slurm-*"):
        owner = base / "owner"
        try:
            ident, conf, name = owner.read_text().split("\n")[:3]
            if _proc_identity(int(ident.split()[0])) == ident:
                continue  # a live test process's cluster
        except (OSError, ValueError):
            continue  # not ours, or being written
        kill_until_gone(lambda: cluster_processes(str(base), conf, name), rounds=20)
        shutil.rmtree(base, ignore_errors=True)
        done.append(str(base))
    return done


def parse_kv(line: str) -> dict[str, str]:
    """`Key=value Key2=value with spaces ...` (scontrol -o, the jobcomp file) as a dict."""
    parts = re.split(r"\s+(?=[A-Za-z][A-Za-z0-9_:/]*=)", line.strip())
    return dict(p.split("=", 1) for p in parts if "=" in p)


# ----------------------------------------------------------------------------------------- the cluster

class SlurmCluster:
    """A running private cluster. Attributes: env, conf (slurm.conf path), node, name, logdir, base."""

    def __init__(self, logdir: Path, cpus: int | None = None):
        self.cpus = cpus
        self.logdir = logdir
        self.logdir.mkdir(parents=True, exist_ok=True)
        # short: slurmd puts unix sockets in its spool dir (108-byte limit); munged wants o+x on its dir
        self.base = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        self.base.chmod(0o755)
        self.name = "t" + self.base.name.split("-", 1)[1].lower().replace("_", "")[:8]
        self.node = socket.gethostname().split(".")[0] or "localhost"
        self.conf = str(self.logdir / "slurm.conf")
        self.ctld_port, self.slurmd_port = _free_ports(2)
        self.munge_socket = str(self.base / "munge" / "munge.socket")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SACCT_"))}
        env.update(SLURM_CONF=self.conf, **{MARK: str(self.base)})
        self.env = env
        self._procs: dict[str, subprocess.Popen] = {}
        self._logs: list = []

    # -- configuration

    def slurm_conf(self) -> str:
        b, logs = self.base, self.logdir
        return f"""\
ClusterName={self.name}
SlurmctldHost=localhost
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may run again (default 120 s)
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd.pid
SlurmctldLogFile={logs}/slurmctld.log
SlurmdLogFile={logs}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no slurmdbd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={logs}/jobcomp.txt
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
MaxJobCount=10000
MinJobAge=60
KillWait=10
InactiveLimit=0
Waittime=0
SlurmctldTimeout=300
SlurmdTimeout=300
{"SlurmdParameters=config_overrides" if self.cpus else ""}
{_node_line(self.node, self.cpus)}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    # -- start / stop

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.logdir / f"{name}.out", "ab")
        self._logs.append(out)
        p = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             preexec_fn=_die_with_parent)
        self._procs[name] = p
        return p

    def start(self, timeout: float = 60) -> None:
        reap_orphans()
        (self.base / "owner").write_text(f"{_proc_identity(os.getpid())}\n{self.conf}\n{self.name}\n")
        for d in ("munge", "state", "spool"):
            (self.base / d).mkdir(mode=0o755 if d == "munge" else 0o700)
        Path(self.conf).write_text(self.slurm_conf())
        key = self.base / "munge" / "munge.key"
        if shutil.which("mungekey") or Path("/usr/sbin/mungekey").exists():
            subprocess.run([_sbin("mungekey"), "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
        else:
            key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        m = self.base / "munge"
        self._spawn("munged", [_sbin("munged"), "-F", "-S", self.munge_socket, f"--key-file={key}",
                               f"--log-file={self.logdir / 'munged.log'}", f"--pid-file={m / 'munged.pid'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._until(lambda: os.path.exists(self.munge_socket), 20, "munged to create its socket")
        self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-c", "-i", "-f", self.conf])
        self._until(lambda: self.run("scontrol", "ping", check=False).returncode == 0, timeout,
                    "slurmctld to answer `scontrol ping`")
        self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", self.node, "-f", self.conf])
        self._until(self._node_idle, timeout, f"node {self.node} to be idle in sinfo")

    def _node_idle(self) -> bool:
        p = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%t", check=False)
        return p.returncode == 0 and p.stdout.strip() == "idle"

    def _until(self, ok, timeout: float, what: str, interval: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for name, p in self._procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited ({p.returncode}) while waiting for {what}\n{self.log_tail()}")
            if ok():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what}\n{self.log_tail()}")
            time.sleep(interval)

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill every process left with the cluster's mark; raises when
        something survives SIGKILL."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "--quiet", f"--user={os.getuid()}", check=False, timeout=10)
                self.run("scancel", "--quiet", f"--user={os.getuid()}", check=False, timeout=10)
                # a moment for an orderly end (slurmstepd SIGTERMs the jobs); then it's SIGKILL for the rest
                deadline = time.monotonic() + 2
                while time.monotonic() < deadline and any("slurmstepd" in c for _, c in self.processes()):
                    time.sleep(0.2)
        # jobs still there (they ignore SIGTERM; KillWait is longer): SIGKILL, else slurmd takes ~7 s to stop
        self._kill_all(lambda cmd: not cmd.startswith("slurmctld"), rounds=20)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self._procs.get(name)
            if p is None:
                continue
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        survivors = self._kill_all(lambda cmd: True, rounds=50)
        for f in self._logs:
            f.close()
        shutil.rmtree(self.base, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"processes of the SLURM test cluster survived SIGKILL: {survivors}")

    def _kill_all(self, which, rounds: int) -> list[tuple[int, str]]:
        """SIGKILL the cluster's processes whose command line `which` accepts (kill_until_gone)."""
        return kill_until_gone(lambda: [(pid, cmd) for pid, cmd in self.processes() if which(cmd)], rounds)

    def processes(self) -> list[tuple[int, str]]:
        """Live processes of this cluster besides the daemons this object started (slurmstepd, jobs, leftovers
        of jobs) -- after stop(): whatever escaped the teardown (should be [])."""
        own = {p.pid for p in self._procs.values() if p.poll() is None}
        return [(pid, c) for pid, c in cluster_processes(str(self.base), self.conf, self.name) if pid not in own]

    # -- client commands

    def run(self, *args: str, check: bool = True, timeout: float = 30, input: str | None = None
            ) -> subprocess.CompletedProcess:
        """Run a client command (sbatch, scontrol, squeue, ...) against this cluster; text output."""
        p = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode:
            raise subprocess.CalledProcessError(p.returncode, args, p.stdout, p.stderr)
        return p

    def sbatch(self, *args: str, script: str | Path | None = None, cwd: str | Path | None = None) -> int:
        """Submit; returns the job id. `script`: a path, or the script's text (passed on stdin)."""
        argv = ["sbatch", "--parsable", *args]
        text = None
        if script is not None:
            if isinstance(script, Path) or (isinstance(script, str) and "\n" not in script and Path(script).exists()):
                argv.append(str(script))
            else:
                text = str(script)
        if cwd is not None:
            argv.insert(2, f"--chdir={cwd}")
        p = self.run(*argv, input=text)
        return int(p.stdout.strip().split(";")[0])

    def job(self, jobid: int | str) -> dict[str, str] | None:
        """`scontrol show job -o` as a dict; None once slurmctld has forgotten the job (MinJobAge)."""
        p = self.run("scontrol", "show", "job", "-o", str(jobid), check=False)
        if p.returncode or not p.stdout.strip():
            return None
        return parse_kv(p.stdout.splitlines()[0])

    def completions(self, jobid: int | str | None = None) -> list[dict[str, str]]:
        """The jobcomp records (one per end of a run: a requeued run shows as REQUEUED ...), oldest first."""
        path = self.logdir / "jobcomp.txt"
        if not path.exists():
            return []
        recs = [parse_kv(ln) for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return [r for r in recs if jobid is None or r.get("JobId") == str(jobid)]

    def job_state(self, jobid: int | str) -> str | None:
        """PENDING, RUNNING, COMPLETING, REQUEUED, COMPLETED, TIMEOUT, ...; from the jobcomp record once
        slurmctld has forgotten the job; None for a job it never knew."""
        info = self.job(jobid)
        if info is not None:
            return info.get("JobState")
        recs = self.completions(jobid)
        return recs[-1].get("JobState") if recs else None

    def wait_job(self, jobid: int | str, states: Iterable[str] | str = FINAL_STATES, timeout: float = 60,
                 interval: float = 0.5) -> str:
        """Poll until the job's state is one of `states` (default: any final state); returns it. A job that
        reaches a final state outside `states` raises at once (AssertionError), so does the timeout."""
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        state = None
        while True:
            state = self.job_state(jobid)
            if state in wanted:
                return state
            if state in FINAL_STATES:  # and not wanted
                raise AssertionError(f"job {jobid} ended {state}, waiting for {sorted(wanted)}\n"
                                     f"{self.job(jobid)}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"job {jobid} still {state} after {timeout} s, waiting for {sorted(wanted)}\n"
                                     f"{self.job(jobid)}\n{self.log_tail()}")
            time.sleep(interval)

    def log_tail(self, lines: int = 15) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out", "munged.out"):
            p = self.logdir / name
            if p.exists() and p.stat().st_size:
                tail = p.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {p}\n" + "\n".join(tail))
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"SlurmCluster({self.name}, conf={self.conf})"


@contextlib.contextmanager
def slurm_cluster(tmp_path: str | Path | None = None, *, cpus: int | None = None, timeout: float = 60
                  ) -> Iterator[SlurmCluster]:
    """Start a private single-node cluster (conf and logs under tmp_path/slurm), yield it, tear it down.
    The node has this machine's CPUs (one job per CPU by default), or `cpus` of them (more jobs at once).
    Check slurm_unavailable() first: this raises when SLURM is missing or the daemons do not come up."""
    logdir = Path(tmp_path) / "slurm" if tmp_path is not None else Path(tempfile.mkdtemp(prefix="slurm-logs-"))
    cluster = SlurmCluster(logdir, cpus)
    try:
        cluster.start(timeout)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def local_slurm(tmp_path) -> Iterator[SlurmCluster]:
    """A running private SLURM cluster for one test; the test is skipped (with the reason) where none can run."""
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster(tmp_path) as cluster:
        yield cluster


__all__ = ["local_slurm", "slurm_cluster", "slurm_unavailable", "SlurmCluster", "cluster_processes", "reap_orphans",
           "parse_kv", "FINAL_STATES"]
