"""Run a command as a child process and measure it: wall time, exit status, and peak memory per process.

Memory is sampled with psutil every ``interval`` seconds over the child and all its descendants (the NVFlare
simulator starts the server and the sites in processes of its own); a process's peak resident set size is
reported under a short label made from its command line.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MIB = 1024 * 1024


@dataclass
class Measured:
    """What :func:`run_measured` observed.

    Attributes:
        wall_seconds: from start to exit.
        returncode: the child's exit status.
        peak_rss_mib: process role (``main``, ``site worker``, a module name) -> the largest peak resident
            memory of a process in that role (MiB).
        processes: process role -> how many processes had it.
        peak_total_rss_mib: the largest sum over all the processes at one sample.
        started_at: Unix time of the start.
        log: the file holding the child's stdout and stderr.
    """

    wall_seconds: float
    returncode: int
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)
    peak_total_rss_mib: float = 0.0
    started_at: float = 0.0
    log: Path | None = None


def process_role(process: psutil.Process, root_pid: int) -> str | None:
    """``main`` for the child itself, else what its command line says it is (the module it runs)."""
    if process.pid == root_pid:
        return "main"
    try:
        args = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    if "-m" in args[:-1]:
        module = args[args.index("-m") + 1]
        return {
            "nvflare.private.fed.app.simulator.simulator_worker": "site worker",
            "nvflare.private.fed.app.simulator.simulator": "simulator",
        }.get(module, module)
    if "-c" in args[:-1]:  # multiprocessing's resource tracker and spawn helpers
        return "helper"
    if args and args[0].startswith("ray::"):  # a Ray worker names itself after its task (Flower's clients)
        return "ray worker"
    # The script or program after the interpreter's own options (``python -u script.py``).
    script = next((a for a in args[1:] if not a.startswith("-")), None)
    return Path(script).name if script else process.name()


def run_measured(
    command: Sequence[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    interval: float = 0.25,
) -> Measured:
    """Run ``command`` to completion, its output into ``log``, sampling the process tree's memory.

    Raises:
        RuntimeError: the command exited with a non-zero status (the message names the log).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    peaks: dict[int, float] = {}
    roles: dict[int, str] = {}
    total_peak = 0.0
    started_at, start = time.time(), time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        root = psutil.Process(child.pid)
        while child.poll() is None:
            total = 0.0
            try:
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                processes = []
            for process in processes:
                try:
                    rss = process.memory_info().rss / MIB
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                role = process_role(process, child.pid)
                if role is None:
                    continue
                if roles.get(process.pid) != role:
                    # New, or exec'd since the last sample: seen between fork and exec, a process still shows
                    # its parent's command line and memory, so its figures start again under its own role.
                    roles[process.pid] = role
                    peaks.pop(process.pid, None)
                peaks[process.pid] = max(peaks.get(process.pid, 0.0), rss)
                total += rss
            total_peak = max(total_peak, total)
            time.sleep(interval)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[:4])} ... failed with exit status {child.returncode}; see {log}"
        )
    return Measured(
        wall_seconds=round(wall, 2),
        returncode=child.returncode,
        peak_rss_mib={
            role: round(max(peaks[pid] for pid in peaks if roles[pid] == role), 1)
            for role in sorted(set(roles.values()))
        },
        processes={role: sum(1 for r in roles.values() if r == role) for role in sorted(set(roles.values()))},
        peak_total_rss_mib=round(total_peak, 1),
        started_at=started_at,
        log=log,
    )
