"""The GAN commands of ``dose3d``: ``gan train`` and ``gan sample``."""

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
                f"epoch {e['epoch']}: W {e['wasserstein']:.3f}, MMD {e['mmd']:.2f}, MS-SSIM {e['msssim']:.3f}, "
                f"diversity {e['diversity']:.3f}, label ok {e['label_ok']:.2f}",
                flush=True,
            ),
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(
        f"{metrics['steps']} steps, {metrics['seconds']:.0f} s -> {args.out / GAN_MODEL_NAME}, {args.out / GAN_METRICS_NAME}"
    )
    return 0


def _cmd_gan_sample(args: argparse.Namespace) -> int:
    from dose3d_fl.gan.sampling import sample_from_model

    if not args.cache and not args.skip_memorization_check:
        return fail(
            "pass --cache CACHE (this site's cache: samples that copy a training crop are dropped before "
            "anything is written), or --skip-memorization-check"
        )
    try:
        report, source = sample_from_model(
            args.model, args.n, args.out, caches=args.cache or (), profile=args.profile, seed=args.seed
        )
    except (FileNotFoundError, ValueError) as err:
        return fail(str(err))
    print(f"model {args.model}: {source}")
    check = (
        f"{report.dropped_memorized} dropped as copies of a training crop"
        if report.checked_memorization
        else "memorization check skipped"
    )
    print(f"wrote {len(report.pairs)} image/label pair(s) to {args.out} ({check}); mid-slices: {report.grid}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gan`` (``train``, ``sample``) to the ``dose3d`` sub-commands."""
    gan = sub.add_parser("gan", help="paired 3D GAN (CT crop + organ mask)").add_subparsers(
        dest="gan_command", required=True
    )
    train = gan.add_parser("train", help="train the GAN on one site cache (local) or several pooled")
    train.add_argument("--cache", type=Path, nargs="+", required=True, help="site cache folder(s)")
    train.add_argument("--epochs", type=int, default=20, help="epochs of the profile's steps (default 20)")
    train.add_argument("--profile", default="cpu-small", help="GAN profile: cpu-small (default), gpu")
    train.add_argument("--out", type=Path, default=Path("runs/gan"), help="output folder (default runs/gan)")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    train.set_defaults(func=_cmd_gan_train)
    sample = gan.add_parser("sample", help="write synthetic image/label NIfTI pairs and a PNG of mid-slices")
    sample.add_argument(
        "--model",
        type=Path,
        required=True,
        help="gan.pt of `dose3d gan train` or the job's FL_global_model.pt",
    )
    sample.add_argument("--n", type=int, required=True, help="pairs to draw")
    sample.add_argument("--out", type=Path, required=True, help="output folder (created)")
    sample.add_argument(
        "--cache", type=Path, nargs="+", default=None, help="this site's cache(s), for the memorization check"
    )
    sample.add_argument(
        "--skip-memorization-check", action="store_true", help="write samples without comparing them to data"
    )
    sample.add_argument("--profile", default=None, help="GAN profile of a model file that stores none")
    sample.add_argument("--seed", type=int, default=0, help="noise seed")
    sample.set_defaults(func=_cmd_gan_sample)
