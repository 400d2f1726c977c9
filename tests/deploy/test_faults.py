"""Fault injection on a real POC (server + 2 sites as NVFlare processes on loopback), tiny data.

One POC serves every scenario, in order:

1. an uninterrupted 3-round job (the reference);
2. a 3-round job in which hospital-b's data vanish during round 1 (round 2 reports an error and goes on
   with hospital-a), then hospital-b is killed (SIGKILL, its job process included) and restarted: the job
   finishes with hospital-a and lists the rounds hospital-b missed;
3. the same job as 1, whose server is killed (SIGKILL, its job process included) after round 1 and
   restarted; `dose3d fl resume` continues it: the remaining rounds run, the restarted hospital-b takes
   part again, and the final Dice is within 0.02 of the reference.

Processes are found through the POC's PID records and stopped by PID; no port is left listening.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.deploy import admin
from dose3d_fl.deploy.poc import PROJECT_ADMIN, PocConfig, poc_down, poc_up
from dose3d_fl.deploy.processes import (
    ParticipantProcess,
    free_port,
    port_is_listening,
    start_participant,
    wait_for_port,
)
from dose3d_fl.deploy.provision import StartupKits
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig, export_seg_job
from dose3d_fl.fl.server.resilient import checkpoint_path, load_resume_checkpoint
from dose3d_fl.fl.server.resume import make_resume_job
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.trainer import SegTrainer
from tests.deploy.conftest import REPO, make_tiny_cache

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

SITES = ("hospital-a", "hospital-b")
ROUNDS = 3
JOB = SegJobConfig(
    num_rounds=ROUNDS,
    min_clients=2,
    local_epochs=2,
    tensorboard=False,
    cross_site_evaluation=False,
    min_responses=1,
    # A normal round of this job takes 4-17 s here; the first round of the module's first job (it starts the
    # sites' job processes from cold caches) took 10-40 s, the longest while other training loaded both cores.
    round_timeout=90,
    # A restarted site reports that it lacks the job; 10 s later the server stops waiting for it.
    dead_client_grace_period=10,
)
# Round 3 of the site-killed scenario waits round_timeout for the dead hospital-b: that job closes rounds
# sooner. Its first round took 10-26 s (the reference job ran before it), the longest under that load.
SITE_KILLED_JOB = replace(JOB, round_timeout=60)
JOB_TIMEOUT = 300


class Poc:
    """The running POC of this module and the helpers its scenarios share."""

    def __init__(self, config: PocConfig, kits: StartupKits, jobs: Path) -> None:
        self.config, self.kits = config, kits
        self.job = export_seg_job(jobs, JOB)
        self.site_killed_job = export_seg_job(jobs / "site_killed", SITE_KILLED_JOB)

    def session(self):
        return admin.open_session(self.kits.admins[PROJECT_ADMIN])

    def participant(self, name: str) -> ParticipantProcess:
        return next(p for p in reversed(self.config.registry.load()) if p.name == name)

    def crash(self, name: str) -> list[int]:
        """SIGKILL a participant and every process it started (its job processes): a power cut."""
        proc = self.participant(name).process()
        assert proc is not None, f"{name} is not running"
        procs = [proc, *proc.children(recursive=True)]
        for p in procs:
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        return [p.pid for p in procs]

    def restart(self, name: str) -> ParticipantProcess:
        kit = self.kits.server if name == "server" else self.kits.clients[name]
        participant = start_participant(name, kit)
        self.config.registry.add(participant)
        if name == "server":
            wait_for_port(self.kits.fed_learn_port, participant)
        return participant

    def job_log(self, job_id: str) -> Path:
        """The server's log of a running job (NVFlare removes the folder when the job ends; see ``finish``)."""
        return self.kits.server / job_id / "log.txt"

    def wait_for_line(
        self, job_id: str, pattern: str, timeout: float = 180, site: str | None = None, poll: float = 0.5
    ) -> str:
        """Wait for a line of the server's job log, or of ``site``'s, that matches ``pattern``."""
        path = self.job_log(job_id) if site is None else self.kits.clients[site] / job_id / "log.txt"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file():
                match = re.search(pattern, path.read_text())
                if match:
                    return match.group(0)
            time.sleep(poll)
        raise TimeoutError(f"job {job_id}: no line matching {pattern!r} in {path} within {timeout:.0f} s")

    def wait_for_checkpoint(self, job_id: str, next_round: int, timeout: float = 60) -> None:
        """Wait until the server's resume checkpoint is ``job_id``'s, to resume at ``next_round`` (0-based)."""
        path = checkpoint_path(self.kits.server, JOB_NAME)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.is_file():
                checkpoint = load_resume_checkpoint(path)
                if (checkpoint["job_id"], checkpoint["next_round"]) == (job_id, next_round):
                    return
            time.sleep(0.2)
        raise TimeoutError(
            f"job {job_id}: no resume checkpoint for round {next_round + 1} on within {timeout:.0f} s"
        )

    def finish(self, job_id: str, status: str = "FINISHED:COMPLETED") -> Path:
        """Wait for the job to end with ``status``; download its result workspace (``log.txt``, ...)."""
        session = self.session()
        try:
            ended = admin.wait_for_job(session, job_id, timeout=JOB_TIMEOUT)
            result = Path(session.download_job_result(job_id, str(self.config.root / "results")))
            assert ended == status, (ended, (result / "workspace" / "log.txt").read_text()[-3000:])
            return result / "workspace"
        finally:
            session.close()

    def submit(self, job_dir: Path) -> str:
        session = self.session()
        try:
            admin.wait_for_clients(session, SITES, timeout=120)
            return admin.submit_job(session, job_dir)
        finally:
            session.close()


