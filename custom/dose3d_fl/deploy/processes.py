"""NVFlare server and client processes started from their startup kits, recorded and stopped by PID.

A participant is started with its kit's own ``startup/sub_start.sh --once`` (the script ``start.sh`` wraps in a
restart loop), which ``exec``s the NVFlare process: the PID we record is the NVFlare process itself. Each
participant gets its own session, so a Ctrl-C in the terminal that started it does not reach it. NVFlare
starts every job in further processes of their own session (``posix_spawn(..., setsid=True)``); they stay
children of the participant, so stopping walks the process tree of each recorded PID, never a name pattern.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from dose3d_fl.files import write_json_atomic

logger = logging.getLogger(__name__)

CONSOLE_LOG_NAME = "console.log"


@dataclass(frozen=True)
class ParticipantProcess:
    """One running NVFlare participant.

    Args:
        name: participant name (server or client name).
        pid: PID of the NVFlare process.
        create_time: the process's start time as psutil reports it; guards against a reused PID.
        kit: the participant's startup kit (its workspace).
        log: file that receives the process's stdout and stderr.
    """

    name: str
    pid: int
    create_time: float
    kit: str
    log: str

    def process(self) -> psutil.Process | None:
        """The live process, or None when it has exited (or its PID now belongs to another process)."""
        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except psutil.NoSuchProcess:
            return None

    def is_running(self) -> bool:
        """Whether the recorded process is still alive."""
        return self.process() is not None


def start_participant(name: str, kit: Path, env: dict[str, str] | None = None) -> ParticipantProcess:
    """Start a server or client from its startup kit as a separate process.

    Args:
        name: participant name, for logs and the process record.
        kit: the participant's kit folder (holding ``startup/`` and ``local/``).
        env: extra environment variables for the process.

    Raises:
        FileNotFoundError: the kit has no ``startup/sub_start.sh``.
    """
    kit = Path(kit).resolve()
    script = kit / "startup" / "sub_start.sh"
    if not script.is_file():
        raise FileNotFoundError(f"{script} not found: {kit} is not an NVFlare server or client startup kit")
    environment = {**os.environ, **(env or {})}
    # The kit's script runs `python3`: make it this interpreter, which has nvflare and dose3d_fl installed.
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    log = kit / CONSOLE_LOG_NAME
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["bash", str(script), "--once"],
            cwd=kit,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    create_time = psutil.Process(proc.pid).create_time()
    logger.info("started %s (pid %d) from %s, log %s", name, proc.pid, kit, log)
    return ParticipantProcess(name, proc.pid, create_time, str(kit), str(log))


def stop_participants(participants: list[ParticipantProcess], grace_seconds: float = 15.0) -> list[int]:
    """Stop participants and every process they started (jobs included): SIGTERM, then SIGKILL.

    Args:
        participants: the recorded processes.
        grace_seconds: how long processes may take to exit after SIGTERM.

    Returns:
        The PIDs that were signalled.
    """
    tree: dict[int, psutil.Process] = {}
    for participant in participants:
        proc = participant.process()
        if proc is None:
            continue
        tree[proc.pid] = proc
        # Children first recorded now: once the parent exits they are re-parented and out of reach.
        for child in _children(proc):
            tree[child.pid] = child
    procs = list(tree.values())
    for proc in procs:
        _signal(proc, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_seconds)
    for proc in alive:
        logger.warning("pid %d did not exit %.0f s after SIGTERM: killing it", proc.pid, grace_seconds)
        _signal(proc, signal.SIGKILL)
    _, alive = psutil.wait_procs(alive, timeout=10)
    if alive:
        raise RuntimeError(f"processes {[p.pid for p in alive]} survived SIGKILL; check them with `ps -p`")
    return [p.pid for p in procs]


def kill_participant(participant: ParticipantProcess, timeout: float = 10.0) -> list[int]:
    """SIGKILL a participant and every process it started (its job processes): what a power cut does.

    For fault drills; :func:`stop_participants` is the orderly stop.

    Returns:
        The PIDs killed (none when the participant is not running).

    Raises:
        RuntimeError: a process survived SIGKILL for ``timeout`` seconds.
    """
    proc = participant.process()
    if proc is None:
        return []
    procs = [proc, *_children(proc)]
    for p in procs:
        _signal(p, signal.SIGKILL)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    if alive:
        raise RuntimeError(f"processes {[p.pid for p in alive]} survived SIGKILL; check them with `ps -p`")
    return [p.pid for p in procs]


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _signal(proc: psutil.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


def listening_ports(pids: list[int]) -> dict[int, int]:
    """TCP ports in LISTEN state owned by any of ``pids``: ``{port: pid}``."""
    wanted = set(pids)
    return {
        conn.laddr.port: conn.pid
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.pid in wanted
    }


def port_is_listening(port: int) -> bool:
    """Whether any process on this host listens on TCP ``port`` (on any address)."""
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
        for conn in psutil.net_connections(kind="tcp")
    )


def free_port() -> int:
    """A TCP port that is free on the loopback interface right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, participant: ParticipantProcess, timeout: float = 60.0) -> None:
    """Wait until ``port`` accepts connections.

    Raises:
        RuntimeError: the participant exited first (its log is named).
        TimeoutError: nothing listens on the port after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not participant.is_running():
            raise RuntimeError(f"{participant.name} exited during start-up; see {participant.log}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(
        f"{participant.name} does not listen on port {port} after {timeout:.0f} s; see {participant.log}"
    )


@dataclass
class ProcessRegistry:
    """The participants a deployment started, kept in a JSON file so that another command can stop them.

    Args:
        path: the JSON file.
    """

    path: Path

    def load(self) -> list[ParticipantProcess]:
        """The recorded participants (none when the file does not exist)."""
        if not self.path.is_file():
            return []
        return [ParticipantProcess(**entry) for entry in json.loads(self.path.read_text())]

    def save(self, participants: list[ParticipantProcess]) -> None:
        """Record ``participants`` (replacing the file atomically)."""
        write_json_atomic(self.path, [asdict(p) for p in participants])

    def add(self, participant: ParticipantProcess) -> None:
        """Record one more participant."""
        self.save([*self.load(), participant])

    def running(self) -> list[ParticipantProcess]:
        """The recorded participants that are still alive."""
        return [p for p in self.load() if p.is_running()]

    def clear(self) -> None:
        """Forget every participant (after they were stopped)."""
        self.path.unlink(missing_ok=True)
