"""ResilientFedAvg in NVFlare's simulator: a site that sleeps through a round, sites that report errors, and a
new job that resumes from the server's checkpoint.

The controller, the recipe and NVFlare are the real ones; the client is a probe script
(``resilient_job/probe_client.py``) that adds its site number to the weights it receives and records what it
received, so the test can tell whose updates each global model holds.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from nvflare.apis.impl.wf_comm_server import WFCommServer
from nvflare.app_common.workflows.fedavg import FedAvg
from nvflare.recipe import SimEnv

from dose3d_fl.fl.export import in_script_folder
from dose3d_fl.fl.seg_job import SegFedAvgRecipe
from dose3d_fl.fl.server.resilient import (
    CHECKPOINT_DIR_ENV,
    ResilientFedAvg,
    load_resume_checkpoint,
    participation_summary,
)

PROBE_DIR = Path(__file__).with_name("resilient_job")
ROUND_TIMEOUT = 20  # a normal round of the probe takes 1-12 s here (the first one starts the clients)
SLEEP = 27  # site-2 sleeps through round 2: its result arrives 6-7 s after the round closed, or later


def _run_probe_job(workspace: Path, faults: str, *, resume: bool) -> None:
    with in_script_folder(PROBE_DIR):
        recipe = SegFedAvgRecipe(
            name="probe",
            model={"class_path": "torch.nn.Linear", "args": {"in_features": 2, "out_features": 1}},
            min_clients=2,
            num_rounds=4,
            train_script="probe_client.py",
            train_args=f"--record {workspace / 'record.jsonl'} {faults}",
            min_responses=1,
            round_timeout=ROUND_TIMEOUT,
            resume=resume,
        )
        try:
            recipe.execute(SimEnv(num_clients=2, num_threads=2, workspace_root=str(workspace / "sim")))
        except RuntimeError as err:  # the simulator reports a job that stopped itself as a failure
            assert not resume, err


def _received(workspace: Path) -> list[dict]:
    return [json.loads(line) for line in (workspace / "record.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_round_closes_without_a_late_site_and_a_new_job_resumes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "checkpoints"))
    server = tmp_path / "sim" / "probe" / "server"

    # Job 1: site-2 sleeps through round 2 (0-based 1); in round 4 both sites report errors, fewer results
    # than min_responses: the job stops and the checkpoint holds the model after round 3.
    _run_probe_job(tmp_path, f"--slow site-2:1:{SLEEP} --error site-1:3,site-2:3", resume=False)
    log = (server / "log.txt").read_text()
    participation = json.loads((server / "simulate_job" / "participation.json").read_text())
    assert participation["missed_rounds"] == {"site-2": [2, 4], "site-1": [4]}
    assert [r["aggregated"] for r in participation["rounds"]] == [
        ["site-1", "site-2"],
        ["site-1"],
        ["site-1", "site-2"],
        [],
    ]
    assert "round 2/4: site-2 missed the round (no result when the round closed, after 2" in log
    assert "round 4/4: site-1 missed the round (it reported an error)" in log
    assert re.search(
        r"site-2 is back, \d+ s after round 2 closed without it .*; it takes part from round 3 on", log
    )
    assert "site-2 reported an error, not aggregated: site-2: no usable training case (probe)" in log
    assert "round 4/4: 0 of 2 site(s) sent a usable result" in log

    received = {(r["site"], r["round"]): r["received"] for r in _received(tmp_path)}
    start = received[("site-1", 0)]
    # Round 1: both sites (+1, +2, equal weights); round 2: site-1 only (site-2's late +2 discarded);
    # round 3: both again; the model after round 3 went to both sites for round 4.
    assert received[("site-1", 1)] == pytest.approx(start + 1.5)
    assert received[("site-1", 2)] == pytest.approx(start + 2.5)
    assert received[("site-2", 2)] == received[("site-1", 2)]  # the late site got the current model back
    assert received[("site-1", 3)] == pytest.approx(start + 4.0)
    checkpoint = load_resume_checkpoint(tmp_path / "checkpoints" / "probe.pt")
    assert (checkpoint["next_round"], checkpoint["num_rounds"]) == (3, 4)

    # Job 2 resumes: only round 4 runs, from the checkpoint, with the round numbers of the first job.
    os.remove(tmp_path / "record.jsonl")
    _run_probe_job(tmp_path, "", resume=True)
    resumed = _received(tmp_path)
    assert {(r["round"], r["total_rounds"]) for r in resumed} == {(3, 4)}
    assert all(r["received"] == pytest.approx(start + 4.0) for r in resumed)
    assert "resuming from" in (server / "log.txt").read_text()
    assert load_resume_checkpoint(tmp_path / "checkpoints" / "probe.pt")["next_round"] == 4


def test_participation_summary_lists_missed_rounds_per_site() -> None:
    records = [
        {"round": 1, "missed": []},
        {"round": 2, "missed": ["site-2"]},
        {"round": 3, "missed": ["site-2", "site-3"]},
    ]
    assert participation_summary(records)["missed_rounds"] == {"site-2": [2, 3], "site-3": [3]}


def test_resume_without_a_checkpoint_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="submit the job without resume"):
        load_resume_checkpoint(tmp_path / "none.pt")


def test_the_server_task_monitor_checks_at_the_workflow_period() -> None:
    """NVFlare 2.9's own FedAvg leaves WFCommServer's monitor at 0.2 s; ResilientFedAvg hands it its period.

    The first assertion fails once NVFlare passes the period on itself: the override can go then.
    """
    stock = FedAvg(num_clients=2, num_rounds=1, task_check_period=0.05)
    stock.set_communicator(WFCommServer())
    assert stock.communicator._task_check_period == 0.2

    workflow = ResilientFedAvg(num_clients=2, num_rounds=1, task_check_period=0.05)
    workflow.set_communicator(WFCommServer())
    assert workflow.communicator._task_check_period == 0.05