@pytest.fixture(scope="module")
def poc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Poc]:
    tmp = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.setenv("HOME", str(tmp / "user_home"))
        # Without the server's AutoResume component: these scenarios are NVFlare's own behaviour and the resume
        # by hand (test_resume_fault.py runs them with the component).
        config = PocConfig(root=tmp / "poc", sites=SITES, port=free_port(), auto_resume=False)
        for seed, site in enumerate(SITES, 1):
            make_tiny_cache(tmp / "dicom" / site, config.cache_dir(site), seed, cases=4)
        kits = poc_up(config)
        try:
            yield Poc(config, kits, tmp / "jobs")
        finally:
            pids = [p.pid for p in config.registry.load()]
            poc_down(config)
            assert not any(
                psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
            )
            assert not port_is_listening(config.port)


def _final_dice(poc: Poc, result: Path) -> float:
    """Dice of a job's final global model on both sites' validation cases, with the sites' own trainer."""
    weights = torch.load(result / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    val = []
    for site in SITES:
        cache = poc.config.cache_dir(site)
        val += split_cases(cache, load_or_create_split(cache))[1]
    trainer = SegTrainer([], val, get_profile(JOB.profile), num_threads=1)
    trainer.set_weights(weights)
    return trainer.validate()["val_dice"]


def _participation(result: Path) -> dict:
    return json.loads((result / "participation.json").read_text())


@pytest.fixture(scope="module")
def reference(poc: Poc) -> float:
    """Final Dice of the uninterrupted job."""
    job_id = poc.submit(poc.job)
    result = poc.finish(job_id)
    assert _participation(result)["missed_rounds"] == {}
    return _final_dice(poc, result)


def test_site_data_lost_then_site_killed_job_finishes_with_the_others(poc: Poc, reference: float) -> None:
    cache = poc.config.cache_dir("hospital-b")
    moved = cache.with_name("hospital-b.moved")
    job_id = poc.submit(poc.site_killed_job)
    # The site's data vanish under the running job, while hospital-b trains round 1 from its in-memory cache
    # (its first epoch is done): round 1 completes, round 2 finds the files gone. Waiting for the server's
    # round-1 line instead raced the next round, which starts within a second of it.
    poc.wait_for_line(job_id, r"trainer - INFO - epoch 1:", site="hospital-b", poll=0.05)
    shutil.move(cache / "images", moved)
    try:
        poc.wait_for_line(job_id, rf"round 2/{ROUNDS}: hospital-b reported an error")
        poc.crash("hospital-b")  # then the site itself goes down, between rounds 2 and 3
    finally:
        shutil.move(moved, cache / "images")
    poc.restart("hospital-b")
    # Every round runs; NVFlare 2.9 then marks the job ABNORMAL because the killed site's job process never
    # reported how it ended ("terminal outcome unavailable from hospital-b").
    result = poc.finish(job_id, status="FINISHED:ABNORMAL")

    log = (result / "log.txt").read_text()
    # The site's error message is free text: its weights-only guard keeps it at the site and sends a bare
    # error code, so the reason is in the site's own log, not the server's (issue #6).
    assert f"round 2/{ROUNDS}: hospital-b reported an error, not aggregated: return code" in log
    assert "no usable training case" not in log
    site_logs = "".join(p.read_text() for p in poc.kits.clients["hospital-b"].rglob("log.txt"))
    assert re.search(r"hospital-b round 1: ValueError: .*no usable training case", site_logs)
    assert "weights-only guard refused the train result" in site_logs
    assert f"round 2/{ROUNDS}: hospital-b missed the round (it reported an error)" in log
    assert f"round 3/{ROUNDS}: hospital-b missed the round (no result when the round closed" in log
    assert "Finished FedAvg." in log
    assert torch.load(result / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    participation = _participation(result)
    assert participation["missed_rounds"] == {"hospital-b": [2, 3]}
    assert [r["aggregated"] for r in participation["rounds"]] == [list(SITES), ["hospital-a"], ["hospital-a"]]


def test_server_killed_mid_run_resume_completes_the_rounds(
    poc: Poc, reference: float, tmp_path: Path
) -> None:
    job_id = poc.submit(poc.job)
    poc.wait_for_line(job_id, rf"round 1/{ROUNDS}: 2 site\(s\)")
    # The round line is logged before the round's checkpoint is written: a crash in between resumed from the
    # previous job's checkpoint (seen once under heavy load).
    poc.wait_for_checkpoint(job_id, next_round=1)
    poc.crash("server")
    assert not port_is_listening(poc.kits.fed_learn_port)
    poc.restart("server")

    resumed_id = poc.submit(make_resume_job(poc.job, tmp_path))
    result = poc.finish(resumed_id)

    log = (result / "log.txt").read_text()
    assert re.search(rf"resuming from .*seg_fedavg\.pt: rounds 2\.\.{ROUNDS} of {ROUNDS} left", log)
    participation = _participation(result)
    assert [r["round"] for r in participation["rounds"]] == list(range(1, ROUNDS + 1))
    # The restarted hospital-b (previous test) takes part in every round again.
    assert all(r["aggregated"] == list(SITES) for r in participation["rounds"])
    dice = _final_dice(poc, result)
    assert abs(dice - reference) <= 0.02, (dice, reference)
