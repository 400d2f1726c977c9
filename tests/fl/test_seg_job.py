"""The committed jobs/seg_fedavg is exactly what the recipe exports, and carries no path or secret."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dose3d_fl.fl.seg_job import JOB_NAME, SegJobConfig, build_seg_recipe, export_seg_job

COMMITTED = Path(__file__).resolve().parents[2] / "jobs" / JOB_NAME


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_job_equals_a_fresh_export(tmp_path: Path) -> None:
    fresh = export_seg_job(tmp_path)
    assert _tree(fresh) == _tree(COMMITTED), "jobs/seg_fedavg is stale: run `dose3d fl export`"


def test_job_names_no_path_and_no_secret() -> None:
    for name, content in _tree(COMMITTED).items():
        text = content.decode()
        assert not re.search(r'"(/|[A-Za-z]:\\)[^"]*"', text), f"{name} holds an absolute path"
        assert not re.search(r"password|secret|token|api[_-]?key", text, re.IGNORECASE), name


def test_job_selects_on_val_dice_and_runs_cross_site_evaluation() -> None:
    server = json.loads((COMMITTED / "app" / "config" / "config_fed_server.json").read_text())
    client = json.loads((COMMITTED / "app" / "config" / "config_fed_client.json").read_text())
    text = json.dumps(server)
    assert '"key_metric": "val_dice"' in text
    assert "CrossSiteModelEval" in text
    # The server's persistor builds the seeded initial network (SeededUNet) from the profile and records each
    # saved model's profile and provenance (dose3d_fl.fl.server.persistor).
    assert '"path": "dose3d_fl.fl.server.persistor.SegModelPersistor"' in text
    assert '"profile": "cpu-small"' in text
    (executor,) = client["executors"]
    assert executor["executor"]["args"]["task_script_path"] == "seg_client.py"
    assert (COMMITTED / "app" / "custom" / "seg_client.py").is_file()


def test_min_clients_and_rounds_follow_the_config() -> None:
    recipe = build_seg_recipe(SegJobConfig(num_rounds=7, min_clients=2, local_epochs=3))
    assert recipe.num_rounds == 7 and recipe.min_clients == 2


def test_job_timeouts_fit_3d_training() -> None:
    """A slow site is not dropped after NVFlare's 60 s default (see server/README.md)."""
    server = json.loads((COMMITTED / "app" / "config" / "config_fed_server.json").read_text())
    client = json.loads((COMMITTED / "app" / "config" / "config_fed_client.json").read_text())
    assert server["dead_client_grace_period"] >= 600
    assert client["get_task_timeout"] >= 600 and client["submit_task_result_timeout"] >= 600
    (cse,) = [w for w in server["workflows"] if w["path"].endswith("CrossSiteModelEval")]
    assert cse["args"]["validation_timeout"] >= 3600


def test_job_tolerates_a_site_dropping_out() -> None:
    """ResilientFedAvg: a round closes after round_timeout with min_responses results (docs/reliability.md)."""
    server = json.loads((COMMITTED / "app" / "config" / "config_fed_server.json").read_text())
    (controller,) = [w for w in server["workflows"] if w["id"] == "controller"]
    args = controller["args"]
    assert (args["min_responses"], args["round_timeout"], args["checkpoint_name"]) == (2, 7200, JOB_NAME)
    assert "resume" not in args  # the committed job starts afresh; `dose3d fl resume` writes a resuming copy


def test_sites_ask_for_the_next_round_every_half_second() -> None:
    """NVFlare's 2 s task request interval was most of the per-round overhead (docs/performance.md)."""
    server = json.loads((COMMITTED / "app" / "config" / "config_fed_server.json").read_text())
    (controller,) = [w for w in server["workflows"] if w["id"] == "controller"]
    assert server["server"]["task_request_interval"] <= 0.5
    assert controller["args"]["task_check_period"] <= 0.1


def test_sites_check_for_tasks_and_results_every_50_ms() -> None:
    """The in-process Client API's own 0.5 s waits are shortened (dose3d_fl.fl.site.polling)."""
    client = json.loads((COMMITTED / "app" / "config" / "config_fed_client.json").read_text())
    (executor,) = client["executors"]
    assert "--result-poll 0.05" in executor["executor"]["args"]["task_script_args"]


