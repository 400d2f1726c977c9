"""``dose3d gan sample`` writes valid NIfTI pairs (read back with MONAI) and a PNG; copies are not written."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.transforms import LoadImage

from dose3d_fl.cli import main
from dose3d_fl.gan.sampling import write_samples
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.seg.profiles import get_profile
from tests.gan.conftest import TINY


def test_sample_command_writes_nifti_pairs_from_a_trained_checkpoint(
    tiny_trainer: GanTrainer, tiny_cache: Path, tmp_path: Path
) -> None:
    tiny_trainer.train_epochs(1)
    model = tiny_trainer.save_checkpoint(tmp_path / "gan.pt")
    out = tmp_path / "samples"
    assert (
        main(
            [
                "gan",
                "sample",
                "--model",
                str(model),
                "--n",
                "3",
                "--out",
                str(out),
                "--cache",
                str(tiny_cache),
            ]
        )
        == 0
    )

    images, labels = sorted(out.glob("*image*.nii.gz")), sorted(out.glob("*label*.nii.gz"))
    assert len(images) == len(labels) == 3
    seg = get_profile(TINY.seg_profile)
    for image, label in zip(images, labels, strict=True):
        ct, mask = LoadImage(image_only=True)(image), nib.load(label)
        assert tuple(ct.shape) == (16, 16, 16) == mask.shape
        assert seg.hu_min - 1e-3 <= float(ct.min()) and float(ct.max()) <= seg.hu_max + 1e-3
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1}
        assert np.allclose(np.diag(mask.affine)[:3], TINY.pixdim)
    assert (out / "samples.png").stat().st_size > 0


def test_nvflare_model_file_samples_and_refuses_a_missing_check(
    tiny_trainer: GanTrainer, tmp_path: Path
) -> None:
    model = tmp_path / "FL_global_model.pt"
    torch.save({"model": tiny_trainer.get_weights(generator_only=True)}, model)
    out = tmp_path / "samples"
    assert main(["gan", "sample", "--model", str(model), "--n", "2", "--out", str(out)]) == 2
    assert not out.exists()
    args = ["gan", "sample", "--model", str(model), "--n", "2", "--out", str(out), "--profile", "cpu-tiny"]
    assert main([*args, "--skip-memorization-check"]) == 0
    assert len(list(out.glob("*label*.nii.gz"))) == 2


def test_memorized_samples_are_never_written(tiny_trainer: GanTrainer, tmp_path: Path) -> None:
    copy = tiny_trainer.reference[:1].clone()
    report = write_samples(
        torch.cat([copy, tiny_trainer.generate(1, seed=5)]), tmp_path, TINY, tiny_trainer.memorization
    )
    assert report.dropped_memorized == 1 and len(report.pairs) == 1
    written = LoadImage(image_only=True)(report.pairs[0][0])
    seg = get_profile(TINY.seg_profile)
    original = copy[0, 0].numpy() * (seg.hu_max - seg.hu_min) + seg.hu_min
    assert not np.allclose(np.asarray(written), original)
