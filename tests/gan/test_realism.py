"""The realism check: a segmentation model trained on real cases finds the organ in real crops and not in
an untrained generator's images of the same label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dose3d_fl.data.split import load_or_create_split, split_cases
from dose3d_fl.gan.realism import realism_dice
from dose3d_fl.gan.trainer import GanTrainer
from dose3d_fl.seg.trainer import SegTrainer
from tests.gan.conftest import TINY
from tests.seg.cases import TINY_PROFILE


def test_real_crops_score_high_and_an_untrained_generator_low(
    tiny_trainer: GanTrainer, tiny_cache: Path
) -> None:
    train, val = split_cases(tiny_cache, load_or_create_split(tiny_cache))
    seg = SegTrainer(train + val, [], TINY_PROFILE, num_threads=1, show_progress=False)
    seg.train_epochs(24)
    real = tiny_trainer.reference[:4]
    untrained = tiny_trainer.generate_for(real[:, 1].round().long(), seed=0)

    on_real = realism_dice(real, TINY, seg.get_weights(), TINY_PROFILE)
    on_untrained = realism_dice(untrained, TINY, seg.get_weights(), TINY_PROFILE)
    assert len(on_real) == len(on_untrained) == 4
    assert np.nanmean(on_real) > 0.7 > np.nanmean(on_untrained), (on_real, on_untrained)
    with pytest.raises(ValueError, match="mm"):
        realism_dice(real, TINY.replace(pixdim=(2.0, 2.0, 2.0)), seg.get_weights(), TINY_PROFILE)
