"""``dose3d fl simulate`` options that only shape the job configuration: parsed by the real parser, checked in the
configuration and in the exported job that the sites run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.cli import build_parser, main
from dose3d_fl.cli.fl import seg_job_config, simulation_config
from dose3d_fl.fl import DEFAULT_LOCAL_EPOCHS, DEFAULT_ROUNDS, LOCAL_LR_SCALE
from dose3d_fl.fl.seg_job import export_seg_job


def _client_script_args(job_config, out: Path) -> str:
    job = export_seg_job(out, job_config)
    client = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    (executor,) = client["executors"]
    return executor["executor"]["args"]["task_script_args"]


def test_simulate_defaults_are_the_job_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(["fl", "simulate", "--workspace", str(tmp_path / "ws")])
    job = seg_job_config(args)
    assert (job.num_rounds, job.local_epochs, job.profile) == (
        DEFAULT_ROUNDS,
        DEFAULT_LOCAL_EPOCHS,
        "cpu-small",
    )
    assert (job.local_lr_scale, job.keep_optimizer_state) == (LOCAL_LR_SCALE, False)
    script_args = _client_script_args(job, tmp_path / "job")
    assert f"--lr-scale {LOCAL_LR_SCALE:g}" in script_args and "--keep-optimizer-state" not in script_args


def test_simulate_optimiser_options_reach_the_site_script(tmp_path: Path) -> None:
    argv = ["fl", "simulate", "--workspace", str(tmp_path / "ws"), "--rounds", "3", "--local-epochs", "2"]
    args = build_parser().parse_args([*argv, "--local-lr-scale", "1.5", "--keep-optimizer-state"])
    job = seg_job_config(args)
    assert (job.num_rounds, job.local_epochs, job.local_lr_scale, job.keep_optimizer_state) == (
        3,
        2,
        1.5,
        True,
    )
    script_args = _client_script_args(job, tmp_path / "job")
    assert "--local-epochs 2" in script_args
    assert "--lr-scale 1.5" in script_args and "--keep-optimizer-state" in script_args


def test_simulate_refuses_a_non_positive_learning_rate_scale_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fl", "simulate", "--workspace", str(tmp_path / "ws"), "--local-lr-scale", "0"]) == 2
    out = capsys.readouterr()
    assert (out.out + out.err).strip().splitlines() == ["dose3d: error: local_lr_scale must be > 0, got 0.0"]
    assert not (tmp_path / "ws").exists()  # nothing started


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _controller_args(job: Path) -> dict:
    server = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    (controller,) = [w for w in server["workflows"] if w["id"] == "controller"]
    return controller["args"]


@pytest.mark.parametrize("spelling", ["trimmed-mean", "trimmed_mean"])
def test_simulate_chooses_a_robust_aggregation(spelling: str, tmp_path: Path) -> None:
    argv = ["fl", "simulate", "--workspace", str(tmp_path / "ws"), "--aggregation", spelling]
    job = seg_job_config(build_parser().parse_args([*argv, "--trim-fraction", "0.3", "--transfer", "diff"]))
    assert (job.aggregation, job.trim_fraction, job.transfer) == ("trimmed_mean", 0.3, "diff")
    args = _controller_args(export_seg_job(tmp_path / "job", job))
    assert args["aggregator"] == {
        "path": "dose3d_fl.fl.server.aggregators.RobustAggregator",
        "args": {"method": "trimmed_mean", "trim_fraction": 0.3},
    }


def test_simulate_defaults_to_fedavg_for_seg_and_generator_only_for_gan(tmp_path: Path) -> None:
    from dose3d_fl.cli.fl import gan_job_config
    from dose3d_fl.fl.server.aggregators import DEFAULT_TRIM_FRACTION
    from dose3d_fl.fl.server.update_checks import DEFAULT_MAX_NORM_RATIO

    args = build_parser().parse_args(["fl", "simulate", "--workspace", str(tmp_path / "ws")])
    job = seg_job_config(args)
    assert (job.aggregation, job.trim_fraction, job.max_norm_ratio) == (
        "fedavg",
        DEFAULT_TRIM_FRACTION,
        DEFAULT_MAX_NORM_RATIO,
    )
    assert gan_job_config(build_parser().parse_args(["fl", "simulate", "--job", "gan"])).aggregation == (
        "generator-only"
    )
    # The help states the server's defaults as text (the command line does not import NVFlare to show them).
    simulate_help = _help("simulate")
    assert f"(default {DEFAULT_TRIM_FRACTION:g}: 1 of 5)" in simulate_help
    assert f"(default {DEFAULT_MAX_NORM_RATIO:g})" in simulate_help


def _help(command: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args(["fl", command, "--help"])
    return " ".join(out.getvalue().split())


def test_export_without_options_is_the_default_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``dose3d fl export`` writes the committed jobs/ (tests/fl/test_seg_job.py keeps those equal to it)."""
    from dose3d_fl.fl.gan_job import export_gan_job

    assert main(["fl", "export", "--out", str(tmp_path / "cli")]) == 0
    assert main(["fl", "export", "--job", "gan", "--out", str(tmp_path / "cli")]) == 0
    assert _tree(tmp_path / "cli" / "seg_fedavg") == _tree(export_seg_job(tmp_path / "api"))
    assert _tree(tmp_path / "cli" / "gan_fedavg") == _tree(export_gan_job(tmp_path / "api"))
    assert "aggregator" not in _controller_args(tmp_path / "cli" / "seg_fedavg")  # FedAvg's own mean


