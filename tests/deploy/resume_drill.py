"""Fault drills on a real POC: kill -9 the server or one site during a job, restart it, measure the recovery.

Nothing is submitted after the restart: the server's ``AutoResume`` component resubmits an interrupted job and
gives a running job again to a restarted site (``dose3d_fl.fl.server.auto_resume``). Shared by
``tests/deploy/test_resume_fault.py`` (which asserts) and ``benchmarks/resume_fault.py`` (which records).
Processes are found through the POC's PID records, killed and stopped by PID.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.deploy import admin
from dose3d_fl.deploy.poc import PROJECT_ADMIN, PocConfig
from dose3d_fl.deploy.processes import ParticipantProcess, kill_participant, start_participant, wait_for_port
from dose3d_fl.deploy.provision import StartupKits
from dose3d_fl.fl.server.auto_resume import read_records
from dose3d_fl.fl.server.resilient import PARTICIPATION_FILE, checkpoint_path, load_resume_checkpoint
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.trainer import SegTrainer

T = TypeVar("T")
JOB_TIMEOUT = 300.0


@dataclass
class Drill:
    """A running POC and what a fault drill does to it.

    Args:
        config: the POC's configuration (its root holds the PID records).
        kits: its startup kits.
        sites: the sites the jobs run at.
        profile: the jobs' segmentation profile (to score the final model).
    """

    config: PocConfig
    kits: StartupKits
    sites: tuple[str, ...]
    profile: str

    def session(self):
        return admin.open_session(self.kits.admins[PROJECT_ADMIN])

    def submit(self, job_dir: Path) -> str:
        """Submit a job once every site is connected; returns its id."""
        session = self.session()
        try:
            admin.wait_for_clients(session, self.sites, timeout=120)
            return admin.submit_job(session, job_dir)
        finally:
            session.close()

    def participant(self, name: str) -> ParticipantProcess:
        return next(p for p in reversed(self.config.registry.load()) if p.name == name)

    def crash(self, name: str) -> list[int]:
        """SIGKILL a participant and its job processes; returns the PIDs killed."""
        pids = kill_participant(self.participant(name))
        assert pids, f"{name} was not running"
        return pids

    def restart(self, name: str) -> ParticipantProcess:
        """Start a participant again from its kit, as its ``start.sh`` loop would."""
        kit = self.kits.server if name == "server" else self.kits.clients[name]
        participant = start_participant(name, kit)
        self.config.registry.add(participant)
        if name == "server":
            wait_for_port(self.kits.fed_learn_port, participant)
        return participant

    def run_dir(self, job_id: str) -> Path:
        """The server's folder of a running job (NVFlare removes it when the job ends normally)."""
        return self.kits.server / job_id

    def wait_for_line(self, job_id: str, pattern: str, timeout: float = 180) -> str:
        """Wait for a line of the server's log of a running job that matches ``pattern``."""
        path = self.run_dir(job_id) / "log.txt"

        def found() -> str | None:
            match = re.search(pattern, path.read_text()) if path.is_file() else None
            return match.group(0) if match else None

        return wait_for(found, timeout, f"job {job_id}: a line matching {pattern!r} in {path}")

    def wait_for_checkpoint(self, job_id: str, name: str, next_round: int, timeout: float = 180) -> None:
        """Wait until the server's checkpoint ``name`` is ``job_id``'s, to resume at ``next_round`` (0-based)."""
        path = checkpoint_path(self.kits.server, name)

        def written() -> bool | None:
            if not path.is_file():
                return None
            checkpoint = load_resume_checkpoint(path)
            return (checkpoint["job_id"], checkpoint["next_round"]) == (job_id, next_round) or None

        wait_for(written, timeout, f"job {job_id}: checkpoint {path} for round {next_round + 1}")

    def wait_for_record(self, event: str, after: int, timeout: float = 180) -> dict[str, Any]:
        """Wait for an ``AutoResume`` record of ``event`` beyond the first ``after`` records."""

        def recorded() -> dict[str, Any] | None:
            return next((r for r in read_records(self.kits.server)[after:] if r["event"] == event), None)

        return wait_for(
            recorded, timeout, f"an AutoResume record {event!r}; have {read_records(self.kits.server)}"
        )

    def wait_for_round(self, job_id: str, check: Callable[[dict], bool], timeout: float = 180) -> dict:
        """Wait for a round record of a running job (its ``participation.json``) that passes ``check``."""
        path = self.run_dir(job_id) / PARTICIPATION_FILE

        def done() -> dict | None:
            try:
                rounds = json.loads(path.read_text())["rounds"]
            except (OSError, ValueError, KeyError):
                return None
            return next((r for r in rounds if check(r)), None)

        return wait_for(done, timeout, f"job {job_id}: a round in {path} that passes the check")

    def finish(self, job_id: str) -> tuple[str, Path]:
        """Wait for a job to end; download it; returns its status and its result workspace."""
        session = self.session()
        try:
            status = admin.wait_for_job(session, job_id, timeout=JOB_TIMEOUT)
            result = Path(session.download_job_result(job_id, str(self.config.root / "results")))
            return status, result / "workspace"
        finally:
            session.close()

    def job_status(self, job_id: str) -> str:
        session = self.session()
        try:
            return session.get_job_meta(job_id).get("status", "")
        finally:
            session.close()

    def final_dice(self, result: Path) -> float:
        """Dice of a job's final global model on every site's validation cases, with the sites' own trainer."""
        weights = torch.load(result / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
        val = []
        for site in self.sites:
            cache = self.config.cache_dir(site)
            val += split_cases(cache, load_or_create_split(cache))[1]
        trainer = SegTrainer([], val, get_profile(self.profile), num_threads=1)
        trainer.set_weights(weights)
        return float(trainer.validate()["val_dice"])


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, poll: float = 0.2) -> T:
    """Call ``probe`` until it returns something other than None; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None:
            return value
        time.sleep(poll)
    raise TimeoutError(f"no {what} within {timeout:.0f} s")


def rounds_started(server_log: str) -> int:
    """How many rounds a job's server log says were started (FedAvg logs ``Round <0-based> started.``)."""
    started = [int(n) for n in re.findall(r"Round (\d+) started\.", server_log)]
    return max(started) + 1 if started else 0


