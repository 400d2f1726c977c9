"""``dose3d site check``: can this site join the federation? One line per check, each failure with its fix.

A site is its startup kit (``startup/``: certificates, the server's address) and the kit's ``local/`` folder
(what the site decides: ``dose3d_site.json``, ``privacy.json``, ...). The checks read what the NVFlare client
and the job's site code will read, through the same code where there is one:

* ``site config``: ``dose3d_site.json`` (or ``$DOSE3D_SITE_CONFIG``) by ``SiteConfig.load``, which refuses an
  unknown key and names the key it resembles;
* ``privacy policy``: ``privacy.json`` builds its filters as a job would (``policy_filters``) and keeps the
  weights-only guard on what leaves;
* ``cache``: the folder exists and this user may read and write it, its manifest loads, it has enough cases
  for a train/validation split, and every case's files are there;
* ``startup kit``: ``fed_client.json`` and the files it names, the private key readable by its owner only;
* ``certificate``: the site's certificate is valid now, was issued by the kit's root CA, names this site and
  matches the private key;
* ``server``: a TCP connection to each server address of ``fed_client.json`` within a short timeout.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from dose3d_fl.data.manifest import MANIFEST_NAME, Manifest
from dose3d_fl.fl.policy.privacy import GUARD, policy_filters
from dose3d_fl.fl.site.config import SITE_CONFIG_ENV, SITE_CONFIG_NAME, SiteConfig

__all__ = ["Check", "SiteFolders", "check_site", "site_folders"]

DEVICES = ("auto", "cpu", "cuda")
MIN_CASES = 2  # a train/validation split needs two (dose3d_fl.data.split)
NEW_KIT = "ask the project coordinator for a new startup kit (`dose3d provision`)"


@dataclass(frozen=True)
class Check:
    """The result of one check.

    Args:
        name: what was checked (``site config``, ``cache``, ...).
        ok: whether it passed.
        detail: what was found.
        fix: what a person does about a failure.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""

    @property
    def line(self) -> str:
        """``ok <name>: <detail>`` or ``FAIL <name>: <detail> — fix: <fix>``."""
        if self.ok:
            return f"ok {self.name}: {self.detail}"
        return f"FAIL {self.name}: {self.detail} — fix: {self.fix}"


@dataclass(frozen=True)
class SiteFolders:
    """A site's folders.

    Args:
        local: the site's ``local/`` folder.
        kit: the startup kit holding it (``None`` when ``local/`` has no ``startup/`` beside it).
    """

    local: Path
    kit: Path | None


def site_folders(site_dir: Path) -> SiteFolders:
    """The folders of ``site_dir``: a kit's ``local/`` folder, or the kit itself (holding ``local/``)."""
    site_dir = Path(site_dir).resolve()
    if (site_dir / "local").is_dir() and (site_dir / "startup").is_dir():
        return SiteFolders(site_dir / "local", site_dir)
    return SiteFolders(site_dir, site_dir.parent if (site_dir.parent / "startup").is_dir() else None)


def check_site(site_dir: Path, timeout: float = 3.0, now: datetime | None = None) -> list[Check]:
    """Run every check on a site.

    Args:
        site_dir: the site's ``local/`` folder, or its startup kit.
        timeout: seconds to wait for the server's TCP answer.
        now: the time certificates are judged at (default: now).
    """
    folders = site_folders(site_dir)
    config_check, config = _check_site_config(folders.local)
    checks = [config_check, _check_privacy(folders.local)]
    if config is None:
        checks.append(
            Check("cache", False, "not checked: no valid site configuration", "correct the site config first")
        )
    else:
        checks.append(_check_cache(config))
    checks += _check_kit(folders, timeout, now or datetime.now(UTC))
    return checks


def _check_site_config(local: Path) -> tuple[Check, SiteConfig | None]:
    name = "site config"
    path = Path(os.environ[SITE_CONFIG_ENV]) if os.environ.get(SITE_CONFIG_ENV) else local / SITE_CONFIG_NAME
    if not path.is_file():
        return Check(
            name,
            False,
            f"{path} not found",
            'write it: {"cache_dir": "<the --out folder of dose3d ingest>", "num_threads": 4, "device": '
            '"auto"} (sites/DEPLOY.md, step 3)',
        ), None
    try:
        config = SiteConfig.load(path)
    except ValueError as err:
        return Check(name, False, str(err), f"correct {path} (example: sites/local/{SITE_CONFIG_NAME})"), None
    if config.device not in DEVICES:
        return Check(
            name,
            False,
            f"{path}: device {config.device!r} is not one of {', '.join(DEVICES)}",
            f"correct {path}",
        ), None
    if config.num_threads < 1:
        return Check(name, False, f"{path}: num_threads {config.num_threads} < 1", f"correct {path}"), None
    cores_problem = config.cpu_cores_problem()
    if cores_problem is not None:
        example = "" if isinstance(config.cpu_cores, list) else ', e.g. "cpu_cores": [0, 1]'
        return Check(
            name,
            False,
            f"{path}: cpu_cores {config.cpu_cores!r} {cores_problem}",
            f"correct {path}{example}, or leave cpu_cores out",
        ), None
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return Check(
                name,
                False,
                f"{path}: device 'cuda', but torch {torch.__version__} sees no CUDA device",
                'install a CUDA build of torch and the driver (docs/install.md), or set "device": "auto"',
            ), None
    detail = f"{path}: cache {config.cache_dir}, {config.num_threads} thread(s), device {config.device}"
    return Check(name, True, detail), config


