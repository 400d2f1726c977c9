"""Does the label-conditioned GAN's synthetic CT help the smallest site's segmentation? Measured, not hoped for.

On the demo federation's fixed data and split (3 sites, 12 / 8 / 5 patients, synthesis seed 0):

1. the GAN (``--gan-profile``) is trained federated in NVFlare's simulator (``gan_fedavg``, generator-only,
   ``--gan federated``, the default), or pooled in one process (``--gan local``, for smoke runs), or taken
   from an earlier run (``--gan-model``);
2. the smallest site (site-3: 4 training cases) draws ``--pool`` synthetic pairs from the final global
   generator for deformed copies of its own training labels, after the memorisation check;
3. at that site, segmentation (``--seg-profile``) is trained for exactly ``--steps`` optimiser steps per run,
   for each seed, in each arm: ``real`` (real cases, the profile's augmentation), ``real+gan`` (plus synthetic
   pairs: ``--ratio`` synthetic per real case, from a pool of ``--repeat`` x that; ``--schedule pretrain``
   mixes them into the first ``--synthetic-share`` of the steps only), ``real+classical`` (real cases with
   strong MONAI spatial and intensity augmentation), ``real+classical+gan`` and ``gan-only`` (train on
   synthetic, test on real);
4. with ``--federated``: the seg_fedavg job without and with synthetic pairs at every site (each site samples
   for its own labels; fewer local epochs by the ratio, so the same optimiser steps);
5. every model is scored on ``benchmarks/heldout.py``'s held-out patients (10 per scanner, synthesis seed 1000,
   never used for tuning); paired per-case differences with a 95 % bootstrap interval over seeds and cases;
6. the realism check (a segmentation model trained on real data only scores synthetic pairs against their
   labels, and real crops for comparison), per-tissue HU statistics and the label check of every written
   pair.

Each finished run keeps its result in ``WORK/runs/`` (runs without synthetic pairs, shared by every design)
or ``WORK/DESIGN/runs/`` (``--design``), so a stopped benchmark resumes and a second design reuses the
first one's runs without the GAN. Writes ``benchmarks/results/gan_augment.json`` (``--out``; the command is
in it). Usage (two GAN designs, see docs/gan.md; hours on 2 cores):

    .venv/bin/python benchmarks/gan_augment.py --federated --ratio 0.5 --repeat 16 --threads 1 \\
        --design design-2 --gan-profile cpu-small-posneg
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    RandAdjustContrastd,
    RandAffined,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandScaleIntensityd,
)

from dose3d_fl.bench.evaluate import Evaluator
from dose3d_fl.bench.heldout_eval import heldout_sites, paired_difference_over_seeds
from dose3d_fl.bench.runner import machine
from dose3d_fl.data.cases import IMAGE, LABEL, load_site_cases
from dose3d_fl.files import json_safe
from dose3d_fl.fl.simulate import final_global_model, server_job_dir, simulation_dir
from dose3d_fl.seg.profiles import SegProfile, get_profile
from dose3d_fl.seg.synthetic import SyntheticMix, mix_training_cases, synthetic_cases
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.synth.demo_sites import prepare_site_data

RESULTS = Path(__file__).parent / "results" / "gan_augment.json"
ARMS = ("real", "real+gan", "real+classical", "gan-only", "real+classical+gan")
TARGETS = {"gan_gain": 0.02, "tstr_ratio": 0.80, "federated_drop": -0.005}
# Settings a finished run depends on besides its arm and seed: a run file with other values is trained again.
RUN_KEYS = ("seeds", "steps", "seg_profile", "patients", "heldout_patients", "threads")
GAN_RUN_KEYS = ("ratio", "repeat", "schedule", "synthetic_share", "pool")
FL_KEYS = ("fl_rounds", "fl_local_epochs", "ratio")


@dataclass
class Settings:
    """The command's options (see ``--help``)."""

    work: Path
    out: Path
    seeds: int
    steps: int
    gan: str
    gan_profile: str
    gan_rounds: int
    gan_local_epochs: int
    seg_profile: str
    ratio: float
    repeat: int
    pool: int
    federated: bool
    fl_rounds: int
    fl_local_epochs: int
    patients: list[int]
    heldout_patients: int
    threads: int
    arms: list[str]
    design: str
    gan_model: Path | None
    schedule: str
    synthetic_share: float

    @property
    def design_dir(self) -> Path:
        """Where this design's GAN, synthetic pairs and federated-with-synthetic run live."""
        return self.work / self.design

    def run_file(self, name: str) -> tuple[Path, dict[str, Any]]:
        """Where a finished run keeps its result, and the settings it depends on. Runs without synthetic
        pairs are shared by every design of this work folder; the others belong to the design."""
        keys = FL_KEYS if name.startswith("fl-") else RUN_KEYS + (GAN_RUN_KEYS if "gan" in name else ())
        folder = self.design_dir if "gan" in name else self.work
        return folder / "runs" / f"{name}.json", {k: getattr(self, k) for k in keys}


