"""AutoResume's configuration and decisions without a server (the POC drills are tests/deploy/test_resume_fault.py)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from nvflare.apis.job_def import Job

from dose3d_fl.fl.server.auto_resume import (
    COMPONENT_ID,
    COMPONENT_PATH,
    checkpoint_names,
    checkpoint_to_continue,
    install_auto_resume,
    read_records,
    record_path,
)
from dose3d_fl.fl.server.resilient import CHECKPOINT_DIR_ENV

REPO = Path(__file__).resolve().parents[3]
DEFAULT_RESOURCES = {
    "format_version": 2,
    "class_list_enforcement_mode": "enforce",
    "class_allow_list": ["nvflare."],
    "components": [{"id": "job_manager", "path": "nvflare.apis.impl.job_def_manager.SimpleJobDefManager"}],
}


def _server_kit(tmp_path: Path, resources: dict | None = None) -> Path:
    kit = tmp_path / "server"
    (kit / "local").mkdir(parents=True)
    (kit / "local" / "resources.json.default").write_text(json.dumps(DEFAULT_RESOURCES))
    if resources is not None:
        (kit / "local" / "resources.json").write_text(json.dumps(resources))
    return kit


def test_install_adds_the_component_once_and_allows_its_class(tmp_path: Path) -> None:
    kit = _server_kit(tmp_path)
    install_auto_resume(kit)
    written = install_auto_resume(kit, check_interval=0.5)  # again: replaced, not added twice

    resources = json.loads(written.read_text())
    ours = [c for c in resources["components"] if c["id"] == COMPONENT_ID]
    assert ours == [{"id": COMPONENT_ID, "path": COMPONENT_PATH, "args": {"check_interval": 0.5}}]
    assert resources["components"][0]["id"] == "job_manager"  # NVFlare's own components kept
    assert resources["class_allow_list"] == ["nvflare.", COMPONENT_PATH]
    assert json.loads((kit / "local" / "resources.json.default").read_text()) == DEFAULT_RESOURCES


def test_install_keeps_an_existing_resources_json(tmp_path: Path) -> None:
    # nvflare poc prepare writes resources.json with the job store moved into the workspace: that is kept.
    existing = {**DEFAULT_RESOURCES, "components": [{"id": "job_manager", "args": {"uri_root": "/ws/jobs"}}]}
    kit = _server_kit(tmp_path, existing)
    resources = json.loads(install_auto_resume(kit).read_text())
    assert resources["components"][0] == {"id": "job_manager", "args": {"uri_root": "/ws/jobs"}}


def test_install_refuses_a_folder_that_is_not_a_server_kit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not an NVFlare server startup kit"):
        install_auto_resume(tmp_path)


@pytest.mark.parametrize(
    ("checkpoint", "resumed_from", "expected"),
    [
        ({"job_id": "job-1", "next_round": 2}, None, "job-1"),  # finished a round: its own checkpoint
        ({"job_id": "job-0", "next_round": 2}, "job-0", "job-0"),  # a resubmission that finished no round yet
        ({"job_id": "other", "next_round": 5}, None, None),  # another job's checkpoint: start again
        ({}, None, None),  # no checkpoint: start again from round 1
    ],
)
def test_which_checkpoint_an_interrupted_job_continues(
    checkpoint: dict, resumed_from: str | None, expected: str | None
) -> None:
    assert checkpoint_to_continue("job-1", resumed_from, checkpoint) == expected


class _StoredJob(Job):
    """A job whose apps are read from a job folder, as the server's job store hands them out (zipped)."""

    def __init__(self, folder: Path) -> None:
        meta = json.loads((folder / "meta.json").read_text())
        super().__init__(
            job_id="job-1", resource_spec={}, deploy_map=meta["deploy_map"], meta=meta, min_sites=2
        )
        self.folder = folder

    def get_application(self, app_name: str, fl_ctx: object) -> bytes:
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as app:
            for path in (self.folder / app_name).rglob("*"):
                app.write(path, path.relative_to(self.folder / app_name))
        return data.getvalue()


def test_checkpoint_names_are_read_from_the_committed_jobs_server_config() -> None:
    assert checkpoint_names(_StoredJob(REPO / "jobs" / "seg_fedavg"), fl_ctx=None) == ["seg_fedavg"]
    assert checkpoint_names(_StoredJob(REPO / "jobs" / "gan_fedavg"), fl_ctx=None) == ["gan_fedavg"]


def test_records_live_beside_the_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHECKPOINT_DIR_ENV, raising=False)
    assert record_path(tmp_path) == tmp_path / "dose3d_checkpoints" / "auto_resume.jsonl"
    assert read_records(tmp_path) == []
    record_path(tmp_path).parent.mkdir()
    record_path(tmp_path).write_text('{"event": "resumed"}\n\n{"event": "rejoined"}\n')
    assert [r["event"] for r in read_records(tmp_path)] == ["resumed", "rejoined"]
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path / "elsewhere"))
    assert record_path(tmp_path) == tmp_path / "elsewhere" / "auto_resume.jsonl"
