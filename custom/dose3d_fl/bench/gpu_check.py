"""GPU path check: training speed and memory of a profile with AMP, and one simulated federated round.

``benchmarks/gpu_check.sh`` runs it on a CUDA machine; CI never needs a GPU. It synthesises two small sites,
times ``steps`` optimiser steps of the profile (``spleen`` by default: the MONAI spleen bundle's recipe, AMP
on CUDA) after ``warmup`` steps, records the GPU's peak allocated memory, then runs one FedAvg round of the
same profile in the NVFlare simulator. Results: one JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def train_speed(
    caches: list[Path], profile_name: str, device: str, steps: int, warmup: int
) -> dict[str, Any]:
    """Optimiser steps per second of ``profile_name`` on ``device`` (after ``warmup`` steps), peak memory."""
    import torch

    from dose3d_fl.seg.profiles import get_profile
    from dose3d_fl.seg.trainer import IMAGE, LABEL, SegTrainer
    from dose3d_fl.seg.training_run import load_site_cases

    profile = get_profile(profile_name)
    sites = load_site_cases(caches, seed=profile.seed)
    trainer = SegTrainer(
        [c for s in sites for c in s.train], [c for s in sites for c in s.val], profile, device=device
    )
    loader = trainer.train_loader
    batches = []
    while len(batches) < steps + warmup:
        batches.extend(loader)
    trainer.model.train()
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for batch in batches[:warmup]:
        trainer.train_step(batch[IMAGE], batch[LABEL])
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in batches[warmup : warmup + steps]:
        trainer.train_step(batch[IMAGE], batch[LABEL])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    validation = trainer.validate()
    return {
        "profile": profile.name,
        "device": str(trainer.device),
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "amp": trainer.use_amp,
        "crops_per_step": profile.batch_size * profile.num_samples,
        "roi_size": list(profile.roi_size),
        "steps": steps,
        "steps_per_second": round(steps / seconds, 3),
        "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "validation_seconds": round(validation["seconds"], 2),
        "val_cases": validation["cases"],
    }


def one_fl_round(workspace: Path, profile_name: str) -> dict[str, Any]:
    """One FedAvg round of two simulated sites (shared data in ``workspace/data``); wall time and Dice."""
    from dose3d_fl.fl.seg_job import SegJobConfig
    from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg

    start = time.perf_counter()
    job = SegJobConfig(num_rounds=1, local_epochs=1, profile=profile_name, min_responses=2)
    summary = simulate_seg(SimulationConfig(workspace=workspace, sites=2, job=job))
    return {
        "wall_seconds": round(time.perf_counter() - start, 1),
        "final_val_dice": summary["final_val_dice"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    parser.add_argument("--work", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument("--profile", default="spleen")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to try the script itself")
    parser.add_argument("--no-fl", action="store_true", help="skip the simulated federated round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible to torch (torch.cuda.is_available() is False); run it on a "
            "GPU machine, or pass --device cpu to try the script",
            file=sys.stderr,
        )
        return 2
    from dose3d_fl.fl.simulate import prepare_site_data

    caches = prepare_site_data(args.work, sites=2, seed=0)
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "train": train_speed(caches, args.profile, args.device, args.steps, args.warmup),
    }
    if not args.no_fl:
        results["fl_round"] = one_fl_round(args.work, args.profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
