"""Admin operations through NVFlare's FLARE API, with an admin startup kit: connect, submit, wait, download.

This is what the interactive admin console (``startup/fl_admin.sh``: ``submit_job``, ``list_jobs``,
``download_job``) does, as functions. A FLARE API session authenticates with the kit's certificate (mTLS)
and acts with the role that certificate carries; the server's ``local/authorization.json`` decides.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from nvflare.apis.fl_exception import FLCommunicationError
from nvflare.fuel.flare_api.api_spec import AuthorizationError, InvalidJobDefinition, NoConnection
from nvflare.fuel.flare_api.flare_api import Session, new_secure_session

logger = logging.getLogger(__name__)

COMPLETED = "FINISHED:COMPLETED"
# The FLARE API's errors of a submission whose message says it all (the admin may not submit, the server refused
# the job, or the server cannot be reached): callers report them in one line without importing nvflare.
SUBMIT_ERRORS: tuple[type[Exception], ...] = (AuthorizationError, InvalidJobDefinition, NoConnection)
# What a FLARE API login raises while the server is still starting up.
_HANDSHAKE_RACES: tuple[type[Exception], ...] = (TypeError, FLCommunicationError)

# Server job-log lines worth showing a person who waits: the dose3d round summary (logger dose3d.rounds) and
# NVFlare FedAvg's round and aggregation milestones.
PROGRESS_LINE = re.compile(r"dose3d\.rounds|Round \d+ started|Aggregated \d+/\d+ results|Finished FedAvg")


@dataclass(frozen=True)
class JobOutcome:
    """How a submitted job ended.

    Args:
        job_id: the server's job ID.
        status: the final status (``FINISHED:COMPLETED`` when it ran to completion).
        result_dir: where the result was downloaded (None when not downloaded).
    """

    job_id: str
    status: str
    result_dir: Path | None = None

    @property
    def completed(self) -> bool:
        """Whether the job finished normally."""
        return self.status == COMPLETED


def admin_username(admin_kit: Path) -> str:
    """The user name an admin kit was provisioned for.

    Raises:
        FileNotFoundError: the folder is not an admin startup kit.
    """
    config = Path(admin_kit) / "startup" / "fed_admin.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: {admin_kit} is not an admin startup kit")
    return json.loads(config.read_text())["admin"]["username"]


def open_session(admin_kit: Path, timeout: float = 60.0) -> Session:
    """A FLARE API session as the kit's admin; close it with ``session.close()``.

    Args:
        admin_kit: the admin's startup kit (the folder holding ``startup/``).
        timeout: how long to try to reach the server.
    """
    admin_kit = Path(admin_kit).resolve()
    username = admin_username(admin_kit)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return new_secure_session(username, str(admin_kit), timeout=max(1.0, deadline - time.monotonic()))
        except _HANDSHAKE_RACES as error:
            # A server that has just opened its port can answer the identity challenge before its identity is
            # loaded (NVFlare 2.9 then fails inside the client with a TypeError on the missing certificate).
            if time.monotonic() > deadline:
                raise NoConnection(
                    f"the server did not complete the admin handshake within {timeout:.0f} s: {error}"
                ) from error
            logger.debug("admin handshake not ready (%s); retrying", error)
            time.sleep(1.0)


def connected_clients(session: Session) -> list[str]:
    """Names of the clients connected to the server now."""
    return sorted(client.name for client in session.get_system_info().client_info)


def wait_for_clients(session: Session, names: Iterable[str], timeout: float = 120.0) -> None:
    """Wait until every client in ``names`` is connected.

    Raises:
        TimeoutError: naming the clients that did not connect.
    """
    wanted = set(names)
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - set(connected_clients(session))
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"clients {sorted(missing)} did not connect within {timeout:.0f} s; see their console.log"
            )
        time.sleep(1.0)


def wait_for_job(
    session: Session,
    job_id: str,
    timeout: float = 0.0,
    on_status: Callable[[str, float], None] | None = None,
    poll_interval: float = 2.0,
    on_progress: Callable[[str], None] | None = None,
) -> str:
    """Wait for a job to finish and return its final status.

    Args:
        session: an open session.
        job_id: the job.
        timeout: seconds to wait; 0 waits for ever.
        on_status: called with (status, seconds since waiting began) whenever the status changes.
        poll_interval: seconds between polls.
        on_progress: called with each new progress line of the server's job log (see ``PROGRESS_LINE``).

    Raises:
        TimeoutError: the job has not finished after ``timeout`` seconds; the message says why it has not
            (see :func:`why_not_finished`) and that the job stays on the server.
    """
    start = time.monotonic()
    last = None
    shown = 0
    last_line = ""
    while True:
        status = session.get_job_meta(job_id).get("status", "")
        if status != last:
            last = status
            logger.info("job %s: %s", job_id, status)
            if on_status is not None:
                on_status(status, time.monotonic() - start)
        if on_progress is not None and (status == "RUNNING" or status.startswith("FINISHED")):
            lines = server_progress_lines(session, job_id)
            if not lines and not shown and status.startswith("FINISHED"):
                time.sleep(poll_interval)  # the log store may lag the end of a short job by a moment
                lines = server_progress_lines(session, job_id)
            for line in lines[shown:]:
                on_progress(line)
            shown = max(shown, len(lines))
            last_line = lines[-1] if lines else last_line
        if status.startswith("FINISHED"):
            return status
        if timeout and time.monotonic() - start > timeout:
            raise TimeoutError(_gave_up(session, job_id, timeout, last_line))
        time.sleep(poll_interval)


def _gave_up(session: Session, job_id: str, timeout: float, last_line: str) -> str:
    """The message of a wait that timed out: the job's state now and why it has not finished."""
    meta = session.get_job_meta(job_id)
    try:
        connected: list[str] | None = connected_clients(session)
    except Exception as err:  # the reason is a help; the time-out is reported all the same
        logger.debug("connected clients unavailable: %s", err)
        connected = None
    status = meta.get("status") or "in an unknown state"
    return (
        f"gave up waiting for job {job_id} after {timeout:.0f} s: it is {status}; "
        f"{why_not_finished(meta, connected, last_line)}. The job stays on the server: wait longer "
        f"(--timeout) or abort it (admin console: abort_job {job_id})"
    )


