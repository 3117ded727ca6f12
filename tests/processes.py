"""Real servers for tests: Dask schedulers and workers started with the `dask` command, and
an S3-compatible server (moto), all on 127.0.0.1 and stopped when the test ends."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Gave up waiting for {what} after {timeout:.0f} s.")
        time.sleep(0.02)


def scheduler_address(scheduler_file: Path) -> str | None:
    """The address a scheduler file gives, or None until it is there and whole: the
    scheduler writes it in place, so it can be read empty or half-written."""
    try:
        return str(json.loads(scheduler_file.read_text())["address"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return None


class Processes:
    """Starts processes in their own sessions and kills each whole group at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(
            list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            # The recipes' scripts find `dask` on PATH, as a user's activated venv gives it.
            # and the repository on PYTHONPATH lets workers import the tests' own functions.
            env={
                **os.environ,
                "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(REPO), os.environ.get("PYTHONPATH")])
                ),
                **(env or {}),
            },
        )
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        """SIGKILL a process and everything it started (a nanny and its worker)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.kill(proc)


RECIPES = Path(__file__).resolve().parent.parent / "cluster" / "local"


def start_dask_cluster(
    procs: Processes, n_workers: int, *, tls_dir: Path | None = None
) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and ``n_workers`` one-thread workers, started by the recipe's scripts
    in cluster/local (which run `dask scheduler` and `dask worker`), bound to 127.0.0.1."""
    scheduler_file = procs.logs / "scheduler.json"
    common = {"HOST": "127.0.0.1", **({"TLS_DIR": str(tls_dir)} if tls_dir else {})}
    procs.start(
        "scheduler",
        str(RECIPES / "start-scheduler.sh"),
        env={
            **common,
            "PORT": "0",
            "DASHBOARD": "127.0.0.1:0",
            "SCHEDULER_FILE": str(scheduler_file),
        },
    )
    wait_for(lambda: scheduler_address(scheduler_file) is not None, "the scheduler file")
    address = scheduler_address(scheduler_file)
    workers = [
        procs.start(
            f"worker-{i}",
            str(RECIPES / "start-workers.sh"),
            address,
            env={**common, "NWORKERS": "1", "NAME": f"worker-{i}"},
        )
        for i in range(n_workers)
    ]
    return address, workers


def n_workers_connected(address: str, tls_dir: Path | None = None) -> int:
    from distributed import Client
    from distributed.security import Security

    security = (
        Security(
            tls_ca_file=str(tls_dir / "ca.pem"),
            tls_client_cert=str(tls_dir / "client.pem"),
            tls_client_key=str(tls_dir / "client.key"),
            require_encryption=True,
        )
        if tls_dir
        else None
    )
    with Client(address, security=security, timeout=20) as client:
        return len(client.scheduler_info()["workers"])


def start_s3_server(procs: Processes) -> str:
    """moto's S3-compatible server on loopback; returns its endpoint URL."""
    port = free_port()
    procs.start("moto", str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port))
    endpoint = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            return True
        except OSError:
            return False

    wait_for(up, "the S3 server")
    return endpoint


class Outage:
    """A TCP relay on loopback in front of a server, which can be cut: while it is, every
    connection is refused and those open are dropped, as when a network goes down."""

    def __init__(self, target_port: int) -> None:
        import threading

        self.target = target_port
        self.port = free_port()
        self.received = 0  # bytes the server sent through the relay
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def cut(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            for each in self._sockets:
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()
            self._sockets.clear()

    def restore(self) -> None:
        import threading

        listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b, a is server),
                                 daemon=True).start()  # fmt: skip

    def _pipe(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if count:
                    with self._lock:
                        self.received += len(data)
        except OSError:
            pass
        finally:
            for each in (source, sink):
                with contextlib.suppress(OSError):
                    each.close()


SLURM_DAEMONS = ("munged", "slurmctld", "slurmd")
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo")


def slurm_missing() -> str | None:
    """Why this host cannot run SLURM's daemons for a test, or None when it can."""
    missing = [name for name in (*SLURM_DAEMONS, *SLURM_COMMANDS) if not _which(name)]
    if missing:
        return f"needs Debian's slurm-wlm and munge packages (missing: {', '.join(missing)})"
    if os.geteuid() != 0:
        return "slurmd runs jobs as root here: run the SLURM tests as root (as CI does)"
    return None


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


SLURM_CONF = """\
ClusterName=melpipe-tests
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={home}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/spool
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/log/slurmctld.log
SlurmdLogFile={home}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=tests Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def start_slurm(procs: Processes, home: Path) -> dict[str, str]:
    """munged, slurmctld and slurmd started directly (there is no systemd here), one node
    that is this host, on free ports; returns the environment that points SLURM's
    commands at it (``SLURM_CONF``).

    ``home`` must be a folder every user can enter (munged refuses a socket below a
    folder without execute permission for all), so not pytest's private temporary folder.
    """
    import psutil

    for sub in ("munge", "state", "spool", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    for folder in (home, home / "munge"):
        folder.chmod(0o755)
    key = home / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    host = socket.gethostname().split(".")[0]
    conf = home / "slurm.conf"
    conf.write_text(SLURM_CONF.format(
        host=host, home=home, ctld_port=free_port(), slurmd_port=free_port(),
        cpus=os.cpu_count() or 1,
        memory_mb=int(psutil.virtual_memory().total / 2**20 * 0.9),
    ))  # fmt: skip
    env = {"SLURM_CONF": str(conf), "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin"}
    munge = home / "munge"
    procs.start("munged", "munged", "--foreground", f"--socket={munge}/munge.socket",
                f"--key-file={key}", f"--pid-file={munge}/munged.pid",
                f"--seed-file={munge}/munged.seed", f"--log-file={home}/log/munged.log",
                env=env)  # fmt: skip
    wait_for((munge / "munge.socket").exists, "munged's socket", timeout=30)
    procs.start("slurmctld", "slurmctld", "-D", "-i", env=env)
    procs.start("slurmd", "slurmd", "-D", env=env)
    wait_for(lambda: _node_idle(env), "the SLURM node to be idle", timeout=60)
    return env


def _node_idle(env: dict[str, str]) -> bool:
    state = subprocess.run(["sinfo", "--noheader", "--format=%t"], env={**os.environ, **env},
                           capture_output=True, text=True)  # fmt: skip
    return state.returncode == 0 and state.stdout.strip() == "idle"


def slurm_jobs(env: dict[str, str]) -> list[tuple[str, str]]:
    """The (job id, state) of every job SLURM holds."""
    listed = subprocess.run(["squeue", "--noheader", "--format=%i %T"], check=True,
                            env={**os.environ, **env}, capture_output=True, text=True)  # fmt: skip
    return [tuple(line.split()) for line in listed.stdout.splitlines()]  # type: ignore[misc]


def scheduler_address_in(path: Path) -> str | None:
    """The address in a file that dask-jobqueue's recipe writes, once it is whole."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return text.strip() if text.endswith("\n") else None