def finished(s: Settings, name: str) -> dict[str, Any] | None:
    """The result of a run finished before with the same settings (a benchmark that stopped resumes)."""
    path, settings = s.run_file(name)
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record["settings"] == settings else None


def keep(s: Settings, name: str, record: dict[str, Any]) -> dict[str, Any]:
    """Write a finished run's result beside the work (``finished`` reads it back)."""
    path, settings = s.run_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings, **record}
    path.write_text(json.dumps(json_safe(record), indent=1) + "\n")
    return record


def classical_augmentation() -> list[Any]:
    """Strong classical augmentation of each training crop (after the profile's own): MONAI spatial
    (rotation up to 15 degrees, scaling up to 15 %, label nearest) and intensity (contrast, smoothing, noise
    up to the noisiest scanner's, scaling) transforms. No flip: the spleen lies on the patient's left."""
    keys = (IMAGE, LABEL)
    return [
        RandAffined(
            keys=keys,
            prob=0.7,
            rotate_range=(0.26, 0.26, 0.26),
            scale_range=(0.15, 0.15, 0.15),
            mode=("bilinear", "nearest"),
            padding_mode="border",
        ),
        RandAdjustContrastd(keys=IMAGE, prob=0.3, gamma=(0.7, 1.5)),
        RandGaussianSmoothd(keys=IMAGE, prob=0.2, sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), sigma_z=(0.3, 1.0)),
        RandGaussianNoised(keys=IMAGE, prob=0.3, std=0.06),
        RandScaleIntensityd(keys=IMAGE, prob=0.3, factors=0.15),
    ]


def _steps(loader: Any, count: int) -> Any:
    """``count`` batches of ``loader``, epoch after epoch."""
    done = 0
    while done < count:
        for batch in loader:
            yield batch
            done += 1
            if done == count:
                return


