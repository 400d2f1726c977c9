"""The site commands of ``dose3d``: ``site check``."""

from __future__ import annotations

import argparse
from pathlib import Path


def _cmd_site_check(args: argparse.Namespace) -> int:
    from dose3d_fl.deploy.site_check import check_site

    checks = check_site(args.site_dir, timeout=args.timeout)
    for check in checks:
        print(check.line, flush=True)
    failed = [check.name for check in checks if not check.ok]
    if failed:
        print(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}")
        return 1
    print(f"all {len(checks)} checks passed: this site is ready to start (sites/DEPLOY.md, step 4)")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``site`` (``check``) to the ``dose3d`` sub-commands."""
    site = sub.add_parser("site", help="a hospital site's own set-up").add_subparsers(
        dest="site_command", required=True
    )
    check = site.add_parser(
        "check",
        help="check a site before it starts: configuration, privacy policy, cache, startup kit, certificate, "
        "server; one line each, exit 1 on any failure",
    )
    check.add_argument(
        "--site-dir",
        type=Path,
        default=Path("local"),
        help="the local/ folder of the site's startup kit, or the kit itself (default: ./local)",
    )
    check.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for the server's answer (default 3)"
    )
    check.set_defaults(func=_cmd_site_check)
