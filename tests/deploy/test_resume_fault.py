"""Rounds that resume by themselves: kill -9 the server, or one site, during a job on a real POC.

One POC (server + 2 sites as NVFlare processes on loopback, tiny data, ``cpu-small``, the server kit with the
``AutoResume`` component that ``dose3d poc up`` installs) serves both scenarios. Nothing is submitted after a
restart: the test only kills, restarts from the kit, and watches.

1. The server and its job process are killed during round 2 of 3 and the server is restarted: the job is
   resubmitted by the server itself, continues from the round-1 checkpoint (round 2 is the one lost) and
   completes every round with both sites.
2. hospital-b (its client and its job process) is killed during round 2 of 3 and restarted: the running job is
   deployed to it again, it trains a later round (the server's round record lists it) and the job completes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dose3d_fl.deploy.poc import PocConfig, poc_down, poc_up
from dose3d_fl.deploy.processes import free_port, port_is_listening
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig, export_seg_job
from dose3d_fl.fl.server.auto_resume import read_records
from tests.deploy.conftest import REPO, make_tiny_cache
from tests.deploy.resume_drill import Drill, server_fault, site_fault

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

SITES = ("hospital-a", "hospital-b")
ROUNDS = 3
JOB = SegJobConfig(
    num_rounds=ROUNDS,
    min_clients=2,
    local_epochs=1,
    tensorboard=False,
    cross_site_evaluation=False,
    min_responses=1,
    round_timeout=90,  # above the slowest round seen here (a cold first round under load: 40 s)
    dead_client_grace_period=10,
)


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Drill]:
    tmp = tmp_path_factory.mktemp("resume_fault")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPO)
        patch.setenv("HOME", str(tmp / "user_home"))
        config = PocConfig(root=tmp / "poc", sites=SITES, port=free_port())
        for seed, site in enumerate(SITES, 1):
            make_tiny_cache(tmp / "dicom" / site, config.cache_dir(site), seed, cases=4)
        kits = poc_up(config)
        try:
            yield Drill(config, kits, SITES, JOB.profile)
        finally:
            pids = [p.pid for p in config.registry.load()]
            poc_down(config)
            assert not any(
                psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids
            )
            assert not port_is_listening(config.port)


@pytest.fixture(scope="module")
def job(drill: Drill, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_seg_job(tmp_path_factory.mktemp("jobs"), JOB)


def test_server_killed_mid_round_the_job_resumes_by_itself(drill: Drill, job: Path) -> None:
    outcome = server_fault(drill, job, JOB_NAME)

    assert outcome["interrupted_job_status"] == "FINISHED:ABANDONED"
    assert outcome["resume_job_status"] == "FINISHED:COMPLETED"
    assert outcome["round_at_kill"] == 2 and outcome["rounds_lost"] == 1  # round 2 was under way
    log = (outcome["result"] / "log.txt").read_text()
    assert re.search(rf"resuming from .*{JOB_NAME}\.pt: rounds 2\.\.{ROUNDS} of {ROUNDS} left", log)
    rounds = outcome["participation"]["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))  # round numbers kept, none skipped
    assert all(r["aggregated"] == list(SITES) for r in rounds)
    assert math.isfinite(outcome["final_dice"]) and outcome["final_dice"] > 0
    (record,) = [r for r in read_records(drill.kits.server) if r["event"] == "resumed"]
    assert record["interrupted_job"] == outcome["interrupted_job"]
    assert record["checkpoint_of"] == outcome["interrupted_job"] and record["next_round"] == 2
    server_log = (drill.kits.server / "log.txt").read_text()
    assert f"resubmitted as job {outcome['resume_job']}" in server_log


def test_site_killed_mid_round_rejoins_the_running_job(drill: Drill, job: Path) -> None:
    outcome = site_fault(drill, job, JOB_NAME, "hospital-b")

    # NVFlare 2.9 alone ended such a job FINISHED:ABNORMAL with the site missing every later round.
    assert outcome["job_status"] == "FINISHED:COMPLETED"
    assert outcome["rounds_lost"] == 0
    assert outcome["first_round_with_site_after_restart"] >= outcome["round_at_kill"] == 2
    rounds = outcome["participation"]["rounds"]
    assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
    assert "hospital-b" in rounds[-1]["aggregated"]  # the restarted site trains the last round
    assert outcome["rejoin_record"]["job_id"] == outcome["job"]
    assert any(
        line.startswith(f"round {ROUNDS}/{ROUNDS}: 2 site(s)") for line in outcome["server_round_lines"]
    )
    assert "hospital-b (registered anew) during job" in (drill.kits.server / "log.txt").read_text()
