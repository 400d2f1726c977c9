"""Client API script of the ``gan_fedavg`` job: one loop that answers train, validate and submit_model.

Runs at each site. The training is the plain label-conditioned GAN trainer of ``dose3d_fl.gan``; the
federation adds receive/send around it. The site's crops, label maps and synthetic samples stay in this
process: only weights and the metrics below are sent. What a site sends fits a weights-only guard: parameters with exactly the names
(and shapes) the server sent, plain float metrics, and ``NUM_STEPS_CURRENT_ROUND`` as the only meta. In
``generator-only`` aggregation the server sends the generator alone, so the discriminator never leaves the site.
"""

from __future__ import annotations

import argparse
import logging

import nvflare.client as flare
from nvflare.client.tracking import SummaryWriter

from dose3d_fl.fl.site.config import load_site_config
from dose3d_fl.fl.site.polling import shorten_client_polls
from dose3d_fl.fl.site.trainers import build_site_gan_trainer
from dose3d_fl.gan.network import DISCRIMINATOR_PREFIX
from dose3d_fl.gan.profiles import get_gan_profile

logger = logging.getLogger("dose3d.gan_client")


def round_metrics(quality: dict[str, float]) -> dict[str, float]:
    """The quality metrics as ``gan_*`` round metrics (plain floats)."""
    return {f"gan_{name}": float(value) for name, value in quality.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--profile", default="cpu-small")
    parser.add_argument("--aggregation", choices=("both", "generator-only"), default="generator-only")
    args = parser.parse_args()
    generator_only = args.aggregation == "generator-only"

    shorten_client_polls(flare.init().api)
    site = flare.get_site_name()
    config = load_site_config(site)
    config.pin_cpu_cores()
    trainer = build_site_gan_trainer(config, get_gan_profile(args.profile), site)
    writer = SummaryWriter()

    while flare.is_running():
        incoming = flare.receive()
        if flare.is_submit_model():
            # Cross-site evaluation asks for this site's own model: what it would send after training.
            flare.send(flare.FLModel(params=trainer.get_weights(generator_only=generator_only)))
            continue
        if generator_only and any(name.startswith(DISCRIMINATOR_PREFIX) for name in incoming.params):
            raise ValueError(
                "generator-only aggregation, but the server sent discriminator tensors: the job's server model "
                "must be dose3d_fl.gan.network.SeededGenerator"
            )
        if flare.is_evaluate():
            quality = trainer.evaluate_weights(incoming.params)
            flare.send(flare.FLModel(metrics=round_metrics(quality)))
            continue
        # Train task: measure the received global model (selects the best global model), then train.
        trainer.set_weights(incoming.params)
        quality = trainer.evaluate()
        stats = trainer.train_epochs(args.local_epochs)
        for name, value in {**quality, "loss_g": stats["loss_g"], "loss_d": stats["loss_d"]}.items():
            writer.add_scalar(f"gan_{name}", float(value), incoming.current_round)
        logger.info(
            "%s round %s: global MMD %.2f, MS-SSIM %.3f, diversity %.3f, tissue HU error %.1f, best NCC %.3f; "
            "local L1 %.4f (%d steps, %.1f s)",
            site,
            incoming.current_round,
            quality["mmd"],
            quality["msssim"],
            quality["diversity"],
            quality["tissue_hu_error"],
            quality["best_ncc"],
            stats["loss_l1"],
            stats["steps"],
            stats["seconds"],
        )
        sent = trainer.get_weights()
        flare.send(
            flare.FLModel(
                params={name: sent[name] for name in incoming.params},
                metrics={
                    **round_metrics(quality),
                    "gan_loss_g": float(stats["loss_g"]),
                    "gan_loss_d": float(stats["loss_d"]),
                    "gan_loss_l1": float(stats["loss_l1"]),
                    "train_cases": float(len(trainer.volumes)),
                },
                meta={"NUM_STEPS_CURRENT_ROUND": int(stats["steps"])},
            )
        )


if __name__ == "__main__":
    main()
