"""The memorisation check on real anatomy: a shifted, noised copy of a training crop is caught; another
patient's crop (what an honest generator would draw at best) and the generator's samples are not."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.gan.crops import cut_crop, load_organ_volumes
from dose3d_fl.gan.memorization import MemorizationCheck, best_ncc
from dose3d_fl.gan.trainer import GanTrainer
from tests.gan.conftest import DEMO


def test_a_shifted_noised_copy_is_caught_and_a_new_patient_is_not(
    demo_trainer: GanTrainer, demo_cache: Path
) -> None:
    check = demo_trainer.memorization
    volume = demo_trainer.volumes[0]
    # Cut at the largest training jitter plus the check's shift tolerance, with scanner-like noise (35 HU).
    reach = DEMO.crop_jitter + DEMO.memorization_shift
    copy = cut_crop(volume, DEMO.crop_size, (reach, -reach, 2))
    noise = torch.Generator().manual_seed(0)
    copy[0] = (copy[0] + 0.05 * torch.randn(copy[0].shape, generator=noise)).clamp(0, 1)
    _, val = split_cases(demo_cache, load_or_create_split(demo_cache))
    (new_patient,) = load_organ_volumes(val, DEMO)
    honest = torch.stack([cut_crop(new_patient, DEMO.crop_size, shift) for shift in [(0, 0, 0), (4, -3, 2)]])
    samples = torch.cat([copy[None], honest, demo_trainer.generate(2, seed=1)])

    kept, dropped = check.keep(samples)
    scores = check.scores(samples)
    assert dropped == 1 and scores[0] >= check.threshold > scores[1:].max(), scores
    assert len(kept) == 4 and not torch.equal(kept[0], samples[0])


def test_best_ncc_is_the_brute_force_maximum() -> None:
    torch.manual_seed(0)
    regions, size = torch.rand(2, 9, 9, 9), 6
    sample = regions[1, 2:8, 1:7, 3:9] * 3 + 1  # brightness and contrast do not hide a copy
    other = torch.rand(size, size, size)
    scores, where = best_ncc(torch.stack([sample, other, torch.zeros(size, size, size)]), regions)

    def ncc(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    brute = max(
        ncc(other, regions[m, i : i + size, j : j + size, k : k + size])
        for m, i, j, k in itertools.product(range(2), range(4), range(4), range(4))
    )
    assert abs(float(scores[0]) - 1.0) < 1e-4 and int(where[0]) == 1
    assert abs(float(scores[1]) - brute) < 1e-4
    assert float(scores[2]) == 0.0  # a flat sample correlates with nothing


def test_the_floor_raises_air_to_fat_before_correlating() -> None:
    regions = torch.rand(1, 8, 8, 8)
    check = MemorizationCheck.for_profile(regions, DEMO)
    assert check.floor > 0 and all(float(region.min()) >= check.floor for region in check.regions)
