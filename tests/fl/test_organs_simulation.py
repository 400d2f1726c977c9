"""A three-organ job in NVFlare's simulator: 2 synthetic sites that name and delineate their organs differently
(site 2's PANC mapped by its roi_names.json), 1 round; per-organ figures reach the round metrics, the
cross-site evaluation and summary.json, and the server's model knows its organs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.data.manifest import Manifest
from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig, site_metrics
from dose3d_fl.fl.simulate import SimulationConfig, format_simulation_summary, simulate_seg
from dose3d_fl.synth.demo_sites import prepare_site_data
from tests.seg.organ_sites import ORGANS, organ_sites

pytestmark = pytest.mark.slow


def test_three_organ_job_in_the_simulator(tmp_path: Path) -> None:
    caches = organ_sites(tmp_path)
    assert (tmp_path / "data" / "local" / "site-2" / "roi_names.json").is_file()
    assert not (tmp_path / "data" / "local" / "site-1").exists()  # TG-263 names need no file
    job = SegJobConfig(num_rounds=1, local_epochs=1, tensorboard=False, organs=ORGANS)

    summary = simulate_seg(SimulationConfig(workspace=tmp_path, sites=2, job=job))

    assert not summary["error_rounds"] and not summary["rejected_rounds"]
    server = tmp_path / "sim" / JOB_NAME / "server" / "simulate_job"
    # Every metric a site sent is one the job declares for its organs (the weights-only guard let it pass).
    (record,) = [
        json.loads(line) for line in (server / "metrics" / "round_metrics.jsonl").read_text().splitlines()
    ]
    # (An organ none of a site's validation cases delineates has no Dice there: NaN, which the server's
    # metrics file leaves out; its case count, 0, is there.)
    sent = [{m["name"] for m in site["metrics"]} for site in record["sites"]]
    for names in sent:
        assert {f"val_cases_{organ}" for organ in ORGANS} <= names <= set(site_metrics(ORGANS))
    assert {f"val_dice_{organ}" for organ in ORGANS} <= set().union(*sent)
    # The final global model, scored per organ by cross-site evaluation, over the cases that delineate it.
    val = [case for site in load_site_cases(caches, organs=ORGANS) for case in site.val]
    delineated = {
        case.id: Manifest.load(cache).case_organs(case)
        for cache in caches
        for case in Manifest.load(cache).cases
    }
    assert list(summary["organ_val"]) == list(ORGANS)
    for organ, values in summary["organ_val"].items():
        assert values["cases"] == sum(organ in delineated[case["id"]] for case in val)
        assert set(values) == {"dice", "hd95", "surface_dice", "cases"}
        assert values["cases"] == 0 or 0.0 <= values["dice"] <= 1.0
    assert set(summary["site_organ_dice"]) == {"site-1", "site-2"}
    assert list(summary["round_organ_dice"]) == list(ORGANS) and all(
        len(v) == 1 for v in summary["round_organ_dice"].values()
    )
    assert summary["surface_dice_tolerance_mm"] == 4.0
    assert (tmp_path / "summary.json").read_text() == json.dumps(summary, indent=2) + "\n"
    assert "final global model per organ" in format_simulation_summary(summary)
    # The server's model: four classes, its task's organs in its profile and provenance.
    saved = torch.load(server / "app_server" / "FL_global_model.pt", weights_only=True)
    assert saved["profile"]["organs"] == list(ORGANS) and saved["profile"]["out_channels"] == 4
    assert saved["provenance"]["task"]["organs"] == list(ORGANS)
    assert any(tensor.shape[:1] == (4,) for tensor in saved["model"].values())
    log = (tmp_path / "sim" / JOB_NAME / "server" / "log.txt").read_text()
    assert "(Spleen " in log and ", Pancreas " in log
    assert all(math.isfinite(d) or math.isnan(d) for d in summary["round_val_dice"])

    # The caches serve a task of fewer organs as they are; a task with an organ they lack ingests them again.
    manifest = caches[0] / "manifest.json"
    before = manifest.stat().st_mtime_ns
    prepare_site_data(tmp_path, 2, 0, [3, 3], organs=("Spleen",))
    assert manifest.stat().st_mtime_ns == before
    prepare_site_data(tmp_path, 2, 0, [3, 3], organs=("Spleen", "Kidney_L"))
    assert Manifest.load(caches[0]).organs == ["Spleen", "Kidney_L"]
