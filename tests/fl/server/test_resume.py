"""`dose3d fl resume`: the committed job, with its controller set to continue from the server's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.cli import main
from dose3d_fl.fl.seg_job import JOB_NAME
from dose3d_fl.fl.server.resume import SERVER_CONFIG, make_resume_job

COMMITTED = Path(__file__).resolve().parents[3] / "jobs" / JOB_NAME


def test_resume_job_is_the_job_with_resume_set(tmp_path: Path) -> None:
    assert main(["fl", "resume", "--job", str(COMMITTED), "--out", str(tmp_path)]) == 0
    resumed = tmp_path / JOB_NAME
    original = json.loads((COMMITTED / SERVER_CONFIG).read_text())
    changed = json.loads((resumed / SERVER_CONFIG).read_text())
    (controller,) = [w for w in changed["workflows"] if w["id"] == "controller"]
    assert controller["args"].pop("resume") is True
    assert changed == original
    assert (resumed / "meta.json").read_bytes() == (COMMITTED / "meta.json").read_bytes()


def test_a_job_without_the_resilient_controller_is_refused(tmp_path: Path) -> None:
    job = tmp_path / "plain"
    (job / SERVER_CONFIG).parent.mkdir(parents=True)
    (job / SERVER_CONFIG).write_text(json.dumps({"workflows": [{"id": "controller", "args": {}}]}))
    with pytest.raises(ValueError, match="ResilientFedAvg"):
        make_resume_job(job, tmp_path / "out")
