"""A real Orthanc PACS for the tests: its own storage (in memory where it can), loopback ports, stopped by PID.

Configured as a hospital PACS that knows the site: it checks the Called AE title, answers C-FIND, C-GET and
C-STORE only from the modality ``DOSE3D`` at 127.0.0.1 (``DicomAlwaysAllow*`` off, host checked), and its
REST API accepts local clients only. A Lua ``ReceivedInstanceFilter`` refuses any instance whose
SeriesDescription is :data:`REFUSED_SERIES_DESCRIPTION`, so the tests can meet a real C-STORE refusal.

Orthanc 1.10 binds its ports on every interface (it has no bind-address option); the access rules above keep
other hosts out. DCMTK, under Orthanc, leaves Nagle's algorithm on unless ``TCP_NODELAY=1`` is in its
environment; without it each DIMSE message waits for a delayed ACK and a 200-instance upload takes about
ten times longer.

In one full ``make test`` run a C-FIND sent right after a C-STORE went unanswered for the SCU's 30 s; it did
not happen again alone, under a 2-core CPU load or under a disk load of repeated fsync'd writes, so its cause
is not known. Orthanc's index and files therefore live in memory (``/dev/shm`` where the machine has it,
removed at stop), which takes the disk out of the question, and it logs ``--verbose`` (each association and
DIMSE request) to ``orthanc.log`` next to its configuration, so that a recurrence can be read afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose3d_fl.clinical.pacs.node import DicomNode

ORTHANC = Path(shutil.which("Orthanc") or "/usr/sbin/Orthanc")
PACS_AE = "TESTPACS"
SITE_AE = "DOSE3D"
REFUSED_SERIES_DESCRIPTION = "REFUSE-ME"
START_TIMEOUT_S = 30.0
SHM = Path("/dev/shm")

_FILTER_LUA = f"""
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.SeriesDescription == '{REFUSED_SERIES_DESCRIPTION}' then
    return false
  end
  return true
end
"""


def free_port() -> int:
    """A TCP port nothing listens on at the moment (loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class OrthancServer:
    """A running Orthanc process and how to reach it."""

    process: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int
    root: Path
    storage: Path

    @property
    def node(self) -> DicomNode:
        """Its DICOM address."""
        return DicomNode(PACS_AE, "127.0.0.1", self.dicom_port)

    def rest(self, path: str, body: Any = None) -> Any:
        """GET (or POST ``body`` as JSON to) the REST API; the decoded JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data)
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    def rest_bytes(self, path: str) -> bytes:
        """GET raw bytes, e.g. ``/instances/<id>/file``."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as answer:
            return answer.read()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the process by PID and wait until it exits (its ports are then free)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if self.storage.parent == SHM:
            shutil.rmtree(self.storage, ignore_errors=True)


def storage_folder(root: Path) -> Path:
    """A new folder for Orthanc's index and files: in ``/dev/shm`` where it is writable, else ``root/storage``."""
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="dose3d-test-orthanc-", dir=SHM))
    storage = root / "storage"
    storage.mkdir(parents=True)
    return storage


def write_config(root: Path, storage: Path) -> tuple[Path, int, int]:
    """An Orthanc configuration under ``root`` with its index and files in ``storage``; (config path, DICOM
    port, HTTP port)."""
    dicom_port, http_port = free_port(), free_port()
    lua = root / "filter.lua"
    lua.write_text(_FILTER_LUA)
    config = {
        "Name": "dose3d-test-pacs",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomAet": PACS_AE,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "DicomCheckModalityHost": True,
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowGet": False,
        "DicomModalities": {
            "dose3d-site": {
                "AET": SITE_AE,
                "Host": "127.0.0.1",
                "Port": free_port(),  # where C-MOVE would send to; C-GET answers on the association itself
                "AllowEcho": True,
                "AllowFind": True,
                "AllowGet": True,
                "AllowMove": False,
                "AllowStore": True,
            }
        },
        "LuaScripts": [str(lua)],
        "Plugins": [],
        "HttpThreadsCount": 4,
        "SaveJobs": False,
    }
    path = root / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    return path, dicom_port, http_port


def start_orthanc(root: Path) -> OrthancServer:
    """Start Orthanc with a fresh configuration and storage under ``root``; wait until it answers."""
    if not ORTHANC.is_file():
        raise RuntimeError(f"Orthanc is not installed ({ORTHANC} missing): apt-get install orthanc")
    root.mkdir(parents=True, exist_ok=True)
    storage = storage_folder(root)
    config, dicom_port, http_port = write_config(root, storage)
    log = (root / "orthanc.log").open("wb")
    process = subprocess.Popen(
        [str(ORTHANC), "--verbose", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    server = OrthancServer(process, dicom_port, http_port, root, storage)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            server.rest("/system")
            return server
        except OSError:
            time.sleep(0.2)
    server.stop(signal.SIGKILL)
    tail = (root / "orthanc.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Orthanc did not start within {START_TIMEOUT_S:g} s; its log ends:\n{tail}")
