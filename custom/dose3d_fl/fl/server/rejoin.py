"""Give a running job again to a site whose client restarted during it (server parent process).

NVFlare 2.9 deploys a job to its sites once, when the job starts, and never again. A site whose client was killed
or whose machine rebooted registers again under a new token; the server's job process still holds the old one,
so the restarted site cannot even ask for a task, and the job went on without it until its end. (A site's job
process that dies alone, its client staying up, is another matter: the client reports the failure and NVFlare
2.9 fails the whole job.) :func:`sites_to_rejoin` finds restarted sites and :func:`rejoin_site` does for one of them what NVFlare's job runner does for every site at a job's start, against
the running job: it checks that the site does not run the job, asks the job whether it still runs rounds,
asks the site to reserve the job's resources, deploys the job's app to it, records the site's token with the
job's participants and has the job re-read them (the app command ``ResilientFedAvg`` registers,
:data:`~dose3d_fl.fl.server.resilient.SYNC_CLIENTS_TOPIC`), and starts the job at the site. The site's new job
process then asks for work like any other: NVFlare sends a task again to a site that asks for it without having
answered it, so the site trains the round in progress if it is still open, else the next round it is sampled for.

This relies on NVFlare 2.9's server internals (``ServerEngine.run_processes``, ``JobRunner.running_jobs`` and its
client outcome book-keeping, the client ``DEPLOY``/``START_JOB`` requests); ``tests/deploy/test_resume_fault.py``
fails if a later NVFlare changes them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from nvflare.apis.client import Client
from nvflare.apis.fl_constant import RunProcessKey, ServerCommandKey
from nvflare.apis.job_def import ALL_SITES, Job, JobMetaKey
from nvflare.apis.job_scheduler_spec import DispatchInfo
from nvflare.private.admin_defs import Message, MsgHeader, ReturnCode
from nvflare.private.defs import ERROR_MSG_PREFIX, ClientStatusKey, TrainingTopic
from nvflare.private.fed.server.job_runner import JobRunner
from nvflare.private.fed.utils.fed_utils import extract_participants
from nvflare.utils.job_launcher_utils import get_resource_manager_spec

from dose3d_fl.fl.server.resilient import SYNC_CLIENTS_TOPIC

logger = logging.getLogger(__name__)

REPLY_TIMEOUT = 30.0
# NVFlare holds the server engine's lock while it waits for a job process's answer: ask briefly.
JOB_REPLY_TIMEOUT = 5.0
RESTARTED = "registered anew"


class RejoinError(RuntimeError):
    """A site could not be given the running job again; the message says why."""


class NotInRoundsError(RejoinError):
    """The job no longer runs rounds (it is ending, or its workflow is not a ``ResilientFedAvg``)."""


@dataclass(frozen=True)
class LostSite:
    """A participant of a running job that no longer runs it.

    Args:
        job_id: the running job.
        old_token: the site's token when the job started.
        client: the site as registered now.
        reason: why it lost the job (:data:`RESTARTED`: its client registered anew).
    """

    job_id: str
    old_token: str
    client: Client
    reason: str


def sites_to_rejoin(engine: Any) -> list[LostSite]:
    """Participants of running jobs whose client registered anew since the job started.

    Args:
        engine: the server parent's ``ServerEngine``.
    """
    found = []
    job_runner = engine.job_runner
    for job_id, info in list(engine.run_processes.items()):
        if job_id not in job_runner.running_jobs:
            continue
        for token, client in list((info.get(RunProcessKey.PARTICIPANTS) or {}).items()):
            current = engine.client_manager.get_client_from_name(client.name)
            if current is not None and current.token != token:
                found.append(LostSite(job_id, token, current, RESTARTED))
    return found


def rejoin_site(engine: Any, job: Job, lost: LostSite) -> None:
    """Deploy and start the running ``job`` again at the site of ``lost``.

    Args:
        engine: the server parent's ``ServerEngine``.
        job: the running job, as the job runner started it (its meta lists the job's clients).
        lost: the site and how it lost the job.

    Raises:
        NotInRoundsError: the job does not take sites back now; nothing was changed.
        RejoinError: the site runs the job already, lacks resources or refused the app; nothing was changed in
            the job (an app deployed to the site stays there unused).
    """
    site, client = lost.client.name, lost.client
    admin_server = engine.server.admin_server
    if job.job_id in _jobs_running_at(admin_server, client):
        raise RejoinError(f"{site} still runs job {job.job_id}: nothing to do")
    if not _job_in_rounds(engine, job.job_id, probe=True):
        raise NotInRoundsError(
            f"job {job.job_id} is not running rounds (ending, or not a ResilientFedAvg workflow)"
        )

    with engine.new_context() as fl_ctx:
        spec = get_resource_manager_spec(
            {**job.meta, JobMetaKey.RESOURCE_SPEC.value: job.resource_spec}, site
        )
        enough, resource_token = engine.check_client_resources(job, {site: spec}, fl_ctx).get(
            site, (False, "")
        )
        if not enough:
            raise RejoinError(f"{site} has not the resources job {job.job_id} needs now: {resource_token}")
        app_name = site_app_name(job, site)
        message = JobRunner._make_deploy_message(job, job.get_application(app_name, fl_ctx), app_name, fl_ctx)
        reply = admin_server.send_requests_and_get_reply_dict(
            {client.token: message}, timeout_secs=REPLY_TIMEOUT
        )
        _check_reply(reply.get(client.token), f"deploying job {job.job_id} to {site}")

        participants = engine.run_processes[job.job_id][RunProcessKey.PARTICIPANTS]
        old_client = participants.pop(lost.old_token, None)
        participants[client.token] = client
        if not _job_in_rounds(engine, job.job_id, probe=False):
            participants.pop(client.token, None)
            if old_client is not None:
                participants[lost.old_token] = old_client
            raise NotInRoundsError(f"job {job.job_id} stopped running rounds while {site} was being given it")

        with engine.job_runner.lock:  # the job's end waits for the site's outcome again
            engine.job_runner._pending_client_outcomes.setdefault(job.job_id, set()).add(site)
        replies = engine.start_client_job(job, {site: DispatchInfo(app_name, spec, resource_token)}, fl_ctx)
        reply = next((r.reply for r in replies if r.client_name == site), None)
        _check_reply(reply, f"starting job {job.job_id} at {site}")
    logger.info("job %s deployed and started again at %s (%s)", job.job_id, site, lost.reason)


def site_app_name(job: Job, site: str) -> str:
    """The app of ``job`` that ``site`` runs (named for it, or deployed to every site).

    Raises:
        RejoinError: the job's deploy map gives the site no app.
    """
    for app_name, participants in job.get_deployment().items():
        names = extract_participants(participants)
        if site in names or (len(names) == 1 and names[0].upper() == ALL_SITES):
            return app_name
    raise RejoinError(f"job {job.job_id} deploys no app to {site}")


def _job_in_rounds(engine: Any, job_id: str, probe: bool) -> bool:
    answer = engine.send_app_command(job_id, SYNC_CLIENTS_TOPIC, {"probe": probe}, timeout=JOB_REPLY_TIMEOUT)
    data = answer.get(ServerCommandKey.DATA) if isinstance(answer, dict) else None
    return bool(isinstance(data, dict) and data.get("accepting"))


def _jobs_running_at(admin_server: Any, client: Client) -> set[str]:
    replies = admin_server.send_requests_and_get_reply_dict(
        {client.token: Message(topic=TrainingTopic.CHECK_STATUS, body="")}, timeout_secs=REPLY_TIMEOUT
    )
    reply = replies.get(client.token)
    _check_reply(reply, f"asking {client.name} which jobs it runs")
    status = json.loads(reply.body)
    return {str(job.get(ClientStatusKey.JOB_ID)) for job in status.get(ClientStatusKey.RUNNING_JOBS, [])}


def _check_reply(reply: Message | None, what: str) -> None:
    if reply is None:
        raise RejoinError(f"{what}: no reply within {REPLY_TIMEOUT:.0f} s")
    code = reply.get_header(MsgHeader.RETURN_CODE, ReturnCode.OK)
    body = reply.body if isinstance(reply.body, str) else ""
    if code != ReturnCode.OK or body.startswith(ERROR_MSG_PREFIX):
        raise RejoinError(f"{what}: {body or code}")
