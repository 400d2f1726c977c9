"""Training speed of the CPU UNet in torch's two memory formats: contiguous and ``channels_last_3d``
(``SegTrainer(channels_last=True)``), in one process.

The same trainer on the same site cache, one in each format, epochs
interleaved (A, B, A, B, ...) so that load on the machine hits both alike; one torch thread each, as a simulated
site of ``make demo`` has. Also checks that the format changes the numbers only by floating-point rounding: the
logits of the same weights, and one step's gradients.

Usage: ``PYTHONPATH=custom .venv/bin/python benchmarks/memory_format.py [CACHE] [--epochs 4]`` (default
``runs/demo/data/cache/site-1`` after ``make demo``); writes ``benchmarks/results/memory_format.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from dose3d_fl.bench.runner import machine
from dose3d_fl.data.cases import SiteCases, load_site_cases
from dose3d_fl.seg.profiles import SegProfile, get_profile
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.synth.demo_sites import DEMO_ORGANS

RESULTS = Path(__file__).parent / "results" / "memory_format.json"
CHANNELS_LAST = torch.channels_last_3d


def speed_arguments(doc: str, results: Path, what: str, argv: list[str] | None) -> argparse.Namespace:
    """The command line of a trainer-speed script: a site cache, the timed epochs per ``what``, ``--out``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", nargs="?", type=Path, default=Path("runs/demo/data/cache/site-1"))
    parser.add_argument("--epochs", type=int, default=4, help=f"timed epochs per {what} (after one warm-up)")
    parser.add_argument("--out", type=Path, default=results)
    return parser.parse_args(argv)


def trainer_pair(cache: Path, **option: bool) -> tuple[SiteCases, SegProfile, SegTrainer, SegTrainer]:
    """The demo's organs on one site cache: a default trainer and one with ``option`` (a ``SegTrainer``
    switch), one torch thread each."""
    organs = list(DEMO_ORGANS)
    site = load_site_cases([cache], organs=organs)[0]
    profile = get_profile(organs=organs)
    plain = SegTrainer(site.train, site.val, profile, num_threads=1, show_progress=False)
    other = SegTrainer(site.train, site.val, profile, num_threads=1, show_progress=False, **option)
    return site, profile, plain, other


def interleaved_epoch_seconds(trainers: dict[str, SegTrainer], epochs: int) -> dict[str, list[float]]:
    """Each trainer's epoch times: one warm-up epoch each, then ``epochs`` rounds of one epoch per trainer in
    turn (A, B, A, B, ...), so that load on the machine hits them alike."""
    for trainer in trainers.values():
        trainer.train_epochs(1)
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(epochs):
        for name, trainer in trainers.items():
            start = time.perf_counter()
            trainer.train_epochs(1)
            seconds[name].append(round(time.perf_counter() - start, 3))
    return seconds


def speed_record(
    script: str,
    argv: list[str] | None,
    cache: Path,
    training_cases: int,
    load: tuple[float, float, float],
    seconds: dict[str, list[float]],
) -> dict[str, Any]:
    """The fields every trainer-speed result shares: command, machine, cache, the epoch times and their means."""
    return {
        "command": " ".join([f"python benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "cache": str(cache),
        "training_cases": training_cases,
        "threads": 1,
        "load_average_at_start": [round(v, 2) for v in load],
        "epoch_seconds": seconds,
        "mean_epoch_seconds": {name: round(statistics.fmean(v), 3) for name, v in seconds.items()},
    }


def write_result(result: dict[str, Any], out: Path) -> None:
    """Write ``result`` as JSON to ``out`` and print it without the machine record."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


def main(argv: list[str] | None = None) -> int:
    args = speed_arguments(__doc__, RESULTS, "format", argv)
    site, profile, plain, fast = trainer_pair(args.cache, channels_last=True)
    load = os.getloadavg()
    seconds = interleaved_epoch_seconds({"contiguous": plain, "channels_last_3d": fast}, args.epochs)
    # Same weights in both formats: logits and one step's gradients.
    a = copy.deepcopy(plain.model).eval()
    b = copy.deepcopy(plain.model).to(memory_format=CHANNELS_LAST).eval()
    x = torch.rand(1, 1, *profile.roi_size)
    with torch.no_grad():
        logits = float((a(x) - b(x.contiguous(memory_format=CHANNELS_LAST))).abs().max())
    a.train(), b.train()
    y = torch.randint(0, len(profile.organs) + 1, (1, 1, *profile.roi_size)).float()
    plain.loss_fn(a(x), y).backward()
    plain.loss_fn(b(x.contiguous(memory_format=CHANNELS_LAST)), y).backward()
    gradient = max(
        float((p.grad - q.grad).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    largest = max(float(p.grad.abs().max()) for p in a.parameters())
    result = speed_record("memory_format.py", argv, args.cache, len(site.train), load, seconds)
    means = result["mean_epoch_seconds"]
    result |= {
        "channels_last_over_contiguous": round(means["channels_last_3d"] / means["contiguous"], 3),
        "max_abs_logit_difference_same_weights": logits,
        "max_abs_gradient_difference_one_step": gradient,
        "max_abs_gradient": largest,
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