def test_export_takes_the_job_options_of_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["fl", "export", "--out", str(tmp_path), "--aggregation", "median", "--transfer", "diff"]
    assert (
        main([*argv, "--rounds", "7", "--local-epochs", "3", "--min-clients", "5", "--max-norm-ratio", "30"])
        == 0
    )
    job = tmp_path / "seg_fedavg"
    assert capsys.readouterr().out.strip() == str(job)
    args = _controller_args(job)
    assert args["aggregator"]["path"].endswith("RobustAggregator")
    assert args["aggregator"]["args"] == {"method": "median"}
    assert (args["num_rounds"], args["num_clients"], args["max_norm_ratio"]) == (7, 5, 30.0)
    client = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    assert "--local-epochs 3" in client["executors"][0]["executor"]["args"]["task_script_args"]
    assert "DIFF" in json.dumps(client)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--aggregation", "both"],
            "--aggregation both is for the gan job; the seg job takes fedavg, median or",
        ),
        (["--job", "gan", "--aggregation", "median"], "--aggregation median is for the seg job; the gan job"),
        (["--aggregation", "trimmed-mean", "--trim-fraction", "0.5"], "trim_fraction must be in [0, 0.5)"),
    ],
)
def test_export_refuses_an_aggregation_of_the_other_job_in_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fl", "export", "--out", str(tmp_path), *argv]) == 2
    out = capsys.readouterr()
    (line,) = (out.out + out.err).strip().splitlines()
    assert line.startswith(f"dose3d: error: {message}")
    assert not any(tmp_path.iterdir())  # nothing written


def _options(command: str) -> set[str]:
    parser = build_parser()
    fl = next(a for a in parser._subparsers._group_actions[0].choices["fl"]._actions if a.choices)
    return {flag for action in fl.choices[command]._actions for flag in action.option_strings}


def test_simulate_and_export_take_the_same_job_options() -> None:
    """One builder (cli/fl.py add_job_options) serves both: only where and how they run differs."""
    simulate_only = {"--sites", "--workspace", "--seed", "--resume", "--no-pin-cores", "--channels-last"}
    simulate_only |= {"--cpu-bfloat16"}  # site settings (dose3d_site.json), not job options
    export_only = {"--out"}
    assert _options("simulate") - simulate_only == _options("export") - export_only
    for flag in ("--fedprox-mu", "--fedbn", "--transfer", "--quantization", "--rounds", "--min-clients"):
        assert flag in _options("export")
    for flag in ("--min-responses", "--round-timeout", "--aggregation", "--dp-noise", "--dp-budget"):
        assert flag in _options("export")


