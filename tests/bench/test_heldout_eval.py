"""The held-out comparisons' statistics: paired differences over cases, and over training seeds and cases."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.bench.heldout_eval import paired_difference, paired_difference_over_seeds
from dose3d_fl.fl.seg_job import JOB_NAME

ROOT = Path(__file__).resolve().parents[2]


def _seeded_scores(shift: float, nan_case: str | None = None) -> tuple[dict, dict]:
    rng = np.random.default_rng(1)
    reference = {s: {f"case-{i}": float(rng.uniform(0.7, 0.9)) for i in range(20)} for s in range(3)}
    model = {
        s: {k: v + shift + float(rng.normal(0, 0.01)) for k, v in cases.items()}
        for s, cases in reference.items()
    }
    if nan_case:
        for s in model:
            model[s][nan_case] = math.nan
    return model, reference


def test_over_seeds_finds_a_shift_and_skips_cases_that_do_not_score() -> None:
    model, reference = _seeded_scores(0.05, nan_case="case-3")
    result = paired_difference_over_seeds(model, reference)
    assert result["seeds"] == 3 and result["cases"] == 19
    assert result["ci95_low"] > 0.03 and result["ci95_high"] < 0.07
    assert result["mean"] == pytest.approx(np.mean(result["per_seed"]))


def test_over_seeds_interval_holds_zero_without_a_shift() -> None:
    model, reference = _seeded_scores(0.0)
    result = paired_difference_over_seeds(model, reference)
    assert result["ci95_low"] < 0 < result["ci95_high"]


def test_one_seed_agrees_with_the_per_case_difference() -> None:
    model, reference = _seeded_scores(0.02)
    over_seeds = paired_difference_over_seeds({0: model[0]}, {0: reference[0]})
    per_case = paired_difference(model[0], reference[0])
    assert over_seeds["mean"] == pytest.approx(per_case["mean"])
    assert over_seeds["cases"] == per_case["cases"] == 20


def _organs_seeds():
    spec = importlib.util.spec_from_file_location("organs_seeds", ROOT / "benchmarks" / "organs_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _organs_result(seed: int, federated: float, central: float) -> dict:
    cases = {
        kind: {f"site-1/case-{i}": {"Spleen": {"dice": dice + i * 0.001}, "Liver": {"dice": None if i == 0 else dice}}
               for i in range(5)}
        for kind, dice in (("federated", federated), ("central", central))
    }  # fmt: skip
    return {"organs": ["Spleen", "Liver"], "federated_job": {"train_seed": seed}, "cases": cases}


def test_organs_seeds_reports_the_ratio_of_means_and_refuses_a_repeated_seed() -> None:
    organs_seeds = _organs_seeds()
    combined = organs_seeds.combine([_organs_result(0, 0.90, 0.91), _organs_result(1, 0.88, 0.89)])
    spleen = combined["per_organ"]["Spleen"]
    assert spleen["federated_over_central_dice"] == pytest.approx(0.892 / 0.902)
    assert spleen["meets_target"] and combined["train_seeds"] == [0, 1]
    assert combined["per_organ"]["Liver"]["paired_dice_difference"]["cases"] == 4
    low = organs_seeds.combine([_organs_result(0, 0.80, 0.92), _organs_result(1, 0.88, 0.90)])
    assert not low["all_organs_meet_target"]
    with pytest.raises(ValueError, match="another training seed"):
        organs_seeds.combine([_organs_result(0, 0.9, 0.9), _organs_result(0, 0.9, 0.9)])


def test_site_steps_ratios_are_ratios_of_means_per_scanner_and_skip_unscored_organs() -> None:
    spec = importlib.util.spec_from_file_location(
        "organs_site_steps", ROOT / "benchmarks" / "organs_site_steps.py"
    )
    steps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(steps)
    # Two seeds; scanner 1 has the gap, scanner 2 none; a case without the organ (NaN) is not scored.
    federated = [
        {"site-1/a": {"Pancreas": 0.6}, "site-2/b": {"Pancreas": 0.8}, "site-2/c": {"Pancreas": math.nan}},
        {"site-1/a": {"Pancreas": 0.7}, "site-2/b": {"Pancreas": 0.9}, "site-2/c": {}},
    ]
    central = [
        {"site-1/a": {"Pancreas": 0.8}, "site-2/b": {"Pancreas": 0.8}, "site-2/c": {"Pancreas": math.nan}},
        {"site-1/a": {"Pancreas": 0.9}, "site-2/b": {"Pancreas": 0.9}, "site-2/c": {}},
    ]
    ratios = steps.ratios(federated, central, ["Pancreas"], ["site-1", "site-2"])["Pancreas"]
    assert ratios["site-1"] == pytest.approx((0.6 + 0.7) / (0.8 + 0.9))
    assert ratios["site-2"] == pytest.approx(1.0)
    assert ratios["all"] == pytest.approx((0.7 + 0.8) / (0.8 + 0.9))  # each seed: the mean over its cases
    assert math.isnan(steps.mean_dice(federated[0], "Pancreas", "site-3"))


def test_organs_reads_the_job_settings_from_the_run_itself(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("organs", ROOT / "benchmarks" / "organs.py")
    organs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(organs)
    assert organs.job_settings(tmp_path) == {}  # a run that kept no configuration
    config = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job" / "app_server" / "config"
    config.mkdir(parents=True)
    script_args = "--local-epochs 8 --profile cpu-small --lr-scale 1.5 --organs Spleen --silobn --seed 0"
    executor = {"executor": {"args": {"task_script_args": script_args}}}
    (config / "config_fed_client.json").write_text(json.dumps({"executors": [executor]}))
    workflows = [{"id": "controller", "args": {"num_rounds": 20}}, {"id": "controller1", "args": {}}]
    (config / "config_fed_server.json").write_text(json.dumps({"workflows": workflows}))
    assert organs.job_settings(tmp_path) == {
        "rounds": 20,
        "local_epochs": 8,
        "local_lr_scale": 1.5,
        "fedbn": False,
        "silobn": True,
    }
