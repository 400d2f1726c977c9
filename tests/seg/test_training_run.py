"""`dose3d train`: centralised (pooled caches) and local training, with per-site metrics."""

from __future__ import annotations

import json

import torch

from dose3d_fl.cli import main
from dose3d_fl.seg.checkpoint import load_checkpoint
from dose3d_fl.seg.profiles import get_profile
from tests.seg.cases import write_cache


def test_train_cli_pools_caches_and_reports_each_site(tmp_path, capsys):
    site_a = write_cache(tmp_path / "site-a", 4, seed=1)
    site_b = write_cache(tmp_path / "site-b", 3, seed=2, axcodes=("R", "P", "I"))
    out = tmp_path / "out"
    args = ["train", "--cache", str(site_a), str(site_b), "--epochs", "1", "--out", str(out), "--hu-baseline"]
    assert main(args) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["site_val_dice"]) == {"site-a", "site-b"}
    assert metrics["train_cases"] == {"site-a": 3, "site-b": 2}
    assert metrics["val_cases"] == {"site-a": 1, "site-b": 1}
    assert metrics["epochs"] == 1 and metrics["seconds"] > 0
    assert 0.0 <= metrics["val_dice"] <= 1.0
    assert metrics["history"][-1]["epoch"] == 1
    assert metrics["hu_threshold_baseline"]["val_dice"] > 0.5

    checkpoint = load_checkpoint(out / "model.pt")
    assert checkpoint.profile == get_profile("cpu-small")
    assert checkpoint.meta["metrics"]["val_dice"] == metrics["val_dice"]
    assert isinstance(torch.load(out / "model.pt", weights_only=True)["model"], dict)
    printed = capsys.readouterr().out
    assert "site-a: val Dice" in printed and "model.pt" in printed

    # The splits were stored with the caches and are reused by a local (one-cache) run.
    split_a = (site_a / "split.json").read_text()
    assert main(["train", "--cache", str(site_a), "--epochs", "0", "--out", str(tmp_path / "local")]) == 0
    assert (site_a / "split.json").read_text() == split_a
    assert set(json.loads((tmp_path / "local" / "metrics.json").read_text())["site_val_dice"]) == {"site-a"}


def test_train_cli_reports_a_missing_cache(tmp_path, capsys):
    assert main(["train", "--cache", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "dose3d ingest" in capsys.readouterr().err