def test_export_writes_every_non_default_option_into_the_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from dose3d_fl.fl.policy.privacy import GAUSSIAN_DP, policy_filters

    argv = ["fl", "export", "--out", str(tmp_path), "--rounds", "4", "--local-epochs", "2"]
    argv += ["--min-clients", "4", "--min-responses", "3", "--round-timeout", "900"]
    argv += ["--aggregation", "trimmed-mean", "--trim-fraction", "0.25", "--max-norm-ratio", "20"]
    argv += ["--fedprox-mu", "0.01", "--fedbn", "--transfer", "diff", "--quantization", "float16"]
    argv += ["--local-lr-scale", "1.5", "--keep-optimizer-state"]
    argv += ["--dp-noise", "0.5", "--dp-clip", "2", "--dp-budget", "10", "--dp-delta", "1e-6"]
    assert main(argv) == 0
    job = tmp_path / "seg_fedavg"
    policy = tmp_path / "site_local" / "privacy.json"
    assert capsys.readouterr().out.splitlines()[:2] == [str(job), str(policy)]

    server = json.loads((job / "app" / "config" / "config_fed_server.json").read_text())
    client = json.loads((job / "app" / "config" / "config_fed_client.json").read_text())
    args = _controller_args(job)
    assert (args["num_rounds"], args["num_clients"], args["min_responses"], args["round_timeout"]) == (
        4,
        4,
        3,
        900,
    )
    assert (args["fedprox_mu"], args["max_norm_ratio"]) == (0.01, 20.0)
    assert args["aggregator"]["args"] == {"method": "trimmed_mean", "trim_fraction": 0.25}
    assert json.loads((job / "meta.json").read_text())["min_clients"] == 4  # the scheduler waits for 4 sites
    (executor,) = client["executors"]
    assert executor["executor"]["args"]["params_transfer_type"] == "DIFF"
    script_args = executor["executor"]["args"]["task_script_args"]
    for part in ("--local-epochs 2", "--lr-scale 1.5", "--keep-optimizer-state", "--fedbn"):
        assert part in script_args
    # float16 both ways: the server quantises what it sends and restores what it gets, and so do the sites.
    for config, sent, received in (
        (server, "task_data_filters", "task_result_filters"),
        (client, "task_result_filters", "task_data_filters"),
    ):
        assert "Float16Quantizer" in json.dumps(config[sent]) and "Float16Dequantizer" in json.dumps(
            config[received]
        )
    # DP is not the job's: the job carries no DP filter; the sites' policy file does, and it builds.
    assert "GaussianDP" not in json.dumps(server) + json.dumps(client)
    data_filters, result_filters = policy_filters(json.loads(policy.read_text()))
    (dp,) = [f for f in result_filters if f"{type(f).__module__}.{type(f).__name__}" == GAUSSIAN_DP]
    assert (dp.noise_multiplier, dp.clip_norm, dp.epsilon_budget, dp.delta) == (0.5, 2.0, 10.0, 1e-6)
    assert any(type(f).__name__ == "GaussianDP" for f in data_filters)