def train_arm(
    arm: str, real: list[dict], synthetic_dir: Path | None, seed: int, s: Settings, profile: SegProfile
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One segmentation model of an arm, trained for exactly ``s.steps`` optimiser steps.

    ``--schedule mix``: every step draws from the real cases and the synthetic pairs mixed. ``--schedule
    pretrain``: the first ``--synthetic-share`` of the steps draw from the mix, the rest from the real cases
    alone (the same network and optimiser throughout, one learning-rate schedule over all steps).
    """
    profile = profile.replace(seed=seed)
    extra = classical_augmentation() if "classical" in arm else []

    def trainer_on(cases: list[dict]) -> SegTrainer:
        return SegTrainer(
            cases,
            [],
            profile,
            device="cpu",
            num_threads=s.threads,
            show_progress=False,
            extra_augmentation=extra,
        )

    if arm == "gan-only":
        cases = synthetic_cases(synthetic_dir)
    elif "gan" in arm:
        cases = mix_training_cases(
            real, SyntheticMix(synthetic_dir, s.ratio, seed=seed, repeat_real=s.repeat)
        )
    else:
        cases = list(real)
    trainer = trainer_on(cases)
    phases = [(trainer.train_loader, s.steps)]
    if s.schedule == "pretrain" and "gan" in arm and arm != "gan-only":
        mixed = round(s.synthetic_share * s.steps)
        phases = [(trainer.train_loader, mixed), (trainer_on(list(real)).train_loader, s.steps - mixed)]
    start, step, losses = time.perf_counter(), 0, []
    for loader, count in phases:
        for batch in _steps(loader, count):
            trainer.set_progress(step / s.steps)
            trainer.model.train()
            losses.append(trainer.train_step(batch[IMAGE], batch[LABEL]))
            step += 1
    facts = {
        "steps": step,
        "train_cases": len(cases),
        "synthetic_cases": sum(c["id"].startswith("synthetic-") for c in cases),
        "final_loss": float(np.mean(losses[-20:])),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return trainer.get_weights(), facts


def union(scores: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Mean held-out Dice per seed and over seeds."""
    per_seed = {seed: float(np.nanmean(list(c.values()))) for seed, c in scores.items()}
    return {"per_seed": per_seed, "mean": float(np.mean(list(per_seed.values())))}


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished children (the simulator's)."""
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )


def reused_gan(model: Path) -> dict[str, Any]:
    """What is known of a GAN model file trained by an earlier run: its simulator summary, if beside it."""
    record: dict[str, Any] = {"mode": "model file of an earlier run", "model": str(model)}
    summary = next((p / "summary.json" for p in model.parents if (p / "summary.json").is_file()), None)
    if summary is not None:
        record["summary"] = json.loads(summary.read_text())
    return record


def train_gan(s: Settings, caches: list[Path]) -> tuple[Path, dict[str, Any]]:
    """The GAN model file and what its training measured (federated in the simulator, or pooled): wall
    seconds, and CPU seconds, whose half is the wall time on 2 otherwise idle cores."""
    start, cpu_start, load = time.perf_counter(), cpu_seconds(), os.getloadavg()[0]
    if s.gan == "federated":
        from dose3d_fl.fl.gan_job import JOB_NAME, GanJobConfig
        from dose3d_fl.fl.gan_simulate import GanSimulationConfig, simulate_gan

        workspace = s.design_dir / "gan-fl"
        (workspace / "data").mkdir(parents=True, exist_ok=True)
        if not (workspace / "data" / "cache").exists():
            shutil.copytree(s.work / "data" / "cache", workspace / "data" / "cache")
        job = GanJobConfig(
            num_rounds=s.gan_rounds, local_epochs=s.gan_local_epochs, profile=s.gan_profile, tensorboard=False
        )
        summary = simulate_gan(GanSimulationConfig(workspace=workspace, sites=len(caches), job=job))
        model = final_global_model(server_job_dir(simulation_dir(workspace, JOB_NAME)))
        record = {
            "mode": "federated (gan_fedavg, generator-only)",
            "rounds": s.gan_rounds,
            "summary": summary,
        }
    else:
        from dose3d_fl.gan.profiles import get_gan_profile
        from dose3d_fl.gan.training_run import GAN_MODEL_NAME, train_gan_on_caches

        metrics = train_gan_on_caches(
            caches,
            s.design_dir / "gan-local",
            get_gan_profile(s.gan_profile),
            s.gan_local_epochs,
            num_threads=s.threads,
        )
        model = s.design_dir / "gan-local" / GAN_MODEL_NAME
        record = {
            "mode": "pooled (one process)",
            "metrics": {k: v for k, v in metrics.items() if k != "history"},
        }
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["cpu_seconds"] = round(cpu_seconds() - cpu_start, 1)
    record["load_average_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    return model, record


def sample_site(model: Path, cache: Path, out: Path, n: int, s: Settings) -> tuple[dict[str, Any], Any]:
    """Synthetic pairs for ``cache``'s own deformed labels: what was written, and the sample report."""
    from dose3d_fl.gan.sampling import sample_from_model

    if out.exists():
        shutil.rmtree(out)
    report, _ = sample_from_model(model, n, out, caches=[cache], profile=s.gan_profile, num_threads=s.threads)
    facts = {"drawn": n, "written": len(report.pairs), "dropped_memorized": report.dropped_memorized}
    return {**facts, "memorization_scores": report.scores}, report


def quality_of_pairs(
    report: Any, model: Path, cache: Path, judge: dict[str, torch.Tensor], s: Settings
) -> dict:
    """Realism (judge's Dice on synthetic pairs vs on real crops), per-tissue HU, and the label check of
    every written pair (its label file equals the map it was generated for, and that map passes the check)."""
    import nibabel as nib

    from dose3d_fl.gan.checkpoint import load_gan_checkpoint
    from dose3d_fl.gan.label_maps import OrganVolumeRange, label_map_problem, organ_labels
    from dose3d_fl.gan.realism import realism_dice
    from dose3d_fl.gan.sampling import site_trainer
    from dose3d_fl.gan.tissue import tissue_agreement, tissue_statistics

    gan_profile = load_gan_checkpoint(model, s.gan_profile)[0].profile
    real = site_trainer([cache], gan_profile, s.threads).reference
    synthetic = report.samples
    volumes = OrganVolumeRange.from_label_maps(real[:, 1].round().long(), gan_profile.volume_tolerance)
    problems = []
    for pair, (_, label_file) in zip(synthetic, report.pairs, strict=True):
        written = torch.from_numpy(np.asarray(nib.load(label_file).dataobj).astype(np.int64))
        same = torch.equal(written, organ_labels(pair[1].round()))
        problems.append(
            label_map_problem(pair[1].round().long(), volumes) if same else f"{label_file.name} differs"
        )
    seg = get_profile(s.seg_profile)
    real_dice = realism_dice(real, gan_profile, judge, seg, s.threads)
    synthetic_dice = realism_dice(synthetic, gan_profile, judge, seg, s.threads)
    tissue_real, tissue_synthetic = (
        tissue_statistics(real, gan_profile),
        tissue_statistics(synthetic, gan_profile),
    )
    return {
        "label_check_pass": sum(p is None for p in problems) / len(problems),
        "label_problems": [p for p in problems if p],
        "realism_dice_synthetic": float(np.nanmean(synthetic_dice)),
        "realism_dice_real_crops": float(np.nanmean(real_dice)),
        "realism_dice_synthetic_each": synthetic_dice,
        "tissue_real": tissue_real,
        "tissue_synthetic": tissue_synthetic,
        "tissue_agreement": tissue_agreement(tissue_synthetic, tissue_real),
    }


def federated_model(workspace: Path) -> dict[str, torch.Tensor]:
    """The final global model of a seg_fedavg simulator workspace."""
    path = final_global_model(server_job_dir(simulation_dir(workspace)))
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def federated_arms(s: Settings, model: Path, evaluator: Evaluator) -> dict[str, Any]:
    """seg_fedavg without (``fl-real``) and with synthetic pairs at every site (``fl-real+gan``, same optimiser
    steps): held-out scores (each run kept, ``finished``)."""
    from dose3d_fl.fl.seg_job import SegJobConfig
    from dose3d_fl.fl.simulate import SimulationConfig, simulate_seg
    from dose3d_fl.fl.site.config import SiteConfig

    results = {}
    arms = {"fl-real": s.fl_local_epochs, "fl-real+gan": max(1, round(s.fl_local_epochs / (1 + s.ratio)))}
    for name, epochs in arms.items():
        record = finished(s, name)
        if record is not None:
            results[name] = record
            continue
        workspace = s.work / name if name == "fl-real" else s.design_dir / name
        settings = s.run_file(name)[1]
        marker = workspace / "settings.json"
        if (
            (workspace / "summary.json").is_file()
            and marker.is_file()
            and json.loads(marker.read_text()) == settings
        ):
            score = evaluator.evaluate_weights(
                federated_model(workspace)
            )  # finished before its score was kept
            facts = {
                "local_epochs": epochs,
                "heldout_dice": score["union_val_dice"],
                "case_dice": score["case_dice"],
            }
            results[name] = keep(s, name, facts)
            continue
        if workspace.exists():
            shutil.rmtree(workspace)
        workspace.mkdir(parents=True)
        marker.write_text(json.dumps(settings) + "\n")
        shutil.copytree(s.work / "data" / "cache", workspace / "data" / "cache")
        synthetic: dict[str, dict[str, Any]] = {}
        if name.endswith("gan"):
            for cache in sorted((workspace / "data" / "cache").iterdir()):
                n_train = len(load_site_cases([cache])[0].train)
                synthetic[cache.name] = sample_site(
                    model, cache, workspace / "synthetic" / cache.name, n_train * 2, s
                )[0]

        def add_synthetic(recipe: Any, workspace: Path = workspace, synthetic: dict = synthetic) -> None:
            for site in synthetic:  # as each site would write in its own dose3d_site.json
                path = workspace / "site_config" / f"{site}.json"
                config = SiteConfig.load(path)
                SiteConfig(
                    config.cache_dir,
                    config.num_threads,
                    config.device,
                    str((workspace / "synthetic" / site).resolve()),
                    s.ratio,
                ).save(path)

        job = SegJobConfig(
            num_rounds=s.fl_rounds, local_epochs=epochs, profile=s.seg_profile, tensorboard=False
        )
        start = time.perf_counter()
        simulate_seg(SimulationConfig(workspace=workspace, sites=3, job=job), customize=add_synthetic)
        seconds = round(time.perf_counter() - start, 1)
        score = evaluator.evaluate_weights(federated_model(workspace))
        results[name] = keep(
            s,
            name,
            {
                "local_epochs": epochs,
                "seconds": seconds,
                "heldout_dice": score["union_val_dice"],
                "case_dice": score["case_dice"],
                "synthetic": {
                    site: {k: v for k, v in r.items() if k != "memorization_scores"}
                    for site, r in synthetic.items()
                },
            },
        )
    return results


def parse(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, default=Path("runs/gan-augment"), help="work folder (kept)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    parser.add_argument("--seeds", type=int, default=3, help="segmentation seeds per arm (default 3)")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps of every arm (default 400)")
    parser.add_argument("--gan", choices=("federated", "local"), default="federated")
    parser.add_argument("--gan-profile", default="cpu-small")
    parser.add_argument("--gan-rounds", type=int, default=10, help="GAN rounds (federated)")
    parser.add_argument(
        "--gan-local-epochs", type=int, default=5, help="GAN local epochs per round (or in all)"
    )
    parser.add_argument("--seg-profile", default="cpu-small")
    parser.add_argument("--ratio", type=float, default=1.0, help="synthetic pairs per real case in a step")
    parser.add_argument("--repeat", type=int, default=8, help="pool size as a multiple of the real cases")
    parser.add_argument("--pool", type=int, default=40, help="pairs drawn at the smallest site")
    parser.add_argument(
        "--federated", action="store_true", help="also seg_fedavg without / with synthetic pairs"
    )
    parser.add_argument("--fl-rounds", type=int, default=25)
    parser.add_argument("--fl-local-epochs", type=int, default=4)
    parser.add_argument("--patients", default="12,8,5", help="patients per site")
    parser.add_argument("--heldout-patients", type=int, default=10, help="held-out patients per scanner")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arms to run")
    parser.add_argument("--design", default="design-1", help="name of this GAN design's sub-folder of --work")
    parser.add_argument(
        "--gan-model",
        type=Path,
        default=None,
        help="an earlier run's GAN model file: sample from it, train none",
    )
    parser.add_argument(
        "--schedule",
        choices=("mix", "pretrain"),
        default="mix",
        help="synthetic pairs mixed into every step (mix) or only into the first steps (pretrain)",
    )
    parser.add_argument(
        "--synthetic-share",
        type=float,
        default=0.5,
        help="pretrain: the share of steps that see synthetic pairs",
    )
    a = parser.parse_args(argv)
    arms = [arm for arm in a.arms.split(",") if arm]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or "real" not in arms:
        parser.error(
            f"--arms: unknown {unknown} (known: {', '.join(ARMS)}); 'real' is the reference and must run"
        )
    return Settings(
        a.work, a.out, a.seeds, a.steps, a.gan, a.gan_profile, a.gan_rounds, a.gan_local_epochs, a.seg_profile,
        a.ratio, a.repeat, a.pool, a.federated, a.fl_rounds, a.fl_local_epochs,
        [int(n) for n in a.patients.split(",")], a.heldout_patients, a.threads, arms, a.design,
        a.gan_model, a.schedule, a.synthetic_share,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    s = parse(argv)
    torch.set_num_threads(s.threads)
    started, load_before = time.perf_counter(), os.getloadavg()
    caches = prepare_site_data(s.work, 3, 0, s.patients)
    sites = load_site_cases(caches)
    smallest = min(sites, key=lambda site: len(site.train))
    heldout = prepare_site_data(s.work / "heldout-seed-1000", 3, 1000, [s.heldout_patients] * 3)
    seg_profile = get_profile(s.seg_profile)
    evaluator = Evaluator(heldout_sites(heldout), seg_profile, num_threads=s.threads)

    if s.gan_model is not None:
        model, gan_record = s.gan_model, reused_gan(s.gan_model)
    else:
        model, gan_record = train_gan(s, caches)
    synthetic_dir = s.design_dir / "synthetic" / smallest.name
    sampled, report = sample_site(model, smallest.cache_dir, synthetic_dir, s.pool, s)
    print(
        f"GAN: {gan_record.get('seconds', 'reused')} s; {sampled['written']} pairs at {smallest.name}",
        flush=True,
    )

    scores: dict[str, dict[int, dict[str, float]]] = {arm: {} for arm in s.arms}
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in s.arms}
    judge = None
    for seed in range(s.seeds):
        for arm in s.arms:
            name = f"{arm}-seed{seed}"
            record = finished(s, name)
            if record is None or ((arm, seed) == ("real", 0) and not s.federated):
                weights, facts = train_arm(arm, smallest.train, synthetic_dir, seed, s, seg_profile)
                result = evaluator.evaluate_weights(weights)
                record = keep(
                    s,
                    name,
                    {
                        "case_dice": result["case_dice"],
                        "facts": {**facts, "heldout_dice": result["union_val_dice"]},
                    },
                )
                judge = weights if (arm, seed) == ("real", 0) else judge
            scores[arm][seed], runs[arm][seed] = record["case_dice"], record["facts"]
            print(f"{arm:20s} seed {seed}: held-out Dice {record['facts']['heldout_dice']:.4f}", flush=True)

    federated: dict[str, Any] = {}
    if s.federated:
        federated = federated_arms(s, model, evaluator)
        judge, judge_name = (
            federated_model(s.work / "fl-real"),
            "fl-real (seg_fedavg on the real cases of all 3 sites)",
        )
    else:
        if judge is None:
            raise ValueError("the realism check needs the real arm's seed-0 model or --federated")
        judge_name = f"real, seed 0 ({smallest.name}'s real cases only)"
    quality = quality_of_pairs(report, model, smallest.cache_dir, judge, s)

    real = union(scores["real"])
    comparisons = {
        f"{arm} - real": paired_difference_over_seeds(scores[arm], scores["real"])
        for arm in s.arms
        if arm not in ("real", "gan-only")
    }
    if "real+classical+gan" in s.arms and "real+classical" in s.arms:
        comparisons["real+classical+gan - real+classical"] = paired_difference_over_seeds(
            scores["real+classical+gan"], scores["real+classical"]
        )
    targets: dict[str, Any] = {}
    if "real+gan" in s.arms:
        gain = comparisons["real+gan - real"]
        targets["gan_gain"] = {**gain, "target": f">= {TARGETS['gan_gain']} with the 95 % interval above 0",
                               "met": gain["mean"] >= TARGETS["gan_gain"] and gain["ci95_low"] > 0}  # fmt: skip
    if "gan-only" in s.arms:
        ratio = union(scores["gan-only"])["mean"] / real["mean"]
        targets["tstr_ratio"] = {
            "value": ratio,
            "target": f">= {TARGETS['tstr_ratio']}",
            "met": ratio >= TARGETS["tstr_ratio"],
        }
    if federated:
        diff = paired_difference_over_seeds(
            {0: federated["fl-real+gan"]["case_dice"]}, {0: federated["fl-real"]["case_dice"]}
        )
        targets["federated"] = {
            **diff,
            "target": f"mean >= {TARGETS['federated_drop']}",
            "met": diff["mean"] >= TARGETS["federated_drop"],
        }
    targets["label_check"] = {
        "value": quality["label_check_pass"],
        "target": "1.0",
        "met": quality["label_check_pass"] == 1.0,
    }

    results = {
        "command": " ".join(
            ["python benchmarks/gan_augment.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()},
        "site": {"name": smallest.name, "train_cases": len(smallest.train)},
        "heldout": f"{s.heldout_patients} patients per scanner x 3 scanners, synthesis seed 1000 (benchmarks/heldout.py)",
        "gan": gan_record,
        "synthetic": {k: v for k, v in sampled.items()},
        "arms": {arm: {"heldout_dice": union(scores[arm]), "runs": runs[arm]} for arm in s.arms},
        "comparisons": comparisons,
        "targets": targets,
        "realism_judge": judge_name,
        "quality": quality,
        "federated": {k: {kk: vv for kk, vv in v.items() if kk != "case_dice"} for k, v in federated.items()},
        "case_dice": {arm: scores[arm] for arm in s.arms} | {k: v["case_dice"] for k, v in federated.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    s.out.parent.mkdir(parents=True, exist_ok=True)
    s.out.write_text(json.dumps(json_safe(results), indent=2) + "\n")
    for name, target in targets.items():
        print(
            f"target {name}: {'met' if target['met'] else 'MISSED'} ({ {k: v for k, v in target.items() if k in ('mean', 'ci95_low', 'ci95_high', 'value')} })"
        )
    print(f"wrote {s.out} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
