"""``dose3d poc up|submit|status|down``: a whole federation on one host, as real NVFlare processes.

``up`` prepares an NVFlare POC workspace from the project's own provisioning project (``server/project.yml``
on loopback, sites renamed ``hospital-a``, ``hospital-b``, ...), synthesises and ingests data for the sites if
their caches are missing, writes each site's ``local/dose3d_site.json`` (site-owned, never in a job), starts
the server and the clients from their startup kits and records their PIDs. ``submit`` sends a job folder
through the FLARE API as the project admin, ``status`` reports processes, clients and jobs, ``down`` stops
every recorded process and what it started (jobs included) by PID. The server kit gets the ``AutoResume``
component: a job that a server restart interrupted continues by itself, and a site restarted during a job
rejoins it (docs/reliability.md).

Everything lives under one root folder (``runs/poc`` by default); nothing is written to ``~/.nvflare``:
``nvflare poc prepare`` runs with ``NVFLARE_POC_WORKSPACE=<root>/workspace`` and ``HOME=<root>/home``, so the
startup-kit registry it keeps in ``~/.nvflare/config.conf`` lands in ``<root>/home/.nvflare``.
"""

from __future__ import annotations

import json
import logging
import os
import string
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dose3d_fl.deploy import admin
from dose3d_fl.deploy.processes import (
    ParticipantProcess,
    ProcessRegistry,
    listening_ports,
    port_is_listening,
    start_participant,
    stop_participants,
    wait_for_port,
)
from dose3d_fl.deploy.provision import (
    ProvisionConfig,
    StartupKits,
    collect_kits,
    customise_project,
    install_policies,
    load_project,
    nvflare_executable,
)
from dose3d_fl.fl.server.auto_resume import install_auto_resume
from dose3d_fl.fl.shared_machine import shared_machine_configs
from dose3d_fl.fl.site.config import SITE_CONFIG_NAME
from dose3d_fl.synth.demo_sites import prepare_caches

logger = logging.getLogger(__name__)

PROJECT_ADMIN = "admin@dose3d.org"
POC_ADMINS = {
    PROJECT_ADMIN: ("dose3d", "project_admin"),
    "lead@dose3d.org": ("dose3d", "lead"),
    "org-admin@dose3d.org": ("dose3d", "org_admin"),
}
STATE_NAME = "poc.json"


class PocError(RuntimeError):
    """The POC cannot do what was asked; the message says what to do."""


def site_names(count: int) -> tuple[str, ...]:
    """``hospital-a``, ``hospital-b``, ... for ``count`` sites."""
    if not 1 <= count <= len(string.ascii_lowercase):
        raise ValueError(f"a POC has 1 to 26 sites, not {count}")
    return tuple(f"hospital-{letter}" for letter in string.ascii_lowercase[:count])


@dataclass(frozen=True)
class PocConfig:
    """Where the POC lives and what it runs.

    Args:
        root: everything goes here: ``workspace/`` (NVFlare), ``home/``, ``data/``, ``results/``, records.
        sites: client names.
        port: the server's port on localhost (FL and admin traffic share it).
        patients: synthetic patients per site (one count: every site), used only when a site's cache is
            missing; default 12, 8, 5, ...
        seed: synthetic data seed.
        project_file: the provisioning project the POC is derived from.
        site_policy_dir: the sites' policy files (authorization, privacy, resources) installed in each kit.
        server_policy_dir: the server's policy files.
        auto_resume: install the server component that resubmits a job interrupted by a server restart and
            gives a running job again to a site that restarted (``dose3d_fl.fl.server.auto_resume``).
    """

    root: Path = Path("runs/poc")
    sites: tuple[str, ...] = site_names(3)
    port: int = 8002
    patients: tuple[int, ...] | None = None
    seed: int = 0
    project_file: Path = Path("server/project.yml")
    site_policy_dir: Path = Path("sites/local")
    server_policy_dir: Path = Path("server/local")
    auto_resume: bool = True

    @property
    def workspace(self) -> Path:
        """The NVFlare POC workspace (``NVFLARE_POC_WORKSPACE``)."""
        return self.root.resolve() / "workspace"

    @property
    def registry(self) -> ProcessRegistry:
        """The record of started processes."""
        return ProcessRegistry(self.root.resolve() / "processes.json")

    def cache_dir(self, site: str) -> Path:
        """A site's ingest cache."""
        return self.root.resolve() / "data" / "cache" / site


