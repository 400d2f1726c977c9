"""The benchmark command of ``dose3d``: ``bench``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from dose3d_fl.cli.common import fail

if TYPE_CHECKING:
    from dose3d_fl.bench.runner import BenchConfig


def bench_config(args: argparse.Namespace) -> BenchConfig:
    """What ``dose3d bench`` runs: the default benchmark or ``--quick``, with the options applied.

    ``--peers`` adds the peer systems and scores every final model on the held-out patients (10 per scanner);
    with ``--quick`` it is the quick peer comparison (``PEERS_QUICK``: central, FedAvg and the peers only).

    Raises:
        ValueError: an unknown peer.
    """
    import dataclasses

    from dose3d_fl.bench.heldout_eval import HELDOUT_PATIENTS
    from dose3d_fl.bench.peers import parse_peers
    from dose3d_fl.bench.runner import PEERS_QUICK, QUICK, BenchConfig

    peers = parse_peers(args.peers)
    if peers:
        config = PEERS_QUICK if args.quick else BenchConfig(heldout_patients=HELDOUT_PATIENTS)
        config = dataclasses.replace(config, peers=peers)
    else:
        config = QUICK if args.quick else BenchConfig()
    if args.heldout_patients is not None:
        config = dataclasses.replace(config, heldout_patients=args.heldout_patients)
    if args.name:
        config = dataclasses.replace(config, name=args.name)
    if args.nvflare_polling:
        config = dataclasses.replace(config, overhead_baseline_polling=True)
    return config


def _cmd_bench(args: argparse.Namespace) -> int:
    from dose3d_fl.bench.runner import run_benchmark

    try:
        config = bench_config(args)
    except ValueError as err:
        return fail(str(err))
    work = args.work or Path("runs") / f"bench-{config.name}"
    results = run_benchmark(config, args.out, work)
    print((args.out / f"{config.name}.md").read_text())
    print(f"results: {args.out / f'{config.name}.json'} ({results['seconds']:.0f} s); runs and logs: {work}")
    if results.get("failed_runs"):
        return fail(f"{len(results['failed_runs'])} run(s) failed: {', '.join(results['failed_runs'])}")
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
        "every final model is then also scored on 10 held-out patients per scanner; with --quick: the quick "
        "peer comparison (central, FedAvg and the peers, 2 rounds)",
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
