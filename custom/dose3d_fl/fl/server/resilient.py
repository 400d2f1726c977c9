"""FedAvg that tolerates sites dropping out, and checkpoints every round so a new job can resume.

NVFlare 2.9's ``FedAvg`` waits for every sampled site with no timeout, and the server has no high
availability: one stuck site or a server restart can cost days. ``ResilientFedAvg`` keeps ``FedAvg``'s
streaming aggregation and persistence and changes three things:

* a round waits for the sampled sites at most ``round_timeout`` seconds and completes with those that
  answered (at least ``min_responses``); a result that arrives after its round closed is discarded and
  logged, and its site is asked again in the next round like every other site;
* after every round it writes a resume checkpoint (global weights, next round, total rounds, who took part)
  to ``<server workspace>/dose3d_checkpoints/<checkpoint_name>.pt``, or to ``$DOSE3D_CHECKPOINT_DIR`` when the
  server's environment sets it (the simulator recreates its workspace for every run);
* with ``resume=True`` it starts from that checkpoint instead of the initial model and continues the round
  count, so at most the round in progress is lost. The rounds keep their numbers (``current_round``,
  ``total_rounds``) so a site's learning-rate schedule is the one of an uninterrupted run.

Who took part in which round is written to ``<job run dir>/participation.json`` every round, and a round
that a site missed gets a line on the ``dose3d.rounds`` logger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from nvflare.apis.client import Client
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.wf_comm_spec import WFCommSpec
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper
from nvflare.app_common.app_constant import AppConstants
from nvflare.app_common.app_event_type import AppEventType
from nvflare.app_common.utils.fedprox_utils import set_fedprox_metadata
from nvflare.app_common.utils.tensor_disk_offload_context import (
    cleanup_tensor_disk_offload,
    setup_tensor_disk_offload,
)
from nvflare.app_common.workflows.fedavg import FedAvg
from nvflare.fuel.utils.log_utils import center_message

from dose3d_fl.files import torch_save_atomic, write_text_atomic

ROUND_LOGGER = "dose3d.rounds"
CHECKPOINT_DIR = "dose3d_checkpoints"
CHECKPOINT_DIR_ENV = "DOSE3D_CHECKPOINT_DIR"
PARTICIPATION_FILE = "participation.json"
# Set in a job's meta by the server's AutoResume (fl/server/auto_resume.py) when it resubmits a job that a server
# restart interrupted: the id of the job whose checkpoint this one continues.
RESUME_FROM_META = "dose3d_resume_from"
# The app command AutoResume sends a running job when a restarted site was given the job again.
SYNC_CLIENTS_TOPIC = "dose3d.sync_clients"
round_log = logging.getLogger(ROUND_LOGGER)


class NotEnoughSitesError(RuntimeError):
    """A round closed with fewer results than ``min_responses``."""


def checkpoint_path(server_workspace: Path, checkpoint_name: str) -> Path:
    """Where the server keeps the resume checkpoint of the jobs called ``checkpoint_name``.

    ``$DOSE3D_CHECKPOINT_DIR`` if set (a server-side setting, never part of a job), else
    ``server_workspace/dose3d_checkpoints``.
    """
    folder = os.environ.get(CHECKPOINT_DIR_ENV)
    return (Path(folder) if folder else Path(server_workspace) / CHECKPOINT_DIR) / f"{checkpoint_name}.pt"


def load_resume_checkpoint(path: Path) -> dict[str, Any]:
    """Read a resume checkpoint written by ``ResilientFedAvg``.

    Returns:
        ``model`` (weights), ``next_round`` (0-based round to run next), ``num_rounds``, ``job_id`` and
        ``participation`` (one record per finished round).

    Raises:
        FileNotFoundError: no checkpoint at ``path``, saying how to start without one.
    """
    import torch  # not at module level: see _save_resume_checkpoint

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"no resume checkpoint at {path}: a job with resume=true continues a job of the same name that "
            "finished at least one round on this server; submit the job without resume to start afresh"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


class ResilientFedAvg(FedAvg):
    """``FedAvg`` with a per-round deadline, a minimum number of results, and a resume checkpoint.

    Args:
        min_responses: results a round needs to update the global model; fewer when the round closes stops
            the job with an error (the last checkpoint stays, resume once the sites are back).
            0 means every sampled site.
        round_timeout: seconds a round waits for the sampled sites' results; 0 waits without limit (NVFlare's
            ``FedAvg`` behaviour). Late results are discarded.
        resume: start from the checkpoint of the last job of the same ``checkpoint_name`` on this server.
        checkpoint_name: names the checkpoint file; the recipe uses the job name.
        *args, **kwargs: ``FedAvg``'s arguments. ``num_rounds`` is the job's total number of rounds, also
            when resuming. Result errors from sites are logged and ignored (``ignore_result_error=True``);
            ``min_responses`` decides whether a round still counts.
    """

    def __init__(
        self,
        *args: Any,
        min_responses: int = 0,
        round_timeout: int = 0,
        resume: bool = False,
        checkpoint_name: str = "dose3d",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("ignore_result_error", True)
        super().__init__(*args, **kwargs)
        if min_responses < 0 or round_timeout < 0:
            raise ValueError(
                f"min_responses ({min_responses}) and round_timeout ({round_timeout}) must be >= 0"
            )
        self.min_responses = int(min_responses)
        self.round_timeout = int(round_timeout)
        self.resume = bool(resume)
        self.checkpoint_name = checkpoint_name
        self._participation: list[dict[str, Any]] = []
        self._answered: list[str] = []
        self._failed: list[str] = []  # sites whose result came but was not aggregated (an error, no weights)
        self._missing: dict[str, tuple[int, float]] = {}  # site -> (1-based round it missed, when it closed)
        self._in_rounds = False  # a site restarted now is taken back (see _sync_clients)

    def set_communicator(self, communicator: WFCommSpec) -> None:
        super().set_communicator(communicator)
        # NVFlare 2.9's Controller hands its period to the communicator as ``task_check_period``, but the
        # server's WFCommServer closes finished tasks in a loop that sleeps ``_task_check_period`` (0.2 s from
        # its own constructor) and never reads the other name. So a round's last result waited up to 0.2 s
        # before its task closed and the round could be aggregated. Give that loop the workflow's period
        # (tests/fl/test_resilient.py fails if a later NVFlare renames it).
        if hasattr(communicator, "_task_check_period"):
            communicator._task_check_period = self._task_check_period

    # -- the workflow ---------------------------------------------------------------------------------------

    def run(self) -> None:
        # As FedAvg.run: tensors may stream to disk instead of memory while results are aggregated.
        context = None
        try:
            context = setup_tensor_disk_offload(
                engine=getattr(self, "engine", None),
                enabled=self.enable_tensor_disk_offload,
                job_id=self.fl_ctx.get_job_id("job"),
            )
            self._accept_rejoining_sites()
            self._in_rounds = True
            self._run_rounds()
        finally:
            self._in_rounds = False
            cleanup_tensor_disk_offload(engine=getattr(self, "engine", None), context=context)

    def _run_rounds(self) -> None:
        self.info(center_message("Start FedAvg."))
        self.fl_ctx.set_prop(AppConstants.NUM_ROUNDS, self.num_rounds, private=True, sticky=False)
        model = self._initial_model()
        model.total_rounds = self.num_rounds
        if self.start_round >= self.num_rounds:  # every round ran before the interruption: this job's result
            self.save_model(model)
        for current_round in range(self.start_round, self.num_rounds):
            self.current_round = current_round
            if self.abort_signal.triggered:
                return
            try:
                model = self._run_round(model)
            except NotEnoughSitesError as err:
                self.panic(str(err))
                return
            if model is None:  # aborted
                return
            self._save_resume_checkpoint(model)
            self._maybe_cleanup_memory()
            if self.stop_condition and self.should_stop(model.metrics):
                self.info(f"Stopping at round={self.current_round} out of total_rounds={self.num_rounds}.")
                break
        self.info(center_message("Finished FedAvg."))

    def _initial_model(self) -> FLModel:
        if self.model is not None:
            model = self.model if isinstance(self.model, FLModel) else FLModel(params=self.model)
        else:
            model = self.load_model()
        resume_from = self._resume_from()
        if self.resume or resume_from:
            path = checkpoint_path(Path(self.engine.get_workspace().get_root_dir()), self.checkpoint_name)
            checkpoint = load_resume_checkpoint(path)
            if resume_from and checkpoint.get("job_id") != resume_from:
                raise RuntimeError(
                    f"{path} is the checkpoint of job {checkpoint.get('job_id')}, not of job {resume_from} that this "
                    "job was submitted to continue: another job of the same name ran in between; submit the job "
                    "again (without resume to start afresh)"
                )
            model.params = checkpoint["model"]
            self.start_round = int(checkpoint["next_round"])
            self._participation = list(checkpoint.get("participation", []))
            round_log.info(
                "resuming from %s: rounds %d..%d of %d left (checkpoint of job %s)",
                path,
                self.start_round + 1,
                self.num_rounds,
                self.num_rounds,
                checkpoint.get("job_id"),
            )
        model.start_round = self.start_round
        return model

    def _resume_from(self) -> str | None:
        """The interrupted job this one continues, when the server's AutoResume resubmitted it (see its meta)."""
        try:
            meta_path = self.engine.get_workspace().get_job_meta_path(self.fl_ctx.get_job_id())
            return json.loads(Path(meta_path).read_text()).get(RESUME_FROM_META)
        except (AttributeError, OSError, ValueError):  # the simulator has no job meta file
            return None

    def _accept_rejoining_sites(self) -> None:
        # NVFlare 2.9 registers a restarted site under a new client identity and never deploys a running job to it
        # again. The server's AutoResume does (fl/server/auto_resume.py), records the site's new identity with the
        # job's participants
        # and sends this command: the job then reads its participants again and accepts the site's requests.
        register = getattr(self.engine, "register_app_command", None)
        if register is None:  # an engine without app commands
            return
        with contextlib.suppress(RuntimeError):  # registered by an earlier workflow of this job
            register(SYNC_CLIENTS_TOPIC, self._sync_clients)

    def _sync_clients(self, topic: str, data: Any, fl_ctx: FLContext) -> dict:
        # {"probe": true} only asks whether the job still runs rounds (a site started now would train in one).
        if self._in_rounds and not (isinstance(data, dict) and data.get("probe")):
            self.engine.sync_clients_from_main_process()
        return {
            "accepting": self._in_rounds,
            "clients": sorted(client.name for client in self.engine.get_clients()),
        }

    def _run_round(self, model: FLModel) -> FLModel | None:
        self.info(center_message(message=f"Round {self.current_round} started.", boarder_str="-"))
        model.current_round = self.current_round
        self.fl_ctx.set_prop(AppConstants.CURRENT_ROUND, self.current_round, private=True, sticky=False)
        if self.aggregator and self.aggregator.fl_ctx:
            self.aggregator.fl_ctx.set_prop(
                AppConstants.CURRENT_ROUND, self.current_round, private=True, sticky=False
            )
        self.event(AppEventType.ROUND_STARTED)

        clients = self.sample_clients(self.num_clients)
        self._reset_round_state(clients)
        started = time.monotonic()
        set_fedprox_metadata(model, self.fedprox_mu)
        self.send_model(
            task_name=self.task_name,
            targets=clients,
            data=model,
            timeout=self.round_timeout,
            callback=self._aggregate_one_result,
        )
        while self.get_num_standing_tasks():
            if self.abort_signal.triggered:
                self.info("Abort signal triggered. Finishing ResilientFedAvg.")
                return None
            time.sleep(self._task_check_period)
        self._record_participation(clients, time.monotonic() - started)

        needed = self.min_responses or len(clients)
        if self._received_count < needed:
            raise NotEnoughSitesError(
                f"round {self.current_round + 1}/{self.num_rounds}: {self._received_count} of {len(clients)} "
                f"site(s) sent a usable result within {self.round_timeout or 'unlimited'} s, {needed} needed "
                f"(missing: {', '.join(self._participation[-1]['missed']) or 'none'}); the global model of "
                f"the previous round is in the resume checkpoint: bring the sites back and submit the job "
                "with resume (dose3d fl resume)"
            )

        self.event(AppEventType.BEFORE_AGGREGATION)
        aggregate_results = self._get_aggregated_result()
        self.fire_event_with_data(
            AppEventType.AFTER_AGGREGATION, self.fl_ctx, AppConstants.AGGREGATION_RESULT, aggregate_results
        )
        model = self.update_model(model, aggregate_results)
        # As FedAvg: with a stop condition only a better model is saved, otherwise every round's.
        if not self.stop_condition or self.is_curr_model_better(model):
            self.save_model(model)
        return model

    def _reset_round_state(self, clients: list[str]) -> None:
        if self.aggregator:
            self.aggregator.reset_stats()
        else:
            self._aggr_helper = WeightedAggregationHelper(exclude_vars=self.exclude_vars)
            self._aggr_metrics_helper = WeightedAggregationHelper()
            self._all_metrics = True
        self._received_count = 0
        self._expected_count = len(clients)
        self._params_type = None
        self._site_metric_weights = {}
        self._answered = []
        self._failed = []

    def reject_result(self, result: FLModel, reason: str) -> bool:
        """Leave a site's result of this round out, log why, and count the site as failed; returns False.

        For subclasses that validate results before aggregating them: ``return self.reject_result(r, why)``
        from ``_aggregate_one_result`` instead of calling ``super()``.
        """
        site = str((result.meta or {}).get("client_name", "?"))
        self._failed.append(site)
        round_log.warning(
            "round %d/%d: result of %s rejected, not aggregated: %s",
            self.current_round + 1,
            self.num_rounds,
            site,
            reason,
        )
        return False

    def _aggregate_one_result(self, result: FLModel) -> bool:
        accepted = super()._aggregate_one_result(result)
        site = str((result.meta or {}).get("client_name", "?"))
        if accepted:
            self._answered.append(site)
        else:
            self._failed.append(site)
            error = (result.meta or {}).get("error")
            if error:
                round_log.warning(
                    "round %d/%d: %s reported an error, not aggregated: %s",
                    self.current_round + 1,
                    self.num_rounds,
                    (result.meta or {}).get("client_name", "?"),
                    error,
                )
        return accepted

    # -- late results and returning sites ----------------------------------------------------------------------

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        super().handle_event(event_type, fl_ctx)
        # NVFlare 2.9 drops a late result at the site: before sending, the site asks whether its task still
        # exists and the server answers "task ... is not found". What the server does see is the site asking
        # for work again: that is when it rejoins, in the round that is running.
        if event_type == EventType.BEFORE_PROCESS_TASK_REQUEST and self._missing:
            peer = fl_ctx.get_peer_context()
            site = peer.get_identity_name() if peer is not None else None
            if site in self._missing:
                missed_round, closed = self._missing.pop(site)
                round_log.warning(
                    "%s is back, %.0f s after round %d closed without it (its result for that round was "
                    "discarded); it takes part from round %d on",
                    site,
                    time.monotonic() - closed,
                    missed_round,
                    self.current_round + 1,
                )

    def process_result_of_unknown_task(
        self, client: Client, task_name: str, client_task_id: str, result: Shareable, fl_ctx: FLContext
    ) -> None:
        # A result whose task is gone (its round closed): never aggregated into a later round.
        result_round = result.get_header(AppConstants.CURRENT_ROUND, None)
        round_log.warning(
            "late result of %s from %s for round %s discarded",
            task_name,
            client.name,
            result_round + 1 if isinstance(result_round, int) else "?",
        )

    # -- participation and the resume checkpoint ---------------------------------------------------------------

    def _record_participation(self, clients: list[str], seconds: float) -> None:
        missed = sorted(set(clients) - set(self._answered))
        record = {
            "round": self.current_round + 1,
            "sampled": sorted(clients),
            "aggregated": sorted(self._answered),
            "missed": missed,
            "errors": sorted(set(self._failed)),
            "seconds": round(seconds, 1),
        }
        self._participation.append(record)
        for site in missed:
            if site not in self._failed:
                self._missing[site] = (self.current_round + 1, time.monotonic())
            reason = (
                "it reported an error"
                if site in self._failed
                else f"no result when the round closed, after {seconds:.0f} s"
            )
            round_log.warning(
                "round %d/%d: %s missed the round (%s)", self.current_round + 1, self.num_rounds, site, reason
            )
        self._write_participation()

    def _write_participation(self) -> None:
        text = json.dumps(participation_summary(self._participation), indent=2)
        write_text_atomic(Path(self.get_run_dir()) / PARTICIPATION_FILE, text + "\n")

    def _save_resume_checkpoint(self, model: FLModel) -> None:
        path = checkpoint_path(Path(self.engine.get_workspace().get_root_dir()), self.checkpoint_name)
        torch_save_atomic(
            {
                "model": model.params,
                "next_round": self.current_round + 1,
                "num_rounds": self.num_rounds,
                "job_id": self.fl_ctx.get_job_id(),
                "participation": self._participation,
            },
            path,
        )


def participation_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"rounds": records, "missed_rounds": {site: [1-based rounds it missed]}}``."""
    missed: dict[str, list[int]] = {}
    for record in records:
        for site in record["missed"]:
            missed.setdefault(site, []).append(record["round"])
    return {"rounds": records, "missed_rounds": missed}
