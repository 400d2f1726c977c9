"""The benchmark over training seeds: per-seed configurations and the combined figures and targets."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from dose3d_fl.bench.config import PEERS
from dose3d_fl.bench.seeds import combine_seeds, format_seeds, seed_config
from dose3d_fl.cli.bench import parse_seeds

ROOT = Path(__file__).resolve().parents[2]
CASES = [f"site-{s}/case-{i}" for s in (1, 2, 3) for i in range(4)]


def test_seed_config_runs_one_seed_runs_with_the_first_seed_only() -> None:
    first, later = seed_config(PEERS, 0, True), seed_config(PEERS, 1, False)
    assert first.train_seed == 0 and later.train_seed == 1 and later.training_seed == 1
    assert [v[0] for v in first.variants] == ["fedavg", "fedbn", "fedavg-int8"]
    assert [v[0] for v in later.variants] == ["fedavg", "fedbn"]
    assert first.local_only and not later.local_only
    assert later.name == "peers-seed1" and later.seeds == ()


def _one_seed(seed: int, shift: dict[str, float], names: list[str]) -> dict:
    """A per-seed result shaped as run_benchmark's (from the committed quick peer comparison)."""
    base = json.loads((ROOT / "benchmarks" / "results" / "peers_quick.json").read_text())
    systems = {n: copy.deepcopy(base["systems"][n if n in base["systems"] else "fedavg"]) for n in names}
    heldout = {}
    for name in names:
        cases = {c: 0.8 + 0.01 * i + shift.get(name, 0.0) + 0.001 * seed for i, c in enumerate(CASES)}
        heldout[name] = {"case_dice": cases, "union_dice": sum(cases.values()) / len(cases)}
        systems[name]["heldout_union_dice"] = heldout[name]["union_dice"]
        systems[name]["union_val_dice"] = 0.9 + shift.get(name, 0.0)
        systems[name]["seconds_to_target"] = 100.0 + seed if name != "peer-flower" or seed != 2 else None
    systems["central"]["kind"] = "central"
    for name in names:
        if name.startswith("peer-"):
            systems[name]["kind"] = "peer"
    if "fedavg-int8" in names:
        systems["fedavg-int8"]["sent_bytes_per_round"] = 0.24 * systems["fedavg"]["sent_bytes_per_round"]
        systems["fedavg-int8"]["received_bytes_per_round"] = (
            0.24 * systems["fedavg"]["received_bytes_per_round"]
        )
    return {"systems": systems, "heldout": heldout, "failed_runs": {}, "skipped_peers": {}}


def test_combine_means_over_seeds_pairs_by_seed_and_picks_the_best_variant_on_validation() -> None:
    everyone = ["central", "fedavg", "fedbn", "peer-nvflare", "peer-flower"]
    shift = {"fedbn": 0.004, "fedavg": -0.002, "fedavg-int8": -0.003}
    per_seed = {
        0: _one_seed(0, shift, [*everyone, "fedavg-int8"]),
        1: _one_seed(1, shift, everyone),
        2: _one_seed(2, shift, everyone),
    }
    results = combine_seeds(PEERS, per_seed, 1.0)
    fedbn, int8 = results["systems"]["fedbn"], results["systems"]["fedavg-int8"]
    assert fedbn["seeds"] == 3 and int8["seeds"] == 1
    assert fedbn["heldout_difference_from_central"]["mean"] == pytest.approx(0.004)
    assert fedbn["heldout_difference_from_central"]["cases"] == len(CASES)
    assert fedbn["seconds_to_target"] == pytest.approx(101.0)
    # A seed that never reached the target leaves no mean, but its per-seed values stay.
    assert results["systems"]["peer-flower"]["seconds_to_target"] is None
    assert results["systems"]["peer-flower"]["seconds_to_target_per_seed"] == [100.0, 101.0, None]
    # The best variant is chosen among the runs of every seed (int8 ran one).
    assert results["best_variant"] == "fedbn"
    assert results["targets"]["best_variant_heldout_vs_central"]["met"] is True
    assert results["targets"]["int8_bytes_over_float32"]["met"] is True
    assert results["targets"]["int8_heldout_dice_loss"]["measured"] == pytest.approx(0.001)
    assert "fedbn: fixed_cost_over_stock_nvflare" in results["peer_targets"]
    text = format_seeds(results)
    assert "Best variant, chosen on validation: **fedbn**" in text
    assert "| peer-flower | 3 |" in text


def test_a_variant_below_central_misses_the_best_variant_target() -> None:
    names = ["central", "fedavg", "peer-nvflare", "peer-flower"]
    per_seed = {s: _one_seed(s, {"fedavg": -0.02}, names) for s in (0, 1)}
    results = combine_seeds(PEERS, per_seed, 1.0)
    assert results["best_variant"] == "fedavg"
    assert results["targets"]["best_variant_heldout_vs_central"]["met"] is False


@pytest.mark.parametrize("text", ["", "0,0", "a,1"])
def test_parse_seeds_refuses_what_is_not_distinct_integers(text: str) -> None:
    with pytest.raises(ValueError, match="--seeds"):
        parse_seeds(text)


def test_parse_seeds() -> None:
    assert parse_seeds("0,1,2") == (0, 1, 2)


def test_peers_are_skipped_with_the_reason_on_a_multi_organ_task(tmp_path: Path) -> None:
    import dataclasses

    from dose3d_fl.bench.runner import run_peer_systems
    from dose3d_fl.seg.profiles import get_profile

    config = dataclasses.replace(PEERS, organs=("Spleen", "Liver"))
    runs: dict = {}
    skipped = run_peer_systems(config, [], get_profile("cpu-small", config.organs), None, tmp_path, runs, {})
    assert set(skipped) == {"peer-nvflare", "peer-flower"} and not runs
    assert all("one-organ task, not the 2 organs" in reason for reason in skipped.values())
