"""``dose3d site check`` on a real provisioned kit: every check passes, then each failure is made for real.

The kit comes from ``nvflare provision`` (``dose3d_fl.deploy.provision``), the cache from ``dose3d ingest`` of
tiny DICOM studies, the server is a TCP listener on loopback. The failures are real too: a certificate signed
by a root CA with ``cryptography`` and expired, a cache folder that is not there, a port nobody listens on,
a misspelt key, a privacy policy removed or stripped of its guard.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from dose3d_fl.cli import main
from dose3d_fl.deploy.processes import free_port
from dose3d_fl.deploy.provision import ProvisionConfig, provision
from dose3d_fl.deploy.site_check import Check, check_site
from dose3d_fl.fl.site.config import SITE_CONFIG_ENV, SiteConfig
from tests.deploy.conftest import REPO, make_tiny_cache

SITE = "hospital-a"
NAMES = ["site config", "privacy policy", "cache", "startup kit", "certificate", "server"]


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A TCP server on a free loopback port, standing in for the FL server's port (only TCP is checked)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory: pytest.TempPathFactory, listener: int) -> tuple[Path, Path]:
    """A provisioned kit of hospital-a whose server is the listener, and a tiny ingested cache."""
    root = tmp_path_factory.mktemp("site_check")
    kits = provision(
        ProvisionConfig(
            project_file=REPO / "server" / "project.yml",
            workspace=root / "workspace",
            server_policy_dir=REPO / "server" / "local",
            site_policy_dir=REPO / "sites" / "local",
            server_host="127.0.0.1",
            fed_learn_port=listener,
        )
    )
    cache = make_tiny_cache(root / "dicom", root / "cache", seed=1)
    return kits.clients[SITE], cache


@pytest.fixture
def kit(provisioned: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the provisioned kit with its site configuration written, as a site would have it."""
    source, cache = provisioned
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    kit = tmp_path / SITE
    shutil.copytree(source, kit)
    SiteConfig(cache_dir=str(cache), num_threads=2).save(kit / "local" / "dose3d_site.json")
    return kit


def provisioned_cache(kit: Path) -> Path:
    """The cache a kit's site configuration names."""
    return Path(json.loads((kit / "local" / "dose3d_site.json").read_text())["cache_dir"])


def _by_name(checks: list[Check]) -> dict[str, Check]:
    assert [c.name for c in checks] == NAMES
    return {c.name: c for c in checks}


def _failed(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.line for c in checks if not c.ok}


def test_a_provisioned_site_with_its_cache_passes_every_check(
    kit: Path, listener: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["site", "check", "--site-dir", str(kit / "local")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"ok {name}" for name in NAMES]
    assert lines[-1] == "all 6 checks passed: this site is ready to start (sites/DEPLOY.md, step 4)"
    checks = _by_name(check_site(kit))  # the kit folder itself works as well as its local/
    roi = json.loads((provisioned_cache(kit) / "manifest.json").read_text())["roi"]
    assert f"3 cases of {roi}, readable and writable" in checks["cache"].detail
    assert f"server 127.0.0.1:{listener}" in checks["startup kit"].detail
    assert checks["certificate"].detail.startswith(f"{SITE}, issued by the kit's root CA, valid until ")
    assert checks["server"].detail.startswith(f"127.0.0.1:{listener} answers (")
    assert "WeightsOnlyGuard, SiteReceipts, PayloadAudit" in checks["privacy policy"].detail


def test_a_missing_cache_fails_with_the_ingest_command(
    kit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "not-ingested"
    SiteConfig(cache_dir=str(gone)).save(kit / "local" / "dose3d_site.json")
    assert main(["site", "check", "--site-dir", str(kit / "local")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert (
        f"FAIL cache: {gone} does not exist — fix: run `dose3d ingest --input <your DICOM export> --out {gone}`, or correct cache_dir"
        in out
    )
    assert out[-1] == "1 of 6 checks failed: cache"


def test_a_cache_without_enough_cases_or_with_lost_files_fails(kit: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = json.loads((kit / "local" / "dose3d_site.json").read_text())
    shutil.copytree(config["cache_dir"], cache)
    SiteConfig(cache_dir=str(cache)).save(kit / "local" / "dose3d_site.json")
    manifest = json.loads((cache / "manifest.json").read_text())
    lost = cache / manifest["cases"][0]["label"]
    lost.unlink()
    assert _failed(check_site(kit)) == {
        "cache": f"FAIL cache: {cache}: 1 case file(s) missing or unreadable, first {manifest['cases'][0]['label']}"
        f" — fix: re-run `dose3d ingest --out {cache}` with the same input"
    }
    (cache / "manifest.json").write_text(json.dumps({**manifest, "cases": manifest["cases"][:1]}))
    assert "a train/validation split needs 2" in _failed(check_site(kit))["cache"]


def test_an_unknown_configuration_key_is_named_with_the_key_it_resembles(kit: Path) -> None:
    config = kit / "local" / "dose3d_site.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_thread": 4}))
    failed = _failed(check_site(kit / "local"))
    assert set(failed) == {"site config", "cache"}  # the cache is not checked without a valid configuration
    assert failed["site config"].startswith(
        f"FAIL site config: site configuration {config}: unknown key 'num_thread' (did you mean 'num_threads'?)"
    )
    assert failed["site config"].endswith(f"— fix: correct {config} (example: sites/local/dose3d_site.json)")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="thread affinity is Linux's")
def test_cores_the_machine_lacks_fail_the_configuration_check(kit: Path) -> None:
    config = kit / "local" / "dose3d_site.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "cpu_cores": [0, 4096]}))
    failed = _failed(check_site(kit / "local"))
    assert failed["site config"].startswith(
        f"FAIL site config: {config}: cpu_cores [0, 4096] are not all cores this process may use ("
    )
    assert failed["site config"].endswith(f"— fix: correct {config}, or leave cpu_cores out")
    config.write_text(json.dumps({**settings, "cpu_cores": 1}))
    assert _failed(check_site(kit / "local"))["site config"] == (
        f"FAIL site config: {config}: cpu_cores 1 is not a list of core numbers — fix: correct {config}, "
        'e.g. "cpu_cores": [0, 1], or leave cpu_cores out'
    )


def test_a_missing_site_configuration_says_what_to_write(kit: Path) -> None:
    (kit / "local" / "dose3d_site.json").unlink()
    failed = _failed(check_site(kit / "local"))
    assert failed["site config"].startswith(
        f'FAIL site config: {kit / "local" / "dose3d_site.json"} not found — fix: write it: {{"cache_dir"'
    )


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None,
    days: tuple[int, int],
) -> x509.Certificate:
    """A certificate for ``subject`` valid from ``days[0]`` to ``days[1]`` days from now; self-signed without issuer."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days[0]))
        .not_valid_after(now + datetime.timedelta(days=days[1]))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    return builder.sign(issuer_key, hashes.SHA256())


def _reissue(kit: Path, days: tuple[int, int], subject: str = SITE) -> None:
    """Replace the kit's root CA, certificate and key by a new CA's, the site's certificate valid for ``days``."""
    startup = kit / "startup"
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = _certificate("dose3d-test-root", root_key, None, (-10, 3650))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = _certificate(subject, key, (root.subject, root_key), days)
    (startup / "rootCA.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (startup / "client.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (startup / "client.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def test_an_expired_certificate_fails_with_its_date(kit: Path) -> None:
    _reissue(kit, (-400, -35))
    expired = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=35)).strftime("%Y-%m-%d")
    assert _failed(check_site(kit)) == {
        "certificate": f"FAIL certificate: client.crt: this site's certificate expired on {expired} — fix: ask the "
        "project coordinator for a new startup kit (`dose3d provision`)"
    }


