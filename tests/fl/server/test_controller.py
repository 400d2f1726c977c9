"""The server's one line per round, the console filter that shows it alone, and the aggregation order."""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from nvflare.apis.fl_constant import FLMetaKey
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.aggregators.weighted_aggregation_helper import WeightedAggregationHelper

from dose3d_fl.fl.log_config import RoundLinesFilter, round_lines_log_config
from dose3d_fl.fl.server.controller import ROUND_LOGGER, SegFedAvg, format_round_line


def test_round_line_pools_dice_over_validation_cases() -> None:
    line = format_round_line(
        3,
        20,
        {
            "site-1": {"val_dice": 0.9, "val_cases": 3, "train_loss": 0.2},
            "site-2": {"val_dice": 0.6, "val_cases": 1, "train_loss": 0.4},
        },
        8.25,
    )
    # (0.9 * 3 + 0.6 * 1) / 4 = 0.825; mean loss 0.3
    assert line == (
        "round 4/20: 2 site(s), Dice of the round 3 model 0.8250 on 4 val case(s), local loss 0.3000, 8.2 s"
    )


def test_round_line_skips_sites_without_a_dice() -> None:
    line = format_round_line(0, 2, {"a": {"val_dice": math.nan, "val_cases": 2}, "b": {"val_dice": 0.5}}, 1.0)
    assert "initial model 0.5000 on 1 val case(s)" in line
    assert "local loss nan" in line


def _record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_console_shows_round_lines_and_warnings_but_not_info_or_known_noise() -> None:
    keep = RoundLinesFilter()
    assert keep.filter(_record(ROUND_LOGGER, logging.INFO, "round 1/2: ..."))
    assert keep.filter(_record("nvflare.app_common.workflows.fedavg", logging.WARNING, "a site failed"))
    assert keep.filter(_record("nvimgcodec_pydicom_plugin", logging.ERROR, "nvImageCodec is not available"))
    assert not keep.filter(_record("nvflare.app_common.workflows.fedavg", logging.INFO, "Round 1 started."))
    assert not keep.filter(
        _record("nvimgcodec_pydicom_plugin", logging.WARNING, "nvImageCodec is not available")
    )
    end_run = "ask to stop job: reason: END_RUN received"
    assert not keep.filter(
        _record("nvflare.client.in_process.api.InProcessClientAPI", logging.WARNING, end_run)
    )


def test_log_config_keeps_nvflare_file_handlers() -> None:
    config = round_lines_log_config()
    assert config["handlers"]["consoleHandler"]["filters"] == ["RoundLinesFilter"]
    assert {"logFileHandler", "errorFileHandler"} <= set(config["loggers"]["root"]["handlers"])
    logging.config.dictConfig({**config, "handlers": {}, "loggers": {}})  # the filter class resolves


def _update(site: str, steps: int, weights: np.ndarray) -> FLModel:
    return FLModel(
        params={"w": weights},
        params_type=ParamsType.FULL,
        meta={"client_name": site, FLMetaKey.NUM_STEPS_CURRENT_ROUND: steps},
    )


def _aggregate(arrived: tuple[FLModel, ...]) -> bytes:
    controller = SegFedAvg(num_clients=len(arrived), num_rounds=1)
    controller._aggr_helper = WeightedAggregationHelper()  # what FedAvg sets at the start of a round
    controller._held = list(arrived)  # the round's accepted updates, in the order they arrived
    controller._flush_held()
    return controller._get_aggregated_result().params["w"].tobytes()


def test_the_global_model_does_not_depend_on_the_order_the_sites_finish_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(
        tmp_path
    )  # outside a job the controller keeps its transfer log in the working directory
    # float32 sums depend on their order: in arrival order these three updates give three different global
    # models over the six possible orders
    rng = np.random.default_rng(0)
    updates = [
        _update(site, steps, rng.standard_normal(1000).astype(np.float32))
        for site, steps in (("site-1", 72), ("site-2", 48), ("site-3", 32))
    ]
    assert len({_aggregate(order) for order in itertools.permutations(updates)}) == 1
