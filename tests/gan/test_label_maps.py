"""Label maps: the generator reproduces the given label exactly; new maps from deformed training labels all
pass the label check; a map that does not fit the profile is refused with a reason."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from dose3d_fl.gan.crops import CropSampler, memorization_regions
from dose3d_fl.gan.label_maps import (
    OrganVolumeRange,
    build_label_map,
    label_map_problem,
    one_hot,
    organ_labels,
)
from dose3d_fl.gan.label_sampler import LabelMapSampler
from dose3d_fl.gan.sampling import write_samples
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import DEMO, TINY


def test_conditioned_sampling_reproduces_the_given_label_exactly(
    tiny_trainer: GanTrainer, tmp_path: Path
) -> None:
    maps = tiny_trainer.reference[:3, 1].round().long()
    pairs = tiny_trainer.generate_for(maps, seed=4)
    assert torch.equal(pairs[:, 1].long(), maps)
    assert torch.equal(tiny_trainer.generate_for(maps, seed=4), pairs)  # the seed fixes the noise
    assert not torch.equal(tiny_trainer.generate_for(maps, seed=5)[:, 0], pairs[:, 0])
    report = write_samples(pairs, tmp_path, TINY, memorization=None)
    for pair, (_, label) in zip(pairs, report.pairs, strict=True):
        written = np.asarray(nib.load(label).dataobj)
        assert np.array_equal(written, organ_labels(pair[1]).numpy())


def test_new_label_maps_are_deformed_training_labels_that_pass_the_check(demo_trainer: GanTrainer) -> None:
    volumes = demo_trainer.organ_volumes
    maps = LabelMapSampler(demo_trainer.volumes, DEMO, volumes, seed=1).sample(3)
    assert maps.shape == (3, 48, 48, 48) and maps.dtype == torch.long
    assert set(torch.unique(maps).tolist()) == {0, 1, 2}  # outside, body, spleen
    assert all(label_map_problem(m, volumes) is None for m in maps)
    sources = demo_trainer.reference[:, 1].round().long()
    assert not any(torch.equal(m, s) for m in maps for s in sources)  # deformed, never a training crop as is
    assert torch.equal(LabelMapSampler(demo_trainer.volumes, DEMO, volumes, seed=1).sample(3), maps)


def test_the_label_check_names_what_is_wrong() -> None:
    body = torch.ones(16, 16, 16, dtype=torch.bool)
    organs = torch.zeros(16, 16, 16, dtype=torch.long)
    organs[4:8, 4:8, 4:8] = 1  # 64 voxels
    one = build_label_map(body, organs)
    volumes = OrganVolumeRange({1: 10.0}, {1: 100.0})
    assert label_map_problem(one, volumes) is None
    two = organs.clone()
    two[12:14, 12:14, 12:14] = 1
    assert "2 connected components" in label_map_problem(build_label_map(body, two), volumes)
    assert "outside the plausible" in label_map_problem(
        build_label_map(body, organs * 0), volumes, organs=[1]
    )
    assert label_map_problem(build_label_map(body, organs * 0), volumes) is None  # a crop beside the organ
    with pytest.raises(ValueError, match="organ_classes"):
        one_hot(build_label_map(body, organs * 2), classes=3)


def test_deformation_too_strong_for_the_organs_is_refused(tiny_trainer: GanTrainer) -> None:
    tight = OrganVolumeRange({1: 1e9}, {1: 2e9})
    with pytest.raises(ValueError, match="lower the GAN profile's deform"):
        LabelMapSampler(tiny_trainer.volumes, TINY, tight, seed=0, max_tries=2).sample(1)


def test_segmentation_placement_gives_negative_crops_and_checks_them(demo_trainer: GanTrainer) -> None:
    profile = DEMO.replace(crop_centres="segmentation")
    crops = CropSampler(demo_trainer.volumes, profile, seed=0).sample(12)
    without_organ = int(((crops[:, 1] >= 2).flatten(1).sum(1) == 0).sum())
    assert 0 < without_organ < 12  # the organ anywhere in a crop, or not in it (negative crops)
    maps = LabelMapSampler(demo_trainer.volumes, profile, demo_trainer.organ_volumes, seed=2).sample(4)
    assert all(label_map_problem(m, demo_trainer.organ_volumes) is None for m in maps)
    regions = memorization_regions(demo_trainer.volumes, profile)
    pad = 2 * (profile.crop_size // 2 + profile.memorization_shift)
    assert [tuple(r.shape) for r in regions] == [
        tuple(n + pad for n in v.image.shape) for v in demo_trainer.volumes
    ]


def test_an_organ_sliver_that_a_deformation_brings_into_a_negative_crop_is_checked(
    tiny_trainer: GanTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sampler = LabelMapSampler(tiny_trainer.volumes, TINY, tiny_trainer.organ_volumes, seed=0)
    size, margin = sampler.size, sampler.margin
    body_only = torch.ones((size + 2 * margin,) * 3, dtype=torch.long)  # a crop beside the organs
    monkeypatch.setattr(sampler, "_region", lambda index: body_only)
    calls = []

    def deform(region: torch.Tensor) -> torch.Tensor:  # the first draw brings 2 organ voxels in at an edge
        crop = region[:, margin : margin + size, margin : margin + size, margin : margin + size].clone()
        if not calls:
            crop[0, 0, 0, :2] = 2
        calls.append(1)
        return crop

    monkeypatch.setattr(sampler, "deform", deform)
    (label_map,) = sampler.sample(1)
    assert len(calls) == 2 and label_map_problem(label_map, tiny_trainer.organ_volumes) is None