def _check_privacy(local: Path) -> Check:
    name = "privacy policy"
    path = local / "privacy.json"
    fix = f"copy privacy.json from sites/local/ of the dose3d-fl repository into {local} (docs/privacy.md)"
    if not path.is_file():
        return Check(name, False, f"{path} not found: no filter would check what this site sends", fix)
    try:
        policy = json.loads(path.read_text())
        scope = next(s for s in policy["scopes"] if s["name"] == policy["default_scope"])
        _, result_filters = policy_filters(policy)
    except (ValueError, KeyError, TypeError, StopIteration, ImportError, AttributeError) as err:
        detail = f"{path} cannot be used: {type(err).__name__}: {err}"
        return Check(name, False, detail, fix)
    if not any(entry.get("path") == GUARD for entry in scope.get("task_result_filters", [])):
        return Check(
            name, False, f"{path}: scope {scope['name']!r} has no weights-only guard on results", fix
        )
    names = [_filter_name(f) for f in result_filters]
    return Check(name, True, f"{path}: scope {scope['name']!r}, results through {', '.join(names)}")


def _filter_name(result_filter: object) -> str:
    kind = type(result_filter).__name__
    clip, sigma = getattr(result_filter, "clip_norm", None), getattr(result_filter, "noise_multiplier", None)
    return kind if clip is None or sigma is None else f"{kind}(C={clip:g}, sigma={sigma:g})"


def _check_cache(config: SiteConfig) -> Check:
    name = "cache"
    cache = Path(config.cache_dir)
    user = getpass.getuser()
    ingest = f"run `dose3d ingest --input <your DICOM export> --out {cache}`, or correct cache_dir"
    if not cache.is_dir():
        return Check(name, False, f"{cache} does not exist", ingest)
    if not os.access(cache, os.R_OK | os.X_OK):
        return Check(name, False, f"{cache} is not readable by {user}", f"give {user} read access to {cache}")
    try:
        manifest = Manifest.load(cache)
    except FileNotFoundError:
        return Check(name, False, f"{cache} has no {MANIFEST_NAME}", ingest)
    except (ValueError, KeyError, TypeError) as err:
        return Check(
            name,
            False,
            f"{cache / MANIFEST_NAME} cannot be read: {err}",
            f"re-run `dose3d ingest --out {cache}`",
        )
    if len(manifest.cases) < MIN_CASES:
        rejected = (
            f"; {len(manifest.rejected)} series rejected, see `dose3d summary {cache}`"
            if manifest.rejected
            else ""
        )
        return Check(
            name,
            False,
            f"{cache}: {len(manifest.cases)} case(s), a train/validation split needs {MIN_CASES}{rejected}",
            "export more CT series with their RTSTRUCT and run dose3d ingest again",
        )
    missing = [
        f for case in manifest.cases for f in (case.image, case.label) if not os.access(cache / f, os.R_OK)
    ]
    if missing:
        return Check(
            name,
            False,
            f"{cache}: {len(missing)} case file(s) missing or unreadable, first {missing[0]}",
            f"re-run `dose3d ingest --out {cache}` with the same input",
        )
    if not os.access(cache, os.W_OK):
        return Check(
            name,
            False,
            f"{cache} is not writable by {user} (training keeps its state in {config.state_dir})",
            f"give {user} write access to {cache}",
        )
    return Check(name, True, f"{cache}: {len(manifest.cases)} cases of {manifest.roi}, readable and writable")


