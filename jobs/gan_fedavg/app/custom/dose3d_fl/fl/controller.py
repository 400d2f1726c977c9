"""The server workflow of the dose3d jobs: NVFlare's FedAvg plus one readable line per round.

NVFlare's ``FedAvg`` logs several lines per round and per site. A person following a run wants one line:
which round, how many sites answered, the Dice the sites measured on the global model they received
(pooled over their validation cases), their mean local loss and how long the round took. That line goes
to the ``dose3d.rounds`` logger, which the simulator console shows alone (``dose3d_fl.fl.log_config``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.fedavg import FedAvg

ROUND_LOGGER = "dose3d.rounds"
round_log = logging.getLogger(ROUND_LOGGER)


def format_round_line(
    current_round: int, num_rounds: int, site_metrics: dict[str, dict[str, Any]], seconds: float
) -> str:
    """One line summarising a finished round.

    Args:
        current_round: 0-based round index.
        num_rounds: rounds of the job.
        site_metrics: site name -> the metrics it sent (``val_dice``, ``val_cases``, ``train_loss``).
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
    return (
        f"round {current_round + 1}/{num_rounds}: {len(site_metrics)} site(s), "
        f"Dice of the {received} {dice:.4f} on {cases} val case(s), "
        f"local loss {loss:.4f}, {seconds:.1f} s"
    )


class SegFedAvg(FedAvg):
    """``FedAvg`` (weights only, weighted by local steps) that logs one concise line per round.

    Takes exactly ``FedAvg``'s arguments; the FedAvg recipe builds it through
    ``dose3d_fl.fl.seg_job.SegFedAvgRecipe``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._round_metrics: dict[str, dict[str, Any]] = {}
        self._round_started = time.perf_counter()

    def sample_clients(self, num_clients: int | None = None) -> list[str]:
        # Called once at the start of each round, after ROUND_STARTED.
        self._round_started = time.perf_counter()
        self._round_metrics = {}
        return super().sample_clients(num_clients)

    def _aggregate_one_result(self, result: FLModel) -> bool:
        site = (result.meta or {}).get("client_name", "?")
        self._round_metrics[str(site)] = dict(result.metrics or {})
        return super()._aggregate_one_result(result)

    def update_model(self, model: FLModel, aggr_result: FLModel) -> FLModel:
        updated = super().update_model(model, aggr_result)
        round_log.info(
            format_round_line(
                self.current_round,
                self.num_rounds,
                self._round_metrics,
                time.perf_counter() - self._round_started,
            )
        )
        return updated
