"""A round several times longer than the heartbeat does not get a slow site dropped (documented settings).

A site's liveness comes from heartbeats its processes send while it trains (server/README.md, "Timeouts for
3D training"), never from finishing its task: here site-2 takes 35 s for its round (3.5 times the
10 s heartbeat interval) with the job's transfer timeouts and no round timeout, and the round waits for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from nvflare.recipe import SimEnv

from dose3d_fl.fl.export import in_script_folder
from dose3d_fl.fl.seg_job import SegFedAvgRecipe, add_transfer_timeouts
from dose3d_fl.fl.server.resilient import CHECKPOINT_DIR_ENV

PROBE_DIR = Path(__file__).with_name("resilient_job")
SLOW_SECONDS = 35
HEARTBEAT_SECONDS = 10  # NVFlare 2.9's heart_beat_interval and job_heartbeat_interval


@pytest.mark.slow
def test_slow_site_is_waited_for_not_declared_dead(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "checkpoints"))
    with in_script_folder(PROBE_DIR):
        recipe = SegFedAvgRecipe(
            name="long",
            model={"class_path": "torch.nn.Linear", "args": {"in_features": 2, "out_features": 1}},
            min_clients=2,
            num_rounds=1,
            train_script="probe_client.py",
            train_args=f"--record {tmp_path / 'record.jsonl'} --slow site-2:0:{SLOW_SECONDS}",
            min_responses=2,
            round_timeout=0,
        )
        add_transfer_timeouts(recipe)
        recipe.execute(SimEnv(num_clients=2, num_threads=2, workspace_root=str(tmp_path / "sim")))

    server = tmp_path / "sim" / "long" / "server"
    (record,) = json.loads((server / "simulate_job" / "participation.json").read_text())["rounds"]
    assert record["aggregated"] == ["site-1", "site-2"]
    assert record["seconds"] >= SLOW_SECONDS > 3 * HEARTBEAT_SECONDS
    log = (server / "log.txt").read_text()
    dropped = re.findall(r".*(?:deemed disconnected|is dead|dead job|missed the round).*", log, re.IGNORECASE)
    assert not dropped, dropped
