"""``dose3d fl simulate`` options that only shape the job configuration: parsed by the real parser, checked in the
configuration and in the exported job that the sites run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dose3d_fl.cli import build_parser, main
from dose3d_fl.cli.fl import seg_job_config
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
