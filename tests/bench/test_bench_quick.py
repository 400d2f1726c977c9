"""``dose3d bench --quick --peers nvflare,flower`` end to end, one run: central, local-only, this project's FedAvg,
float16 and FedBN, stock NVFlare and (where ``.venv-flower`` exists) Flower on the same tiny sites, 2 rounds x 1
epoch, one held-out patient per scanner; real training runs, real simulator runs, one results file in which
every system has every field. Dice values are not asserted (2 rounds of 1 epoch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import monai
import pytest
import torch

from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.peers import flower_python
from dose3d_fl.bench.runner import final_model_file, site_models_folder
from dose3d_fl.bench.site_models import load_site_models
from dose3d_fl.bench.systems import SYSTEM_FIELDS
from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.fl.site.fedbn import batch_norm_keys
from dose3d_fl.seg.network import build_network
from dose3d_fl.seg.profiles import get_profile

# Seven training runs and the peers start and stop: minutes on a shared machine, beyond pytest's default 600 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

HELDOUT = Path(__file__).parents[2] / "benchmarks" / "heldout.py"
REPLICA = Path(__file__).parents[2] / "benchmarks" / "fedavg_replica.py"

RUNS = (
    "central",
    "local-site-1",
    "local-site-2",
    "local-site-3",
    "fedavg",
    "fedavg-fp16",
    "fedbn",
)
PEERS = ("peer-nvflare", *(("peer-flower",) if flower_python() else ()))
FEDERATED = ("fedavg", "fedavg-fp16", "fedbn", *PEERS)

# Every field a federated system (this project's and the peers') must have measured: all of them but the time
# to the target Dice, which 2 rounds do not reach.
MEASURED = tuple(field for field in SYSTEM_FIELDS if field != "seconds_to_target")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    command = [sys.executable, "-m", "dose3d_fl.cli", "bench", "--quick", "--peers", "nvflare,flower"]
    command += ["--out", str(root / "results"), "--work", str(root / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads((root / "results" / "peers_quick.json").read_text())
    data["_stdout"] = done.stdout
    return data, root


def test_every_run_is_scored_on_every_site_and_the_union(results) -> None:
    data, _ = results
    assert set(data["union_val_dice"]) == {*RUNS, *PEERS}, data.get("failed_runs")
    for run in (*RUNS, *PEERS):
        assert set(data["site_val_dice"][run]) == {"site-1", "site-2", "site-3"}
        assert 0.0 <= data["union_val_dice"][run] <= 1.0
    assert {"fedavg_over_central_dice", "overhead_ratio", "union_val_dice"} <= set(data)


def test_the_results_name_the_cpu_and_the_numerical_packages(results) -> None:
    machine = results[0]["machine"]
    assert machine["cpu"]
    assert machine["packages"]["torch"].startswith(torch.__version__.split("+")[0])
    assert machine["packages"]["monai"] == monai.__version__


def test_float16_halves_the_bytes(results) -> None:
    runs = results[0]["runs"]

    def sent(run: str) -> float:
        return max(site["sent_per_round"] for site in runs[run]["wire_bytes"].values())

    assert "float32" in runs["fedavg"]["wire_dtypes"]
    assert (
        "float16" in runs["fedavg-fp16"]["wire_dtypes"]
        and "float32" not in runs["fedavg-fp16"]["wire_dtypes"]
    )
    assert sent("fedavg-fp16") < 0.6 * sent("fedavg")
    received = [site["received_per_round"] for site in runs["fedavg-fp16"]["wire_bytes"].values()]
    assert max(received) < 0.6 * max(
        site["received_per_round"] for site in runs["fedavg"]["wire_bytes"].values()
    )


def test_fedbn_is_scored_with_each_sites_own_norm_and_keeps_its_models(results) -> None:
    _, root = results
    models = load_site_models(site_models_folder(root / "work", "fedbn"))
    assert set(models) == {"site-1", "site-2", "site-3"}
    global_file = final_model_file(root / "work", "fedbn", "federated")
    global_weights = torch.load(global_file, map_location="cpu", weights_only=True)["model"]
    keys = batch_norm_keys(build_network(get_profile("cpu-small")))
    for site, weights in models.items():
        assert all(torch.equal(weights[k], global_weights[k]) for k in weights if k not in keys), site
    # Each site trained its own BatchNorm: no two sites' running means agree.
    means = [torch.cat([w[k] for k in sorted(keys) if k.endswith("running_mean")]) for w in models.values()]
    assert not torch.equal(means[0], means[1]) and not torch.equal(means[1], means[2])


def test_overhead_data_pipeline_and_memory_are_measured(results) -> None:
    data, _ = results
    fedavg = data["runs"]["fedavg"]
    assert fedavg["overhead"]["overhead_ratio"] >= 1.0  # a round lasts at least as long as its slowest site
    assert fedavg["overhead"]["rounds"] == 2
    assert 0.0 < fedavg["data_pipeline"]["compute_share"] <= 1.0
    assert data["overhead_by_sites"]["3"]["run"] == "fedavg"  # the quick overhead run is the FedAvg run
    for run in RUNS:
        assert max(data["runs"][run]["peak_rss_mib"].values()) > 100  # torch + MONAI at least


def test_the_markdown_report_has_every_table(results) -> None:
    _, root = results
    report = (root / "results" / "peers_quick.md").read_text()
    for heading in (
        "## Dice of each final model",
        "## Federated runs",
        "## Orchestration overhead",
        "## Targets",
        "## Systems side by side",
    ):
        assert heading in report
    assert all(f"| {run} |" in report for run in RUNS)


def test_heldout_scores_every_final_model_on_new_patients(results) -> None:
    """benchmarks/heldout.py on the quick bench's models and a one-round FedBN replica on its sites: one new
    patient per scanner, paired to central."""
    _, root = results
    (data,) = (root / "work").glob("data-3-sites*")  # the quick bench's own patient counts in the name
    caches = [str(data / "data" / "cache" / f"site-{k}") for k in (1, 2, 3)]
    replica = [sys.executable, str(REPLICA), "r1", *caches, "--rounds", "1", "--local-epochs", "1", "--fedbn"]
    replica += ["--save", "--results", str(root / "replica")]
    subprocess.run(replica, check=True, capture_output=True, timeout=600, cwd=root)
    history = json.loads((root / "replica" / "r1.json").read_text())["history"]
    assert {"union_val_dice", "personal_union_val_dice"} <= set(history[-1])
    out = root / "heldout.json"
    command = [
        sys.executable,
        str(HELDOUT),
        "--work",
        str(root / "work"),
        "--results",
        str(root / "results" / "peers_quick.json"),
    ]
    subprocess.run(
        [*command, "--patients", "1", "--replica", "r1", "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=600,
        cwd=root,
    )
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {*RUNS, *PEERS, "r1", "r1/personal"}
    assert runs["central"]["over_central"] == 1.0
    assert runs["central"]["difference_from_central"]["mean"] == 0.0
    for run in runs.values():
        assert set(run["site_dice"]) == {"site-1", "site-2", "site-3"}
        difference = run["difference_from_central"]
        assert difference["ci95_low"] <= difference["mean"] <= difference["ci95_high"]


def test_heldout_without_the_bench_models_says_what_to_run(results, tmp_path: Path) -> None:
    _, root = results
    command = [
        sys.executable,
        str(HELDOUT),
        "--work",
        str(tmp_path),
        "--results",
        str(root / "results" / "peers_quick.json"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "run dose3d bench --work" in done.stderr


def test_every_system_has_every_field(results) -> None:
    systems = results[0]["systems"]
    assert set(systems) == {*RUNS, *PEERS}, results[0].get("failed_runs")
    for name, row in systems.items():
        assert tuple(row) == SYSTEM_FIELDS, name
        assert row["heldout_union_dice"] is not None and row["wall_seconds"] > 0 and row["peak_rss_mib"] > 0
    for name in FEDERATED:
        missing = [field for field in MEASURED if systems[name][field] is None]
        assert not missing, f"{name} did not measure {missing}"
        assert systems[name]["sent_bytes_per_round"] > 100_000  # the whole cpu-small model travels


def test_flower_is_run_or_skipped_with_its_reason(results) -> None:
    data, _ = results
    if flower_python():
        assert "peer-flower" in data["systems"] and not data["skipped_peers"]
    else:
        assert "setup_venv.sh" in data["skipped_peers"]["peer-flower"]
        assert "Flower peer skipped" in data["_stdout"]


def test_the_peer_targets_and_the_table_are_reported(results) -> None:
    data, _ = results
    targets = data["peer_targets"]
    assert targets["fixed_cost_over_stock_nvflare"]["measured"] is not None
    assert set(targets) == {
        "time_to_target_over_stock_nvflare",
        "time_to_target_over_flower",
        "fixed_cost_over_stock_nvflare",
        "whole_process_overhead_ratio",
    }
    assert "## Systems side by side" in data["_stdout"]


def test_the_peers_measure_dice_as_the_projects_evaluator_does(results) -> None:
    """On the common initial model, a peer site's own validation (its time-to-Dice scale) gives the bench
    evaluator's Dice for that site."""
    data, root = results
    work = root / "work"
    profile = get_profile(data["config"]["profile"])
    caches = sorted(next(work.glob("data-3-sites*")).glob("data/cache/site-*"))
    evaluator = Evaluator(load_site_cases(caches, seed=profile.seed), profile)
    initial = torch.load(work / "peers" / "initial.pt", weights_only=True)
    expected = evaluator.evaluate_weights(initial)["site_val_dice"]
    for peer in ("peer-nvflare", "peer-flower"):
        log = work / peer / "rounds.jsonl"
        if not log.is_file():  # Flower skipped
            continue
        first = {
            r["site"]: r["val_dice"] for r in map(json.loads, log.read_text().splitlines()) if r["round"] == 0
        }
        assert first == pytest.approx(expected, abs=1e-6), peer
