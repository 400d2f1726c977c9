"""Score any model file on every site's validation cases with one evaluator (same code for every run)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from dose3d_fl.clinical.model_file import load_segmentation_model
from dose3d_fl.data.cases import SiteCases
from dose3d_fl.seg.profiles import SegProfile
from dose3d_fl.seg.trainer import SegTrainer


class Evaluator:
    """Validation Dice of model files per site and on the union of the sites' validation cases.

    Each site's validation cases are preprocessed and cached once, then reused for every model.

    Args:
        sites: the sites' split cases (``seg.training_run.load_site_cases``).
        profile: the profile every evaluated model must share (its preprocessing).
        num_threads: torch CPU threads.
    """

    def __init__(
        self, sites: Sequence[SiteCases], profile: SegProfile, num_threads: int | None = None
    ) -> None:
        self.profile = profile
        self.trainers = {
            site.name: SegTrainer([], site.val, profile, num_threads=num_threads, show_progress=False)
            for site in sites
        }

    def evaluate(self, model_file: Path) -> dict:
        """``{"site_val_dice": {site: Dice}, "union_val_dice": Dice, "case_dice": {case: Dice}}``.

        Raises:
            ValueError: the model was trained with another network or preprocessing.
        """
        model = load_segmentation_model(
            model_file, self.profile.name, "the benchmark's profile", fallback=True
        )
        differences = model.profile.incompatibilities(self.profile)
        if differences:
            raise ValueError(
                f"{model_file}: profile differs from the benchmark's in {', '.join(differences)}"
            )
        return self.evaluate_weights(model.weights)

    def evaluate_weights(self, weights: dict[str, torch.Tensor]) -> dict:
        """``evaluate`` for a state dict of the benchmark profile's network (no file, no profile check)."""
        return self.evaluate_site_weights(dict.fromkeys(self.trainers, weights))

    def evaluate_site_weights(self, weights: Mapping[str, dict[str, torch.Tensor]]) -> dict:
        """``evaluate_weights`` with each site's own model on its own validation cases (personalised FL).

        Args:
            weights: a state dict for every site, by site name.

        Raises:
            KeyError: a site has no weights.
        """
        site_dice, case_dice = {}, {}
        for name, trainer in self.trainers.items():
            if name not in weights:
                raise KeyError(f"no weights for site {name!r}; got {', '.join(weights) or 'none'}")
            trainer.set_weights(weights[name])
            result = trainer.validate()
            site_dice[name] = result["val_dice"]
            case_dice |= {f"{name}/{case}": dice for case, dice in result["case_dice"].items()}
        values = [dice for dice in case_dice.values() if not math.isnan(dice)]
        return {
            "site_val_dice": site_dice,
            "union_val_dice": sum(values) / len(values) if values else math.nan,
            "case_dice": case_dice,
        }
