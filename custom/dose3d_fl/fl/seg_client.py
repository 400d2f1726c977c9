"""Client API script of the ``seg_fedavg`` job: one loop that answers train, validate and submit_model.

Runs at each site. The training itself is the plain MONAI trainer of ``dose3d_fl.seg``; the federation adds
receive/send around it. Data are found through the site's own configuration (``dose3d_fl.fl.site_config``).
"""

from __future__ import annotations

import argparse
import logging

import nvflare.client as flare
from nvflare.client.tracking import SummaryWriter

from dose3d_fl.fl.site_trainer import build_site_trainer

logger = logging.getLogger("dose3d.seg_client")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--profile", default="cpu-small")
    args = parser.parse_args()

    flare.init()
    site = flare.get_site_name()
    trainer = build_site_trainer(site, args.profile)
    writer = SummaryWriter()

    while flare.is_running():
        incoming = flare.receive()
        if flare.is_submit_model():
            # Cross-site evaluation asks for this site's own model: the weights after its last local training.
            flare.send(flare.FLModel(params=trainer.get_weights()))
            continue
        trainer.set_weights(incoming.params)
        metrics = trainer.validate()
        if flare.is_evaluate():
            flare.send(
                flare.FLModel(
                    metrics={"val_dice": float(metrics["val_dice"]), "val_cases": int(metrics["cases"])}
                )
            )
            continue
        # Train task: report the received global model's Dice (selects the best global model), then train.
        writer.add_scalar("val_dice_global", float(metrics["val_dice"]), incoming.current_round)
        # The profile's learning-rate schedule runs over the job's rounds (the share of rounds done).
        progress = (incoming.current_round or 0) / max(incoming.total_rounds or 1, 1)
        lr = trainer.set_progress(progress)
        stats = trainer.train_epochs(args.local_epochs)
        writer.add_scalar("train_loss", float(stats["loss"]), incoming.current_round)
        logger.info(
            "%s round %s: global val_dice %.4f, lr %.2e, local loss %.4f (%d steps, %.1f s)",
            site,
            incoming.current_round,
            metrics["val_dice"],
            lr,
            stats["loss"],
            stats["steps"],
            stats["seconds"],
        )
        flare.send(
            flare.FLModel(
                params=trainer.get_weights(),
                metrics={
                    "val_dice": float(metrics["val_dice"]),
                    "val_cases": int(metrics["cases"]),
                    "train_loss": float(stats["loss"]),
                },
                meta={"NUM_STEPS_CURRENT_ROUND": int(stats["steps"])},
            )
        )


if __name__ == "__main__":
    main()