@dataclass
class PocStatus:
    """What ``dose3d poc status`` reports.

    Args:
        processes: participant name -> (pid, alive).
        clients: clients connected to the server (empty when it cannot be reached).
        jobs: the server's jobs (``job_id``, ``name``, ``status``), newest last.
        error: why the server could not be asked, if it could not.
    """

    processes: dict[str, tuple[int, bool]] = field(default_factory=dict)
    clients: list[str] = field(default_factory=list)
    jobs: list[dict] = field(default_factory=list)
    error: str | None = None


def poc_up(config: PocConfig, on_progress: Callable[[str], None] = logger.info) -> StartupKits:
    """Prepare the POC workspace and data, and start the server and clients.

    Raises:
        PocError: a POC is already running under this root, or the port is taken.
    """
    running = config.registry.running()
    if running:
        raise PocError(
            f"a POC is already running under {config.root} (pids {[p.pid for p in running]}); "
            "run `dose3d poc down` first"
        )
    config.registry.clear()  # records of processes that are gone
    if port_is_listening(config.port):
        raise PocError(f"port {config.port} is in use: stop what listens there or pass another --port")
    on_progress(f"preparing the POC workspace in {config.workspace}")
    kits = prepare_workspace(config)
    caches = prepare_caches(
        {site: config.cache_dir(site) for site in config.sites},
        config.root.resolve() / "data" / "dicom",
        config.seed,
        config.patients,
        on_progress,
    )
    for site, site_config in shared_machine_configs(caches).items():  # the sites share this machine's cores
        site_config.save(kits.clients[site] / "local" / SITE_CONFIG_NAME)
    _save_state(config, kits)
    start_federation(config, kits, on_progress)
    return kits


