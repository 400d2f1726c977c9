"""Client API script of the ``seg_fedavg`` job: one loop that answers train, validate and submit_model.

Runs at each site. The training itself is the plain MONAI trainer of ``dose3d_fl.seg``; the federation adds
receive/send around it. Data are found through the site's own configuration (``dose3d_fl.fl.site.config``).

A round that fails at the site (its cache vanished, no usable training case left, ...) is answered with an
error instead of weights: the server logs it and the round goes on with the other sites; this site is asked
again next round. The site's local state is saved after every round (``dose3d_fl.fl.site.state``), so a
restarted site continues where it stopped, and a cache that changes under a running job is reloaded.

Each round's local training starts Adam afresh from the received global model, at ``--lr-scale`` times the
profile's learning rate (the job sets 2); ``--keep-optimizer-state`` carries the moments over rounds instead.
Both were chosen with ``benchmarks/fedavg_replica.py`` and confirmed by ``dose3d bench`` (docs/performance.md).
With ``--fedbn`` the site keeps its own BatchNorm layers and loads only the rest of the global model
(``dose3d_fl.fl.site.fedbn``); it validates every model, in the rounds and in cross-site evaluation, with
its own BatchNorm layers too. ``--silobn`` keeps only the BatchNorm statistics (SiloBN) the same way.

``--organs`` names the job's organs (TG-263): the site reads its cache in their order, an organ a case does
not delineate unlabelled, and reports Dice, HD95, surface Dice and the cases scored per organ
(``val_dice_Spleen``, ..., the names the job declares) besides ``val_dice``, the mean over organs.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math

import nvflare.client as flare
import torch
from nvflare.app_common.app_constant import AlgorithmConstants
from nvflare.app_opt.pt.fedproxloss import PTFedProxLoss
from nvflare.client.tracking import SummaryWriter

from dose3d_fl.fl.policy.metrics import SEG_ORGAN_METRICS
from dose3d_fl.fl.site.config import SiteConfig, load_site_config
from dose3d_fl.fl.site.fedbn import batch_norm_keys, with_site_norm
from dose3d_fl.fl.site.polling import RESULT_POLL_INTERVAL, shorten_client_polls
from dose3d_fl.fl.site.state import SiteState, cache_signature
from dose3d_fl.fl.site.trainers import build_site_trainer, site_profile
from dose3d_fl.seg.profiles import SegProfile
from dose3d_fl.seg.trainer import Regularizer, SegTrainer

logger = logging.getLogger("dose3d.seg_client")


class SiteRunner:
    """The site's trainer, rebuilt when its cache changed, and its saved local state.

    Args:
        site: the NVFlare client name.
        config: the site's own configuration, read once at the start.
        profile: the job's segmentation profile (``site_profile``: its learning rate already scaled).
        local_epochs: local epochs per round.
        keep_optimizer_state: carry the local optimiser's moments from round to round (and over a restart,
            through the site state); by default each round's local training starts the optimiser afresh.
        fedbn: keep the site's own BatchNorm layers instead of loading the global ones (FedBN).
        silobn: keep only the site's own BatchNorm statistics, and load the layers' learnt scale and shift
            from the global model (SiloBN).
    """

    def __init__(
        self,
        site: str,
        config: SiteConfig,
        profile: SegProfile,
        local_epochs: int,
        keep_optimizer_state: bool = False,
        fedbn: bool = False,
        silobn: bool = False,
    ) -> None:
        self.site, self.config, self.profile, self.local_epochs = site, config, profile, local_epochs
        self.keep_optimizer_state = keep_optimizer_state
        self.state = SiteState(config.state_dir, profile.name)
        self.trainer = self._build()
        if fedbn and silobn:
            raise ValueError("fedbn and silobn exclude each other: choose the layers or their statistics")
        self.site_keys = (
            batch_norm_keys(self.trainer.model, statistics_only=silobn) if fedbn or silobn else frozenset()
        )

    def _build(self) -> SegTrainer:
        trainer = build_site_trainer(self.config, self.profile, self.site)
        # All the split's cases, before the trainer leaves out bad ones: a case that comes back is noticed.
        self._cases = [*trainer.train_cases, *trainer.val_cases]
        self._signature = cache_signature(self._cases)
        return trainer

    def current_trainer(self) -> SegTrainer:
        """The trainer, rebuilt (cases re-screened) if the cache's files changed since it was built."""
        if cache_signature(self._cases) != self._signature:
            logger.warning("%s: the site cache changed during the job; reloading its cases", self.site)
            self.trainer = self._build()
        return self.trainer

    def load_global(self, trainer: SegTrainer, params: dict[str, torch.Tensor]) -> None:
        """Load the received global weights into ``trainer``; under FedBN its own BatchNorm layers stay."""
        if self.site_keys:
            params = with_site_norm(params, trainer.get_weights(), self.site_keys)
        trainer.set_weights(params)

    def evaluate(self, params: dict[str, torch.Tensor]) -> dict[str, float | int]:
        """Cross-site evaluation of a model on this site's validation cases: Dice, HD95 and surface Dice.

        Under FedBN the site scores every model with its own BatchNorm layers, as it would use it (``dose3d fl
        site-model``): the global model's averaged normalisation fits none of the scanners.
        """
        trainer = self.current_trainer()
        self.load_global(trainer, params)
        metrics = trainer.validate()
        return {
            "val_dice": float(metrics["val_dice"]),
            "val_cases": int(metrics["cases"]),
            **organ_metrics(metrics),
        }

    def train_round(self, incoming: flare.FLModel, writer: SummaryWriter) -> flare.FLModel:
        """Validate the received global model, train locally and return the local model with metrics.

        With FedProx (the server sends ``fedprox_mu`` in the model's meta) local training adds NVFlare's
        proximal term towards the received global model.
        """
        trainer = self.current_trainer()
        # A restarted site gets its own last weights back first: under FedBN its BatchNorm layers stay.
        self.state.restore(trainer, incoming.current_round or 0)
        self.load_global(trainer, incoming.params)
        # Dice per organ every round; HD95 and surface Dice (as long again) in cross-site evaluation only.
        metrics = trainer.validate(distances=False)
        # Report the received global model's Dice (selects the best global model), then train.
        writer.add_scalar("val_dice_global", float(metrics["val_dice"]), incoming.current_round)
        # The profile's learning-rate schedule runs over the job's rounds (the share of rounds done); a
        # resumed job keeps the round numbers and total of the interrupted one, hence the same schedule.
        progress = (incoming.current_round or 0) / max(incoming.total_rounds or 1, 1)
        lr = trainer.set_progress(progress)
        if not self.keep_optimizer_state:
            # Adam's moments from this site's last round point from its own model, not the global one: kept,
            # they pulled every round towards the site's data (fedavg_replica: union Dice 0.908 -> 0.939).
            trainer.reset_optimizer()
        stats = trainer.train_epochs(self.local_epochs, regularizer=fedprox_term(incoming, trainer.model))
        self.state.save(trainer, incoming.current_round or 0, self.site_keys)
        writer.add_scalar("train_loss", float(stats["loss"]), incoming.current_round)
        logger.info(
            "%s round %s: global val_dice %.4f, lr %.2e, local loss %.4f (%d steps, %.1f s)",
            self.site,
            incoming.current_round,
            metrics["val_dice"],
            lr,
            stats["loss"],
            stats["steps"],
            stats["seconds"],
        )
        return flare.FLModel(
            params=trainer.get_weights(),
            metrics={
                "val_dice": float(metrics["val_dice"]),
                "val_cases": int(metrics["cases"]),
                "train_loss": float(stats["loss"]),
                # The site's compute this round, for the server's orchestration-overhead figures (benchmarks).
                "val_seconds": round(float(metrics["seconds"]), 3),
                "train_seconds": round(float(stats["seconds"]), 3),
                "cache_seconds": round(float(stats["cache_seconds"]), 3),
                "data_seconds": round(float(stats["data_seconds"]), 3),
                **organ_metrics(metrics),
            },
            meta={"NUM_STEPS_CURRENT_ROUND": int(stats["steps"])},
        )


