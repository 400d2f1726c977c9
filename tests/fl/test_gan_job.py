"""The committed jobs/gan_fedavg is exactly what the recipe exports, and carries no path or secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

from dose3d_fl.fl.gan_job import JOB_NAME, GanJobConfig, build_gan_recipe, export_gan_job

COMMITTED = Path(__file__).resolve().parents[2] / "jobs" / JOB_NAME


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_job_equals_a_fresh_export(tmp_path: Path) -> None:
    fresh = export_gan_job(tmp_path)
    assert _tree(fresh) == _tree(COMMITTED), "jobs/gan_fedavg is stale: run `dose3d fl export --job gan`"


def test_job_names_no_path_and_no_secret() -> None:
    for name, content in _tree(COMMITTED).items():
        text = content.decode()
        assert not re.search(r'"(/|[A-Za-z]:\\)[^"]*"', text), f"{name} holds an absolute path"
        assert not re.search(r"password|secret|token|api[_-]?key", text, re.IGNORECASE), name


def test_job_runs_the_segmentation_controller_on_the_generator_alone() -> None:
    server = json.loads((COMMITTED / "app" / "config" / "config_fed_server.json").read_text())
    client = json.loads((COMMITTED / "app" / "config" / "config_fed_client.json").read_text())
    text = json.dumps(server)
    assert server["workflows"][0]["path"] == "dose3d_fl.fl.server.controller.SegFedAvg"
    assert '"key_metric": "gan_mmd"' in text and '"negate_key_metric": true' in text  # lower MMD is better
    assert "dose3d_fl.gan.network.SeededGenerator" in text  # generator-only: the critic stays at the sites
    (executor,) = client["executors"]
    assert executor["executor"]["args"]["task_script_path"] == "gan_client.py"
    assert "--aggregation generator-only" in executor["executor"]["args"]["task_script_args"]


def test_both_mode_serves_the_pair() -> None:
    recipe = build_gan_recipe(GanJobConfig(aggregation="both", num_rounds=3))
    assert recipe.num_rounds == 3
    assert recipe.model["path"] == "dose3d_fl.gan.network.GanPair"
