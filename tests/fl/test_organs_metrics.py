"""The job's organs: the network, the sites' task, the metric allow-list, the server's model provenance and the
round line follow the organ list; the spleen job is its one-organ case."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.cli import main
from dose3d_fl.fl.organ_summary import format_organ_table, organ_union, round_organ_dice
from dose3d_fl.fl.policy.payload import check_weights_only, model_signature
from dose3d_fl.fl.seg_job import SITE_METRICS, SegJobConfig, build_seg_recipe, site_metrics
from dose3d_fl.fl.server.controller import format_round_line, pooled_organ_dice
from tests.fl.site_messages import tiny_model, train_result

ORGANS = ("Spleen", "Liver", "Pancreas")


def test_the_allow_list_is_exactly_the_organs_of_the_job() -> None:
    assert site_metrics(("Spleen",)) == (
        *SITE_METRICS,
        "val_dice_Spleen",
        "val_hd95_Spleen",
        "val_surface_dice_Spleen",
        "val_cases_Spleen",
    )
    three = site_metrics(ORGANS)
    assert len(three) == len(SITE_METRICS) + 4 * 3 and "val_surface_dice_Pancreas" in three
    # A spleen job's sites may not send another organ's figure: their weights-only guard refuses it.
    params = tiny_model()
    liver = train_result(params, {"val_dice": 0.5, "val_dice_Liver": 0.9})
    reason = check_weights_only(liver, model_signature(params), site_metrics(("Spleen",)))
    assert reason is not None and "val_dice_Liver" in reason
    assert check_weights_only(liver, model_signature(params), site_metrics(("Spleen", "Liver"))) is None


def test_the_job_carries_its_organs_to_the_network_the_sites_and_the_server(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="did you mean Pancreas"):
        SegJobConfig(organs=("Pancreaz",))
    assert main(["fl", "export", "--out", str(tmp_path), "--organs", ",".join(ORGANS)]) == 0
    job = tmp_path / "seg_fedavg" / "app" / "config"
    client = json.loads((job / "config_fed_client.json").read_text())
    server = json.loads((job / "config_fed_server.json").read_text())
    assert client["dose3d_metrics"] == list(site_metrics(ORGANS))
    (executor,) = client["executors"]
    assert executor["executor"]["args"]["task_script_args"].endswith("--organs Spleen,Liver,Pancreas")
    (persistor,) = [c for c in server["components"] if c["id"] == "persistor"]
    assert persistor["args"] == {"profile": "cpu-small", "organs": list(ORGANS)}
    recipe = build_seg_recipe(SegJobConfig(organs=ORGANS))
    assert recipe is not None
    # The default job is the spleen task.
    assert SegJobConfig().seg_profile.organs == ("Spleen",) and SegJobConfig().seg_profile.out_channels == 2


def _site(dice: dict[str, float], cases: dict[str, int]) -> dict[str, float]:
    metrics: dict[str, float] = {"val_dice": sum(dice.values()) / len(dice), "val_cases": max(cases.values())}
    for organ, value in dice.items():
        metrics[f"val_dice_{organ}"] = value
        metrics[f"val_cases_{organ}"] = cases[organ]
        metrics[f"val_hd95_{organ}"] = 10.0 * value
        metrics[f"val_surface_dice_{organ}"] = value / 2
    metrics["train_loss"] = 0.5
    return metrics


def test_round_line_and_union_pool_each_organ_over_the_cases_that_delineate_it() -> None:
    sites = {
        "site-1": _site(
            {"Spleen": 0.9, "Liver": 0.8, "Pancreas": 0.3}, {"Spleen": 3, "Liver": 3, "Pancreas": 1}
        ),
        # This site delineates no pancreas in its validation cases: its NaN does not count.
        "site-2": _site(
            {"Spleen": 0.6, "Liver": 0.5, "Pancreas": math.nan}, {"Spleen": 1, "Liver": 2, "Pancreas": 0}
        ),
    }
    pooled = pooled_organ_dice(sites)
    assert pooled["Spleen"] == pytest.approx(((0.9 * 3 + 0.6 * 1) / 4, 4))
    assert pooled["Liver"] == pytest.approx(((0.8 * 3 + 0.5 * 2) / 5, 5))
    assert pooled["Pancreas"] == pytest.approx((0.3, 1))
    line = format_round_line(2, 10, sites, 4.0)
    assert "(Spleen 0.825, Liver 0.680, Pancreas 0.300)" in line

    union = organ_union(sites)
    assert union["Liver"]["dice"] == pytest.approx(0.68) and union["Liver"]["cases"] == 5
    assert union["Liver"]["hd95"] == pytest.approx(6.8) and union["Liver"]["surface_dice"] == pytest.approx(
        0.34
    )
    assert union["Pancreas"]["cases"] == 1 and union["Pancreas"]["dice"] == pytest.approx(0.3)
    assert round_organ_dice([sites, sites])["Spleen"] == [pytest.approx(0.825)] * 2
    assert round_organ_dice([], union)["Liver"] == [pytest.approx(0.68)]  # one round: the final model only
    table = "\n".join(format_organ_table(union, 4.0))
    assert "surface Dice at 4 mm" in table and "Pancreas" in table

    # One organ: the round line is the spleen task's, unchanged.
    one = {
        "site-1": {
            "val_dice": 0.9,
            "val_cases": 3,
            "val_dice_Spleen": 0.9,
            "val_cases_Spleen": 3,
            "train_loss": 0.2,
        }
    }
    assert format_round_line(0, 2, one, 1.0) == (
        "round 1/2: 1 site(s), Dice of the initial model 0.9000 on 3 val case(s), local loss 0.2000, 1.0 s"
    )
    assert format_organ_table(organ_union(one), 4.0) == []


def test_the_union_does_not_depend_on_the_order_the_sites_answered_in() -> None:
    # float sums depend on their order; with these values some orders differ in the last digit
    rng = np.random.default_rng(3)
    sites = {
        f"site-{i}": _site({"Pancreas": float(rng.uniform(0.5, 0.9))}, {"Pancreas": int(rng.integers(1, 9))})
        for i in range(1, 6)
    }
    unions = {organ_union(dict(order))["Pancreas"]["dice"] for order in itertools.permutations(sites.items())}
    assert len(unions) == 1
