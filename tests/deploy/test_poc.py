"""The POC through the ``dose3d poc`` commands: up, status, submit --wait, down, on loopback with tiny data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

from dose3d_fl.cli import main
from dose3d_fl.deploy.poc import PocConfig, poc_down, resolve_job
from dose3d_fl.deploy.processes import free_port, port_is_listening
from dose3d_fl.fl.policy.dp import PrivacyLedger
from dose3d_fl.fl.policy.privacy import DPConfig, write_privacy_policy
from dose3d_fl.fl.server.transfer_log import LOG_NAME
from tests.deploy.conftest import REPO, make_tiny_cache

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

SITES = ("hospital-a", "hospital-b")
# Differential privacy at both sites, from their own local/privacy.json (tiny noise: the run must still learn).
DP = DPConfig(clip_norm=5.0, noise_multiplier=1e-4, epsilon_budget=1e12)


@pytest.fixture
def poc_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A POC root with tiny caches for two sites; whatever the test starts is stopped by PID afterwards."""
    monkeypatch.chdir(REPO)  # server/project.yml, sites/local, server/local are found from the repo root
    monkeypatch.setenv("HOME", str(tmp_path / "user_home"))
    root = tmp_path / "poc"
    for seed, site in enumerate(SITES, 1):
        make_tiny_cache(tmp_path / "dicom" / site, root / "data" / "cache" / site, seed)
    yield root
    registry = PocConfig(root=root).registry
    pids = [p.pid for p in registry.load()]
    poc_down(PocConfig(root=root))
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in pids)


def _run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_poc_up_submit_down(poc_root: Path, tiny_seg_job: Path, capsys: pytest.CaptureFixture) -> None:
    root = str(poc_root)
    port = free_port()
    code, out = _run(capsys, "poc", "up", "--root", root, "--sites", "2", "--port", str(port))
    assert code == 0, out
    assert f"localhost:{port}" in out and "fl_admin.sh" in out
    for site in SITES:  # site-owned data configuration, outside the job
        kit = next((poc_root / "workspace").glob(f"*/prod_00/{site}"))
        config = json.loads((kit / "local" / "dose3d_site.json").read_text())
        assert Path(config["cache_dir"]) == (poc_root / "data" / "cache" / site).resolve()
    assert not (poc_root.parent / "user_home" / ".nvflare").exists()  # NVFlare's registry stays in the root

    code, out = _run(capsys, "poc", "status", "--root", root)
    assert code == 0 and "connected clients: hospital-a, hospital-b" in out, out
    kits = {site: next((poc_root / "workspace").glob(f"*/prod_00/{site}")) for site in SITES}
    for kit in kits.values():  # a site turns DP on in its own policy; its job process reads it at job start
        write_privacy_policy(kit / "local", dp=DP)

    code, out = _run(capsys, "poc", "submit", str(tiny_seg_job), "--wait", "--timeout", "300", "--root", root)
    assert code == 0 and "FINISHED:COMPLETED" in out, out
    assert "server: Round 0 started." in out, out  # progress streamed from the server's job log
    assert not list(tiny_seg_job.rglob(".__nvfl_*")), "the submitted job folder was signed in place"
    result = Path(out.split("result: ")[1].split()[0])
    weights = torch.load(result / "workspace" / "app_server" / "FL_global_model.pt", weights_only=False)
    assert weights["model"]
    cross = json.loads((result / "workspace" / "cross_site_val" / "cross_val_results.json").read_text())
    assert set(cross) == set(SITES)
    # Each site released its one round's update through its DP filter and recorded it in its own ledger.
    entries = [json.loads(line) for line in (result / "workspace" / LOG_NAME).read_text().splitlines()]
    assert sorted(e["site"] for e in entries) == sorted(SITES)
    dp_filter = f"GaussianDP(C={DP.clip_norm:g},sigma={DP.noise_multiplier:g})"
    assert all(e["status"] == "accepted" and dp_filter in e["filters"] for e in entries), entries
    for site, kit in kits.items():
        (release,) = PrivacyLedger(kit / "local" / "dp_ledger.json").releases
        assert release.transfer == "full" and release.clip_norm == DP.clip_norm
        epsilon = next(e["dp_epsilon"] for e in entries if e["site"] == site)
        assert epsilon == pytest.approx(PrivacyLedger(kit / "local" / "dp_ledger.json").epsilon(DP.delta))

    code, out = _run(capsys, "poc", "status", "--root", root)
    assert code == 0 and "seg_fedavg  FINISHED:COMPLETED" in out, out

    # --wait exits 0 only for FINISHED:COMPLETED: the org admin may not ship code, so this job never runs.
    code, out = _run(
        capsys,
        "poc",
        "submit",
        str(tiny_seg_job),
        "--wait",
        "--admin",
        "org-admin@dose3d.org",
        "--root",
        root,
    )
    assert code == 1 and "FINISHED:COMPLETED" not in out, out

    pids = [p.pid for p in PocConfig(root=poc_root).registry.load()]
    code, out = _run(capsys, "poc", "down", "--root", root)
    assert code == 0, out
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert not port_is_listening(port)
    assert _run(capsys, "poc", "status", "--root", root)[0] == 1


def test_poc_up_refuses_a_port_in_use(poc_root: Path, capsys: pytest.CaptureFixture) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert main(["poc", "up", "--root", str(poc_root), "--sites", "2", "--port", str(port)]) == 2
    assert "in use" in capsys.readouterr().err


def test_submit_names_the_jobs_it_knows(tmp_path: Path) -> None:
    assert resolve_job("seg_fedavg", REPO / "jobs") == (REPO / "jobs" / "seg_fedavg").resolve()
    with pytest.raises(RuntimeError, match="seg_fedavg"):
        resolve_job("no_such_job", REPO / "jobs")
