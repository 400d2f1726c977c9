"""GPU path check: training speed and memory of a profile with AMP, and one simulated federated round.

``benchmarks/gpu_check.sh`` runs it on a CUDA machine; CI never needs a GPU. It synthesises two small sites,
times ``steps`` optimiser steps of the profile (``spleen`` by default: the MONAI spleen bundle's recipe, AMP
on CUDA) after ``warmup`` steps and records the GPU's peak allocated memory. On CUDA it compares float32
and cuDNN's benchmark mode, with and without AMP (``--no-compare`` skips it). Then it runs ``--fl-rounds``
FedAvg rounds (default one) of the same profile in the NVFlare simulator, with each round's wall time, the
slowest site's compute and the fixed cost. Results: one JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def train_speed(
    caches: list[Path],
    profile_name: str,
    device: str,
    steps: int,
    warmup: int,
    amp: bool = True,
    cudnn_benchmark: bool = False,
) -> dict[str, Any]:
    """Optimiser steps per second of ``profile_name`` on ``device`` (after ``warmup`` steps), peak memory.

    Args:
        caches: the sites' case caches (all sites' cases are pooled).
        profile_name: segmentation profile.
        device: torch device.
        steps: timed optimiser steps.
        warmup: untimed steps before them (cuDNN autotuning, allocator warm-up), plus one of each batch shape
            the timed steps meet that these do not.
        amp: the profile's mixed precision setting (``False``: float32 throughout).
        cudnn_benchmark: let cuDNN pick its fastest algorithms, deterministic or not. ``False``: what
            ``SegTrainer`` runs with (``monai.utils.set_determinism`` leaves cuDNN deterministic).
    """
    import torch

    from dose3d_fl.data.cases import IMAGE, LABEL, LABELLED, load_site_cases
    from dose3d_fl.seg.profiles import get_profile
    from dose3d_fl.seg.trainer import SegTrainer

    profile = get_profile(profile_name)
    profile = dataclasses.replace(profile, amp=profile.amp and amp)
    sites = load_site_cases(caches, seed=profile.seed, organs=profile.organs)
    trainer = SegTrainer(
        [c for s in sites for c in s.train], [c for s in sites for c in s.val], profile, device=device
    )
    if cudnn_benchmark:
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True
    loader = trainer.train_loader
    batches = []
    while len(batches) < steps + warmup:
        batches.extend(loader)
    timed = batches[warmup : warmup + steps]
    # Warm up on every batch shape the timed steps meet (an epoch's last batch can be smaller): in benchmark
    # mode cuDNN tunes its algorithms on the first batch of each shape, which must not count as training.
    warm = list(batches[:warmup])
    for batch in timed:
        if all(b[IMAGE].shape != batch[IMAGE].shape for b in warm):
            warm.append(batch)
    trainer.model.train()
    cuda = trainer.device.type == "cuda"
    if cuda:
        gc.collect()  # an earlier call's trainer, so that the peak below is this one's
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    for batch in warm:
        trainer.train_step(batch[IMAGE], batch[LABEL], labelled=batch[LABELLED])
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for batch in timed:
        trainer.train_step(batch[IMAGE], batch[LABEL], labelled=batch[LABELLED])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    validation = trainer.validate()
    return {
        "profile": profile.name,
        "device": str(trainer.device),
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
        "amp": trainer.use_amp,
        "cudnn": "benchmark" if torch.backends.cudnn.benchmark else "deterministic",
        "crops_per_step": profile.batch_size * profile.num_samples,
        "roi_size": list(profile.roi_size),
        "steps": steps,
        "steps_per_second": round(steps / seconds, 3),
        "peak_gpu_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "validation_seconds": round(validation["seconds"], 2),
        "val_cases": validation["cases"],
    }


def fl_rounds(workspace: Path, profile_name: str, rounds: int = 1) -> dict[str, Any]:
    """FedAvg rounds of two simulated sites (shared data in ``workspace/data``): the whole simulation's wall
    time, each round's wall time, slowest site's compute and fixed cost, and the final model's Dice.

    The first round includes each site's start-up (imports, CUDA context, loading its cases).
    """
    from dose3d_fl.bench.fl_figures import round_figures
    from dose3d_fl.fl.seg_job import SegJobConfig
    from dose3d_fl.fl.simulate import SimulationConfig, server_job_dir, simulate_seg, simulation_dir

    start = time.perf_counter()
    job = SegJobConfig(num_rounds=rounds, local_epochs=1, profile=profile_name, min_responses=2)
    summary = simulate_seg(SimulationConfig(workspace=workspace, sites=2, job=job))
    wall = time.perf_counter() - start
    figures = round_figures(server_job_dir(simulation_dir(workspace)))
    keys = ("round", "wall_seconds", "slowest_site_compute_seconds", "fixed_seconds")
    return {
        "rounds": rounds,
        "wall_seconds": round(wall, 1),
        "per_round": [{key: figure[key] for key in keys} for figure in figures],
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
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="skip the speed comparisons on CUDA (float32; cuDNN's benchmark mode, with and without AMP)",
    )
    parser.add_argument("--fl-rounds", type=int, default=1, help="simulated FedAvg rounds (default 1)")
    parser.add_argument(
        "--patients",
        type=int,
        default=None,
        help="synthetic patients per site (default the demo's 12 and 8); fewer to try the script quickly",
    )
    parser.add_argument("--no-fl", action="store_true", help="skip the simulated federated rounds")
    args = parser.parse_args(argv)
    if args.patients is not None and args.patients < 2:
        print(
            f"gpu_check: --patients {args.patients}: a site needs at least 2 (training and validation)",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device is visible to torch (torch.cuda.is_available() is False); run it on a "
            "GPU machine, or pass --device cpu to try the script",
            file=sys.stderr,
        )
        return 2
    from dose3d_fl.synth.demo_sites import prepare_site_data

    caches = prepare_site_data(
        args.work, sites=2, seed=0, patients=None if args.patients is None else [args.patients] * 2
    )
    results: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "train": train_speed(caches, args.profile, args.device, args.steps, args.warmup),
    }
    if results["train"]["device"].startswith("cuda") and not args.no_compare:
        results["compare"] = [
            train_speed(caches, args.profile, args.device, args.steps, args.warmup, amp, benchmark)
            for amp, benchmark in ((False, False), (True, True), (False, True))
        ]
    if not args.no_fl:
        results["fl"] = fl_rounds(args.work, args.profile, args.fl_rounds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
