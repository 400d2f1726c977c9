"""Stopping by PID reaches what a participant started in sessions of their own, as NVFlare jobs are."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from dose3d_fl.deploy.processes import (
    ProcessRegistry,
    free_port,
    kill_participant,
    listening_ports,
    port_is_listening,
    start_participant,
    stop_participants,
    wait_for_port,
)

# Like NVFlare: the participant listens on a port and starts a "job" process with setsid (its own session).
SUB_START = """#!/usr/bin/env bash
exec python3 -c '
import socket, subprocess, sys, time
job = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open("job.pid", "w").write(str(job.pid))
server = socket.socket(); server.bind(("127.0.0.1", {port})); server.listen()
time.sleep(600)
'
"""


def _fake_kit(folder: Path, port: int) -> Path:
    (folder / "startup").mkdir(parents=True)
    (folder / "startup" / "sub_start.sh").write_text(SUB_START.format(port=port))
    return folder


def test_stop_reaches_job_processes_in_their_own_session_and_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    participant = start_participant("server", _fake_kit(tmp_path / "kit", port))
    registry = ProcessRegistry(tmp_path / "processes.json")
    registry.add(participant)
    try:
        wait_for_port(port, participant, timeout=30)
        job_pid = int((tmp_path / "kit" / "job.pid").read_text())
        assert os.getsid(job_pid) != os.getsid(participant.pid)  # a session of its own, like NVFlare jobs
        assert listening_ports([participant.pid]) == {port: participant.pid}
    finally:
        pids = stop_participants(registry.load(), grace_seconds=5)
    assert participant.pid in pids and job_pid in pids
    assert not registry.running()
    assert not psutil.pid_exists(job_pid) or psutil.Process(job_pid).status() == psutil.STATUS_ZOMBIE
    assert not port_is_listening(port)


def test_kill_reaches_job_processes_at_once_and_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    participant = start_participant("hospital-a", _fake_kit(tmp_path / "kit", port))
    try:
        wait_for_port(port, participant, timeout=30)
        job_pid = int((tmp_path / "kit" / "job.pid").read_text())
        pids = kill_participant(participant)  # SIGKILL: a power cut, no grace period
    finally:
        stop_participants([participant], grace_seconds=5)
    assert sorted(pids) == sorted([participant.pid, job_pid])
    assert not participant.is_running() and kill_participant(participant) == []
    assert not psutil.pid_exists(job_pid) or psutil.Process(job_pid).status() == psutil.STATUS_ZOMBIE
    assert not port_is_listening(port)


def test_a_participant_that_dies_at_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    kit = tmp_path / "kit"
    (kit / "startup").mkdir(parents=True)
    (kit / "startup" / "sub_start.sh").write_text("#!/usr/bin/env bash\necho broken kit; exit 3\n")
    participant = start_participant("hospital-a", kit)
    with pytest.raises(RuntimeError, match=r"console\.log"):
        wait_for_port(free_port(), participant, timeout=30)
    time.sleep(0.1)
    assert "broken kit" in Path(participant.log).read_text()


def test_a_folder_without_a_startup_kit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="startup kit"):
        start_participant("server", tmp_path)