def prepare_workspace(config: PocConfig) -> StartupKits:
    """``nvflare poc prepare`` of the project (on localhost, POC sites and admins), plus site policies.

    Raises:
        PocError: ``nvflare poc prepare`` failed (its output is included).
    """
    project = customise_project(
        load_project(config.project_file),
        ProvisionConfig(
            server_host="localhost", fed_learn_port=config.port, sites=config.sites, admins=POC_ADMINS
        ),
    )
    root = config.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    project_path = root / "project.yml"
    project_path.write_text(yaml.safe_dump(project, sort_keys=False))
    home = root / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "NVFLARE_POC_WORKSPACE": str(config.workspace), "HOME": str(home)}
    result = subprocess.run(
        [nvflare_executable(), "poc", "prepare", "-i", str(project_path), "--force"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    prod_dir = config.workspace / project["name"] / "prod_00"
    if result.returncode != 0 or not prod_dir.is_dir():
        raise PocError(
            f"nvflare poc prepare failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    kits = collect_kits(prod_dir, project)
    install_policies(kits, config.server_policy_dir, config.site_policy_dir)
    if config.auto_resume:
        install_auto_resume(kits.server)
    return kits


def start_federation(
    config: PocConfig, kits: StartupKits, on_progress: Callable[[str], None] = logger.info
) -> None:
    """Start the server, then the clients, record their PIDs and wait until every client is connected.

    On any failure, whatever was started is stopped again before the error propagates.
    """
    registry = config.registry
    try:
        server = start_participant("server", kits.server)
        registry.add(server)
        wait_for_port(kits.fed_learn_port, server)
        on_progress(f"server up (pid {server.pid}, port {kits.fed_learn_port})")
        for site, kit in kits.clients.items():
            client = start_participant(site, kit)
            registry.add(client)
            on_progress(f"{site} started (pid {client.pid})")
        session = admin.open_session(kits.admins[PROJECT_ADMIN])
        try:
            admin.wait_for_clients(session, kits.clients)
        finally:
            session.close()
        on_progress(f"all {len(kits.clients)} clients connected")
    except BaseException:
        poc_down(config)
        raise


def poc_submit(
    config: PocConfig,
    job_dir: Path,
    wait: bool,
    timeout: float = 0.0,
    on_status: Callable[[str, float], None] | None = None,
    admin_name: str = PROJECT_ADMIN,
    on_progress: Callable[[str], None] | None = None,
) -> admin.JobOutcome:
    """Submit a job folder as ``admin_name``; with ``wait``, wait and download into ``<root>/results``.

    Raises:
        PocError: no POC is running under this root.
    """
    kits = _load_kits(config)
    if admin_name not in kits.admins:
        raise PocError(f"no admin {admin_name!r} in this POC; choose one of {sorted(kits.admins)}")
    session = admin.open_session(kits.admins[admin_name])
    try:
        if not wait:
            return admin.JobOutcome(admin.submit_job(session, job_dir), "SUBMITTED")
        return admin.run_job(
            session, job_dir, config.root.resolve() / "results", timeout, on_status, on_progress
        )
    finally:
        session.close()


def poc_status(config: PocConfig) -> PocStatus:
    """Processes, connected clients and jobs of the POC under ``config.root``."""
    status = PocStatus(processes={p.name: (p.pid, p.is_running()) for p in config.registry.load()})
    if not any(alive for _, alive in status.processes.values()):
        status.error = "no POC process is running; start one with `dose3d poc up`"
        return status
    try:
        session = admin.open_session(_load_kits(config).admins[PROJECT_ADMIN], timeout=10.0)
    except Exception as err:
        status.error = f"the server cannot be reached: {err}"
        return status
    try:
        status.clients = admin.connected_clients(session)
        status.jobs = [
            {"job_id": j.get("job_id"), "name": j.get("job_name"), "status": j.get("status")}
            for j in session.list_jobs()
        ]
    finally:
        session.close()
    return status


def poc_down(config: PocConfig) -> list[int]:
    """Stop every recorded process and what it started, by PID; return the PIDs signalled.

    Raises:
        PocError: a stopped process still holds a listening port.
    """
    registry = config.registry
    participants: list[ParticipantProcess] = registry.load()
    pids = stop_participants(participants)
    ports = listening_ports(pids)
    if ports:
        raise PocError(f"ports {sorted(ports)} are still bound by pids {sorted(set(ports.values()))}")
    registry.clear()
    return pids


def resolve_job(job: str, jobs_dir: Path = Path("jobs")) -> Path:
    """A job folder given as a path or as a name under ``jobs_dir``.

    Raises:
        PocError: neither exists (the jobs available are listed).
    """
    for candidate in (Path(job), jobs_dir / job):
        if (candidate / "meta.json").is_file():
            return candidate.resolve()
    available = (
        sorted(p.name for p in jobs_dir.glob("*") if (p / "meta.json").is_file()) if jobs_dir.is_dir() else []
    )
    raise PocError(
        f"no job folder {job!r} (a folder with meta.json, or a name under {jobs_dir}/: {available})"
    )


def _save_state(config: PocConfig, kits: StartupKits) -> None:
    state = {"prod_dir": str(kits.prod_dir), "project_file": str(config.root.resolve() / "project.yml")}
    (config.root.resolve() / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n")


def _load_kits(config: PocConfig) -> StartupKits:
    path = config.root.resolve() / STATE_NAME
    if not path.is_file():
        raise PocError(f"no POC under {config.root} ({path} missing); run `dose3d poc up` first")
    state = json.loads(path.read_text())
    return collect_kits(Path(state["prod_dir"]), load_project(Path(state["project_file"])))
