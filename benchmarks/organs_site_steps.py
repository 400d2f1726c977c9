"""Where the federated pancreas falls behind central, and whether a step after federation closes it.

A diagnostic for #23's one miss (the pancreas at 0.972 of central on the confirmation set): the federated
site models of finished SiloBN or FedBN runs (one per training seed) and each seed's central model, scored on
the same held-out patients, as they are and after one of three steps a site could take after the federation:

* ``largest_component_off``: no largest-connected-component step after the argmax (both models);
* ``bn_recomputed``: the site model's BatchNorm running statistics recomputed for the averaged weights on the
  site's own training crops (``torch.optim.swa_utils.update_bn``, ``--bn-passes`` passes; the central model on
  the pooled training crops), against a mismatch between statistics gathered under the site's last local
  weights and the global weights they are paired with;
* ``bn_recomputed_unaugmented``: the same for the site model, on crops without the random intensity shift,
  scale and noise of training (statistics of the images a site segments, not of their augmented copies);
  the central model as it is;
* ``fine_tuned_E``: the site model trained ``E`` more epochs on the site's own training cases at the job's
  last learning rate (local adaptation; central as it is).

Per variant and organ: the ratio of the means over the seeds (federated / central, as ``organs_seeds.py``)
overall and per scanner. Dice only (``SegTrainer.validate(distances=False)``), on the profile's 4 mm grid.
Run it on a tuning set only: the result chooses nothing, it says where the gap is.

Usage: ``PYTHONPATH=custom .venv/bin/python benchmarks/organs_site_steps.py --fl-workspaces W0 W1 W2
--central-models C0 C1 C2 [--heldout-seed 1000 --heldout-patients 20] [--work runs/organs-site-steps]
[--out benchmarks/results/organs_site_steps.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from torch.optim.swa_utils import update_bn

from dose3d_fl.bench.heldout_eval import heldout_sites
from dose3d_fl.bench.runner import machine
from dose3d_fl.data.cases import SiteCases, load_site_cases
from dose3d_fl.files import json_safe
from dose3d_fl.fl.seg_job import SegJobConfig
from dose3d_fl.fl.simulate import final_global_model, server_job_dir, simulation_dir
from dose3d_fl.fl.site.config import SiteConfig
from dose3d_fl.fl.site.model import write_site_model
from dose3d_fl.seg.checkpoint import load_checkpoint
from dose3d_fl.seg.trainer import SegTrainer
from dose3d_fl.seg.transforms import IMAGE
from dose3d_fl.synth.demo_sites import prepare_site_data

RESULTS = Path(__file__).parent / "results" / "organs_site_steps.json"
Scores = dict[str, dict[str, float]]  # "site/case" -> organ -> Dice


def global_model_file(workspace: Path) -> Path:
    """The final global model of a ``dose3d fl simulate`` workspace."""
    return final_global_model(server_job_dir(simulation_dir(workspace)))


def dice_scores(trainer: SegTrainer, site: str) -> Scores:
    """Each held-out case's Dice per organ it delineates (NaN where the organ is absent from its label)."""
    cases = trainer.validate(distances=False)["organ_metrics"]["cases"]
    return {f"{site}/{case}": {o: v["dice"] for o, v in organs.items()} for case, organs in cases.items()}


def recompute_bn(trainer: SegTrainer, passes: int) -> None:
    """The network's BatchNorm running statistics, recomputed on ``passes`` passes of its training crops."""
    update_bn((batch[IMAGE] for _ in range(passes) for batch in trainer.train_loader), trainer.model)


def mean_dice(scores: Scores, organ: str, site: str | None = None) -> float:
    values = [
        organs[organ]
        for key, organs in scores.items()
        if (site is None or key.startswith(f"{site}/"))
        and organs.get(organ) is not None
        and not math.isnan(organs[organ])
    ]
    return sum(values) / len(values) if values else math.nan


def ratios(federated: list[Scores], central: list[Scores], organs: list[str], sites: list[str]) -> dict:
    """Ratio of the means over seeds, per organ: overall and per scanner."""

    def ratio(organ: str, site: str | None) -> float:
        fed = sum(mean_dice(s, organ, site) for s in federated)
        cen = sum(mean_dice(s, organ, site) for s in central)
        return fed / cen if cen else math.nan

    return {
        organ: {"all": ratio(organ, None), **{site: ratio(organ, site) for site in sites}} for organ in organs
    }


