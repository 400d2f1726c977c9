"""Client API script for the ResilientFedAvg tests: adds a site-specific step to the weights it receives.

Each site adds ``site number`` to every weight and appends what it received to ``--record`` (one JSON line per
task), so a test can tell whose updates each global model contains. Faults are asked for by argument: a
site that sleeps through a round, or one that reports an error instead of weights.
"""

from __future__ import annotations

import argparse
import json
import time

import nvflare.client as flare
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--slow", default="", help="SITE:ROUND:SECONDS, a site that sleeps through a round")
    parser.add_argument("--error", default="", help="SITE:ROUND[,SITE:ROUND...], sites that report an error")
    args = parser.parse_args()
    slow_site, slow_round, slow_seconds = args.slow.split(":") if args.slow else ("", "-1", "0")
    errors = {tuple(item.split(":")) for item in args.error.split(",") if item}

    flare.init()
    site = flare.get_site_name()
    step = float(site.rsplit("-", 1)[-1])
    while flare.is_running():
        incoming = flare.receive()
        weights = {name: torch.as_tensor(value) for name, value in incoming.params.items()}
        with open(args.record, "a") as record:
            record.write(
                json.dumps(
                    {
                        "site": site,
                        "round": incoming.current_round,
                        "total_rounds": incoming.total_rounds,
                        "received": float(next(iter(weights.values())).flatten()[0]),
                    }
                )
                + "\n"
            )
        if site == slow_site and incoming.current_round == int(slow_round):
            time.sleep(float(slow_seconds))
        if (site, str(incoming.current_round)) in errors:
            flare.send(flare.FLModel(params={}, meta={"error": f"{site}: no usable training case (probe)"}))
            continue
        flare.send(
            flare.FLModel(
                params={name: value + step for name, value in weights.items()},
                metrics={"val_dice": 0.5, "val_cases": 1, "train_loss": 1.0},
                meta={"NUM_STEPS_CURRENT_ROUND": 1},
            )
        )


if __name__ == "__main__":
    main()