def why_not_finished(meta: dict, connected: list[str] | None, last_progress: str = "") -> str:
    """Why a job has not finished, in a person's words, from what the server knows of it.

    Args:
        meta: the job's meta as the FLARE API returns it (``Session.get_job_meta``): ``status``,
            ``min_clients``, ``deploy_map``, ``mandatory_clients``, ``schedule_history``,
            ``job_deploy_detail``.
        connected: the clients connected to the server now (``None``: unknown).
        last_progress: the last progress line of the server's job log, if any.
    """
    status = str(meta.get("status", ""))
    needed = int(meta.get("min_clients") or 0)
    sites = _deployed_sites(meta)
    if connected is None:
        counted = "the connected sites could not be asked"
        eligible: list[str] = []
    else:
        eligible = sorted(connected) if sites is None else sorted(set(connected) & sites)
        counted = f"{len(eligible)} {_are(eligible)} connected: {', '.join(eligible) or 'none'}"
    if status in ("SUBMITTED", "APPROVED"):
        missing = sorted(set(meta.get("mandatory_clients") or []) - set(eligible))
        if connected is not None and missing:
            return f"the server has not started it: it needs {', '.join(missing)}, not connected"
        if connected is None or len(eligible) < needed:
            return f"the server has not started it: the job needs {needed} sites, {counted}"
        history = meta.get("schedule_history") or []
        said = f" (its scheduler last said: {history[-1].split(': ', 1)[-1]})" if history else ""
        return f"the server has not started it yet{said}"
    progress = f"; last progress at the server: {last_progress}" if last_progress else ""
    running_on = sorted(
        line.split(":", 1)[0]
        for line in meta.get("job_deploy_detail") or []
        if not line.startswith("server:")
    )
    if connected is not None and running_on:
        gone = sorted(set(running_on) - set(connected))
        if gone:
            return (
                f"it runs on {', '.join(running_on)}, and {', '.join(gone)} {_are(gone)} no longer connected "
                f"(the job needs {needed} sites){progress}"
            )
        return (
            f"all {len(running_on)} sites it runs on are connected ({', '.join(running_on)}); "
            f"it is still working{progress}"
        )
    return f"the job needs {needed} sites, {counted}{progress}"


