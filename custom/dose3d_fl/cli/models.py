"""The ``models`` command of ``dose3d``: list the model files of a workspace, copy one to a stable path."""

from __future__ import annotations

import argparse
from pathlib import Path

from dose3d_fl.cli.common import fail

COLUMNS = ("hash", "kind", "profile", "organs", "training", "date", "file")


def _cmd_models(args: argparse.Namespace) -> int:
    from dose3d_fl.clinical.models import ModelChoiceError, choose_model, copy_model, list_models

    if (args.copy is None) != (args.to is None):
        return fail("--copy HASH_PREFIX and --to PATH go together")
    try:
        records = list_models(args.workspace)
        if args.copy is not None:
            record = choose_model(records, args.copy)
            target = copy_model(record, args.to)
            print(f"copied {record.path} (model {record.short_hash}: {record.training()}) to {target}")
            return 0
    except (ModelChoiceError, OSError) as err:
        return fail(str(err))
    if not records:
        print(f"no model file (model.pt, FL_global_model.pt, best_FL_global_model.pt) under {args.workspace}")
        return 0
    rows = []
    for record in records:
        organs = ", ".join(str(o) for o in (record.task or {}).get("organs", [])) or "?"
        note = " (unreadable: " + record.problem + ")" if record.problem else ""
        if record.hash_mismatch:
            note += (
                f" (recorded hash {record.recorded_sha256[:12]} differs: the file changed after it was saved)"
            )
        rows.append(
            (
                record.short_hash or "-",
                record.kind,
                record.profile or "?",
                organs,
                record.training() if not record.problem else "-",
                (record.created or "?")[:19],
                _relative(record.path, args.workspace) + note,
            )
        )
    widths = [max(len(str(row[i])) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS) - 1)]
    for row in [COLUMNS, *rows]:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        )
    return 0


def _relative(path: Path, workspace: Path) -> str:
    try:
        return str(path.relative_to(workspace))
    except ValueError:
        return str(path)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``models`` to the ``dose3d`` sub-commands."""
    models = sub.add_parser(
        "models",
        help="list the model files under a workspace (profile, task, job, round, hash); copy one by its hash",
        description=(
            "Lists dose3d train's model.pt and the server's FL_global_model.pt / best_FL_global_model.pt "
            "under WORKSPACE. A model is named by the SHA-256 of its weights (the hash an RTSTRUCT of "
            "dose3d segment names)."
        ),
    )
    models.add_argument("workspace", type=Path, help="folder to search, e.g. runs/ or runs/demo")
    models.add_argument(
        "--copy", metavar="HASH_PREFIX", default=None, help="copy the model whose hash starts so"
    )
    models.add_argument("--to", type=Path, default=None, help="where --copy writes it (a file, or a folder)")
    models.set_defaults(func=_cmd_models)
