"""The GAN commands of ``dose3d``: ``gan train``, ``gan sample`` and ``gan export``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dose3d_fl.cli.common import fail


def _cmd_gan_train(args: argparse.Namespace) -> int:
    from dose3d_fl.gan.profiles import get_gan_profile
    from dose3d_fl.gan.training_run import GAN_METRICS_NAME, GAN_MODEL_NAME, train_gan_on_caches

    try:
        metrics = train_gan_on_caches(
            args.cache,
            args.out,
            get_gan_profile(args.profile).replace(seed=args.seed),
            args.epochs,
            num_threads=args.threads,
            on_epoch=lambda e: print(
                f"epoch {e['epoch']}: L1 {e['loss_l1']:.4f}, MMD {e['mmd']:.2f}, MS-SSIM {e['msssim']:.3f}, "
                f"diversity {e['diversity']:.3f}, tissue HU error {e['tissue_hu_error']:.1f}, "
                f"best NCC {e['best_ncc']:.3f}",
                flush=True,
            ),
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(
        f"{metrics['steps']} steps, {metrics['seconds']:.0f} s -> {args.out / GAN_MODEL_NAME}, "
        f"{args.out / GAN_METRICS_NAME}"
    )
    return 0


def _cmd_gan_sample(args: argparse.Namespace) -> int:
    from dose3d_fl.gan.sampling import sample_from_model

    try:
        report, source = sample_from_model(
            args.model,
            args.n,
            args.out,
            caches=args.cache,
            profile=args.profile,
            seed=args.seed,
            num_threads=args.threads,
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(f"model {args.model}: {source}")
    print(
        f"wrote {len(report.pairs)} image/label pair(s) to {args.out} ({report.dropped_memorized} dropped as copies "
        f"of a training crop); slices: {report.grid}"
    )
    return 0


def _cmd_gan_export(args: argparse.Namespace) -> int:
    from dose3d_fl.gan.export import export_samples

    try:
        report = export_samples(args.samples, args.cache, args.out)
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(
        f"exported {len(report.exported)} pair(s) to {args.out}, withheld {len(report.withheld)} as copies of a "
        f"training crop; record: {report.record}"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gan`` (``train``, ``sample``, ``export``) to the ``dose3d`` sub-commands."""
    gan = sub.add_parser(
        "gan", help="label-conditioned 3D GAN (CT crops for organ label maps)"
    ).add_subparsers(dest="gan_command", required=True)
    train = gan.add_parser("train", help="train the GAN on one site cache (local) or several pooled")
    train.add_argument("--cache", type=Path, nargs="+", required=True, help="site cache folder(s)")
    train.add_argument("--epochs", type=int, default=20, help="epochs of the profile's steps (default 20)")
    train.add_argument(
        "--profile",
        default="cpu-small",
        help="GAN profile: cpu-small (default), cpu-small-posneg, cpu-tiny, gpu (docs/gan.md)",
    )
    train.add_argument("--out", type=Path, default=Path("runs/gan"), help="output folder (default runs/gan)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    train.set_defaults(func=_cmd_gan_train)
    sample = gan.add_parser(
        "sample",
        help="write synthetic image/label NIfTI pairs for deformed label maps of this site, after the "
        "memorisation check",
    )
    sample.add_argument(
        "--model",
        type=Path,
        required=True,
        help="gan.pt of `dose3d gan train` or the job's FL_global_model.pt",
    )
    sample.add_argument("--n", type=int, required=True, help="pairs to draw (before the memorisation check)")
    sample.add_argument("--out", type=Path, required=True, help="output folder (created)")
    sample.add_argument(
        "--cache",
        type=Path,
        nargs="+",
        required=True,
        help="this site's cache(s): their training labels are deformed into the new label maps, and samples "
        "are checked against their training crops",
    )
    sample.add_argument("--profile", default=None, help="GAN profile of a model file that stores none")
    sample.add_argument("--seed", type=int, default=0, help="seed of the label maps and the noise")
    sample.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    sample.set_defaults(func=_cmd_gan_sample)
    export = gan.add_parser(
        "export",
        help="copy sampled pairs out of the site: only those that pass the memorisation check again, with a record",
    )
    export.add_argument("--samples", type=Path, required=True, help="a folder written by `dose3d gan sample`")
    export.add_argument("--cache", type=Path, nargs="+", required=True, help="this site's cache(s)")
    export.add_argument("--out", type=Path, required=True, help="new or empty folder to export to")
    export.set_defaults(func=_cmd_gan_export)
