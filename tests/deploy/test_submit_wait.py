"""``dose3d poc submit --wait --timeout``: a wait that gives up says why the job has not finished.

The job metas in ``flare_meta/`` are what a real FLARE API session returned (``Session.get_job_meta``) on a
2-site POC: a job exported with ``min_clients=3`` that the server's scheduler kept waiting, and a running
2-site job. ``test_poc_submit_gives_up_naming_the_sites`` repeats the first case end to end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dose3d_fl.cli import main
from dose3d_fl.deploy.admin import why_not_finished
from dose3d_fl.deploy.poc import PocConfig, poc_down
from dose3d_fl.deploy.processes import free_port
from dose3d_fl.fl.seg_job import SegJobConfig, export_seg_job
from tests.deploy.conftest import REPO, make_tiny_cache

METAS = Path(__file__).parent / "flare_meta"
SITES = ("hospital-a", "hospital-b")


def _meta(name: str) -> dict:
    return json.loads((METAS / name).read_text())


def test_a_job_waiting_for_sites_names_those_connected() -> None:
    meta = _meta("needs_3_sites.json")
    assert meta["schedule_history"][-1].endswith("connected sites (2) < min_sites (3)")  # the server's words
    assert why_not_finished(meta, ["hospital-b", "hospital-a"]) == (
        "the server has not started it: the job needs 3 sites, 2 are connected: hospital-a, hospital-b"
    )
    assert (
        why_not_finished(meta, [])
        == "the server has not started it: the job needs 3 sites, 0 are connected: none"
    )
    assert why_not_finished(meta, None) == (
        "the server has not started it: the job needs 3 sites, the connected sites could not be asked"
    )
    # Enough sites now: the scheduler has simply not come round to it (it retries at growing intervals).
    assert why_not_finished(meta, ["hospital-a", "hospital-b", "hospital-c"]) == (
        "the server has not started it yet (its scheduler last said: connected sites (2) < min_sites (3))"
    )


def test_a_job_for_named_sites_counts_only_those() -> None:
    meta = {
        **_meta("needs_3_sites.json"),
        "min_clients": 2,
        "deploy_map": {"app": ["server", "hospital-a", "hospital-c"]},
    }
    assert why_not_finished(meta, ["hospital-a", "hospital-b"]) == (
        "the server has not started it: the job needs 2 sites, 1 is connected: hospital-a"
    )
    meta["mandatory_clients"] = ["hospital-c"]
    assert why_not_finished(meta, ["hospital-a", "hospital-b"]) == (
        "the server has not started it: it needs hospital-c, not connected"
    )


def test_a_running_job_names_a_site_that_left() -> None:
    meta = _meta("running.json")
    assert why_not_finished(meta, ["hospital-a"], "round 3/50: 2 site(s), Dice 0.41") == (
        "it runs on hospital-a, hospital-b, and hospital-b is no longer connected (the job needs 2 sites); "
        "last progress at the server: round 3/50: 2 site(s), Dice 0.41"
    )
    assert why_not_finished(meta, ["hospital-a", "hospital-b"]) == (
        "all 2 sites it runs on are connected (hospital-a, hospital-b); it is still working"
    )


@pytest.fixture
def poc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A POC root with tiny caches for two sites; whatever the test starts is stopped by PID afterwards."""
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOME", str(tmp_path / "user_home"))
    root = tmp_path / "poc"
    for seed, site in enumerate(SITES, 1):
        make_tiny_cache(tmp_path / "dicom" / site, root / "data" / "cache" / site, seed)
    yield root
    pids = [p.pid for p in PocConfig(root=root).registry.load()]
    poc_down(PocConfig(root=root))
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)


@pytest.mark.slow
@pytest.mark.deploy
def test_poc_submit_gives_up_naming_the_sites(
    poc_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = str(poc_root)
    assert main(["poc", "up", "--root", root, "--sites", "2", "--port", str(free_port())]) == 0
    job = export_seg_job(
        tmp_path / "jobs", SegJobConfig(num_rounds=1, min_clients=3, local_epochs=1, tensorboard=False)
    )
    capsys.readouterr()
    assert main(["poc", "submit", str(job), "--wait", "--timeout", "15", "--root", root]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("dose3d: error: gave up waiting for job "), line
    assert (
        "after 15 s: it is SUBMITTED; the server has not started it: the job needs 3 sites, 2 are connected: "
        in line
    )
    assert "hospital-a, hospital-b. The job stays on the server: wait longer (--timeout) or abort it" in line
