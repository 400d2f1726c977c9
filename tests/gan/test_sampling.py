"""``dose3d gan sample`` and ``dose3d gan export``: pairs for this site's deformed labels, in HU, never a
copy of a training crop; export copies only what passes the check again."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from dose3d_fl.cli import main
from dose3d_fl.gan.crops import window_to_hu
from dose3d_fl.gan.export import EXPORT_RECORD
from dose3d_fl.gan.sampling import SAMPLES_RECORD, write_samples
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import TINY


def _sample(model: Path, cache: Path, out: Path, *extra: str) -> int:
    return main(
        ["gan", "sample", "--model", str(model), "--n", "3", "--out", str(out), "--cache", str(cache), *extra]
    )


def test_sample_writes_hu_pairs_for_deformed_site_labels(
    tiny_trainer: GanTrainer, tiny_cache: Path, tmp_path: Path
) -> None:
    tiny_trainer.train_epochs(1)
    model = tiny_trainer.save_checkpoint(tmp_path / "gan.pt")
    out = tmp_path / "samples"
    assert _sample(model, tiny_cache, out) == 0
    images, labels = sorted(out.glob("*_image.nii.gz")), sorted(out.glob("*_label.nii.gz"))
    assert len(images) == len(labels) == 3
    for image, label in zip(images, labels, strict=True):
        ct, mask = LoadImage(image_only=True)(image), nib.load(label)
        assert tuple(ct.shape) == (16, 16, 16) == mask.shape
        assert TINY.hu_min - 1e-3 <= float(ct.min()) and float(ct.max()) <= TINY.hu_max + 1e-3
        assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}
        assert np.allclose(np.diag(mask.affine)[:3], TINY.pixdim)
    record = json.loads((out / SAMPLES_RECORD).read_text())
    assert (
        record["memorization_checked"]
        and len(record["scores"]) == 3
        and record["gan_profile"]["name"] == "cpu-tiny"
    )
    assert (out / "samples.png").stat().st_size > 0


def test_a_model_file_without_profile_needs_the_site_cache(
    tiny_trainer: GanTrainer, tiny_cache: Path, tmp_path: Path
) -> None:
    model = tmp_path / "FL_global_model.pt"
    torch.save({"model": tiny_trainer.get_weights(generator_only=True)}, model)
    with pytest.raises(SystemExit):  # --cache is required: the labels come from this site
        main(["gan", "sample", "--model", str(model), "--n", "2", "--out", str(tmp_path / "x")])
    assert _sample(model, tiny_cache, tmp_path / "wrong") == 2  # cpu-small by default: refused with a reason
    assert _sample(model, tiny_cache, tmp_path / "ok", "--profile", "cpu-tiny") == 0


def test_copies_are_never_written_and_never_exported(
    tiny_trainer: GanTrainer, tiny_cache: Path, tmp_path: Path
) -> None:
    copy = tiny_trainer.reference[:1].clone()
    samples = torch.cat([copy, tiny_trainer.generate(2, seed=5)])
    report = write_samples(samples, tmp_path / "samples", TINY, tiny_trainer.memorization)
    assert report.dropped_memorized == 1 and len(report.pairs) == 2
    for image, _ in report.pairs:
        assert not np.allclose(np.asarray(nib.load(image).dataobj), window_to_hu(copy[0, 0], TINY).numpy())

    # Someone puts a training crop into the folder afterwards: export checks again and withholds it.
    planted = report.pairs[0][0]
    nib.save(nib.Nifti1Image(window_to_hu(copy[0, 0], TINY).numpy(), nib.load(planted).affine), planted)
    out = tmp_path / "export"
    assert (
        main(
            [
                "gan",
                "export",
                "--samples",
                str(tmp_path / "samples"),
                "--cache",
                str(tiny_cache),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / EXPORT_RECORD).read_text())
    assert record["withheld_as_copies"] == ["sample-0001"] and record["exported"] == ["sample-0002"]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        "sample-0002_image.nii.gz",
        "sample-0002_label.nii.gz",
    ]
    again = main(
        [
            "gan",
            "export",
            "--samples",
            str(tmp_path / "samples"),
            "--cache",
            str(tiny_cache),
            "--out",
            str(out),
        ]
    )
    assert again == 2  # never into a folder that holds files