def _exported_configs(tmp_path: Path, config: SegJobConfig) -> tuple[dict, dict]:
    from dose3d_fl.fl.export import export_recipe
    from dose3d_fl.fl.seg_job import CLIENT_SCRIPT

    job = export_recipe(build_seg_recipe(config), JOB_NAME, tmp_path, CLIENT_SCRIPT.parent)
    return (
        json.loads((job / "app" / "config" / "config_fed_server.json").read_text()),
        json.loads((job / "app" / "config" / "config_fed_client.json").read_text()),
    )


def test_fedprox_diff_and_float16_variants_reach_the_job(tmp_path: Path) -> None:
    server, client = _exported_configs(
        tmp_path, SegJobConfig(fedprox_mu=0.01, transfer="diff", quantization="float16")
    )
    (controller,) = [w for w in server["workflows"] if w["id"] == "controller"]
    assert controller["args"]["fedprox_mu"] == 0.01  # FedAvg sends it in every training model's meta
    assert "DIFF" in json.dumps(client["executors"])
    filters = json.dumps(server["task_data_filters"]) + json.dumps(client["task_result_filters"])
    assert filters.count("Float16Quantizer") == 2
    assert "Float16Dequantizer" in json.dumps(server["task_result_filters"])
    assert "Float16Dequantizer" in json.dumps(client["task_data_filters"])


def test_plain_job_has_no_fedprox_and_full_transfer(tmp_path: Path) -> None:
    server, client = _exported_configs(tmp_path, SegJobConfig())
    assert "fedprox_mu" not in json.dumps(server) and "Float16" not in json.dumps([server, client])
    assert "DIFF" not in json.dumps(client["executors"])
    assert "--fedbn" not in json.dumps(client)


def test_fedbn_reaches_the_site_script_and_leaves_the_server_as_it_is(tmp_path: Path) -> None:
    plain_server, _ = _exported_configs(tmp_path / "plain", SegJobConfig())
    server, client = _exported_configs(tmp_path / "fedbn", SegJobConfig(fedbn=True))
    assert "--fedbn" in json.dumps(client["executors"])
    assert server == plain_server


def test_silobn_reaches_the_site_script_and_leaves_the_server_as_it_is(tmp_path: Path) -> None:
    plain_server, _ = _exported_configs(tmp_path / "plain", SegJobConfig())
    server, client = _exported_configs(tmp_path / "silobn", SegJobConfig(silobn=True))
    executors = json.dumps(client["executors"])
    assert "--silobn" in executors and "--fedbn" not in executors
    assert server == plain_server
    assert SegJobConfig(silobn=True).site_norm and not SegJobConfig().site_norm


def test_train_seed_reaches_the_initial_model_and_the_site_script(tmp_path: Path) -> None:
    server, client = _exported_configs(tmp_path / "seeded", SegJobConfig(train_seed=7))
    assert "--seed 7" in json.dumps(client["executors"])
    assert '"seed": 7' in json.dumps(server)
    _, plain_client = _exported_configs(tmp_path / "plain", SegJobConfig())
    assert "--seed" not in json.dumps(plain_client["executors"])
    assert SegJobConfig(train_seed=7).seg_profile.seed == 7 != SegJobConfig().seg_profile.seed


def test_site_profile_takes_the_job_seed() -> None:
    from dose3d_fl.fl.site.trainers import site_profile

    assert site_profile("cpu-small", seed=3).seed == 3
    assert site_profile("cpu-small").seed == SegJobConfig().seg_profile.seed


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"transfer": "sparse"}, "transfer"),
        ({"quantization": "int4"}, "quantization"),
        ({"fedprox_mu": -1}, "fedprox"),
        ({"fedbn": True, "profile": "cpu-small-dp"}, "instance normalisation"),
        ({"silobn": True, "profile": "cpu-small-dp"}, "silobn keeps"),
        ({"fedbn": True, "silobn": True}, "exclude each other"),
    ],
)
def test_invalid_variants_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegJobConfig(**change)
