"""``dose3d audit verify``: check a server's transfer log, and each site's receipts in it."""

from __future__ import annotations

import argparse
from pathlib import Path

from dose3d_fl.cli.common import fail


def _site_folder(text: str) -> tuple[str, Path]:
    site, sep, folder = text.partition("=")
    if not sep or not site or not folder:
        raise argparse.ArgumentTypeError(f"expected SITE=RECEIPTS_DIR, got {text!r}")
    return site, Path(folder)


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from dose3d_fl.fl.policy.receipts import HEAD_NAME, PUBLIC_KEY_NAME
    from dose3d_fl.fl.server.transfer_log import verify_chain, verify_site

    if not args.log.is_file():
        print(f"error: {args.log} does not exist (the server writes transfer_log.jsonl in its job workspace)")
        return 2
    server_key = args.server_key.read_text() if args.server_key else None
    check = verify_chain(args.log, server_key)
    if not check.ok:
        print(f"{args.log}: chain broken at line {check.first_bad_line} of {check.lines}: {check.reason}")
        return 1
    signed = " and countersigned" if server_key else ""
    print(f"{args.log}: chain intact{signed} ({check.lines} line(s))")
    broken = 0
    for site, folder in args.site:
        key, head = folder / PUBLIC_KEY_NAME, folder / HEAD_NAME
        if not key.is_file() or not head.is_file():
            return fail(
                f"{folder} holds no {PUBLIC_KEY_NAME} and {HEAD_NAME}: give the site's receipts folder"
            )
        site_check = verify_site(args.log, site, key.read_text(), head.read_text())
        if site_check.ok:
            print(f"{site}: every update receipted and signed; the log ends at the site's head")
        else:
            broken += 1
            print(f"{site}: does not hold at line {site_check.first_bad_line}: {site_check.reason}")
    return 1 if broken else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit`` (``verify``) to the ``dose3d`` sub-commands."""
    audit = sub.add_parser("audit", help="check the server's transfer log").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit.add_parser(
        "verify", help="check the hash chain of a transfer_log.jsonl; name the first bad line"
    )
    verify.add_argument("log", type=Path)
    verify.add_argument(
        "--site",
        type=_site_folder,
        action="append",
        default=[],
        metavar="SITE=RECEIPTS_DIR",
        help="also check SITE's signed receipts against its public_key.pem and head in RECEIPTS_DIR "
        "(<cache>/fl_state/receipts at the site; repeatable)",
    )
    verify.add_argument(
        "--server-key",
        type=Path,
        help="the server's public key (transfer_log.server_key.pem): also check every countersignature",
    )
    verify.set_defaults(func=_cmd_audit_verify)
