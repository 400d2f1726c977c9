"""The server workflow of the dose3d jobs: NVFlare's FedAvg with update checks, a transfer log and one line per round.

Every update a site sends is checked before it may enter the aggregate (``dose3d_fl.fl.server.update_checks``:
finite values, the global model's names and shapes, a norm that is not an outlier against the other
sites'); a rejected update is left out of that round and the round aggregates the rest. Every result that
arrives, accepted or not, gets a line in the hash-chained ``transfer_log.jsonl`` in the server's job
workspace (``dose3d_fl.fl.server.transfer_log``). The norm check compares sites, so updates are held until the
round's results are in and aggregated then (FedAvg otherwise adds each one as it arrives).

The held updates enter the weighted sum in a fixed order, not in the order they arrived: fewest local steps
(the smallest weight) first, then by site name. Floating-point addition is not associative, so with arrival
order the global model, and every round after it, depended on which site happened to finish first (with
three simulated sites on two cores that order changes from run to run once the sites take about as long).

NVFlare's ``FedAvg`` logs several lines per round and per site. A person following a run wants one line:
which round, how many sites answered, the Dice the sites measured on the global model they received
(pooled over their validation cases), their mean local loss and how long the round took; with several
organs, each organ's Dice pooled over the cases that delineate it. That line goes to the ``dose3d.rounds``
logger, which the simulator console shows alone (``dose3d_fl.fl.log_config``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from nvflare.apis.client import Client
from nvflare.apis.dxo import MetaKey
from nvflare.apis.fl_constant import ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.app_constant import AppConstants

from dose3d_fl.files import write_text_atomic
from dose3d_fl.fl.policy.payload import as_array, params_digest
from dose3d_fl.fl.policy.receipts import (
    DECISIONS_META,
    RECEIPT_META,
    Receipt,
    load_or_create_key,
    public_pem,
    sign,
)
from dose3d_fl.fl.server.aggregators import reported_steps
from dose3d_fl.fl.server.resilient import ResilientFedAvg
from dose3d_fl.fl.server.transfer_log import LOG_NAME, SERVER_KEY_DIR, SERVER_KEY_NAME, TransferLog
from dose3d_fl.fl.server.update_checks import DEFAULT_MAX_NORM_RATIO, check_update, update_outliers

ROUND_LOGGER = "dose3d.rounds"
ROUND_TIMES_NAME = "round_times.jsonl"
round_log = logging.getLogger(ROUND_LOGGER)


ORGAN_DICE_PREFIX, ORGAN_CASES_PREFIX = "val_dice_", "val_cases_"


def pooled_organ_dice(site_metrics: dict[str, dict[str, Any]]) -> dict[str, tuple[float, int]]:
    """Organ -> (Dice pooled over the sites' cases that score it, those cases), from ``val_dice_<organ>``
    and ``val_cases_<organ>`` of each site's metrics; organs in the order the sites name them."""
    pooled: dict[str, list[tuple[float, int]]] = {}
    for metrics in site_metrics.values():
        for name, value in metrics.items():
            if not name.startswith(ORGAN_DICE_PREFIX):
                continue
            organ = name.removeprefix(ORGAN_DICE_PREFIX)
            cases = int(metrics.get(ORGAN_CASES_PREFIX + organ, 1) or 0)
            entries = pooled.setdefault(organ, [])
            if isinstance(value, (int, float)) and not math.isnan(float(value)) and cases:
                entries.append((float(value), cases))
    out = {}
    for organ, entries in pooled.items():
        cases = sum(n for _, n in entries)
        out[organ] = (sum(d * n for d, n in entries) / cases if cases else math.nan, cases)
    return out


def format_round_line(
    current_round: int, num_rounds: int, site_metrics: dict[str, dict[str, Any]], seconds: float
) -> str:
    """One line summarising a finished round.

    Args:
        current_round: 0-based round index.
        num_rounds: rounds of the job.
        site_metrics: site name -> the metrics it sent (``val_dice``, ``val_cases``, ``train_loss``, and
            ``val_dice_<organ>`` / ``val_cases_<organ>`` per organ).
        seconds: wall time of the round.
    """
    pooled = [
        (float(m["val_dice"]), int(m.get("val_cases", 1)))
        for m in site_metrics.values()
        if isinstance(m.get("val_dice"), (int, float)) and not math.isnan(float(m["val_dice"]))
    ]
    cases = sum(n for _, n in pooled)
    dice = sum(d * n for d, n in pooled) / cases if cases else math.nan
    losses = [float(m["train_loss"]) for m in site_metrics.values() if "train_loss" in m]
    loss = sum(losses) / len(losses) if losses else math.nan
    received = "initial model" if current_round == 0 else f"round {current_round} model"
    organs = pooled_organ_dice(site_metrics)
    per_organ = (
        " (" + ", ".join(f"{organ} {value:.3f}" for organ, (value, _) in organs.items()) + ")"
        if len(organs) > 1
        else ""
    )
    return (
        f"round {current_round + 1}/{num_rounds}: {len(site_metrics)} site(s), "
        f"Dice of the {received} {dice:.4f} on {cases} val case(s){per_organ}, "
        f"local loss {loss:.4f}, {seconds:.1f} s"
    )


class SegFedAvg(ResilientFedAvg):
    """FedAvg (weights only, weighted by local steps) with update checks, a transfer log and a round line.

    Takes the arguments of ``ResilientFedAvg`` (``FedAvg``'s plus dropout tolerance and resume) plus:

    Args:
        max_norm_ratio: reject an update whose distance from the global model exceeds this many times the
            median of the other sites' distances; normalisation layers' running statistics are compared
            under a wider limit (``dose3d_fl.fl.server.update_checks.update_outliers``).

    The FedAvg recipe builds it through ``dose3d_fl.fl.seg_job.SegFedAvgRecipe``.
    """

    def __init__(self, *args: Any, max_norm_ratio: float = DEFAULT_MAX_NORM_RATIO, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_norm_ratio = max_norm_ratio
        self._round_metrics: dict[str, dict[str, Any]] = {}
        self._round_started = time.perf_counter()
        self._held: list[FLModel] = []
        self._global: dict[str, np.ndarray] = {}
        self._transfer_log: TransferLog | None = None
        self.rejections: dict[str, list[int]] = {}
        # What the server decided on each site's last receipted update; sent with the next round's task.
        self._decisions: dict[str, dict[str, Any]] = {}

    def sample_clients(self, num_clients: int | None = None) -> list[str]:
        # Called once at the start of each round, after ROUND_STARTED.
        self._round_started = time.perf_counter()
        self._round_metrics = {}
        self._held = []
        return super().sample_clients(num_clients)

    def send_model(
        self, task_name: str = "train", targets: Any = None, data: FLModel | None = None, **kwargs
    ):
        if data is not None and task_name == self.task_name and data.params:
            # The round's reference for the update checks: the global model as sent.
            self._global = {name: np.array(as_array(v), copy=True) for name, v in data.params.items()}
            if self._decisions:  # each site records the decision on its last update (policy/receipts.py)
                data.meta = {**(data.meta or {}), DECISIONS_META: dict(self._decisions)}
                self._decisions = {}
        return super().send_model(task_name=task_name, targets=targets, data=data, **kwargs)

    def _accept_train_result(
        self, client_name: str, result: Shareable, fl_ctx: FLContext, **kwargs: Any
    ) -> bool:
        rc = result.get_return_code()
        if rc and rc != ReturnCode.OK:
            self._log_transfer(client_name, "error", reason=f"site returned {rc}")
            if not kwargs.get("is_unknown_task"):
                # E.g. the site's weights-only guard replaced a result that carried free text (an error
                # message) by a bare error code: the reason stays in the site's log.
                self._failed.append(client_name)
                round_log.warning(
                    "round %d/%d: %s reported an error, not aggregated: return code %s (the reason is in the "
                    "site's log)",
                    self.current_round + 1,
                    self.num_rounds,
                    client_name,
                    rc,
                )
        return super()._accept_train_result(client_name=client_name, result=result, fl_ctx=fl_ctx, **kwargs)

    def _aggregate_one_result(self, result: FLModel) -> bool:
        if not result.params:
            # A site that failed its round (e.g. its data vanished) answers with an error and no tensors:
            # ResilientFedAvg logs it and counts the site as failed.
            error = (result.meta or {}).get("error")
            self._log_transfer(_site(result), "error", reason=str(error or "the result carries no tensors"))
            return super()._aggregate_one_result(result)
        difference = result.params_type == ParamsType.DIFF
        reason = check_update(result.params, self._global, difference) if self._global else None
        if reason:
            self._reject(_site(result), result, reason)
            return False
        self._held.append(result)  # aggregated with the others once the round's results are in
        return True

    def _record_participation(self, clients: list[str], seconds: float) -> None:
        # The round has closed: check the held updates against each other, aggregate the accepted ones, and
        # only then let ResilientFedAvg count who took part and whether enough sites did.
        self._flush_held()
        super()._record_participation(clients, seconds)

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        norms, outliers = (
            update_outliers(
                {_site(r): r.params or {} for r in held},
                {_site(r): _reference(r, self._global) for r in held},
                self.max_norm_ratio,
            )
            if self._global
            else ({}, {})
        )
        for result in sorted(held, key=_aggregation_order):
            site = _site(result)
            if site in outliers:
                self._reject(site, result, outliers[site], norm=norms.get(site))
            elif super()._aggregate_one_result(result) is not False:
                self._round_metrics[site] = dict(result.metrics or {})
                self._log_transfer(site, "accepted", result, norm=norms.get(site))

    def _get_aggregated_result(self) -> FLModel:
        self._flush_held()  # no-op after _record_participation; kept for callers of FedAvg's own run()
        if self._received_count == 0 and self._global:
            self.warning(f"round {self.current_round}: no update accepted; the global model stays as it was")
            return FLModel(
                params=dict(self._global),
                params_type=ParamsType.FULL,
                current_round=self.current_round,
                meta={"nr_aggregated": 0, "current_round": self.current_round},
            )
        return super()._get_aggregated_result()

    def process_result_of_unknown_task(
        self, client: Client, task_name: str, client_task_id: str, result: Shareable, fl_ctx: FLContext
    ) -> None:
        result_round = result.get_header(AppConstants.CURRENT_ROUND, None)
        self._log_transfer(
            client.name, "late", reason=f"{task_name} result for round {result_round} arrived after it closed"
        )
        super().process_result_of_unknown_task(client, task_name, client_task_id, result, fl_ctx)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        updated = super().update_model(model, aggr_result)
        seconds = time.perf_counter() - self._round_started
        round_log.info(format_round_line(self.current_round, self.num_rounds, self._round_metrics, seconds))
        self._log_round_time(seconds)
        return updated

    def _log_round_time(self, seconds: float) -> None:
        """``metrics/round_times.jsonl``: when each round ended (wall clock), for the overhead benchmarks."""
        path = self._run_dir() / "metrics" / ROUND_TIMES_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"round": self.current_round, "seconds": round(seconds, 3), "ended": round(time.time(), 3)}
        with path.open("a") as out:
            out.write(json.dumps(record) + "\n")

    def _reject(self, site: str, result: FLModel, reason: str, norm: float | None = None) -> None:
        self.rejections.setdefault(site, []).append(self.current_round)
        self.reject_result(result, reason)  # the warning line, and the site counts as failed this round
        self._log_transfer(site, "rejected", result, reason=reason, norm=norm)

    def _log_transfer(
        self,
        site: str,
        status: str,
        result: FLModel | None = None,
        reason: str = "",
        norm: float | None = None,
    ) -> None:
        if self._transfer_log is None:
            self._transfer_log = self._open_transfer_log()
        record: dict[str, Any] = {"round": self.current_round, "site": site, "status": status}
        if result is not None:
            digest, nbytes = params_digest(result.params or {})
            meta = result.meta or {}
            record |= {
                "sha256": digest,
                "bytes": nbytes,
                "tensors": len(result.params or {}),
                "filters": list(meta.get(MetaKey.FILTER_HISTORY) or []),
            }
            if "dp_epsilon" in meta:
                record["dp_epsilon"] = float(meta["dp_epsilon"])
            receipt = Receipt.from_meta(meta.get(RECEIPT_META))
            if receipt is not None:
                record["receipt"] = receipt.to_meta()
                record["receipt_check"] = receipt.check(site, self.current_round, digest)
                self._decisions[site] = {
                    "round": self.current_round,
                    "sha256": receipt.entry.get("sha256"),
                    "status": status,
                }
        if norm is not None:
            record["update_norm"] = round(float(norm), 6)
        if reason:
            record["reason"] = reason
        self._transfer_log.append(record)

    def _open_transfer_log(self) -> TransferLog:
        """The job's log, countersigned with the server's provisioned key (or a key of this workspace's)."""
        run_dir = self._run_dir()
        root = Path(self.engine.get_workspace().get_root_dir()) if self.engine else run_dir
        key = load_or_create_key(root / SERVER_KEY_DIR, root / "startup" / "server.key", SERVER_KEY_NAME)
        write_text_atomic(run_dir / f"{Path(LOG_NAME).stem}.server_key.pem", public_pem(key))
        return TransferLog(run_dir / LOG_NAME, countersign=lambda data: sign(key, data))

    def _run_dir(self) -> Path:
        engine = self.fl_ctx.get_engine() if self.fl_ctx else None
        job_id = self.fl_ctx.get_job_id() if self.fl_ctx else None
        if engine is not None and job_id:
            return Path(engine.get_workspace().get_run_dir(job_id))
        return Path.cwd()


def _reference(result: FLModel, global_params: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """What an update's norm is measured from: the global model, or nothing for a difference (DIFF)."""
    return None if result.params_type == ParamsType.DIFF else global_params


def _site(result: FLModel) -> str:
    return str((result.meta or {}).get("client_name", "?"))


def _aggregation_order(result: FLModel) -> tuple[float, str]:
    """Where an accepted update enters the round's weighted sum: smallest weight (local steps) first, then
    by site name, whatever the order of arrival."""
    return reported_steps(result), _site(result)