def _check_kit(folders: SiteFolders, timeout: float, now: datetime) -> list[Check]:
    if folders.kit is None:
        detail = f"no startup/ folder beside {folders.local}"
        fix = "run the check on the local/ folder of your site's startup kit (sites/DEPLOY.md, step 2)"
        return [
            Check("startup kit", False, detail, fix),
            Check("certificate", False, "not checked: no startup kit", fix),
            Check("server", False, "not checked: no startup kit", fix),
        ]
    startup = folders.kit / "startup"
    try:
        config = json.loads((startup / "fed_client.json").read_text())
        client = config["client"]
        files = {key: startup / client[key] for key in ("ssl_cert", "ssl_root_cert", "ssl_private_key")}
        targets = [server["service"]["target"] for server in config["servers"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        detail = f"{startup / 'fed_client.json'} cannot be read: {type(err).__name__}: {err}"
        return [
            Check("startup kit", False, detail, NEW_KIT),
            Check("certificate", False, "not checked: the kit cannot be read", NEW_KIT),
            Check("server", False, "not checked: the kit cannot be read", NEW_KIT),
        ]
    site = client.get("fqsn", folders.kit.name)
    kit = _check_kit_files(startup, site, files, targets)
    certificate = (
        _check_certificate(site, files, now)
        if kit.ok
        else Check("certificate", False, "not checked: the kit is incomplete", NEW_KIT)
    )
    return [kit, certificate, _check_server(targets, timeout)]


def _check_kit_files(startup: Path, site: str, files: dict[str, Path], targets: list[str]) -> Check:
    name = "startup kit"
    absent = [str(path) for path in files.values() if not path.is_file()]
    if absent:
        return Check(name, False, f"missing {', '.join(absent)}", NEW_KIT)
    if not targets:
        return Check(name, False, f"{startup / 'fed_client.json'} names no server", NEW_KIT)
    key = files["ssl_private_key"]
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        return Check(
            name,
            False,
            f"{key} can be read by others (mode {mode:o})",
            f"chmod 600 {key} (and keep the kit private)",
        )
    return Check(name, True, f"{startup.parent}: site {site}, server {', '.join(targets)}")


def _check_certificate(site: str, files: dict[str, Path], now: datetime) -> Check:
    name = "certificate"
    try:
        cert = x509.load_pem_x509_certificate(files["ssl_cert"].read_bytes())
        root = x509.load_pem_x509_certificate(files["ssl_root_cert"].read_bytes())
        key = serialization.load_pem_private_key(files["ssl_private_key"].read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        return Check(name, False, f"the kit's certificates cannot be read: {err}", NEW_KIT)
    for what, checked in (("this site's certificate", cert), ("the federation's root certificate", root)):
        where = (files["ssl_cert"] if checked is cert else files["ssl_root_cert"]).name
        if now > checked.not_valid_after_utc:
            return Check(
                name, False, f"{where}: {what} expired on {_day(checked.not_valid_after_utc)}", NEW_KIT
            )
        if now < checked.not_valid_before_utc:
            return Check(
                name,
                False,
                f"{where}: {what} is valid only from {checked.not_valid_before_utc:%Y-%m-%d %H:%M} UTC, and "
                f"this machine's clock says {now:%Y-%m-%d %H:%M} UTC",
                "set this machine's clock right (NTP), then check again",
            )
    try:
        cert.verify_directly_issued_by(root)
    except (InvalidSignature, ValueError, TypeError) as err:
        return Check(
            name,
            False,
            f"{files['ssl_cert'].name} was not issued by {files['ssl_root_cert'].name}: "
            f"{err or 'its signature does not verify with the root key'}",
            NEW_KIT,
        )
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != cert.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        return Check(
            name,
            False,
            f"{files['ssl_private_key'].name} is not the key of {files['ssl_cert'].name}",
            NEW_KIT,
        )
    names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if site not in names:
        return Check(
            name,
            False,
            f"{files['ssl_cert'].name} names {', '.join(map(str, names)) or 'no one'}, not {site}",
            NEW_KIT,
        )
    days = (cert.not_valid_after_utc - now).days
    return Check(
        name,
        True,
        f"{site}, issued by the kit's root CA, valid until {_day(cert.not_valid_after_utc)} ({days} days)",
    )


def _day(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d}"


def _check_server(targets: list[str], timeout: float) -> Check:
    name = "server"
    answered = []
    for target in targets:
        host, _, port = target.rpartition(":")
        host = host.strip("[]")  # an IPv6 address is written [::1]:8002
        start = time.perf_counter()
        try:
            with socket.create_connection((host, int(port)), timeout=timeout):
                answered.append(f"{target} answers ({(time.perf_counter() - start) * 1000:.0f} ms)")
        except (OSError, ValueError) as err:
            return Check(
                name,
                False,
                f"no TCP connection to {target} within {timeout:g} s: {err}",
                f"check that the server runs (ask the coordinator), that {host} resolves here and that the "
                f"firewall or proxy lets this machine reach port {port} (`nc -vz {host} {port}`)",
            )
    return Check(name, True, "; ".join(answered))
