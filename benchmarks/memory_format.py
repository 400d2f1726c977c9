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

import torch

from dose3d_fl.bench.runner import machine
from dose3d_fl.data.cases import load_site_cases
from dose3d_fl.seg.profiles import get_profile
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.synth.demo_sites import DEMO_ORGANS

RESULTS = Path(__file__).parent / "results" / "memory_format.json"
CHANNELS_LAST = torch.channels_last_3d


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("cache", nargs="?", type=Path, default=Path("runs/demo/data/cache/site-1"))
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per format (after one warm-up)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    organs = list(DEMO_ORGANS)
    site = load_site_cases([args.cache], organs=organs)[0]
    profile = get_profile(organs=organs)
    plain = SegTrainer(site.train, site.val, profile, num_threads=1, show_progress=False)
    fast = SegTrainer(site.train, site.val, profile, num_threads=1, show_progress=False, channels_last=True)
    load = os.getloadavg()
    plain.train_epochs(1)
    fast.train_epochs(1)
    seconds: dict[str, list[float]] = {"contiguous": [], "channels_last_3d": []}
    for _ in range(args.epochs):
        for name, trainer in (("contiguous", plain), ("channels_last_3d", fast)):
            start = time.perf_counter()
            trainer.train_epochs(1)
            seconds[name].append(round(time.perf_counter() - start, 3))
    # Same weights in both formats: logits and one step's gradients.
    a = copy.deepcopy(plain.model).eval()
    b = copy.deepcopy(plain.model).to(memory_format=CHANNELS_LAST).eval()
    x = torch.rand(1, 1, *profile.roi_size)
    with torch.no_grad():
        logits = float((a(x) - b(x.contiguous(memory_format=CHANNELS_LAST))).abs().max())
    a.train(), b.train()
    y = torch.randint(0, len(organs) + 1, (1, 1, *profile.roi_size)).float()
    plain.loss_fn(a(x), y).backward()
    plain.loss_fn(b(x.contiguous(memory_format=CHANNELS_LAST)), y).backward()
    gradient = max(
        float((p.grad - q.grad).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    largest = max(float(p.grad.abs().max()) for p in a.parameters())
    means = {name: statistics.fmean(values) for name, values in seconds.items()}
    result = {
        "command": " ".join(
            ["python benchmarks/memory_format.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "cache": str(args.cache),
        "training_cases": len(site.train),
        "threads": 1,
        "load_average_at_start": [round(v, 2) for v in load],
        "epoch_seconds": seconds,
        "mean_epoch_seconds": {k: round(v, 3) for k, v in means.items()},
        "channels_last_over_contiguous": round(means["channels_last_3d"] / means["contiguous"], 3),
        "max_abs_logit_difference_same_weights": logits,
        "max_abs_gradient_difference_one_step": gradient,
        "max_abs_gradient": largest,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
