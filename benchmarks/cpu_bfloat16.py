"""Training speed of the CPU UNet under bfloat16 autocast on the CPU (``SegTrainer(cpu_bfloat16=True)``), against
float32: a lever for the CPU hosts whose cores have bfloat16 units (AVX512_BF16, AMX).

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the convolutions run in bfloat16; the weights, Adam, the
loss and BatchNorm's running statistics stay in float32. The same trainer on the same site cache,
one in each precision, epochs interleaved (A, B, A, B, ...) so that load on the machine hits both alike; one
torch thread each, as a simulated site of ``make demo`` has. Also records how far bfloat16 moves the numbers:
the logits of the same weights and one step's gradients. What it does to the trained model's Dice is not
measured here.

Usage: ``PYTHONPATH=custom .venv/bin/python benchmarks/cpu_bfloat16.py [CACHE] [--epochs 4]`` (default
``runs/demo/data/cache/site-1`` after ``make demo``); writes ``benchmarks/results/cpu_bfloat16.json``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from memory_format import (
    interleaved_epoch_seconds,
    speed_arguments,
    speed_record,
    trainer_pair,
    write_result,
)

RESULTS = Path(__file__).parent / "results" / "cpu_bfloat16.json"


def main(argv: list[str] | None = None) -> int:
    args = speed_arguments(__doc__, RESULTS, "precision", argv)
    site, profile, plain, half = trainer_pair(args.cache, cpu_bfloat16=True)
    load = os.getloadavg()
    seconds = interleaved_epoch_seconds({"float32": plain, "bfloat16_autocast": half}, args.epochs)
    # Same weights in both precisions, each under its trainer's own training autocast, the logits cast to
    # float32 for the loss as SegTrainer does: logits and one step's gradients.
    model = copy.deepcopy(plain.model).eval()
    x = torch.rand(1, 1, *profile.roi_size)
    with torch.no_grad():
        with plain._autocast(training=True):
            exact = model(x).float()
        with half._autocast(training=True):
            rounded = model(x).float()
    logits = float((exact - rounded).abs().max())
    y = torch.randint(0, len(profile.organs) + 1, (1, 1, *profile.roi_size)).float()
    model.train()
    gradients = []
    for trainer in (plain, half):
        model.zero_grad()
        with trainer._autocast(training=True):
            plain.loss_fn(model(x).float(), y).backward()
        gradients.append([p.grad.detach().clone() for p in model.parameters()])
    gradient = max(float((p - q).abs().max()) for p, q in zip(*gradients, strict=True))
    largest = max(float(p.abs().max()) for p in gradients[0])
    result = speed_record("cpu_bfloat16.py", argv, args.cache, len(site.train), load, seconds)
    means = result["mean_epoch_seconds"]
    result |= {
        "bfloat16_over_float32": round(means["bfloat16_autocast"] / means["float32"], 3),
        "max_abs_logit_difference_same_weights": logits,
        "max_abs_logit": float(exact.abs().max()),
        "max_abs_gradient_difference_one_step": gradient,
        "max_abs_gradient": largest,
    }
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