def server_fault(drill: Drill, job_dir: Path, job_name: str) -> dict[str, Any]:
    """Kill -9 the server (and its job process) during round 2 of a job, restart it, let the job finish.

    Returns:
        What happened, for the tests and the result file (see ``benchmarks/resume_fault.py``).
    """
    job_id = drill.submit(job_dir)
    drill.wait_for_checkpoint(job_id, job_name, next_round=1)  # round 1 aggregated and checkpointed
    drill.wait_for_line(job_id, r"Round 1 started\.")  # round 2 (0-based 1) is under way
    killed = drill.crash("server")
    interrupted_log = (drill.run_dir(job_id) / "log.txt").read_text()  # the killed job's folder stays
    before = len(read_records(drill.kits.server))
    restarted = time.monotonic()
    drill.restart("server")
    record = drill.wait_for_record("resumed", before)
    resubmitted = time.monotonic()
    resumed_id = record["resume_job"]
    first = drill.wait_for_round(
        resumed_id, lambda r: r["round"] == record["next_round"], timeout=JOB_TIMEOUT
    )
    first_round_done = time.monotonic()
    status, result = drill.finish(resumed_id)
    participation = json.loads((result / PARTICIPATION_FILE).read_text())
    completed = record["next_round"] - 1
    return {
        "fault": "server killed (SIGKILL, its job process too) during a round, restarted from its kit",
        "killed_pids": len(killed),
        "interrupted_job": job_id,
        "interrupted_job_status": drill.job_status(job_id),
        "resume_job": resumed_id,
        "resume_job_status": status,
        "rounds_planned": int(record["num_rounds"]),
        "rounds_completed_before_kill": completed,
        "round_at_kill": rounds_started(interrupted_log),
        "rounds_lost": rounds_started(interrupted_log) - completed,
        "seconds_restart_to_resubmitted": round(resubmitted - restarted, 1),
        "seconds_restart_to_first_round_done": round(first_round_done - restarted, 1),
        "first_round_after_restart": first,
        "server_round_lines": round_lines((result / "log.txt").read_text()),
        "participation": participation,
        "final_dice": drill.final_dice(result),
        "result": result,
    }


def site_fault(drill: Drill, job_dir: Path, job_name: str, site: str) -> dict[str, Any]:
    """Kill -9 one site (its client and job process) during round 2 of a job, restart it, let the job finish.

    Returns:
        What happened, for the tests and the result file.
    """
    job_id = drill.submit(job_dir)
    drill.wait_for_checkpoint(job_id, job_name, next_round=1)
    drill.wait_for_line(job_id, r"Round 1 started\.")
    killed = drill.crash(site)
    round_at_kill = rounds_started((drill.run_dir(job_id) / "log.txt").read_text())
    before = len(read_records(drill.kits.server))
    restarted = time.monotonic()
    drill.restart(site)
    record = drill.wait_for_record("rejoined", before)
    rejoined = time.monotonic()
    back = drill.wait_for_round(
        job_id, lambda r: r["round"] >= round_at_kill and site in r["aggregated"], timeout=JOB_TIMEOUT
    )
    back_at = time.monotonic()
    status, result = drill.finish(job_id)
    participation = json.loads((result / PARTICIPATION_FILE).read_text())
    planned = int(load_resume_checkpoint(checkpoint_path(drill.kits.server, job_name))["num_rounds"])
    return {
        "fault": f"{site} killed (SIGKILL, its job process too) during a round, restarted from its kit",
        "killed_pids": len(killed),
        "job": job_id,
        "job_status": status,
        "rounds_planned": planned,
        "round_at_kill": round_at_kill,
        "rounds_lost": planned - len(participation["rounds"]),
        "rounds_missed_by_site": participation["missed_rounds"].get(site, []),
        "first_round_with_site_after_restart": back["round"],
        "seconds_restart_to_rejoined": round(rejoined - restarted, 1),
        "seconds_restart_to_first_round_with_site": round(back_at - restarted, 1),
        "rejoin_record": record,
        "server_round_lines": round_lines((result / "log.txt").read_text()),
        "participation": participation,
        "final_dice": drill.final_dice(result),
        "result": result,
    }


def round_lines(server_log: str) -> list[str]:
    """The dose3d round summaries of a job's server log (``round k/N: n site(s), ...``)."""
    return re.findall(r"round \d+/\d+: \d+ site\(s\)[^\n]*", server_log)