def _are(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"


def _deployed_sites(meta: dict) -> set[str] | None:
    """The sites a job's deploy map names; ``None`` when it deploys to every site (``@ALL``)."""
    sites: set[str] = set()
    for targets in (meta.get("deploy_map") or {}).values():
        for target in targets:  # a site name, or {"sites": [...]} (NVFlare's extract_participants)
            for name in [target] if isinstance(target, str) else target.get("sites", []):
                if name.upper() == "@ALL":
                    return None
                if name != "server":
                    sites.add(name)
    return sites


def server_progress_lines(session: Session, job_id: str) -> list[str]:
    """The progress lines (``PROGRESS_LINE``) of the server's log of a job, messages only; [] if unavailable."""
    try:
        text = session.get_job_logs(job_id, target="server").get("logs", {}).get("server", "")
    except Exception as err:  # the log store is a convenience: never fail a wait over it
        logger.debug("job %s: server log unavailable: %s", job_id, err)
        return []
    if not isinstance(text, str):
        return []
    return [_progress_message(line) for line in text.splitlines() if PROGRESS_LINE.search(line)]


def _progress_message(line: str) -> str:
    # "<date> <time> - <logger> - <level> - [identity=..., peer=hospital-a, ...] - <message>"
    message = line.split(" - ", 3)[-1]
    context = re.match(r"\[([^\]]*)\]\s*-\s*", message)
    if context is None:
        return message.strip(" -")
    peer = re.search(r"\bpeer=([^,\]]+)", context.group(1))
    text = message[context.end() :].strip(" -")
    return f"{peer.group(1)}: {text}" if peer else text


def submit_job(session: Session, job_dir: Path) -> str:
    """Submit a copy of a job folder and return the job id.

    NVFlare's secure session signs the folder it submits in place (``.__nvfl_sig.json`` and the submitter's
    certificate in every folder); a copy keeps a committed job such as ``jobs/seg_fedavg`` unchanged.
    """
    job_dir = Path(job_dir).resolve()
    if not (job_dir / "meta.json").is_file():
        raise FileNotFoundError(
            f"{job_dir} is not a job folder (no meta.json); export one with `dose3d fl export`"
        )
    with tempfile.TemporaryDirectory(prefix="dose3d-submit-") as tmp:
        copy = Path(tmp) / job_dir.name
        shutil.copytree(job_dir, copy)
        return session.submit_job(str(copy))


def run_job(
    session: Session,
    job_dir: Path,
    download_to: Path | None,
    timeout: float = 0.0,
    on_status: Callable[[str, float], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> JobOutcome:
    """Submit a job folder, wait for it to finish and download its result.

    Args:
        session: an open session.
        job_dir: the job folder (``meta.json`` + apps).
        download_to: parent folder for the result (``<download_to>/<job_id>``); None skips the download.
        timeout: seconds to wait for the job; 0 waits for ever.
        on_status: status callback, see :func:`wait_for_job`.
        on_progress: server log progress callback, see :func:`wait_for_job`.
    """
    job_id = submit_job(session, job_dir)
    logger.info("submitted %s as job %s", job_dir, job_id)
    status = wait_for_job(session, job_id, timeout, on_status, on_progress=on_progress)
    result_dir = None
    if download_to is not None:
        result_dir = Path(session.download_job_result(job_id, str(Path(download_to).resolve())))
    return JobOutcome(job_id, status, result_dir)
