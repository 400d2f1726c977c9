"""The segmentation training command of ``dose3d``: ``train`` (local or pooled, no federation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dose3d_fl.cli.common import fail, organ_list


def _cmd_train(args: argparse.Namespace) -> int:
    if args.epochs < 0 or args.threads < 1:
        return fail("--epochs must be >= 0 and --threads >= 1")
    from dose3d_fl.seg.profiles import get_profile
    from dose3d_fl.seg.synthetic import SyntheticMix
    from dose3d_fl.seg.training_run import METRICS_NAME, MODEL_NAME, train_on_caches

    try:
        profile = get_profile(args.profile, args.organs, args.seed)
        metrics = train_on_caches(
            args.cache,
            args.out,
            profile,
            args.epochs,
            num_threads=args.threads,
            hu_baseline=args.hu_baseline,
            synthetic=(
                SyntheticMix(args.synthetic, args.synthetic_ratio, only=args.synthetic_only, seed=args.seed)
                if args.synthetic
                else None
            ),
            on_validation=lambda entry: print(
                f"epoch {entry['epoch']}: loss {entry['loss']:.4f}, val Dice {entry['val_dice']:.4f} "
                f"({entry['train_seconds']:.0f} s training)",
                flush=True,
            ),
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    for site, dice in metrics["site_val_dice"].items():
        print(f"{site}: val Dice {dice:.4f} ({metrics['val_cases'][site]} case(s))")
    if len(metrics["organs"]) > 1:
        for organ, values in metrics["organs"].items():
            print(
                f"{organ}: Dice {values['dice']:.4f}, HD95 {values['hd95']:.1f} mm, surface Dice "
                f"{values['surface_dice']:.4f} at {metrics['tolerance_mm']:g} mm ({values['cases']} case(s))"
            )
    if "hu_threshold_baseline" in metrics:
        base = metrics["hu_threshold_baseline"]
        print(
            f"best single HU interval [{base['hu_min']:.0f}, {base['hu_max']:.0f}) HU: "
            f"val Dice {base['val_dice']:.4f}"
        )
    print(
        f"val Dice {metrics['val_dice']:.4f} on {sum(metrics['val_cases'].values())} case(s) after "
        f"{metrics['epochs']} epoch(s), {metrics['seconds']:.0f} s -> {args.out / MODEL_NAME}, "
        f"{args.out / METRICS_NAME}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` to the ``dose3d`` sub-commands."""
    train = sub.add_parser(
        "train",
        help="train a segmentation model on one site cache (local) or several pooled (centralised)",
    )
    train.add_argument(
        "--cache", type=Path, nargs="+", required=True, help="site cache folder(s) written by `dose3d ingest`"
    )
    train.add_argument(
        "--organs",
        type=organ_list,
        default=None,
        help="the task's organs, TG-263 names, e.g. Spleen,Liver,Kidney_L (default: the profile's, Spleen)",
    )
    train.add_argument("--epochs", type=int, default=40, help="passes over the training cases (default 40)")
    train.add_argument(
        "--profile", default="cpu-small", help="segmentation profile: cpu-small (default), spleen"
    )
    train.add_argument(
        "--out", type=Path, default=Path("runs/train"), help="output folder (default runs/train)"
    )
    train.add_argument(
        "--seed", type=int, default=0, help="random seed (also draws a cache's split.json on first use)"
    )
    train.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: robust on shared cores)"
    )
    train.add_argument(
        "--hu-baseline", action="store_true", help="also report the best single HU interval's Dice"
    )
    train.add_argument(
        "--synthetic", type=Path, default=None, help="folder of synthetic pairs (dose3d gan sample) to add"
    )
    train.add_argument(
        "--synthetic-ratio",
        type=float,
        default=1.0,
        help="synthetic cases per real training case (default 1)",
    )
    train.add_argument(
        "--synthetic-only", action="store_true", help="train on the synthetic pairs alone (test on real)"
    )
    train.set_defaults(func=_cmd_train)