def organ_metrics(validation: dict) -> dict[str, float | int]:
    """Per organ of the task: ``val_dice_<organ>``, ``val_hd95_<organ>`` (mm), ``val_surface_dice_<organ>``
    and ``val_cases_<organ>`` (cases scored), from ``SegTrainer.validate()``. A value that is not a number
    (no case scores the organ, or the distances were not computed this round) is left out, not sent as NaN."""
    out: dict[str, float | int] = {}
    for organ, values in validation["organs"].items():
        dice, hd95, surface, cases = (f"{name}_{organ}" for name in SEG_ORGAN_METRICS)
        for name, value in (
            (dice, values["dice"]),
            (hd95, values["hd95"]),
            (surface, values["surface_dice"]),
        ):
            if value is not None and math.isfinite(float(value)):
                out[name] = float(value)
        out[cases] = int(values["cases"])
    return out


def fedprox_term(incoming: flare.FLModel, model: torch.nn.Module) -> Regularizer | None:
    """FedProx's proximal term towards the received global model, when the server asks for FedProx.

    ``model`` must hold the received global weights when this is called: a frozen copy becomes the reference.
    """
    mu = (incoming.meta or {}).get(AlgorithmConstants.FEDPROX_MU)
    if not mu:
        return None
    reference = copy.deepcopy(model).requires_grad_(False)
    proximal = PTFedProxLoss(mu=float(mu))
    return lambda local: proximal(local, reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--profile", default="cpu-small")
    parser.add_argument(
        "--result-poll",
        type=float,
        default=RESULT_POLL_INTERVAL,
        help="seconds between the in-process Client API's checks for a task or a result (NVFlare: 0.5)",
    )
    parser.add_argument(
        "--keep-optimizer-state",
        action="store_true",
        help="carry the local optimiser's moments over rounds (default: fresh each round)",
    )
    parser.add_argument(
        "--lr-scale", type=float, default=1.0, help="factor on the profile's learning rate (default 1)"
    )
    parser.add_argument("--fedbn", action="store_true", help="keep this site's own BatchNorm layers (FedBN)")
    parser.add_argument(
        "--silobn", action="store_true", help="keep this site's own BatchNorm statistics (SiloBN)"
    )
    parser.add_argument(
        "--organs",
        default="",
        help="the job's organs, comma-separated TG-263 names (default: the profile's, the spleen alone)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="the job's training seed (default: the profile's)"
    )
    args = parser.parse_args()

    shorten_client_polls(flare.init().api, args.result_poll)
    site = flare.get_site_name()
    config = load_site_config(site)
    config.pin_cpu_cores()
    runner = SiteRunner(
        site,
        config,
        site_profile(args.profile, args.lr_scale, [o for o in args.organs.split(",") if o], args.seed),
        args.local_epochs,
        args.keep_optimizer_state,
        args.fedbn,
        args.silobn,
    )
    writer = SummaryWriter()

    while flare.is_running():
        incoming = flare.receive()
        if flare.is_submit_model():
            # Cross-site evaluation asks for this site's own model: the weights after its last local training.
            flare.send(flare.FLModel(params=runner.trainer.get_weights()))
            continue
        if flare.is_evaluate():
            flare.send(flare.FLModel(metrics=runner.evaluate(incoming.params)))
            continue
        try:
            flare.send(runner.train_round(incoming, writer))
        except (OSError, ValueError, RuntimeError) as err:
            # One line for the site's log and the server's; the next round asks this site again.
            message = f"{site} round {incoming.current_round}: {type(err).__name__}: {err}"
            logger.error("%s; sending no weights for this round", message)
            flare.send(flare.FLModel(params={}, meta={"error": message}))


if __name__ == "__main__":
    main()
