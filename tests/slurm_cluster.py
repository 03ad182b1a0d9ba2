"""A throwaway single-node SLURM cluster on this machine, for tests/test_slurm.py.

Everything lives under one directory (configuration, state, spool, logs, a private munged socket);
nothing under /etc is written and no system service is touched. Needs root and the Debian packages
``slurm-wlm`` and ``munge`` (scripts/test.sh installs them).

The node is declared with the CPUs and memory ``slurmd -C`` reports and ``GPUS`` count-only GPUs
(``gres.conf`` maps them to /dev/null-like files, so ``--gpus=1`` is schedulable on a machine without
GPUs). Two partitions share the node: ``cpu`` (default) and ``gpu``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "munge", "unmunge")
GPU_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random")
GPUS = 1
CPU_PARTITION = "cpu"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
RUN_CONF = Path("/run/slurm/conf")  # where slurmd publishes a fetched ("configless") configuration
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
GPU_PARTITION = "gpu"


def skip_reason() -> str | None:
    """Why a local cluster cannot be started here, or None."""
    if os.geteuid() != 0:
        return "local SLURM cluster needs root (slurmd runs jobs as any user only as root)"
    missing = [tool for tool in (*DAEMONS, *CLIENTS) if not _which(tool)]
    if missing:
        return (f"SLURM/munge not installed ({', '.join(missing)} not found); "
                "as root: apt-get install slurm-wlm munge (scripts/test.sh does this)")
    if SYSTEM_CONF.exists():
        return (f"{SYSTEM_CONF} exists: this machine has its own SLURM configuration, which srun inside "
                "jobs would use instead of the test cluster's; not touching it")
    return None


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


class LocalSlurm:
    """``start()`` brings munged, slurmctld and slurmd up; ``stop()`` takes down what it started."""

    def __init__(self, root: Path, gpus: int = GPUS):
        self.root = Path(root)
        self.gpus = gpus
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.pids: dict[str, Path] = {
            "munged": self.root / "munge" / "munged.pid",
            "slurmctld": self.root / "run" / "slurmctld.pid",
            "slurmd": self.root / "run" / "slurmd.pid",
        }
        self.logs = self.root / "log"
        self.node: dict[str, str] = {}

    # -- environment for clients (sbatch, squeue, snakemake and the jobs it submits) -------------
    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
        for name in list(env):  # a test run inside a SLURM job must not leak that job into ours
            if name.startswith(("SLURM_JOB", "SLURM_STEP", "SBATCH_")):
                env.pop(name)
        return env

    def run(self, *cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env=self.env(), capture_output=True, text=True, check=check, timeout=timeout)

    # -- bring-up ---------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> None:
        for sub in ("etc", "munge", "run", "log", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.node = self._real_node()
        self._start_munged()
        self._write_config()
        env = self.env()
        subprocess.run([_which("slurmctld"), "-c", "-f", str(self.conf)], env=env, check=True,
                       capture_output=True, text=True, timeout=30)
        # slurmd fetches its configuration from slurmctld ("configless") and publishes it under
        # /run/slurm/conf, where srun inside a job finds it: the jobstep executor strips SLURM_CONF
        # from the environment of the srun it starts.
        subprocess.run([_which("slurmd"), "-c", "--conf-server", f"127.0.0.1:{self.ctld_port}"],
                       env={k: v for k, v in env.items() if k != "SLURM_CONF"}, check=True,
                       capture_output=True, text=True, timeout=30)
        self._wait_idle(timeout)

    def _real_node(self) -> dict[str, str]:
        """The node line ``slurmd -C`` prints (real CPUs, sockets, cores, memory)."""
        out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout
        line = next(l for l in out.splitlines() if l.startswith("NodeName="))
        fields = dict(item.split("=", 1) for item in line.split())
        fields["NodeName"] = self.host
        return fields

    def _start_munged(self) -> None:
        """Reuse a working munged; else start one on the default socket (slurmd fetches its
        configuration before it could know of another socket)."""
        if self._munge_works():
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            key.parent.mkdir(parents=True, exist_ok=True)
            key.write_bytes(os.urandom(1024))
            key.chmod(0o400)
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [_which("munged"), "--force", f"--pid-file={self.pids['munged']}",
             f"--seed-file={self.root / 'munge' / 'munged.seed'}", f"--log-file={self.logs / 'munged.log'}"],
            check=True, capture_output=True, text=True, timeout=30)
        for _ in range(50):
            if self._munge_works():
                return
            time.sleep(0.1)
        raise RuntimeError(f"munged does not answer on {MUNGE_SOCKET}:\n{self._tail('munged.log')}")

    @staticmethod
    def _munge_works() -> bool:
        try:
            cred = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=10)
            return cred.returncode == 0 and subprocess.run(
                [_which("unmunge")], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
        except (OSError, TypeError, subprocess.TimeoutExpired):
            return False

    def _write_config(self) -> None:
        node = self.node
        self.ctld_port = _free_port()
        node_line = " ".join(f"{k}={v}" for k, v in node.items())
        r = self.root
        self.conf.write_text(f"""\
