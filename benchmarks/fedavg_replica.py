"""FedAvg's arithmetic in one process, without NVFlare: quick ablations of the sites' local optimiser.

Each round every site in turn loads the global weights, sets the round's learning rate (the profile's
cosine schedule over rounds, times ``--lr-scale``), forgets its Adam moments unless
``--keep-optimizer-state``, adds FedProx's proximal term when ``--fedprox-mu`` is set, and trains
``--local-epochs``; the global model becomes the step-weighted mean of the sites' weights (BatchNorm counters
rounded), as NVFlare's FedAvg computes it, or with ``--server-momentum BETA`` the server keeps a momentum of
the weights' round updates (FedAvgM, Hsu et al. 2019: ``m = BETA m + (mean - global)``, ``global +=
--server-lr x m``; running statistics are averaged as in FedAvg). ``--fedbn`` keeps every BatchNorm layer
(affine weights and running statistics) at its site and averages the rest (FedBN, Li et al. 2021). Every
fifth of the rounds the union Dice on every site's validation cases is measured twice: with the global model
(under FedBN, each site's own normalisation in it) as ``union_val_dice``, and with each site's own model as
its last local training left it, before averaging, as ``personal_union_val_dice`` (personalised FL at no extra
epochs). There is no transfer, filter, update check or simulator here:
the job itself is measured by ``dose3d bench``. ``--central`` trains the pooled model instead
(``rounds x local_epochs`` epochs, the profile's learning rate times ``--lr-scale``).

The sites share one process and its random stream, so a replica's crops differ from the simulator's; it is
deterministic for its arguments. This is how ``SegJobConfig.keep_optimizer_state`` and ``local_lr_scale``
were chosen (docs/performance.md).

usage: python benchmarks/fedavg_replica.py NAME CACHE [CACHE ...] [--rounds 25] [--local-epochs 4]
       [--lr-scale 1] [--keep-optimizer-state] [--fedprox-mu 0] [--server-momentum 0] [--server-lr 1]
       [--fedbn] [--save] [--seed 0] [--central] [--results benchmarks/results/replica]
writes RESULTS/NAME.json; with --save also each site's final models (global, personal) under
runs/replica/NAME/ (in the working directory) for ``benchmarks/heldout.py --replica NAME``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.app_constant import AlgorithmConstants

from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.site_models import save_site_models
from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.fl.server.update_checks import is_running_statistic
from dose3d_fl.fl.site.fedbn import batch_norm_keys, with_site_norm
from dose3d_fl.fl.site.seg_client import fedprox_term
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.training_run import train_on_caches

RESULTS = Path(__file__).parent / "results" / "replica"
SAVED = Path("runs") / "replica"


def federated(args: argparse.Namespace) -> list[dict[str, float]]:
    profile = get_profile(args.profile).replace(seed=args.seed)
    local = profile.replace(lr=profile.lr * args.lr_scale)
    sites = load_site_cases(args.caches, seed=profile.seed)
    trainers = [SegTrainer(s.train, s.val, local, num_threads=1, show_progress=False) for s in sites]
    evaluator = Evaluator(sites, profile, num_threads=1)
    global_weights = trainers[0].get_weights()
    site_keys = batch_norm_keys(trainers[0].model) if args.fedbn else frozenset()
    momentum: dict[str, torch.Tensor] = {}
    history, start = [], time.time()
    for current_round in range(args.rounds):
        results = []
        for trainer in trainers:
            trainer.set_weights(with_site_norm(global_weights, trainer.get_weights(), site_keys))
            if not args.keep_optimizer_state:
                trainer.reset_optimizer()
            trainer.set_progress(current_round / args.rounds)
            # The client script's proximal term, as the server's FedAvg asks for it (no term without mu).
            regularizer = fedprox_term(
                FLModel(params={}, meta={AlgorithmConstants.FEDPROX_MU: args.fedprox_mu}), trainer.model
            )
            stats = trainer.train_epochs(args.local_epochs, regularizer=regularizer)
            results.append((trainer.get_weights(), stats["steps"]))
        total = sum(steps for _, steps in results)
        mean = {k: sum(w[k].double() * n for w, n in results) / total for k in global_weights}
        if args.server_momentum or args.server_lr != 1.0:
            for k, v in global_weights.items():
                if v.is_floating_point() and not is_running_statistic(k):
                    momentum[k] = args.server_momentum * momentum.get(k, 0.0) + (mean[k] - v.double())
                    mean[k] = v.double() + args.server_lr * momentum[k]
        global_weights = {
            k: mean[k].to(v.dtype) if v.is_floating_point() else mean[k].round().to(v.dtype)
            for k, v in global_weights.items()
        }
        if (current_round + 1) % max(args.rounds // 5, 1) == 0 or current_round == args.rounds - 1:
            # Each site's model with the new global weights (and, under FedBN, its own normalisation) ...
            merged = {
                site.name: with_site_norm(global_weights, local_weights, site_keys)
                for site, (local_weights, _) in zip(sites, results, strict=True)
            }
            # ... and each site's model as its last local training left it, before averaging.
            personal = {
                site.name: local_weights for site, (local_weights, _) in zip(sites, results, strict=True)
            }
            entry = {
                "round": current_round + 1,
                "union_val_dice": round(evaluator.evaluate_site_weights(merged)["union_val_dice"], 4),
                "personal_union_val_dice": round(
                    evaluator.evaluate_site_weights(personal)["union_val_dice"], 4
                ),
                "seconds": round(time.time() - start, 1),
            }
            history.append(entry)
            print(args.name, entry, flush=True)
    if args.save:
        # The final models for benchmarks/heldout.py --replica: each site's, as scored above.
        for label, models in (("global", merged), ("personal", personal)):
            save_site_models(models, SAVED / args.name / label)
        print(args.name, "saved the final models under", SAVED / args.name, flush=True)
    return history


def central(args: argparse.Namespace) -> list[dict[str, float]]:
    profile = get_profile(args.profile).replace(seed=args.seed)
    profile = profile.replace(lr=profile.lr * args.lr_scale)
    out = SAVED / args.name
    metrics = train_on_caches(
        args.caches, out, profile, args.rounds * args.local_epochs, num_threads=1, show_progress=False
    )
    return [{"epoch": h["epoch"], "union_val_dice": h["val_dice"]} for h in metrics["history"]] + [
        {"final": True, "union_val_dice": round(metrics["val_dice"], 4)}
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name")
    parser.add_argument("caches", nargs="+", type=Path)
    parser.add_argument("--profile", default="cpu-small")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--local-epochs", type=int, default=4)
    parser.add_argument("--lr-scale", type=float, default=1.0)
    parser.add_argument("--keep-optimizer-state", action="store_true")
    parser.add_argument("--fedprox-mu", type=float, default=0.0)
    parser.add_argument("--server-momentum", type=float, default=0.0)
    parser.add_argument("--server-lr", type=float, default=1.0)
    parser.add_argument("--fedbn", action="store_true")
    parser.add_argument("--save", action="store_true", help="keep the final models under runs/replica/NAME")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"results folder (default {RESULTS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--central", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    history = central(args) if args.central else federated(args)
    args.results.mkdir(parents=True, exist_ok=True)
    config = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("caches", "results")
    }
    (args.results / f"{args.name}.json").write_text(
        json.dumps({"args": config, "history": history}, indent=2) + "\n"
    )


if __name__ == "__main__":
    main()
