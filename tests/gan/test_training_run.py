"""``dose3d gan train``: a local GAN run writes a checkpoint that ``dose3d gan sample`` reads, its metrics and
the real | synthetic comparison picture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dose3d_fl.cli import main
from dose3d_fl.gan.checkpoint import load_gan_checkpoint
from dose3d_fl.gan.figures import write_comparison_grid
from dose3d_fl.gan.training_run import COMPARE_NAME, GAN_METRICS_NAME, GAN_MODEL_NAME


def test_gan_train_writes_a_checkpoint_with_its_profile(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "gan"
    args = [
        "gan",
        "train",
        "--cache",
        str(tiny_cache),
        "--epochs",
        "1",
        "--profile",
        "cpu-tiny",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    checkpoint, source = load_gan_checkpoint(out / GAN_MODEL_NAME)
    assert checkpoint.profile.name == "cpu-tiny" and "stored" in source
    assert {name.split(".")[0] for name in checkpoint.model} == {"generator", "discriminator"}
    metrics = json.loads((out / GAN_METRICS_NAME).read_text())
    assert metrics["steps"] == 2 and len(metrics["history"]) == 1 and metrics["label_ok"] == 1.0
    assert (out / COMPARE_NAME).stat().st_size > 0


def test_comparison_grid_refuses_different_label_maps(tmp_path: Path) -> None:
    real = torch.zeros(2, 2, 8, 8, 8)
    other = real.clone()
    other[0, 1, 2, 2, 2] = 2
    with pytest.raises(ValueError, match="same label maps"):
        write_comparison_grid(real, other, tmp_path / "x.png")
