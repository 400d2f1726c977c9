"""The gan_fedavg job end to end in NVFlare's simulator: 3 tiny sites, both aggregation modes, with what each
site actually sends recorded by a client output filter (after the Client API, as the server receives it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dose3d_fl.fl.gan_job import JOB_NAME, SITE_METRICS, GanJobConfig, build_gan_recipe
from dose3d_fl.fl.gan_simulate import GanSimulationConfig, simulate_gan
from tests.fl.sent_params import SENT_LOG_ENV, RecordSentParams
from tests.seg.cases import write_cache

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("aggregation", ["generator-only", "both"])
def test_both_modes_run_on_three_sites(
    aggregation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for site in (1, 2, 3):
        write_cache(tmp_path / "data" / "cache" / f"site-{site}", 3, seed=site)
    log = tmp_path / "sent.jsonl"
    monkeypatch.setenv(SENT_LOG_ENV, str(log))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the simulated sites import tests.fl.sent_params

    # Two rounds where the critic must stay local across rounds; one suffices for averaging both.
    rounds = 2 if aggregation == "generator-only" else 1
    job = GanJobConfig(
        num_rounds=rounds, local_epochs=1, profile="cpu-tiny", aggregation=aggregation, tensorboard=False
    )
    summary = simulate_gan(
        GanSimulationConfig(workspace=tmp_path, sites=3, job=job, keep_payloads=True),
        recipe_hook=lambda recipe: recipe.add_client_output_filter(
            RecordSentParams(), tasks=["train", "validate", "submit_model"]
        ),
    )

    server = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job"
    weights = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    prefixes = {name.split(".")[0] for name in weights}
    assert prefixes == ({"generator"} if aggregation == "generator-only" else {"generator", "discriminator"})

    sent = [json.loads(line) for line in log.read_text().splitlines()]
    trained = [r for r in sent if r["task"] == "train"]
    assert len(trained) == 3 * rounds and {r["site"] for r in trained} == {"site-1", "site-2", "site-3"}
    for record in sent:
        if aggregation == "generator-only":
            assert not any(name.startswith("discriminator.") for name in record["params"]), record
        assert set(record["metrics"]) <= set(SITE_METRICS) and set(record["metrics"].values()) <= {"float"}, (
            record
        )
        if record["task"] == "train":
            # Exactly the server model's tensor names and shapes, and the FedAvg weight as meta.
            assert record["params"] == {n: list(t.shape) for n, t in weights.items()}
            assert "NUM_STEPS_CURRENT_ROUND" in record["meta"] and "gan_mmd" in record["metrics"]
    assert {r["task"] for r in sent} >= {"train", "submit_model", "validate"}
    # The site policy ran before the recording filter: the payload audit of every site (issue #6).
    model_bytes = sum(t.numel() * t.element_size() for t in weights.values())
    for site in ("site-1", "site-2", "site-3"):
        audit_log = tmp_path / "sim" / JOB_NAME / site / "payload_audit.jsonl"
        audit = [json.loads(line) for line in audit_log.read_text().splitlines()]
        assert len(audit) == len([r for r in sent if r["site"] == site])
        for record in audit:
            assert record["return_code"] == "OK" and record["other_keys"] == []
            assert {n: t["shape"] for n, t in record["tensors"].items()} == (
                {n: list(t.shape) for n, t in weights.items()} if record["tensors"] else {}
            )
            if record["tensors"]:
                assert record["tensor_bytes"] == model_bytes
                assert 0 <= record["serialized_bytes"] - model_bytes < 32_768  # tensor names and headers only
        payloads = list(audit_log.with_name("payload_audit_payloads").iterdir())
        assert payloads and not any(b"SYNTHPHI" in p.read_bytes() for p in payloads)
    assert len(summary["rounds"]) == rounds
    assert set(summary["site_final"]) == {"site-1", "site-2", "site-3"}
    assert math.isfinite(summary["final"]["gan_mmd"]) and math.isfinite(summary["final"]["gan_diversity"])
    # Labels are exact by construction: every synthetic pair passes the label check, none is a memorised crop.
    final = summary["final"]
    assert final["gan_label_ok"] == 1.0 and final["gan_dropped_memorized"] == 0
    assert all(math.isfinite(final[k]) for k in ("gan_tissue_hu_error", "gan_best_ncc"))
    # What `dose3d report WS` shows: the final metrics and real | synthetic crops of the same label maps.
    assert json.loads((tmp_path / "gan" / "metrics.json").read_text())["gan_label_ok"] == 1.0
    assert (tmp_path / "gan" / "samples.png").stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["aggregation"] == aggregation


def test_recipe_uses_the_segmentation_controller() -> None:
    recipe = build_gan_recipe(GanJobConfig(aggregation="both"))
    assert type(recipe).__name__ == "SegFedAvgRecipe"
    with pytest.raises(ValueError, match="aggregation"):
        GanJobConfig(aggregation="critic-only")