def test_a_certificate_not_yet_valid_points_at_the_clock(kit: Path) -> None:
    _reissue(kit, (2, 400))
    line = _failed(check_site(kit))["certificate"]
    assert "this site's certificate is valid only from " in line
    assert line.endswith("— fix: set this machine's clock right (NTP), then check again")


def test_a_certificate_of_another_root_or_name_fails(kit: Path, provisioned: tuple[Path, Path]) -> None:
    _reissue(kit, (-1, 300), subject="hospital-x")
    assert "client.crt names hospital-x, not hospital-a" in _failed(check_site(kit))["certificate"]
    shutil.copy(
        provisioned[0] / "startup" / "rootCA.pem", kit / "startup" / "rootCA.pem"
    )  # the real federation's
    assert "client.crt was not issued by rootCA.pem" in _failed(check_site(kit))["certificate"]


def test_a_private_key_others_may_read_fails(kit: Path) -> None:
    key = kit / "startup" / "client.key"
    key.chmod(0o644)
    assert _failed(check_site(kit))["startup kit"] == (
        f"FAIL startup kit: {key} can be read by others (mode 644) — fix: chmod 600 {key} (and keep the kit private)"
    )


def test_an_unreachable_server_fails_within_the_timeout(kit: Path) -> None:
    config = kit / "startup" / "fed_client.json"
    port = free_port()  # nothing listens there
    data = json.loads(config.read_text())
    data["servers"][0]["service"]["target"] = f"127.0.0.1:{port}"
    config.write_text(json.dumps(data))
    failed = _failed(check_site(kit, timeout=1.0))
    assert list(failed) == ["server"]
    assert failed["server"].startswith(f"FAIL server: no TCP connection to 127.0.0.1:{port} within 1 s: ")
    assert f"(`nc -vz 127.0.0.1 {port}`)" in failed["server"]


def test_a_missing_or_guardless_privacy_policy_fails(kit: Path) -> None:
    policy = kit / "local" / "privacy.json"
    text = policy.read_text()
    policy.unlink()
    line = _failed(check_site(kit))["privacy policy"]
    assert line == (
        f"FAIL privacy policy: {policy} not found: no filter would check what this site sends — fix: copy "
        f"privacy.json from sites/local/ of the dose3d-fl repository into {kit / 'local'} (docs/privacy.md)"
    )
    data = json.loads(text)
    scope = data["scopes"][0]
    scope["task_result_filters"] = [
        f for f in scope["task_result_filters"] if "WeightsOnlyGuard" not in f["path"]
    ]
    policy.write_text(json.dumps(data))
    assert "scope 'dose3d' has no weights-only guard on results" in _failed(check_site(kit))["privacy policy"]
    scope["task_result_filters"][0]["path"] = "dose3d_fl.fl.policy.filters.NoSuchFilter"
    policy.write_text(json.dumps(data))
    assert "cannot be used: AttributeError" in _failed(check_site(kit))["privacy policy"]


def test_a_local_folder_outside_a_kit_fails_the_kit_checks(tmp_path: Path) -> None:
    local = tmp_path / "local"
    shutil.copytree(REPO / "sites" / "local", local)
    failed = _failed(check_site(local))
    assert set(failed) == {"cache", "startup kit", "certificate", "server"}
    assert failed["startup kit"].startswith(f"FAIL startup kit: no startup/ folder beside {local}")
