"""The label-conditioned GAN federated in NVFlare's simulator: 2 tiny sites, 1 round, both aggregation modes,
with what each site sends recorded by a client output filter (after the site policy, as the server gets it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dose3d_fl.fl.gan_job import JOB_NAME, SITE_METRICS, GanJobConfig
from dose3d_fl.fl.gan_simulate import GanSimulationConfig, simulate_gan
from tests.fl.sent_params import SENT_LOG_ENV, RecordSentParams
from tests.seg.cases import write_cache

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("aggregation", ["generator-only", "both"])
def test_one_round_on_two_sites(aggregation: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for site in (1, 2):
        write_cache(tmp_path / "data" / "cache" / f"site-{site}", 3, seed=site)
    log = tmp_path / "sent.jsonl"
    monkeypatch.setenv(SENT_LOG_ENV, str(log))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the simulated sites import tests.fl.sent_params
    job = GanJobConfig(
        num_rounds=1, local_epochs=1, profile="cpu-tiny", aggregation=aggregation, tensorboard=False
    )
    summary = simulate_gan(
        GanSimulationConfig(workspace=tmp_path, sites=2, job=job),
        recipe_hook=lambda recipe: recipe.add_client_output_filter(
            RecordSentParams(), tasks=["train", "validate", "submit_model"]
        ),
    )

    server = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job"
    weights = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=False)["model"]
    assert {name.split(".")[0] for name in weights} == (
        {"generator"} if aggregation == "generator-only" else {"generator", "discriminator"}
    )
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    trained = [r for r in sent if r["task"] == "train"]
    assert {r["site"] for r in trained} == {"site-1", "site-2"}
    for record in sent:
        if record["params"] or record["task"] == "train":  # exactly the server's tensors, nothing else
            assert record["params"] == {n: list(t.shape) for n, t in weights.items()}
        assert set(record["metrics"]) <= set(SITE_METRICS) and set(record["metrics"].values()) <= {"float"}
    # What `dose3d report WS` shows: the final metrics and real | synthetic crops of the same label maps.
    assert json.loads((tmp_path / "gan" / "metrics.json").read_text())["gan_label_ok"] == 1.0
    assert (tmp_path / "gan" / "samples.png").stat().st_size > 0
    final = summary["final"]
    assert final["gan_label_ok"] == 1.0 and final["gan_dropped_memorized"] == 0
    assert all(math.isfinite(final[k]) for k in ("gan_mmd", "gan_tissue_hu_error", "gan_best_ncc"))
