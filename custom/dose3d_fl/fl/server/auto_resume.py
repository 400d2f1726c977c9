"""``AutoResume``: jobs that continue by themselves after a server restart, and sites that rejoin a running job.

A component of the FL server's parent process, configured in the server kit's ``local/resources.json``
(:func:`install_auto_resume`; ``dose3d poc up`` and ``dose3d provision`` install it). What NVFlare 2.9 does
without it, and what this component adds:

* **Server restart.** NVFlare 2.9 has no server high availability: when the server process dies, its job
  processes die with it (or exit when they lose it), the sites' job processes end themselves, and after the
  restart the job store still says ``RUNNING`` for a job that nothing runs, for ever. At the start of the
  restarted server, ``AutoResume`` marks each such job ``FINISHED:ABANDONED`` (NVFlare's own name for it) and
  resubmits it: the same signed job content (NVFlare's job clone, as the admin command ``clone_job``), with the
  original submitter and, in the job's meta, ``dose3d_resume_from`` = the job whose round checkpoint it
  continues. ``ResilientFedAvg`` reads that and resumes from the checkpoint, round numbers unchanged, so at most
  the round in progress at the crash is lost. A job that had not finished a round yet starts again from
  round 1; a job whose server workflow writes no dose3d checkpoint is marked abandoned and not resubmitted.
* **Site restart.** NVFlare 2.9 never deploys a running job to a site again; a site restarted during a job
  sat out the rest of it. ``AutoResume`` watches the running jobs' participants and gives the job again to
  each site that registered anew (:mod:`dose3d_fl.fl.server.rejoin`).

Every action is a JSON line in ``<checkpoint folder>/auto_resume.jsonl`` next to the resume checkpoints
(``<server workspace>/dose3d_checkpoints``, or ``$DOSE3D_CHECKPOINT_DIR``) and a line in the server's log.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

from nvflare.apis.event_type import EventType
from nvflare.apis.fl_component import FLComponent
from nvflare.apis.fl_constant import SystemComponents
from nvflare.apis.fl_context import FLContext
from nvflare.apis.job_def import Job, JobMetaKey, RunStatus
from nvflare.private.fed.utils.fed_utils import extract_participants

from dose3d_fl.files import write_json_atomic
from dose3d_fl.fl.server.rejoin import NotInRoundsError, RejoinError, rejoin_site, sites_to_rejoin
from dose3d_fl.fl.server.resilient import RESUME_FROM_META, checkpoint_path, load_resume_checkpoint

logger = logging.getLogger(__name__)

COMPONENT_ID = "dose3d_auto_resume"
COMPONENT_PATH = "dose3d_fl.fl.server.auto_resume.AutoResume"
RECORD_NAME = "auto_resume.jsonl"
SERVER_CONFIG_NAME = "config_fed_server.json"
SITE_WAIT = 60.0
# What a resubmitted job keeps of the interrupted one's meta: what NVFlare's clone_job keeps, plus the submitter
# (the sites authorise a job by its submitter's role, e.g. the right to run custom code).
KEPT_META = (
    JobMetaKey.JOB_NAME,
    JobMetaKey.JOB_FOLDER_NAME,
    JobMetaKey.DEPLOY_MAP,
    JobMetaKey.RESOURCE_SPEC,
    JobMetaKey.CONTENT_LOCATION,
    JobMetaKey.APPROVALS,
    JobMetaKey.MIN_CLIENTS,
    JobMetaKey.MANDATORY_CLIENTS,
    JobMetaKey.DATA_STORAGE_FORMAT,
    JobMetaKey.STUDY,
    JobMetaKey.SUBMITTER_NAME,
    JobMetaKey.SUBMITTER_ORG,
    JobMetaKey.SUBMITTER_ROLE,
)


def record_path(server_workspace: Path) -> Path:
    """The JSON-lines record of what ``AutoResume`` did, beside the resume checkpoints."""
    return checkpoint_path(Path(server_workspace), "_").parent / RECORD_NAME


def read_records(server_workspace: Path) -> list[dict[str, Any]]:
    """Every record ``AutoResume`` wrote on this server, oldest first ([] when none)."""
    path = record_path(server_workspace)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def install_auto_resume(server_kit: Path, check_interval: float = 2.0) -> Path:
    """Add ``AutoResume`` to a server kit's ``local/resources.json`` (made from ``resources.json.default``).

    Idempotent: an earlier ``AutoResume`` entry is replaced.

    Args:
        server_kit: the server's startup kit (holding ``local/``).
        check_interval: seconds between the component's looks for restarted sites.

    Returns:
        The ``resources.json`` written.

    Raises:
        FileNotFoundError: the kit has neither ``local/resources.json`` nor ``local/resources.json.default``.
    """
    local = Path(server_kit) / "local"
    target = local / "resources.json"
    source = target if target.is_file() else local / "resources.json.default"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: {server_kit} is not an NVFlare server startup kit")
    resources = json.loads(source.read_text())
    components = [c for c in resources.get("components", []) if c.get("id") != COMPONENT_ID]
    components.append(
        {"id": COMPONENT_ID, "path": COMPONENT_PATH, "args": {"check_interval": check_interval}}
    )
    resources["components"] = components
    allowed = resources.get("class_allow_list")
    if isinstance(allowed, list) and "*" not in allowed and COMPONENT_PATH not in allowed:
        resources["class_allow_list"] = [*allowed, COMPONENT_PATH]
    write_json_atomic(target, resources)
    return target


def checkpoint_names(job: Job, fl_ctx: FLContext) -> list[str]:
    """The resume checkpoint names of ``job``'s server workflows (``ResilientFedAvg``'s ``checkpoint_name``)."""
    names: list[str] = []
    for app_name, participants in job.get_deployment().items():
        sites = [s.lower() for s in extract_participants(participants)]
        if "server" not in sites and "@all" not in sites:
            continue
        with zipfile.ZipFile(io.BytesIO(job.get_application(app_name, fl_ctx))) as app:
            configs = [n for n in app.namelist() if Path(n).name == SERVER_CONFIG_NAME]
            for config in configs:
                for workflow in json.loads(app.read(config)).get("workflows", []):
                    name = (workflow.get("args") or {}).get("checkpoint_name")
                    if name:
                        names.append(str(name))
    return names


def checkpoint_to_continue(job_id: str, resumed_from: str | None, checkpoint: dict[str, Any]) -> str | None:
    """Whose round checkpoint an interrupted job continues from: None starts it again from round 1.

    Args:
        job_id: the interrupted job.
        resumed_from: the job the interrupted job itself continued, if it was a resubmission.
        checkpoint: the checkpoint now on the server under the job's checkpoint name ({} when none).

    Returns:
        The checkpoint's job id when it is the interrupted job's own (it finished a round) or the one it
        continued (it finished none since); None when the checkpoint belongs to another job or is absent.
    """
    owner = checkpoint.get("job_id")
    return str(owner) if owner and owner in {job_id, resumed_from} else None


class AutoResume(FLComponent):
    """Resubmit the jobs a server restart interrupted; give a running job again to sites that restarted.

    Args:
        resume_jobs: at server start, resubmit the jobs left ``RUNNING`` by the previous server process.
        rejoin_sites: deploy a running job again to a participating site that registered anew.
        check_interval: seconds between looks for restarted sites.
    """

    def __init__(
        self, resume_jobs: bool = True, rejoin_sites: bool = True, check_interval: float = 2.0
    ) -> None:
        super().__init__()
        self.resume_jobs = resume_jobs
        self.rejoin_sites = rejoin_sites
        self.check_interval = check_interval
        self._stop = threading.Event()
        self._tried: set[tuple[str, str]] = set()  # (job id, site token) that could not be given the job
        self._workspace: Path | None = None
        self._started = time.time()  # built when the server process starts: a job scheduled before is stale

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.SYSTEM_START:
            engine = fl_ctx.get_engine()
            self._workspace = Path(engine.get_workspace().get_root_dir())
            # Nothing here may hold up the server's start: NVFlare 2.9 signs the server's own messages with a
            # signature it computes once, and computed before the start completes it is "NA" for good (every
            # admin session then fails with "invalid auth token signature"). So all work is in a thread.
            threading.Thread(target=self._run, args=(engine,), name="dose3d-auto-resume", daemon=True).start()
        elif event_type == EventType.SYSTEM_END:
            self._stop.set()

    def _run(self, engine: Any) -> None:
        if self._stop.wait(self.check_interval):
            return
        if self.resume_jobs:
            try:
                with engine.new_context() as fl_ctx:
                    self.resume_interrupted_jobs(fl_ctx)
            except Exception as err:  # the server runs on; the person can still resume by hand
                self.logger.error(f"resubmitting the jobs a server restart interrupted failed: {err}")
        if self.rejoin_sites:
            self._watch_sites(engine)

    # -- server restart -----------------------------------------------------------------------------------------

    def resume_interrupted_jobs(self, fl_ctx: FLContext) -> list[str]:
        """Mark the jobs the store still calls running as abandoned and resubmit those that can go on.

        Returns:
            The ids of the resubmitted jobs.
        """
        engine = fl_ctx.get_engine()
        job_manager = engine.get_component(SystemComponents.JOB_MANAGER)
        running_here = set(getattr(engine, "run_processes", {}) or {})
        stale = job_manager.get_jobs_by_status([RunStatus.RUNNING, RunStatus.DISPATCHED], fl_ctx)
        workspace = engine.get_workspace()
        resubmitted = []
        for job in stale:
            scheduled = job.meta.get(JobMetaKey.LAST_SCHEDULE_TIME.value) or 0
            if job.job_id in running_here or float(scheduled) >= self._started:  # started by this process
                continue
            if not Path(workspace.get_run_dir(job.job_id)).is_dir():
                # Not run by this server (servers on one host share NVFlare's default job store): not ours.
                continue
            self._wait_for_sites(engine, job)
            try:
                new_id = self._resubmit(job, job_manager, fl_ctx)
            except Exception as err:  # one bad job must not stop the server or the others
                self.logger.error(
                    f"job {job.job_id} was running when the server stopped; not resubmitted: {err}"
                )
                self._record({"event": "not_resumed", "job_id": job.job_id, "reason": str(err)})
                continue
            if new_id:
                resubmitted.append(new_id)
        return resubmitted

    def _wait_for_sites(self, engine: Any, job: Job) -> None:
        # NVFlare's scheduler tries a job again only 10 s after it found too few sites; the sites of the
        # interrupted job reconnect within seconds of the restart, so resubmit once they are back (or after
        # SITE_WAIT seconds: the scheduler waits for the rest).
        deadline = time.monotonic() + SITE_WAIT
        while len(engine.get_clients()) < (job.min_sites or 1) and time.monotonic() < deadline:
            if self._stop.wait(0.5):
                return

    def _resubmit(self, job: Job, job_manager: Any, fl_ctx: FLContext) -> str | None:
        name = job.meta.get(JobMetaKey.JOB_NAME.value, "?")
        job_manager.set_status(job.job_id, RunStatus.ABANDONED, fl_ctx)
        names = checkpoint_names(job, fl_ctx)
        if not names:
            self.logger.warning(
                f"job {job.job_id} ({name}) was running when the server stopped; marked abandoned, not "
                "resubmitted: its server workflow keeps no dose3d round checkpoint"
            )
            self._record({"event": "abandoned", "job_id": job.job_id, "job_name": name})
            return None
        path = checkpoint_path(self._workspace or Path("."), names[0])
        checkpoint = load_resume_checkpoint(path) if path.is_file() else {}
        resume_from = checkpoint_to_continue(job.job_id, job.meta.get(RESUME_FROM_META), checkpoint)
        meta = {key.value: job.meta[key.value] for key in KEPT_META if key.value in job.meta}
        meta[JobMetaKey.CLONED_FROM.value] = job.job_id
        if resume_from:
            meta[RESUME_FROM_META] = resume_from
        new_id = job_manager.clone(from_jid=job.job_id, meta=meta, fl_ctx=fl_ctx)[JobMetaKey.JOB_ID.value]
        next_round = int(checkpoint["next_round"]) if resume_from else 0
        total = int(checkpoint.get("num_rounds", 0)) if resume_from else None
        self.logger.warning(
            f"job {job.job_id} ({name}) was running when the server stopped: marked abandoned and resubmitted as "
            f"job {new_id}, "
            + (
                f"continuing from {path} at round {next_round + 1} of {total}"
                if resume_from
                else "from round 1 (it had finished no round)"
            )
        )
        self._record(
            {
                "event": "resumed",
                "job_name": name,
                "interrupted_job": job.job_id,
                "resume_job": new_id,
                "checkpoint_of": resume_from,
                "next_round": next_round + 1,
                "num_rounds": total,
            }
        )
        return new_id

    # -- site restart -------------------------------------------------------------------------------------------

    def _watch_sites(self, engine: Any) -> None:
        while not self._stop.is_set():
            try:
                self.rejoin_restarted_sites(engine)
            except Exception as err:  # keep watching: the next look may succeed
                self.logger.error(f"looking for restarted sites failed: {err}")
            self._stop.wait(self.check_interval)

    def rejoin_restarted_sites(self, engine: Any) -> list[tuple[str, str]]:
        """Give each running job again to its sites that lost it; returns ``(job id, site)`` rejoined."""
        rejoined = []
        for lost in sites_to_rejoin(engine):
            site, key = lost.client.name, (lost.job_id, lost.client.token)
            job = engine.job_runner.running_jobs.get(lost.job_id)
            if key in self._tried or job is None:
                continue
            started = time.monotonic()
            try:
                rejoin_site(engine, job, lost)
            except (
                NotInRoundsError
            ) as err:  # e.g. the sites' job processes ending with the job: nothing to do
                self._tried.add(key)
                self.logger.debug(f"{site} ({lost.reason}) not given job {lost.job_id} again: {err}")
                continue
            except RejoinError as err:
                self._tried.add(key)
                self.logger.warning(
                    f"{site} ({lost.reason}) during job {lost.job_id}, not given it again: {err}"
                )
                self._record(
                    {
                        "event": "not_rejoined",
                        "job_id": lost.job_id,
                        "site": site,
                        "why": lost.reason,
                        "reason": str(err),
                    }
                )
                continue
            seconds = round(time.monotonic() - started, 1)
            self.logger.warning(
                f"{site} ({lost.reason}) during job {lost.job_id}: the job was deployed and started there again "
                f"({seconds} s); the site takes part from the round in progress, or the next"
            )
            self._record(
                {
                    "event": "rejoined",
                    "job_id": lost.job_id,
                    "site": site,
                    "why": lost.reason,
                    "seconds": seconds,
                }
            )
            rejoined.append((lost.job_id, site))
        return rejoined

    def _record(self, entry: dict[str, Any]) -> None:
        if self._workspace is None:
            return
        path = record_path(self._workspace)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **entry})
        with path.open("a") as out:
            out.write(line + "\n")