def seed_scores(
    workspace: Path,
    central_file: Path,
    held: list[SiteCases],
    organs: list[str],
    work: Path,
    bn_passes: int,
    fine_tune: list[int],
    threads: int,
) -> dict[str, dict[str, Scores]]:
    """Variant -> {"federated", "central"} -> scores, for one training seed's run and central model."""
    fl_model = global_model_file(workspace)
    caches = sorted((workspace / "data" / "cache").glob("site-*"))
    train = {site.name: site for site in load_site_cases(caches, organs=organs)}
    pooled = [case for site in train.values() for case in site.train]
    central = load_checkpoint(central_file)
    out: dict[str, dict[str, Scores]] = {}

    def add(variant: str, kind: str, scores: Scores) -> None:
        out.setdefault(variant, {}).setdefault(kind, {}).update(scores)

    central_bn: dict | None = None  # the central model with recomputed statistics: the same for every scanner
    for site in held:
        site_file = work / workspace.name / f"{site.name}.pt"
        state = SiteConfig.load(workspace / "site_config" / f"{site.name}.json").state_dir
        write_site_model(fl_model, state, site_file)
        site_model = load_checkpoint(site_file)
        weights, profile = site_model.model, site_model.profile
        if central_bn is None:
            pooled_trainer = SegTrainer(pooled, [], profile, num_threads=threads, show_progress=False)
            pooled_trainer.set_weights(central.model)
            recompute_bn(pooled_trainer, bn_passes)
            central_bn = pooled_trainer.get_weights()
        site_bn = SegTrainer(train[site.name].train, [], profile, num_threads=threads, show_progress=False)
        site_bn.set_weights(weights)
        recompute_bn(site_bn, bn_passes)
        unaugmented = profile.replace(intensity_shift=0.0, intensity_scale=0.0, noise_std=0.0)
        site_bn_clean = SegTrainer(
            train[site.name].train, [], unaugmented, num_threads=threads, show_progress=False
        )
        site_bn_clean.set_weights(weights)
        recompute_bn(site_bn_clean, bn_passes)
        steps = (
            ("as_trained", profile, weights, central.model),
            ("largest_component_off", profile.replace(keep_largest_component=False), weights, central.model),
            ("bn_recomputed", profile, site_bn.get_weights(), central_bn),
            ("bn_recomputed_unaugmented", profile, site_bn_clean.get_weights(), central.model),
        )
        for variant, prof, federated_weights, central_weights in steps:
            for kind, model_weights in (("federated", federated_weights), ("central", central_weights)):
                trainer = SegTrainer([], site.val, prof, num_threads=threads, show_progress=False)
                trainer.set_weights(model_weights)
                add(variant, kind, dice_scores(trainer, site.name))
        tuner = SegTrainer(
            train[site.name].train,
            site.val,
            profile.replace(lr=profile.lr * SegJobConfig().local_lr_scale),  # the job's rate at the sites
            num_threads=threads,
            show_progress=False,
        )
        tuner.set_weights(weights)
        tuner.set_progress(1.0)  # the job's last learning rate
        done = 0
        for epochs in sorted(fine_tune):
            tuner.train_epochs(epochs - done)
            done = epochs
            add(f"fine_tuned_{epochs}", "federated", dice_scores(tuner, site.name))
            add(f"fine_tuned_{epochs}", "central", out["as_trained"]["central"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--fl-workspaces", type=Path, nargs="+", required=True, help="SiloBN/FedBN runs, one per seed"
    )
    parser.add_argument(
        "--central-models", type=Path, nargs="+", required=True, help="each seed's central model.pt"
    )
    parser.add_argument("--heldout-seed", type=int, default=1000)
    parser.add_argument("--heldout-patients", type=int, default=20)
    parser.add_argument("--bn-passes", type=int, default=2)
    parser.add_argument("--fine-tune", default="2,8", help="epochs of local fine-tuning, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/organs-site-steps"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if len(args.fl_workspaces) != len(args.central_models):
        print("give one central model per federated run (the same training seed)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    first = load_checkpoint(global_model_file(args.fl_workspaces[0]))
    organs = list(first.profile.organs)
    caches = prepare_site_data(
        args.work / f"heldout-seed-{args.heldout_seed}-{args.heldout_patients}",
        3,
        args.heldout_seed,
        [args.heldout_patients] * 3,
        organs=organs,
    )
    held = heldout_sites(caches, organs)
    fine_tune = [int(e) for e in args.fine_tune.split(",") if e]
    per_seed = [
        seed_scores(w.resolve(), c, held, organs, args.work, args.bn_passes, fine_tune, args.threads)
        for w, c in zip(args.fl_workspaces, args.central_models, strict=True)
    ]
    sites = [site.name for site in held]
    variants = {
        variant: ratios(
            [s[variant]["federated"] for s in per_seed],
            [s[variant]["central"] for s in per_seed],
            organs,
            sites,
        )
        for variant in per_seed[0]
    }
    result = {
        "command": "python "
        + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "fl_workspaces": [str(w) for w in args.fl_workspaces],
        "central_models": [str(c) for c in args.central_models],
        "heldout": f"{args.heldout_patients} patients per scanner x 3, synthesis seed {args.heldout_seed}",
        "bn_passes": args.bn_passes,
        "ratio_of_means_over_seeds": variants,
        "seconds": round(time.perf_counter() - start, 1),
        "cases": per_seed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    for variant, per_organ in variants.items():
        print(variant, " ".join(f"{o} {r['all']:.3f}" for o, r in per_organ.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
