"""A site's local training state between rounds, on disk, so a restarted site continues where it stopped.

The global weights come from the server every round; what a site would lose in a restart is its own:
the optimiser's moments (used only by a job that keeps them over rounds), its last local weights (what
cross-site evaluation asks it for) and the round it last trained. ``SiteState`` writes them after every local round (atomically: a crash leaves the previous
state) and gives them back to a new trainer when the next round it is asked for follows the saved one.

A site also notices when its cache changes under a running job (cases deleted, rewritten or corrupted):
``cache_signature`` is cheap (file sizes and modification times) and checked every round.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.transforms import Randomizable

from dose3d_fl.files import torch_save_atomic
from dose3d_fl.fl.site.config import STATE_DIR_NAME
from dose3d_fl.fl.site.fedbn import batch_norm_keys
from dose3d_fl.seg.trainer import SegTrainer

logger = logging.getLogger(__name__)

STATE_DIR = STATE_DIR_NAME  # in the site cache (SiteConfig.state_dir)


def cache_signature(cases: Sequence[dict[str, str]]) -> tuple:
    """Sizes and modification times of every case file (``None`` for a missing file)."""
    signature = []
    for case in cases:
        for key in ("image", "label"):
            try:
                stat = os.stat(case[key])
                signature.append((case[key], stat.st_size, stat.st_mtime_ns))
            except OSError:
                signature.append((case[key], None, None))
    return tuple(signature)


class SiteState:
    """Save and restore one site's local training state for one profile.

    The state after local round ``r`` goes to ``<profile>.round<r>.pt``; the two newest are kept, because a
    server that dies during round ``r + 1`` may still receive nothing for it while the site has saved it: the
    resumed job repeats round ``r + 1`` and needs the state after round ``r``. Besides the weights and the
    optimiser, the random state of the training crops and of the shuffling is saved, so a restarted site
    draws the same crops as if it had never stopped.

    Args:
        folder: where the state lives (site-owned: ``<cache_dir>/fl_state`` by default).
        profile_name: the state files are named after the profile.
    """

    def __init__(self, folder: Path, profile_name: str) -> None:
        self.folder = Path(folder)
        self.profile_name = profile_name

    def path(self, current_round: int) -> Path:
        """The state file after local round ``current_round``."""
        return self.folder / f"{self.profile_name}.round{current_round}.pt"

    def save(self, trainer: SegTrainer, current_round: int, site_keys: frozenset[str] = frozenset()) -> Path:
        """Write the trainer's state after local round ``current_round``; drop states older than the previous.

        Args:
            trainer: the site's trainer after its local training.
            current_round: the round.
            site_keys: the weights that are the site's own and never loaded from the global model (FedBN:
                the BatchNorm layers; SiloBN: their statistics), recorded so that the site's model can be
                written after the job (``fl/site/model.py``).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(current_round)
        torch_save_atomic(
            {
                "round": current_round,
                "site_keys": sorted(site_keys),
                "model": trainer.get_weights(),
                "optimizer": trainer.optimizer.state_dict(),
                "epochs_done": trainer.epochs_done,
                "random": _random_state(trainer),
            },
            path,
        )
        for old in self.folder.glob(f"{self.profile_name}.round*.pt"):
            if old not in (path, self.path(current_round - 1)):
                old.unlink(missing_ok=True)
        return path

    def latest_round(self) -> int:
        """The newest round with a saved state.

        Raises:
            FileNotFoundError: no state of this profile in the folder.
        """
        pattern = re.compile(rf"{re.escape(self.profile_name)}\.round(\d+)\.pt")
        rounds = [
            int(match.group(1))
            for path in self.folder.glob(f"{self.profile_name}.round*.pt")
            if (match := pattern.fullmatch(path.name))
        ]
        if not rounds:
            raise FileNotFoundError(
                f"{self.folder}: no local training state of profile {self.profile_name!r}; this site has not "
                "trained in a federated job of that profile (or its state was removed)"
            )
        return max(rounds)

    def _load(self, current_round: int) -> dict[str, Any]:
        path = self.path(current_round)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no local state of round {current_round}")
        return torch.load(path, map_location="cpu", weights_only=False)

    def site_keys(self, current_round: int) -> frozenset[str] | None:
        """The weights the site kept as its own in round ``current_round`` (``save``'s ``site_keys``); None for
        a state saved before they were recorded (then FedBN's: every BatchNorm tensor).

        Raises:
            FileNotFoundError: no state of that round.
        """
        keys = self._load(current_round).get("site_keys")
        return None if keys is None else frozenset(keys)

    def own_weights(
        self, current_round: int, model: torch.nn.Module
    ) -> tuple[dict[str, torch.Tensor], frozenset[str]]:
        """The site's weights after round ``current_round`` and the keys of those that were its own
        (``site_keys``; every BatchNorm tensor of ``model``, FedBN, for a state saved before they were
        recorded), from one read of the state file.

        Raises:
            FileNotFoundError: no state of that round.
            ValueError: the site kept nothing of its own (a FedAvg job): its model is the global model.
        """
        state = self._load(current_round)
        recorded = state.get("site_keys")
        keys = batch_norm_keys(model) if recorded is None else frozenset(recorded)
        if not keys:
            raise ValueError(
                f"{self.path(current_round)}: the site kept no weights of its own in that job (neither FedBN "
                "nor SiloBN); use the global model as it is"
            )
        return state["model"], keys

    def restore(self, trainer: SegTrainer, next_round: int) -> bool:
        """Load the state saved after round ``next_round - 1`` into a trainer that has not trained yet.

        Only a fresh trainer (a restarted site, or a resumed job) is restored: a trainer that has trained in
        this process already holds its own, newer state.

        Returns:
            Whether a state was restored.
        """
        path = self.path(next_round - 1)
        if next_round <= 0 or trainer.epochs_done > 0 or not path.is_file():
            return False
        try:
            state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # an unreadable state costs only its optimisation, never the round
            logger.warning("local state %s unreadable (%s); starting this round without it", path, err)
            return False
        trainer.set_weights(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.epochs_done = int(state.get("epochs_done", 0))
        _set_random_state(trainer, state.get("random"))
        logger.info("restored the local state of round %d from %s", next_round - 1, path)
        return True


def _randomizable(trainer: SegTrainer) -> list[Randomizable]:
    # MONAI's dictionary transforms draw from their own generator and from the array transform they wrap.
    found: list[Randomizable] = []
    for transform in trainer.train_loader.dataset.transform.flatten().transforms:
        for candidate in (transform, *vars(transform).values()):
            if isinstance(candidate, Randomizable) and all(candidate is not f for f in found):
                found.append(candidate)
    return found


def _random_state(trainer: SegTrainer) -> dict[str, Any]:
    return {
        "transforms": [t.R.get_state() for t in _randomizable(trainer)],
        "loader": trainer.train_loader.generator.get_state(),
        "torch": torch.get_rng_state(),
    }


def _set_random_state(trainer: SegTrainer, state: dict[str, Any] | None) -> None:
    if not state:
        return
    transforms = _randomizable(trainer)
    if len(transforms) == len(state["transforms"]):
        for transform, saved in zip(transforms, state["transforms"], strict=True):
            transform.R.set_state(saved)
    trainer.train_loader.generator.set_state(state["loader"])
    torch.set_rng_state(state["torch"])
