"""The benchmark command of ``dose3d``: ``bench``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail, organ_list

if TYPE_CHECKING:
    from dose3d_fl.bench.config import BenchConfig


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """What ``dose3d bench`` runs: the default benchmark or ``--quick``, with the options applied.

    ``--peers`` is the peer comparison (``PEERS``: 3 training seeds, every final model also scored on the
    held-out patients, 10 per scanner); with ``--quick`` the quick peer comparison (``PEERS_QUICK``: the
    quick runs, the peers and one held-out patient per scanner, one seed). ``--seeds`` replaces the training
    seeds; ``--organs`` makes the task multi-organ (results ``<name>-<N>-organs``; the peers are skipped with
    the reason); without ``--peers`` or ``--quick`` it runs central, local-only, FedAvg and FedBN and scores
    them on the held-out patients (the overhead runs are the spleen task's).

    Raises:
        ValueError: an unknown peer, or seeds that are not distinct integers.
    """
    from dose3d_fl.bench.config import ORGANS_VARIANTS, PEERS, PEERS_QUICK, QUICK, BenchConfig
    from dose3d_fl.bench.peers import parse_peers

    peers = parse_peers(args.peers)
    if peers:
        config = dataclasses.replace(PEERS_QUICK if args.quick else PEERS, peers=peers)
    else:
        config = QUICK if args.quick else BenchConfig()
    if args.seeds is not None:
        config = dataclasses.replace(config, seeds=parse_seeds(args.seeds))
    if args.organs:
        organs = tuple(args.organs)
        config = dataclasses.replace(config, organs=organs, name=f"{config.name}-{len(organs)}-organs")
        if not peers and not args.quick:
            config = dataclasses.replace(
                config, variants=ORGANS_VARIANTS, overhead_sites=(), heldout_patients=PEERS.heldout_patients
            )
    if args.heldout_patients is not None:
        config = dataclasses.replace(config, heldout_patients=args.heldout_patients)
    if args.name:
        config = dataclasses.replace(config, name=args.name)
    if args.nvflare_polling:
        config = dataclasses.replace(config, overhead_baseline_polling=True)
    return config


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``.

    Raises:
        ValueError: not a comma-separated list of distinct integers.
    """
    try:
        seeds = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"--seeds {text!r}: give training seeds as integers separated by commas, e.g. 0,1,2"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: give at least one training seed, each once, e.g. 0,1,2")
    return seeds


def _cmd_bench(args: argparse.Namespace) -> int:
    from dose3d_fl.bench.runner import run_benchmark
    from dose3d_fl.bench.seeds import run_seeds

    try:
        config = bench_config(args)
    except ValueError as err:
        return fail(str(err))
    work = args.work or Path("runs") / f"bench-{config.name}"
    if len(config.seeds) > 1:
        results = run_seeds(config, args.out, work)
        failed = {f"seed {s}: {n}": r for s, runs in results["failed_runs"].items() for n, r in runs.items()}
    else:
        if config.seeds:
            config = dataclasses.replace(config, train_seed=config.seeds[0], seeds=())
        results = run_benchmark(config, args.out, work)
        failed = results.get("failed_runs") or {}
    print((args.out / f"{config.name}.md").read_text())
    print(f"results: {args.out / f'{config.name}.json'} ({results['seconds']:.0f} s); runs and logs: {work}")
    if failed:
        return fail(f"{len(failed)} run(s) failed: {', '.join(failed)}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``bench`` to the ``dose3d`` sub-commands."""
    bench = sub.add_parser(
        "bench",
        help="benchmark: central vs local-only vs FedAvg/FedProx, overhead, data pipeline, weight exchange",
    )
    bench.add_argument(
        "--quick", action="store_true", help="2 rounds x 1 epoch, 3-site overhead only (a few minutes)"
    )
    bench.add_argument("--name", default=None, help="results name (default: default, or quick)")
    bench.add_argument(
        "--nvflare-polling",
        action="store_true",
        help="also run the first overhead setting with NVFlare's default polling intervals (about 80 s)",
    )
    bench.add_argument(
        "--peers",
        default=None,
        metavar="nvflare,flower",
        help="also run the peers on the same sites: stock NVFlare 2.9 FedAvgRecipe (nvflare) and Flower's FedAvg "
        "(flower, needs .venv-flower: benchmarks/peers/flower/setup_venv.sh; skipped with a reason without it); "
        "the peer comparison: central, local-only, FedAvg, FedBN, int8, 3 training seeds, every final "
        "model also on 10 held-out patients per scanner (about 70 min); with --quick: the quick runs and the "
        "peers (2 rounds, one seed, one held-out patient per scanner)",
    )
    bench.add_argument(
        "--seeds",
        default=None,
        metavar="0,1,2",
        help="training seeds (same data; default: 0,1,2 with --peers, else 0); several: one comparison per seed "
        "and one combined result, held-out differences over seeds and patients",
    )
    bench.add_argument(
        "--organs",
        type=organ_list,
        default=None,
        help="the task's organs, TG-263 names, e.g. Spleen,Liver,Kidney_L,Kidney_R,Stomach,Pancreas,A_Aorta "
        "(default: the spleen); the same runs on the multi-organ task, Dice = mean over organs per case",
    )
    bench.add_argument(
        "--heldout-patients",
        type=int,
        default=None,
        help="held-out patients per scanner on which every final model is scored (0: none)",
    )
    bench.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="results folder (default benchmarks/results)",
    )
    bench.add_argument("--work", type=Path, default=None, help="runs and logs (default runs/bench-<name>)")
    bench.set_defaults(func=_cmd_bench)
