"""``dose3d gan train``: a local GAN run on a site cache writes a checkpoint that ``dose3d gan sample`` reads."""

from __future__ import annotations

import json
from pathlib import Path

from dose3d_fl.cli import main
from dose3d_fl.gan.checkpoint import load_gan_checkpoint
from dose3d_fl.gan.training_run import GAN_METRICS_NAME, GAN_MODEL_NAME


def test_gan_train_writes_a_checkpoint_with_its_profile(tiny_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "gan"
    assert (
        main(
            [
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
        )
        == 0
    )
    checkpoint, source = load_gan_checkpoint(out / GAN_MODEL_NAME)
    assert checkpoint.profile.name == "cpu-tiny" and "stored" in source
    assert {name.split(".")[0] for name in checkpoint.model} == {"generator", "discriminator"}
    metrics = json.loads((out / GAN_METRICS_NAME).read_text())
    assert metrics["steps"] == 2 and len(metrics["history"]) == 1