def test_export_and_simulate_help_state_the_job_defaults() -> None:
    from dose3d_fl.fl.seg_job import SegJobConfig

    for command in ("export", "simulate"):
        text = _help(command)
        assert f"(default {SegJobConfig.min_responses}, at most --min-clients)" in text
        assert f"(default {SegJobConfig.round_timeout}; 0: no limit)" in text
        assert f"(default {SegJobConfig.min_clients}; simulate: every simulated site)" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--job", "gan", "--fedbn"], "--fedbn is for the seg job; the gan job takes --rounds"),
        (["--job", "gan", "--round-timeout", "60"], "--round-timeout is for the seg job"),
        (["--job", "gan", "--dp-noise", "1"], "--dp-noise is for the seg job"),
        (["--job", "gan", "--dp-budget", "8"], "--dp-budget is for the seg job"),
        (["--dp-clip", "2"], "--dp-clip needs --dp-noise"),
        (["--dp-noise", "1", "--dp-delta", "2"], "differential privacy needs --dp-noise, --dp-clip and"),
        (["--min-responses", "0"], "min_responses must be at least 1, got 0"),
        (["--round-timeout", "-1"], "round_timeout must be >= 0 s (0: no limit), got -1"),
        (["--fedbn", "--profile", "cpu-small-dp"], "fedbn keeps the sites' BatchNorm layers"),
        (["--silobn", "--fedbn"], "fedbn and silobn exclude each other"),
        (["--job", "gan", "--silobn"], "--silobn is for the seg job"),
    ],
)
@pytest.mark.parametrize("command", ["export", "simulate"])
def test_a_job_option_refused_in_one_line_and_nothing_started(
    command: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--out", str(tmp_path / "out")] if command == "export" else ["--workspace", str(tmp_path / "ws")]
    assert main(["fl", command, *where, *argv]) == 2
    out = capsys.readouterr()
    (line,) = (out.out + out.err).strip().splitlines()
    assert line.startswith(f"dose3d: error: {message}"), line
    assert not any(tmp_path.iterdir())  # nothing written, no simulation started


def test_simulate_refuses_more_minimum_sites_than_it_simulates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fl", "simulate", "--workspace", str(tmp_path / "ws"), "--sites", "2", "--min-clients", "3"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "dose3d: error: min_clients 3 must be between 1 and the 2 simulated sites"
    )
    assert not (tmp_path / "ws").exists()


@pytest.mark.slow
def test_simulate_ends_with_the_tensorboard_command_for_its_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real 1-round simulation of 2 tiny sites; the last line opens the events the sites streamed."""
    from tests.deploy.conftest import make_tiny_cache

    ws = tmp_path / "ws"
    for seed, site in enumerate(("site-1", "site-2"), 1):
        make_tiny_cache(tmp_path / "dicom" / site, ws / "data" / "cache" / site, seed)
    argv = ["fl", "simulate", "--workspace", str(ws), "--sites", "2", "--rounds", "1", "--local-epochs", "1"]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    events = ws / "sim" / "seg_fedavg" / "server" / "simulate_job" / "tb_events"
    assert last == f"TensorBoard (the sites' streamed metrics): tensorboard --logdir {events}"
    assert sorted(p.name for p in events.iterdir()) == ["site-1", "site-2"]
    assert all(list((events / site).glob("events.out.tfevents.*")) for site in ("site-1", "site-2"))


def test_simulate_pins_sites_to_cores_unless_told_not_to(tmp_path: Path) -> None:
    argv = ["fl", "simulate", "--workspace", str(tmp_path / "ws")]
    assert simulation_config(build_parser().parse_args(argv)).pin_cores is True
    assert simulation_config(build_parser().parse_args([*argv, "--no-pin-cores"])).pin_cores is False


def test_simulate_trains_channels_last_only_when_asked_and_only_the_seg_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fl", "simulate", "--workspace", str(tmp_path / "ws")]
    assert simulation_config(build_parser().parse_args(argv)).channels_last is False
    assert simulation_config(build_parser().parse_args([*argv, "--channels-last"])).channels_last is True
    assert main([*argv, "--job", "gan", "--channels-last"]) == 2
    out = capsys.readouterr()
    (line,) = (out.out + out.err).strip().splitlines()
    assert line.startswith("dose3d: error: --channels-last is for the seg job's trainer")
    assert not (tmp_path / "ws").exists()  # refused before anything was written


def test_simulate_trains_in_bfloat16_only_when_asked_and_only_the_seg_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fl", "simulate", "--workspace", str(tmp_path / "ws")]
    assert simulation_config(build_parser().parse_args(argv)).site_training["cpu_bfloat16"] is False
    config = simulation_config(build_parser().parse_args([*argv, "--cpu-bfloat16"]))
    assert config.site_training == {"channels_last": False, "cpu_bfloat16": True}
    assert main([*argv, "--job", "gan", "--cpu-bfloat16"]) == 2
    out = capsys.readouterr()
    (line,) = (out.out + out.err).strip().splitlines()
    assert line.startswith("dose3d: error: --cpu-bfloat16 is for the seg job's trainer")
    assert not (tmp_path / "ws").exists()
