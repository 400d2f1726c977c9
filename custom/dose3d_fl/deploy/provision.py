"""Startup kits for a real federation: ``server/project.yml`` through ``nvflare provision``, plus site policy.

``nvflare provision`` writes one kit per participant under ``<workspace>/<project>/prod_NN``. What NVFlare
ships in a kit's ``local/`` are ``*.default`` examples; this project's policies (who may ship code, which
result filters a site enforces, its resources) come from ``server/local`` and ``sites/local`` and are
installed into the kits here, so every kit starts with them. A site's data configuration
(``local/dose3d_site.json``) is not installed: the site writes it itself (sites/DEPLOY.md).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

SERVER_POLICY_FILES = ("authorization.json",)
SITE_POLICY_FILES = ("authorization.json", "privacy.json", "resources.json")


@dataclass(frozen=True)
class ProvisionConfig:
    """What to provision and where.

    Args:
        project_file: the provisioning project (``server/project.yml``).
        workspace: where ``nvflare provision`` writes (``<workspace>/<project>/prod_NN``; the root CA and
            its key stay in ``<workspace>/<project>/state``, so provisioning again reuses the CA).
        server_policy_dir: files copied into the server kit's ``local/`` (``server/local``).
        site_policy_dir: files copied into every client kit's ``local/`` (``sites/local``).
        server_host: the host clients and admins connect to, instead of the server's name (e.g.
            ``localhost`` for a loopback test; the server certificate keeps the project's server name).
        fed_learn_port: overrides the project's port (admin traffic shares it).
        sites: replaces the project's client sites by these names (org: see :func:`site_org`).
        admins: replaces the project's admins: ``{email: (org, role)}``.
    """

    project_file: Path = Path("server/project.yml")
    workspace: Path = Path("runs/provision")
    server_policy_dir: Path | None = Path("server/local")
    site_policy_dir: Path | None = Path("sites/local")
    server_host: str | None = None
    fed_learn_port: int | None = None
    sites: tuple[str, ...] | None = None
    admins: dict[str, tuple[str, str]] | None = None


@dataclass
class StartupKits:
    """The kits one provisioning run produced.

    Args:
        project: the project name.
        prod_dir: the folder holding every kit.
        server: the server's kit.
        clients: client name -> kit.
        admins: admin email -> kit.
        fed_learn_port: the port clients and admins connect to.
    """

    project: str
    prod_dir: Path
    server: Path
    fed_learn_port: int
    clients: dict[str, Path] = field(default_factory=dict)
    admins: dict[str, Path] = field(default_factory=dict)


def load_project(path: Path) -> dict:
    """Read a provisioning project file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file has no server or no participants.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no provisioning project at {path}: run from the repository root (server/project.yml) or pass -p"
        )
    project = yaml.safe_load(Path(path).read_text())
    if not isinstance(project, dict) or not project.get("participants"):
        raise ValueError(f"{path}: not an NVFlare project file (no participants)")
    if not any(p.get("type") == "server" for p in project["participants"]):
        raise ValueError(f"{path}: the project has no participant of type server")
    return project


def customise_project(project: dict, config: ProvisionConfig) -> dict:
    """A copy of ``project`` with the host, port, sites and admins that ``config`` overrides."""
    participants = [dict(p) for p in project["participants"]]
    server = next(p for p in participants if p["type"] == "server")
    if config.server_host:
        server["default_host"] = config.server_host
    if config.fed_learn_port:
        server["fed_learn_port"] = config.fed_learn_port
        server.pop("admin_port", None)
    if config.sites is not None:
        participants = [p for p in participants if p["type"] != "client"]
        participants += [{"name": s, "type": "client", "org": site_org(s)} for s in config.sites]
    if config.admins is not None:
        participants = [p for p in participants if p["type"] != "admin"]
        participants += [
            {"name": email, "type": "admin", "org": org, "role": role}
            for email, (org, role) in config.admins.items()
        ]
    return {**project, "participants": participants}


def site_org(site: str) -> str:
    """The organisation name of a site: its name with the characters NVFlare refuses in an org replaced."""
    return re.sub(r"[^A-Za-z0-9_]", "_", site)


def provision(config: ProvisionConfig) -> StartupKits:
    """Provision the project and install this project's policies into the kits.

    Returns:
        The kits of the new ``prod_NN`` folder.

    Raises:
        RuntimeError: ``nvflare provision`` failed (its output is included).
    """
    project = customise_project(load_project(config.project_file), config)
    workspace = Path(config.workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    project_path = workspace / "project.yml"
    project_path.write_text(yaml.safe_dump(project, sort_keys=False))
    before = set(_prod_dirs(workspace, project["name"]))
    result = subprocess.run(
        [nvflare_executable(), "provision", "-p", str(project_path), "-w", str(workspace)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    new = sorted(set(_prod_dirs(workspace, project["name"])) - before)
    if result.returncode != 0 or not new:
        raise RuntimeError(
            f"nvflare provision -p {project_path} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
        )
    kits = collect_kits(new[-1], project)
    install_policies(kits, config.server_policy_dir, config.site_policy_dir)
    from dose3d_fl.fl.server.auto_resume import install_auto_resume  # imports nvflare: only when provisioning

    install_auto_resume(kits.server)  # a job continues after a server restart; restarted sites rejoin it
    logger.info("provisioned %s into %s", project["name"], kits.prod_dir)
    return kits


def collect_kits(prod_dir: Path, project: dict) -> StartupKits:
    """Find each participant's kit in a ``prod_NN`` folder written for ``project``."""
    server = next(p for p in project["participants"] if p["type"] == "server")
    kits = StartupKits(
        project=project["name"],
        prod_dir=prod_dir,
        server=prod_dir / server["name"],
        fed_learn_port=int(server.get("fed_learn_port", 8002)),
    )
    for participant in project["participants"]:
        if participant["type"] == "client":
            kits.clients[participant["name"]] = prod_dir / participant["name"]
        elif participant["type"] == "admin":
            kits.admins[participant["name"]] = prod_dir / participant["name"]
    missing = [p for p in [kits.server, *kits.clients.values(), *kits.admins.values()] if not p.is_dir()]
    if missing:
        raise RuntimeError(f"provisioning wrote no kit for {[p.name for p in missing]} in {prod_dir}")
    return kits


def install_policies(kits: StartupKits, server_policy_dir: Path | None, site_policy_dir: Path | None) -> None:
    """Copy the server's and the sites' policy files into the kits' ``local/`` folders.

    Raises:
        FileNotFoundError: a policy folder lacks one of the expected files.
    """
    if server_policy_dir is not None:
        _copy_files(Path(server_policy_dir), SERVER_POLICY_FILES, kits.server / "local")
    if site_policy_dir is not None:
        for kit in kits.clients.values():
            _copy_files(Path(site_policy_dir), SITE_POLICY_FILES, kit / "local")


def _copy_files(source: Path, names: tuple[str, ...], target: Path) -> None:
    missing = [n for n in names if not (source / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {missing}: run from the repository root or pass the folder")
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(source / name, target / name)


def _prod_dirs(workspace: Path, project_name: str) -> list[Path]:
    return sorted((workspace / project_name).glob("prod_*"))


def nvflare_executable() -> str:
    """The ``nvflare`` command of this environment."""
    # The `nvflare` script installed next to this interpreter (a venv's bin/), else the one on PATH.
    beside = Path(sys.executable).parent / "nvflare"
    return str(beside) if beside.is_file() else "nvflare"