# Throwaway single-node cluster written by tests/slurm_cluster.py
ClusterName=cesynthtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={self.ctld_port}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={self.pids['slurmctld']}
SlurmdPidFile={self.pids['slurmd']}
SlurmctldLogFile={self.logs / 'slurmctld.log'}
SlurmdLogFile={self.logs / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=3600
SchedulerParameters=sched_interval=2
SlurmctldParameters=enable_configless
GresTypes=gpu
{node_line} NodeAddr=127.0.0.1 Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName={CPU_PARTITION} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName={GPU_PARTITION} Nodes={self.host} MaxTime=INFINITE State=UP
""")
        gpu_lines = "".join(f"Name=gpu File={GPU_FILES[i]}\n" for i in range(self.gpus))
        (self.conf.parent / "gres.conf").write_text("AutoDetect=off\n" + gpu_lines)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
            state = result.stdout.strip() or result.stderr.strip()
            if result.returncode == 0 and state and all(s.rstrip("*") == "idle" for s in state.split()):
                return
            time.sleep(1)
        raise RuntimeError(f"node not idle after {timeout}s (sinfo: {state!r})\n"
                           f"slurmctld.log:\n{self._tail('slurmctld.log')}\nslurmd.log:\n{self._tail('slurmd.log')}")

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            return "\n".join((self.logs / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -- tear-down --------------------------------------------------------------------------------
    def stop(self, timeout: float = 20) -> None:
        """Cancel our jobs, scontrol shutdown, then end by pid whatever of ours is still up, munged
        last (only if this cluster started it). Pids are read first: daemons remove their pid files
        while shutting down."""
        pids = {daemon: _read_pid(path) for daemon, path in self.pids.items()}
        if self.conf.exists():
            for cmd in (("scancel", "--user", str(os.getuid())), ("scontrol", "shutdown")):
                try:
                    self.run(*cmd, check=False, timeout=15)
                except subprocess.TimeoutExpired:
                    pass
        for daemon in ("slurmctld", "slurmd", "munged"):
            pid = pids[daemon]
            if pid is None:
                continue
            if daemon == "munged" and _alive(pid):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._stopped = [pid for pid in pids.values() if pid is not None]
        try:
            if RUN_CONF.is_symlink() and str(self.root) in os.readlink(RUN_CONF):
                RUN_CONF.unlink()
        except OSError:
            pass

    def running(self) -> list[int]:
        """Pids of daemons this cluster started that are still alive (after stop(): should be none)."""
        pids = getattr(self, "_stopped", None)
        if pids is None:
            pids = [pid for path in self.pids.values() if (pid := _read_pid(path)) is not None]
        return [pid for pid in pids if _alive(pid)]
