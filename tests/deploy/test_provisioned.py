"""A provisioned federation on loopback: server/project.yml -> startup kits -> real processes -> FLARE API.

One server and two sites are provisioned (with this project's site policies), started from their kits as
separate processes and shared by the tests of this module; the fixture stops them by PID and checks that no
port is left listening. The security tests use the same server: a client kit of another root CA, TLS from a
client that trusts the server but shows a certificate of another CA or none (refused by the server), a site's
kit started under another site's name, an admin with role ``member``, and an ``org_admin`` (no BYOC right)
submitting a job that carries code.
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from nvflare.fuel.flare_api.api_spec import AuthorizationError

from dose3d_fl.deploy import admin
from dose3d_fl.deploy.processes import (
    ParticipantProcess,
    free_port,
    listening_ports,
    port_is_listening,
    start_participant,
    stop_participants,
    wait_for_port,
)
from dose3d_fl.deploy.provision import ProvisionConfig, StartupKits, provision
from dose3d_fl.fl.server.transfer_log import LOG_NAME, verify_chain
from dose3d_fl.fl.site.config import SITE_CONFIG_NAME, SiteConfig
from tests.deploy.conftest import REPO, make_tiny_cache

pytestmark = [pytest.mark.slow, pytest.mark.deploy]

SITES = ("hospital-a", "hospital-b")
ADMINS = {
    "admin@coordinator.org": ("coordinator", "project_admin"),
    "lead@coordinator.org": ("coordinator", "lead"),
    "it@hospital-a.org": ("hospital_a", "org_admin"),
    "viewer@coordinator.org": ("coordinator", "member"),
}


def _provision_config(workspace: Path, port: int, sites: tuple[str, ...] = SITES) -> ProvisionConfig:
    return ProvisionConfig(
        project_file=REPO / "server" / "project.yml",
        workspace=workspace,
        server_policy_dir=REPO / "server" / "local",
        site_policy_dir=REPO / "sites" / "local",
        server_host="localhost",
        fed_learn_port=port,
        sites=sites,
        admins=ADMINS,
    )


@dataclass
class Federation:
    kits: StartupKits
    processes: list[ParticipantProcess]

    def admin_kit(self, email: str) -> Path:
        return self.kits.admins[email]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("provisioned")
    kits = provision(_provision_config(root / "workspace", free_port()))
    for seed, (site, kit) in enumerate(kits.clients.items(), 1):
        cache = make_tiny_cache(root / "dicom" / site, root / "cache" / site, seed)
        SiteConfig(cache_dir=str(cache), num_threads=1).save(kit / "local" / SITE_CONFIG_NAME)
    processes: list[ParticipantProcess] = []
    try:
        processes.append(start_participant("server", kits.server))
        wait_for_port(kits.fed_learn_port, processes[0])
        processes += [start_participant(site, kit) for site, kit in kits.clients.items()]
        session = admin.open_session(kits.admins["admin@coordinator.org"])
        try:
            admin.wait_for_clients(session, SITES, timeout=90)
        finally:
            session.close()
        yield Federation(kits, processes)
    finally:
        pids = stop_participants(processes)
        assert not listening_ports(pids)
        assert not port_is_listening(kits.fed_learn_port)
        assert not any(p.is_running() for p in processes)


def test_kits_carry_the_project_site_policies(federation: Federation) -> None:
    for kit in federation.kits.clients.values():
        for name in ("authorization.json", "privacy.json", "resources.json"):
            assert (kit / "local" / name).read_bytes() == (REPO / "sites" / "local" / name).read_bytes()
    server_policy = federation.kits.server / "local" / "authorization.json"
    assert server_policy.read_bytes() == (REPO / "server" / "local" / "authorization.json").read_bytes()


def test_segmentation_job_runs_to_completion(
    federation: Federation, tiny_seg_job: Path, tmp_path: Path
) -> None:
    session = admin.open_session(federation.admin_kit("lead@coordinator.org"))
    try:
        outcome = admin.run_job(session, tiny_seg_job, tmp_path / "results", timeout=300)
    finally:
        session.close()

    assert outcome.status == "FINISHED:COMPLETED"
    server = outcome.result_dir / "workspace"
    weights = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    assert any(key.endswith("weight") for key in weights)
    cross = json.loads((server / "cross_site_val" / "cross_val_results.json").read_text())
    assert set(cross) == set(SITES)
    for results in cross.values():
        assert set(SITES) <= set(results)  # each site evaluated both site models ...
        assert any("global" in model.lower() for model in results)  # ... and the global model
        assert all(0.0 <= r["val_dice"] <= 1.0 for r in results.values())

    # The sites' own privacy.json (not the job, which has no filters) put every result through the
    # weights-only guard and the payload audit; the server's transfer log says so for every update.
    transfer_log = server / LOG_NAME
    assert verify_chain(transfer_log).ok
    entries = [json.loads(line) for line in transfer_log.read_text().splitlines()]
    assert {e["site"] for e in entries} == set(SITES)
    assert all(
        e["status"] == "accepted" and e["filters"] == ["WeightsOnlyGuard", "SiteReceipts"] for e in entries
    )
    assert all(e["receipt_check"] == "ok" for e in entries)  # signed with each site's provisioned key
    for site, kit in federation.kits.clients.items():
        audit = [json.loads(line) for line in (kit / "payload_audit.jsonl").read_text().splitlines()]
        assert {"train", "validate", "submit_model"} <= {r["task"] for r in audit}, site
        assert all(set(r["tensors"]) <= set(weights) for r in audit)


def test_admin_with_role_member_cannot_submit(federation: Federation, tiny_seg_job: Path) -> None:
    session = admin.open_session(federation.admin_kit("viewer@coordinator.org"))
    try:
        jobs_before = len(session.list_jobs())  # a member may look
        with pytest.raises(AuthorizationError):
            session.submit_job(str(tiny_seg_job))
        assert len(session.list_jobs()) == jobs_before
    finally:
        session.close()


def test_job_with_custom_code_from_org_admin_is_refused(federation: Federation, tiny_seg_job: Path) -> None:
    # org_admin may submit jobs (authorization.json) but not ones that carry code (byoc: none); seg_fedavg
    # carries its client script in app/custom.
    assert (tiny_seg_job / "app" / "custom").is_dir()
    session = admin.open_session(federation.admin_kit("it@hospital-a.org"))
    try:
        job_id = session.submit_job(str(tiny_seg_job))
        status = admin.wait_for_job(session, job_id, timeout=120)
    finally:
        session.close()
    assert status != "FINISHED:COMPLETED"
    server_log = (federation.kits.server / "log.txt").read_text()
    assert "BYOC not permitted" in server_log
    assert not any((kit / job_id).exists() for kit in federation.kits.clients.values())


def test_client_signed_by_another_root_ca_cannot_join(federation: Federation, tmp_path: Path) -> None:
    # Same project name and server address, provisioned again elsewhere: a kit of another root CA.
    impostor_kits = provision(
        _provision_config(tmp_path / "other_ca", federation.kits.fed_learn_port, sites=("hospital-x",))
    )
    impostor_kit = impostor_kits.clients["hospital-x"]
    real_root = federation.kits.server / "startup" / "rootCA.pem"
    assert (impostor_kit / "startup" / "rootCA.pem").read_bytes() != real_root.read_bytes()

    impostor = start_participant("hospital-x", impostor_kit)
    try:
        session = admin.open_session(federation.admin_kit("admin@coordinator.org"))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and "CERTIFICATE_VERIFY_FAILED" not in _text(impostor.log):
                assert "hospital-x" not in admin.connected_clients(session)
                time.sleep(1)
            assert "CERTIFICATE_VERIFY_FAILED" in _text(impostor.log), _text(impostor.log)[-2000:]
            assert impostor.is_running()  # it keeps trying, and keeps failing
            assert admin.connected_clients(session) == sorted(SITES)
        finally:
            session.close()
    finally:
        stop_participants([impostor])
    assert not impostor.is_running()
    assert "hospital-x" not in _text(str(federation.kits.server / "log.txt"))


def _foreign_client_cert(folder: Path, name: str = "hospital-a") -> tuple[Path, Path]:
    """A client certificate for ``name`` signed by a root CA the federation never saw."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, issuer: str, public: Any, signer: Any, ca: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = certificate(name, "dose3d", key.public_key(), ca_key, ca=False)
    cert_path, key_path = folder / "client.crt", folder / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def _handshake(federation: Federation, client_cert: tuple[Path, Path] | None) -> str:
    """Open TLS to the server as a client that trusts the real root CA; ``"accepted"`` or the server's alert.

    Under TLS 1.3 the server judges the client's certificate after the client's side of the handshake, and its
    verdict arrives as an alert on the first read: an error here is the server refusing, not the client.
    """
    context = ssl.create_default_context(cafile=str(federation.kits.server / "startup" / "rootCA.pem"))
    context.check_hostname = False  # the server's certificate names its provisioned host, not 127.0.0.1
    context.set_alpn_protocols(["h2"])
    if client_cert is not None:
        context.load_cert_chain(*map(str, client_cert))
    with socket.create_connection(("127.0.0.1", federation.kits.fed_learn_port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
                return "accepted" if tls.recv(64) else "closed"
        except ssl.SSLError as err:
            return err.reason or str(err)


def test_server_refuses_tls_from_a_foreign_ca_and_from_no_certificate(
    federation: Federation, tmp_path: Path
) -> None:
    site_kit = federation.kits.clients["hospital-a"] / "startup"
    # The control: the real hospital-a certificate gets through TLS (the gRPC server answers HTTP/2).
    assert _handshake(federation, (site_kit / "client.crt", site_kit / "client.key")) == "accepted"
    # The same client with a certificate of another CA, or with none: the server answers nothing and closes
    # the connection (or sends a TLS alert), while the client itself trusted the server.
    foreign = _handshake(federation, _foreign_client_cert(tmp_path / "foreign"))
    missing = _handshake(federation, None)
    assert foreign != "accepted" and missing != "accepted", (foreign, missing)
    print(f"server's answer: foreign CA {foreign!r}, no certificate {missing!r}")
    session = admin.open_session(federation.admin_kit("admin@coordinator.org"))
    try:
        assert admin.connected_clients(session) == sorted(SITES)
    finally:
        session.close()


def test_provisioned_client_claiming_another_name_is_refused(federation: Federation, tmp_path: Path) -> None:
    # hospital-a's own kit (its certificate, CN hospital-a), started as "hospital-x".
    kit = tmp_path / "renamed"
    shutil.copytree(
        federation.kits.clients["hospital-a"], kit, ignore=shutil.ignore_patterns("*.log", "log.txt")
    )
    for name in ("sub_start.sh", "fed_client.json"):
        script = kit / "startup" / name
        script.write_text(script.read_text().replace("hospital-a", "hospital-x"))
    impostor = start_participant("hospital-x", kit)
    try:
        server_log = federation.kits.server / "log.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "hospital-x" not in _text(str(server_log)):
            time.sleep(1)
        # NVFlare binds an endpoint's name to its certificate's common name and closes the connection.
        refusal = "authenticated as 'hospital-a' but claimed endpoint 'hospital-x'"
        assert refusal in _text(str(server_log)), _text(str(server_log))[-2000:]
        session = admin.open_session(federation.admin_kit("admin@coordinator.org"))
        try:
            assert admin.connected_clients(session) == sorted(SITES)
        finally:
            session.close()
    finally:
        stop_participants([impostor])
    assert not impostor.is_running()


def _text(path: str) -> str:
    return Path(path).read_text() if Path(path).is_file() else ""
