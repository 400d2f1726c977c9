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
