"""Files that are never seen half-written, and values that strict JSON can hold.

Every writer of the package whose file another process may read (a site cache, a checkpoint, a ledger, a
process record) writes beside the target and renames into place with :func:`atomic_path`: ``os.replace``
is atomic on one file system, so a reader sees the old file or the new one, never a truncated one, and an
interrupted write leaves no stray temporary file. The standard library has the rename but no helper around
it that cleans up on failure, hence these few lines.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "json_safe", "torch_save_atomic", "write_json_atomic", "write_text_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces ``path`` when the block ends without an error.

    The parent folder is created. The temporary file keeps ``path``'s suffixes, so writers that choose a
    format by file name (``nibabel.save`` of ``.nii.gz``) write the right one.

    Example::

        with atomic_path(out / "model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix="".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON (with a final newline) to ``path`` atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


def torch_save_atomic(data: Any, path: str | Path) -> Path:
    """``torch.save`` ``data`` to ``path`` atomically; returns ``path``."""
    # torch is imported here, not with the module: the simulator configures its logging (which imports the
    # server workflow, and through it this module) before torch can be loaded in that process.
    import torch

    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def json_safe(value: Any) -> Any:
    """NaN or infinity (e.g. a site without a scorable validation case) becomes null: strict JSON has neither.

    Tuples become lists and dictionary keys strings, as ``json.dumps`` writes them.
    """
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
